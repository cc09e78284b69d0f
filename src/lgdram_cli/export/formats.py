"""The three export formats of `lgdram export`.

`onnx`   the deterministic policy (mean locations, fixed glimpse count) unrolled into one
         graph: images [batch, C, H, W] float in [0, 1] → logits [batch, classes],
         locations [batch, T, 2]; dynamic batch size.
`pt2`    the same function as a `torch.export` program (`torch.export.load` reads it).
`folder` model.safetensors + config.json (resolved spec) + README.md model card + sample GIF.
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from lgdram_cli.atomic import atomic_path
from lgdram_cli.errors import UserError
from lgdram_cli.training.runs import LoadedRun

FORMATS = ("onnx", "pt2", "folder")
ONNX_OPSET = 17


class Policy(torch.nn.Module):
    """The deployable function: images → (class logits, glimpse locations), no sampling."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(images, deterministic=True)
        locations = out.locations if out.locations is not None else images.new_zeros(images.shape[0], 0, 2)
        return out.logits, locations


def example_input(run: LoadedRun, n: int = 2) -> torch.Tensor:
    return torch.rand(n, run.model.channels, *run.model.size, generator=torch.Generator().manual_seed(0))


def check_exportable(run: LoadedRun) -> None:
    if not getattr(run.model, "exportable", True):
        raise UserError(
            f"model '{run.model.config.type}' declares itself not exportable (it has data-dependent control flow); "
            "use --format folder"
        )


def _atomic_output(out: Path, force: bool, write: Callable[[Path], None], is_dir: bool = False) -> None:
    """`write` a temp path beside `out`, then swap it into place (no partial outputs), holding
    the output's lock (a second export to the same `out` is refused)."""
    from lgdram_cli.locking import output_lock

    with output_lock(out, "lgdram export"), atomic_path(out, force=force, folder=is_dir) as tmp:
        write(tmp)


def _write_bytes(tmp: Path, data: bytes) -> None:
    """Bytes made in memory to the temp file: a failing disk (full, read-only) is an OSError
    here, in Python, never inside a C++ writer (torch's zip writer aborts the process on it)."""
    with open(tmp, "wb") as f:
        f.write(data)


def export_onnx(run: LoadedRun, out: Path, force: bool = False) -> None:
    import importlib.util

    if importlib.util.find_spec("onnx") is None:  # torch.onnx needs it; say so, not "cannot be exported"
        raise UserError("ONNX export needs the onnx package: pip install onnx (pipx: pipx inject lgdram onnx)")
    check_exportable(run)
    policy = Policy(run.model).eval()

    def write(tmp: Path) -> None:
        buffer = io.BytesIO()  # the graph is made in memory; only then written (a full disk is a write error)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the tracer's notes on constants: our tests check numerics
                torch.onnx.export(
                    policy, (example_input(run),), buffer, input_names=["images"],
                    output_names=["logits", "locations"], opset_version=ONNX_OPSET, dynamo=False,
                    dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}, "locations": {0: "batch"}},
                )
        except Exception as exc:
            raise UserError(f"model '{run.model.config.type}' cannot be exported to ONNX: {exc}".splitlines()[0]) from exc
        _write_bytes(tmp, buffer.getvalue())

    _atomic_output(out, force, write)


def export_pt2(run: LoadedRun, out: Path, force: bool = False) -> None:
    check_exportable(run)
    policy = Policy(run.model).eval()

    def write(tmp: Path) -> None:
        batch = torch.export.Dim("batch", min=1, max=4096)
        try:
            program = torch.export.export(policy, (example_input(run),), dynamic_shapes=({0: batch},))
        except Exception as exc:
            raise UserError(f"model '{run.model.config.type}' cannot be exported with torch.export: {exc}".splitlines()[0]) from exc
        buffer = io.BytesIO()  # torch's zip writer aborts the process when the disk is full: write it ourselves
        torch.export.save(program, buffer)
        _write_bytes(tmp, buffer.getvalue())

    _atomic_output(out, force, write)


def export_folder(run: LoadedRun, out: Path, force: bool = False, gif_samples: int = 9) -> None:
    """model.safetensors (with the checkpoint's metadata), config.json, README.md, sample.gif."""
    from lgdram_cli.training.checkpoint import save_checkpoint
    from lgdram_cli.viz.glimpses import glimpse_gif

    def write(tmp: Path) -> None:
        save_checkpoint(tmp / "model.safetensors", run.model, run.spec, run.step, run.metrics)
        (tmp / "config.json").write_text(json.dumps(run.spec, indent=2, sort_keys=True) + "\n")
        gif = None
        if getattr(run.model, "retina", None) is not None:  # attention models: show where they look
            batch = run.generator.generate(gif_samples, "test", int(run.spec.get("eval_seed", 1)))
            glimpse_gif(run.model, batch, tmp / "sample.gif")
            gif = "sample.gif"
        (tmp / "README.md").write_text(model_card(run, gif))

    _atomic_output(out, force, write, is_dir=True)


def model_card(run: LoadedRun, gif: str | None) -> str:
    spec, m = run.spec, run.metrics
    ds = spec.get("dataset", {})
    model = spec.get("model", {})
    acc = f"{100 * m['accuracy']:.2f} %" if "accuracy" in m else "not evaluated"
    loc = f"{m['location_error_px']:.2f} px" if m.get("location_error_px") is not None else "n/a"
    lines = [
        f"# lgdram model: {model.get('type', '?')} on {ds.get('type', '?')}",
        "",
        "Exported by `lgdram export --format folder`. Load with `lgdram eval model.safetensors`.",
        "",
        "| | |",
        "|---|---|",
        f"| model | `{json.dumps(model, sort_keys=True)}` |",
        f"| dataset | `{json.dumps(ds, sort_keys=True)}` |",
        f"| location annotations | {_annotations(spec)} |",
        f"| training steps | {run.step} (batch {spec.get('batch_size')} × {spec.get('mc')} Monte-Carlo replicas) |",
        f"| test accuracy | {acc} on {m.get('n', '?')} held-out canvases (digits never seen in training) |",
        f"| mean location error | {loc} |",
        f"| loss | `{json.dumps(spec.get('loss', {}), sort_keys=True)}` |",
        "",
        "Digits: MNIST (LeCun, Cortes, Burges), CC BY-SA 3.0.",
        "",
    ]
    if gif:
        lines += ["## Where it looks", "", f"![glimpses]({gif})", ""]
    return "\n".join(lines)


def _annotations(spec: dict) -> str:
    """The run's annotation budget in words: a share of the training images or a fixed pool."""
    if spec.get("annotation_pool"):
        return f"a fixed pool of {spec['annotation_pool']} annotated canvases"
    return f"{100 * float(spec.get('annotations', 0)):.2f} % of training images"
