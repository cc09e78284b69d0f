"""`lgdram visualize` (glimpse GIF / PNG sheet / learning curves / dataset preview) and `lgdram export`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from lgdram_cli.cli.common import err, set_threads
from lgdram_cli.cli.gen_data import Sets
from lgdram_cli.cli.train_cmd import AllowEditedOpt


def visualize(
    checkpoints: Annotated[Optional[list[Path]], typer.Argument(help="Run folder(s) or checkpoint(s); several only with --curves.", show_default=False)] = None,
    gif: Annotated[bool, typer.Option("--gif", help="Animated GIF, one frame per glimpse (the default).")] = False,
    png: Annotated[bool, typer.Option("--png", help="Static sheet: each glimpse of each sample plus the retina's patches.")] = False,
    curves: Annotated[bool, typer.Option("--curves", help="Learning curves from the runs' metrics files, overlaid.")] = False,
    dataset: Annotated[Optional[str], typer.Option(help="Canvases of this dataset: a preview without a checkpoint; with one, the model on them.")] = None,
    sets: Sets = None,
    data: Annotated[Optional[Path], typer.Option(help="Take the canvases from this HDF5 file.")] = None,
    n: Annotated[Optional[int], typer.Option("--n", help="Canvases to show \\[default: 16 for the GIF, 4 for the sheet].")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the generated canvases.")] = 0,
    split: Annotated[str, typer.Option(help="Digit split of generated canvases.")] = "test",
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output file \\[default: next to the checkpoint].")] = None,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads.")] = None,
    allow_edited: AllowEditedOpt = False,
) -> None:
    """Show where a model looks, how it learned, or what a dataset looks like."""
    from lgdram_cli.errors import UserError
    from lgdram_cli.integrity import ALLOW_EDITED

    ALLOW_EDITED.set(allow_edited)

    checkpoints = checkpoints or []
    if n is not None and n < 1:
        raise UserError(f"--n {n}: must be at least 1")
    if not checkpoints and (dataset or data):
        set_threads(threads)
    if dataset and not checkpoints:
        _preview(dataset, sets, data, n or 16, seed, split, out or Path(f"{Path(dataset).stem}-preview.png"))
        return
    if data and not checkpoints:
        _preview(None, None, data, n or 16, seed, split, out or data.with_suffix(".preview.png"))
        return
    if not checkpoints:
        raise UserError("give a checkpoint (lgdram visualize run.safetensors --gif) or --dataset NAME for a preview")
    modes = [m for m, on in (("gif", gif), ("png", png), ("curves", curves)) if on] or ["gif"]
    if out is not None and len(modes) > 1:
        raise UserError("--out names one file: ask for one of --gif, --png, --curves at a time")
    if len(checkpoints) > 1 and modes != ["curves"]:
        raise UserError("several checkpoints can only be overlaid with --curves; --gif and --png take one")
    from lgdram_cli.training.rundir import checkpoint_of, existing_checkpoint

    given, checkpoints = checkpoints, [checkpoint_of(c) for c in checkpoints]  # a run folder → its run.safetensors
    if modes != ["curves"]:
        existing_checkpoint(given[0])  # a wrong path is answered before torch loads
    set_threads(threads)
    from lgdram_cli.training.checkpoint import sibling
    if "curves" in modes:
        from lgdram_cli.training.checkpoint import metrics_path
        from lgdram_cli.viz.curves import plot_curves, read_metrics

        names = [g.name if g.is_dir() else c.name.removesuffix(".safetensors") for g, c in zip(given, checkpoints)]
        if len(set(names)) < len(names):  # a/run and b/run: label by folder too
            names = [f"{c.parent.name}/{n}" for c, n in zip(checkpoints, names)]
        runs = {n: read_metrics(metrics_path(c)) for n, c in zip(names, checkpoints)}
        target = out or sibling(checkpoints[0], ".curves.png")
        plot_curves(runs, target)
        err.print(f"wrote {target}")
    glimpse_modes = [m for m in modes if m != "curves"]
    if not glimpse_modes:
        return
    from lgdram_cli.training.runs import load_run, test_canvases
    from lgdram_cli.viz.glimpses import glimpse_gif, glimpse_sheet

    run = load_run(given[0])
    for mode in glimpse_modes:
        count = n or (16 if mode == "gif" else 4)
        batch = test_canvases(run, data=data, dataset=dataset, n=count, seed=seed, sets=sets)
        if mode == "gif":
            target = out or sibling(checkpoints[0], ".glimpses.gif")
            frames = glimpse_gif(run.model, batch, target)
            err.print(f"wrote {target} ({frames} frames, {len(batch)} canvases)")
        else:
            target = out or sibling(checkpoints[0], ".glimpses.png")
            glimpse_sheet(run.model, batch, target)
            err.print(f"wrote {target} ({len(batch)} canvases)")


def _preview(
    dataset: Optional[str], sets: Optional[list[str]], data: Optional[Path], n: int, seed: int, split: str, out: Path
) -> None:
    from lgdram_cli.viz.glimpses import dataset_sheet

    if data is not None:
        from lgdram_cli.data.h5io import CanvasFile

        file = CanvasFile(data)
        batch, _ = file.read(slice(0, min(n, file.n)))
    else:
        from lgdram_cli.cli.gen_data import build_spec
        from lgdram_cli.contract import generate_checked
        from lgdram_cli.data.presets import make_generator

        spec = build_spec(dataset, None, sets, n=n, split=split, seed=seed)
        # the batch check gen-data and train run: a plugin's bad batch is named, exit 2
        batch = generate_checked(make_generator(spec.dataset), n, split, seed)
    dataset_sheet(batch, out)
    err.print(f"wrote {out}")


#: export.formats.FORMATS, named here so that a mistyped format is answered without torch.
EXPORT_FORMATS = ("onnx", "pt2", "folder")


def export(
    checkpoint: Annotated[Path, typer.Argument(help="A run folder or its run.safetensors checkpoint.", show_default=False)],
    fmt: Annotated[str, typer.Option("--format", "-f", help="onnx, pt2 or folder.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output file (onnx, pt2) or folder.")],
    force: Annotated[bool, typer.Option("--force", help="Replace an existing output.")] = False,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads.")] = None,
    allow_edited: AllowEditedOpt = False,
) -> None:
    """Export a trained model to ONNX, a torch.export program, or a self-describing folder."""
    from lgdram_cli.errors import UserError, unknown_name
    from lgdram_cli.integrity import ALLOW_EDITED
    from lgdram_cli.training.rundir import existing_checkpoint

    ALLOW_EDITED.set(allow_edited)

    if fmt not in EXPORT_FORMATS:
        raise unknown_name("export format", fmt, EXPORT_FORMATS)
    if out.exists() and not force:
        raise UserError(f"{out} already exists; pass --force to replace it")
    existing_checkpoint(checkpoint)  # a wrong path is answered before torch loads
    from lgdram_cli.export.formats import export_folder, export_onnx, export_pt2

    set_threads(threads)
    from lgdram_cli.training.runs import load_run

    run = load_run(checkpoint)
    {"onnx": export_onnx, "pt2": export_pt2, "folder": export_folder}[fmt](run, out, force=force)
    err.print(f"wrote {out} ({fmt})")


def register(app: typer.Typer) -> None:
    app.command("visualize")(visualize)
    app.command("export")(export)
