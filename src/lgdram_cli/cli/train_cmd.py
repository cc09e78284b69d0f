"""`lgdram train` and `lgdram eval`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from lgdram_cli.cli.common import err, out, progress, resolve_device, set_threads

SetOpt = Annotated[
    Optional[list[str]],
    typer.Option("--set", metavar="KEY=VALUE", help="Override a spec value by path: dataset.canvas=100, model.core=rnn, optim.lr=1e-3. Repeatable."),
]


def train_spec(
    *,
    resume_from: Optional[dict[str, Any]] = None,
    spec_file: Optional[Path] = None,
    dataset: Optional[str] = None,
    model: Optional[str] = None,
    data: Optional[Path] = None,
    annotations: Optional[str] = None,
    sets: Optional[list[str]] = None,
    **fields: Any,
) -> Any:
    """Assemble the TrainSpec: checkpoint (resume) ← spec file ← options ← --set overrides."""
    from lgdram_cli.data.h5io import CanvasFile
    from lgdram_cli.data.presets import resolve_dataset, resolve_spec_file
    from lgdram_cli.errors import UserError
    from lgdram_cli.specs import apply_overrides, read_spec_file, validate
    from lgdram_cli.training.spec import TrainSpec, parse_annotations

    spec: dict[str, Any] = dict(resume_from or {})
    if spec_file:
        spec.update(read_spec_file(resolve_spec_file(spec_file)))
    if dataset:
        spec["dataset"] = resolve_dataset(dataset)
    file_n = None
    if data:
        file = CanvasFile(data)
        file_n = file.n
        spec["data"] = str(data)
        if not dataset and "dataset" not in spec and file.spec.get("dataset"):
            spec["dataset"] = file.spec["dataset"]  # the file knows what it holds
    if model:
        current = spec.get("model", {})
        spec["model"] = current if current.get("type") == model else {"type": model}
    spec.update({k: (str(v) if isinstance(v, Path) else v) for k, v in fields.items() if v is not None})
    if annotations is not None:
        share, pool = parse_annotations(annotations, "--annotations")
        if pool is not None and file_n is not None and pool > file_n:
            raise UserError(f"--annotations {pool} is more than the {file_n} images of {data}; use at most {file_n} or a share like 1%")
        spec["annotations"], spec["annotation_pool"] = share, pool
    for section in ("dataset", "model", "loss"):  # so `--set model.core=rnn` edits the default model
        if section not in spec:
            spec[section] = TrainSpec.model_fields[section].default_factory()
    spec = apply_overrides(spec, sets)
    if isinstance(spec.get("loss"), dict):  # `--set loss.reinforce=null` removes a term
        spec["loss"] = {k: v for k, v in spec["loss"].items() if v is not None}
    return validate(TrainSpec, spec)


def train(
    out_path: Annotated[Path, typer.Option("--out", "-o", help="Checkpoint to write (run.safetensors).")],
    dataset: Annotated[Optional[str], typer.Option(help="Generator, preset or recipe file \\[default: cmnist].")] = None,
    data: Annotated[Optional[Path], typer.Option(help="Train on this HDF5 file instead of generating on the fly.")] = None,
    test_data: Annotated[Optional[Path], typer.Option(help="Evaluate on this HDF5 file.")] = None,
    model: Annotated[Optional[str], typer.Option(help="Model: ram, dram, fc, cnn or a plugin \\[default: ram].")] = None,
    annotations: Annotated[Optional[str], typer.Option(help="Location annotations: a share (1%: each training image annotated with that probability) or a count (100: a fixed, seeded pool of that many annotated canvases); 0 = plain RL.")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Training steps \\[default: 3000].")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Images per step \\[default: 32].")] = None,
    mc: Annotated[Optional[int], typer.Option("--mc", help="Monte-Carlo replicas per image \\[default: 10].")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed \\[default: 0].")] = None,
    eval_every: Annotated[Optional[int], typer.Option(help="Steps between evaluations \\[default: 250].")] = None,
    eval_n: Annotated[Optional[int], typer.Option(help="Held-out canvases per evaluation \\[default: 1000].")] = None,
    precision: Annotated[Optional[str], typer.Option(help="fp32, or bf16 mixed precision (bf16 products, float32 weights, heads and losses) \\[default: fp32].")] = None,
    spec_file: Annotated[Optional[Path], typer.Option("--spec", help="Run spec file (TOML/JSON/YAML) or a shipped experiment recipe name (ldram-cmnist-100).")] = None,
    sets: SetOpt = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu or cuda[:N] \\[default: $LGDRAM_DEVICE, else auto].")] = None,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads \\[default: 1, see README].")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last checkpoint.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing checkpoint.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the final metrics as JSON on stdout.")] = False,
) -> None:
    """Train an attention model with REINFORCE and location guidance."""
    from lgdram_cli.errors import UserError

    if out_path.suffix != ".safetensors":
        raise UserError(f"--out {out_path}: checkpoints are safetensors files; name it like run.safetensors")
    for name, value in (("--steps", steps), ("--batch-size", batch_size), ("--mc", mc), ("--eval-n", eval_n)):
        if value is not None and value < (0 if name == "--steps" else 1):
            raise UserError(f"{name} {value}: must be {'0 or more' if name == '--steps' else 'at least 1'}")
    previous = None
    if resume:
        from lgdram_cli.training.checkpoint import load_checkpoint

        previous = load_checkpoint(out_path).spec
    elif out_path.exists() and not force:
        raise UserError(f"{out_path} already exists; pass --resume to continue it or --force to start over")
    parent = out_path.parent if str(out_path.parent) else Path(".")
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise UserError(f"cannot write {out_path}: folder {parent} does not exist or is not writable")
    spec = train_spec(
        resume_from=previous, spec_file=spec_file, dataset=dataset, model=model, data=data,
        annotations=annotations, sets=sets, test_data=test_data, steps=steps, batch_size=batch_size,
        mc=mc, seed=seed, eval_every=eval_every, eval_n=eval_n, precision=precision,
    )
    set_threads(threads)
    from lgdram_cli.training.loop import train as run_training

    with progress() as bar:
        result = run_training(
            spec, out_path, device=resolve_device(device), resume=resume,
            log=lambda m: bar.console.print(m, soft_wrap=True), progress=bar,
        )
    if not result:  # another rank of a distributed run: rank 0 reports
        return
    if as_json:
        out.print_json(json.dumps(result))
    else:
        err.print(f"saved {out_path}: test accuracy {result.get('accuracy', float('nan')):.3f}")


def evaluate_cmd(
    checkpoint: Annotated[Path, typer.Argument(help="A run.safetensors checkpoint.")],
    data: Annotated[Optional[Path], typer.Option(help="Evaluate on this HDF5 test file.")] = None,
    dataset: Annotated[Optional[str], typer.Option(help="Generate test canvases of this dataset instead of the checkpoint's.")] = None,
    n: Annotated[Optional[int], typer.Option("--n", help="Test canvases \\[default: the run's eval_n].")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed of generated test canvases \\[default: the run's eval_seed].")] = None,
    mc: Annotated[int, typer.Option("--mc", help="Average K sampled trajectories (0: deterministic policy).")] = 0,
    sets: SetOpt = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu or cuda[:N] \\[default: $LGDRAM_DEVICE, else auto].")] = None,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Evaluate a checkpoint on held-out test canvases (digits never seen in training)."""
    from lgdram_cli.errors import UserError
    from lgdram_cli.training.runs import load_run, test_canvases
    from lgdram_cli.training.evaluate import evaluate

    if mc < 0:
        raise UserError(f"--mc {mc}: must be 0 (deterministic) or more")
    if n is not None and n < 1:
        raise UserError(f"--n {n}: must be at least 1")
    set_threads(threads)
    dev = resolve_device(device)
    run = load_run(checkpoint, dev)
    test = test_canvases(run, data=data, dataset=dataset, n=n, seed=seed, sets=sets)
    result = evaluate(run.model, test, dev, mc=mc)
    result["checkpoint"] = str(checkpoint)
    result["step"] = run.step
    if as_json:
        out.print_json(json.dumps(result))
        return
    out.print(f"{checkpoint} (step {run.step}) on {result['n']} test canvases")
    out.print(f"  accuracy  {100 * result['accuracy']:.2f} %   error {result['error']:.2f} %")
    if "per_glimpse_accuracy" in result:
        out.print("  per glimpse " + " ".join(f"{100 * a:.1f}" for a in result["per_glimpse_accuracy"]))
    if "location_error_px" in result:
        out.print(f"  location error {result['location_error_px']:.2f} px   glimpses in target box {100 * result['glimpses_in_box']:.1f} %")


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("eval")(evaluate_cmd)
