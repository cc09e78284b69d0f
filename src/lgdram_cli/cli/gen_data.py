"""`lgdram gen-data`: write a task's canvases to an HDF5 file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from lgdram_cli.cli.common import err, parse_annotations, progress, resolve_device, set_threads

Sets = Annotated[
    Optional[list[str]],
    typer.Option("--set", metavar="KEY=VALUE", help="Override a parameter: key=value (e.g. canvas=100, distractors=4-20). Repeatable."),
]


def build_spec(
    dataset: str | None, spec_file: Path | None, sets: list[str] | None, **fields: object
) -> object:
    """The validated GenDataSpec from --spec, --dataset, the options and --set overrides."""
    from lgdram_cli.data.gen import GenDataSpec
    from lgdram_cli.data.presets import resolve_dataset
    from lgdram_cli.errors import UserError
    from lgdram_cli.specs import apply_overrides, expand_set_keys, read_spec_file, validate

    data: dict = read_spec_file(spec_file) if spec_file else {}
    if dataset:
        data["dataset"] = resolve_dataset(dataset)
    if "dataset" not in data:
        raise UserError("no dataset given; pass --dataset NAME (e.g. mcmnist-100) or --spec FILE")
    data.update({k: v for k, v in fields.items() if v is not None})
    # `canvas=100` → `dataset.canvas=100`: the rule every command's --set shares
    prefixed = expand_set_keys(sets, top=GenDataSpec.model_fields, sections={"dataset": lambda: ()}, default="dataset")
    data = apply_overrides(data, prefixed)
    spec = validate(GenDataSpec, data)
    from lgdram_cli.data.presets import make_generator

    make_generator(spec.dataset)  # validate the dataset section now: fail before any file exists
    return spec


def gen_data(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output HDF5 file.")],
    dataset: Annotated[Optional[str], typer.Option(help="Generator, preset or recipe file (see 'lgdram plugins').")] = None,
    n: Annotated[Optional[int], typer.Option("--n", help="Number of samples.")] = None,
    split: Annotated[Optional[str], typer.Option(help="Digit split: train or test (test canvases use test digits only).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed: same spec + seed gives identical bytes.")] = None,
    annotations: Annotated[Optional[str], typer.Option(help="Share (1%) or count of samples with location annotation \\[default: 100%].")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing output file.")] = False,
    spec_file: Annotated[Optional[Path], typer.Option("--spec", help="Spec file (TOML/JSON/YAML).")] = None,
    sets: Sets = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu or cuda[:N] \\[default: $LGDRAM_DEVICE, else cpu].")] = None,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads.")] = None,
    preview: Annotated[bool, typer.Option("--preview", help="Also write a PNG sheet of the first 16 canvases next to --out.")] = False,
) -> None:
    """Generate a cluttered-digit dataset with location ground truth as HDF5."""
    from lgdram_cli.errors import UserError

    if n is not None and n <= 0:
        raise UserError(f"--n {n}: give a positive number of samples")
    spec = build_spec(dataset, spec_file, sets, n=n, split=split, seed=seed)
    if annotations is not None:
        spec.annotations = parse_annotations(annotations, spec.n)
    set_threads(threads)
    from lgdram_cli.data.gen import generate_file

    with progress() as bar:
        task = bar.add_task(f"gen-data {out.name}", total=spec.n)
        resolved = generate_file(
            spec, out, force=force, device=resolve_device(device, "cpu"), on_progress=lambda k: bar.advance(task, k)
        )
    ds = resolved["dataset"]
    if preview:
        from lgdram_cli.data.h5io import CanvasFile
        from lgdram_cli.viz.glimpses import dataset_sheet

        sheet = out.with_suffix(".preview.png")
        batch, _ = CanvasFile(out).read(slice(0, min(16, spec.n)))
        dataset_sheet(batch, sheet)
        err.print(f"wrote {sheet}")
    err.print(
        f"wrote {spec.n} {spec.split} samples of {ds['type']} (digits: {ds.get('digits', '-')}) to {out}"
    )


def register(app: typer.Typer) -> None:
    app.command("gen-data")(gen_data)
