"""`lgdram train` and `lgdram eval`."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from lgdram_cli.cli.common import err, out, progress, resolve_device, set_threads
from lgdram_cli.training.assemble import expand_train_sets, train_spec  # noqa: F401 (their old home)

AllowEditedOpt = Annotated[
    bool,
    typer.Option("--allow-edited", help="Use a checkpoint whose tensors or metadata were changed after lgdram wrote it (they no longer match its recorded SHA-256), with a warning."),
]
SetOpt = Annotated[
    Optional[list[str]],
    typer.Option("--set", metavar="KEY=VALUE", help="Override a spec value: dataset.canvas=100, model.core=rnn, optim.lr=1e-3; a key that only one section has may be given alone (canvas=100, glimpses=8, lr=1e-3). Repeatable."),
]


def train(
    out_path: Annotated[Optional[Path], typer.Option("--out", "-o", help="Checkpoint file (run.safetensors) or run folder to write \\[default: a new folder runs/DATASET-MODEL-ANNOTATIONS-sSEED/].", show_default=False)] = None,
    dataset: Annotated[Optional[str], typer.Option(help="Generator, preset, recipe file or module:Class (or a generate function) \\[default: cmnist].")] = None,
    data: Annotated[Optional[Path], typer.Option(help="Train on this HDF5 file instead of generating on the fly.")] = None,
    test_data: Annotated[Optional[Path], typer.Option(help="Evaluate on this HDF5 file.")] = None,
    model: Annotated[Optional[str], typer.Option(help="Model: ram, dram, fc, cnn, a plugin's, or module:Class \\[default: ram].")] = None,
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
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out (a checkpoint or run folder; without --out, the newest run folder of this command) from its last checkpoint.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing checkpoint.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the final metrics as JSON on stdout.")] = False,
    loggers: Annotated[Optional[list[str]], typer.Option("--logger", metavar="NAME", help="Metrics logger: jsonl, csv, tensorboard, a plugin's ('lgdram plugins' lists them) or module:Class. Repeatable; jsonl (run.metrics.jsonl) is always on \\[default: the spec's loggers, else jsonl].")] = None,
    losses: Annotated[Optional[list[str]], typer.Option("--loss", metavar="NAME[=WEIGHT]", help="Add a loss term to the spec's (default: classification, reinforce, location): a registered name (rloo, a plugin's) or module:Class, with its default weight or WEIGHT; other parameters with --set loss.NAME.KEY=VALUE. Repeatable.")] = None,
    allow_edited: AllowEditedOpt = False,
) -> None:
    """Train an attention model with REINFORCE and location guidance.

    Without --out the run gets its own folder, runs/DATASET-MODEL-ANNOTATIONS-sSEED/ (-2, -3, …
    when that one already holds a run), with run.safetensors and its metrics inside."""
    from lgdram_cli.cli.common import INTERRUPT
    from lgdram_cli.errors import UserError
    from lgdram_cli.training import rundir
    from lgdram_cli.integrity import ALLOW_EDITED

    ALLOW_EDITED.set(allow_edited)

    for name, value in (("--steps", steps), ("--batch-size", batch_size), ("--mc", mc), ("--eval-n", eval_n)):
        if value is not None and value < (0 if name == "--steps" else 1):
            raise UserError(f"{name} {value}: must be {'0 or more' if name == '--steps' else 'at least 1'}")
    options: dict[str, Any] = dict(
        spec_file=spec_file, dataset=dataset, model=model, data=data, annotations=annotations, sets=sets,
        test_data=test_data, steps=steps, batch_size=batch_size, mc=mc, seed=seed, eval_every=eval_every,
        eval_n=eval_n, precision=precision, loggers=loggers or None, losses=losses or None,
    )
    spec = None
    in_folder = out_path is None or out_path.is_dir() or not out_path.suffix
    if out_path is None:  # the run's own folder, named after the spec
        spec = train_spec(**options)
        base = rundir.default_run_folder(spec, dataset)
        if resume:
            folder = rundir.latest_run_folder(base)
            if folder is None:
                raise UserError(f"--resume: there is no run in {base}/ to continue; pass --out with the run's folder or checkpoint")
        else:
            folder = rundir.free_run_folder(base)
        out_path = folder / rundir.CHECKPOINT
    elif in_folder:
        out_path = (rundir.checkpoint_of(out_path) if resume else out_path / rundir.CHECKPOINT)
    elif out_path.suffix != ".safetensors":
        raise UserError(f"--out {out_path}: checkpoints are safetensors files; name it like run.safetensors, or give a folder")
    previous = None
    if resume:
        from lgdram_cli.training.checkpoint import load_checkpoint

        previous = load_checkpoint(out_path).spec
        spec = None  # the checkpoint's spec is the base of a resumed run
    elif out_path.exists() and not force:
        raise UserError(f"{out_path} already exists; pass --resume to continue it or --force to start over")
    parent = out_path.parent if str(out_path.parent) else Path(".")
    if in_folder:
        rundir.check_can_create(parent, "--out")
    elif not parent.is_dir() or not os.access(parent, os.W_OK):
        raise UserError(f"cannot write {out_path}: folder {parent} does not exist or is not writable")
    if spec is None:
        spec = train_spec(resume_from=previous, **options)
    set_threads(threads)
    from lgdram_cli.allocator import keep_freed_memory
    from lgdram_cli.training.loop import train as run_training

    keep_freed_memory()  # process-wide malloc tuning: the command's to make, not the library's

    main_rank = os.environ.get("RANK", "0") == "0"
    created = rundir.make_folder(parent, "--out") if in_folder else []
    if in_folder and main_rank:
        err.print(f"run folder {parent}/")

    def log(message: str) -> None:
        if message.startswith("interrupted"):
            INTERRUPT["reported"] = True  # the top-level handler need not say it again
        bar.console.print(message, soft_wrap=True)

    from lgdram_cli.locking import output_lock
    from lgdram_cli.resources import check_train
    from lgdram_cli.training.checkpoint import forget_unsaved_run

    started = None
    try:
        check_train(spec)  # batch × mc × canvas and the test set must fit in memory: refused before allocating
        with output_lock(out_path, "lgdram train") if main_rank else contextlib.nullcontext():  # one writer
            started = forget_unsaved_run(out_path, resume)  # what a new run that never checkpoints leaves
            with progress() as bar:
                result = run_training(spec, out_path, device=resolve_device(device), resume=resume, log=log, progress=bar)
    except BaseException:
        if started is not None:
            started.forget()  # e.g. disk full before the first checkpoint: no orphan metrics file
        rundir.remove_empty(created)  # bad input found while building: leave no empty folder
        raise
    if not result:  # another rank of a distributed run: rank 0 reports
        return
    if as_json:
        out.print_json(json.dumps(result))
    else:
        where = f" (run folder {out_path.parent}/)" if in_folder else ""
        err.print(f"saved {out_path}: test accuracy {result.get('accuracy', float('nan')):.3f}{where}")


def evaluate_cmd(
    checkpoint: Annotated[Path, typer.Argument(help="A run folder or its run.safetensors checkpoint.", show_default=False)],
    data: Annotated[Optional[Path], typer.Option(help="Evaluate on this HDF5 test file.")] = None,
    dataset: Annotated[Optional[str], typer.Option(help="Generate test canvases of this dataset instead of the checkpoint's.")] = None,
    n: Annotated[Optional[int], typer.Option("--n", help="Test canvases \\[default: the run's eval_n].")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed of generated test canvases \\[default: the run's eval_seed].")] = None,
    mc: Annotated[int, typer.Option("--mc", help="Average K sampled trajectories (0: deterministic policy).")] = 0,
    sets: SetOpt = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu or cuda[:N] \\[default: $LGDRAM_DEVICE, else auto].")] = None,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    allow_edited: AllowEditedOpt = False,
) -> None:
    """Evaluate a checkpoint on held-out test canvases (digits never seen in training)."""
    from lgdram_cli.errors import UserError
    from lgdram_cli.integrity import ALLOW_EDITED
    from lgdram_cli.training.rundir import existing_checkpoint

    ALLOW_EDITED.set(allow_edited)

    if mc < 0:
        raise UserError(f"--mc {mc}: must be 0 (deterministic) or more")
    if n is not None and n < 1:
        raise UserError(f"--n {n}: must be at least 1")
    path = existing_checkpoint(checkpoint)  # a wrong path is answered before torch loads
    from lgdram_cli.training.runs import load_run, test_canvases
    from lgdram_cli.training.evaluate import evaluate

    set_threads(threads)
    dev = resolve_device(device)
    run = load_run(checkpoint, dev)
    if data is None:  # generated here: n canvases at once (a file's rows are checked as it is read)
        from lgdram_cli.data.presets import resolve_dataset
        from lgdram_cli.resources import check_generation
        from lgdram_cli.specs import apply_overrides
        from lgdram_cli.training.runs import dataset_sets

        generated = resolve_dataset(dataset) if dataset else dict(run.spec.get("dataset", {}))
        generated = apply_overrides(generated, dataset_sets(sets))
        check_generation(generated, n or int(run.spec.get("eval_n", 1000)), "eval --n")
    test = test_canvases(run, data=data, dataset=dataset, n=n, seed=seed, sets=sets)
    result = evaluate(run.model, test, dev, mc=mc)
    result["checkpoint"] = str(path)
    result["step"] = run.step
    if as_json:
        out.print_json(json.dumps(result))
        return
    out.print(f"{path} (step {run.step}) on {result['n']} test canvases")
    out.print(f"  accuracy  {100 * result['accuracy']:.2f} %   error {result['error']:.2f} %")
    if "per_glimpse_accuracy" in result:
        out.print("  per glimpse " + " ".join(f"{100 * a:.1f}" for a in result["per_glimpse_accuracy"]))
    if "location_error_px" in result:
        out.print(f"  location error {result['location_error_px']:.2f} px   glimpses in target box {100 * result['glimpses_in_box']:.1f} %")


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("eval")(evaluate_cmd)
