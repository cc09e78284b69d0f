"""`lgdram sweep` (a grid of training runs as parallel processes) and `lgdram results`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from lgdram_cli.cli.common import err

if TYPE_CHECKING:  # the command imports torch (through the sweep module) only when it runs
    from lgdram_cli.training.sweep import Outcome, Plan, Run, State

SWEEP_HELP = """Run a grid of training runs (cells × seeds), each an `lgdram train` process.

RECIPE is a run-spec file (what `lgdram train --spec` reads) or a shipped experiment recipe. Every run writes OUT/<cell>/s<seed>/run.safetensors (+ metrics, optimizer state, train.log). Rerunning the same command skips finished runs and resumes interrupted ones; more seeds or more grid values extend the sweep. `lgdram results OUT` aggregates it.

Example:
  lgdram sweep recipe.toml --seeds 0-2 --grid annotations=0,1%,100% --out runs/lg

On a cluster, one job per run (a Slurm job array over the 9 runs that --list numbers):
  #SBATCH --array=0-8
  lgdram sweep recipe.toml --seeds 0-2 --grid annotations=0,1%,100% --out runs/lg --jobs 1 --only $SLURM_ARRAY_TASK_ID
"""


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def sweep(
    recipe: Annotated[str, typer.Argument(help="Run-spec file (TOML/JSON/YAML) or shipped recipe name.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Sweep folder: one sub-folder per cell and seed.")],
    grid: Annotated[Optional[list[str]], typer.Option("--grid", metavar="KEY=V1,V2", help="Grid axis: annotations=0,1%,100 or any spec key (model.glimpses=4,6). Repeatable: the cells are all combinations.")] = None,
    seeds: Annotated[Optional[list[str]], typer.Option("--seeds", metavar="0-2", help="Seeds: 0-2, 0,3,5 \\[default: the recipe's seed].")] = None,
    sets: Annotated[Optional[list[str]], typer.Option("--set", metavar="KEY=VALUE", help="Override a spec value in every run. Repeatable.")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Training steps of every run \\[default: the recipe's].")] = None,
    precision: Annotated[Optional[str], typer.Option(help="fp32, or bf16 mixed precision, for every run \\[default: the recipe's].")] = None,
    jobs: Annotated[Optional[int], typer.Option("--jobs", "-j", help="Runs at a time \\[default: CPU cores, or --gpus].")] = None,
    threads: Annotated[int, typer.Option(help="CPU threads of each run.")] = 1,
    gpus: Annotated[int, typer.Option(help="Spread runs over CUDA devices cuda:0 … cuda:N-1 (the least busy first).")] = 0,
    only: Annotated[Optional[list[str]], typer.Option("--only", metavar="I", help="Run only these runs of the numbered run list (0-based; 3, 0-4, 1,5): one job-array task each.")] = None,
    list_runs: Annotated[bool, typer.Option("--list", help="Print the numbered runs and their state (done / partial at step k / new), then exit.")] = False,
    seeds_first: Annotated[bool, typer.Option("--seeds-first", help="Run every cell's first seed before any cell's second (the numbering stays): a sweep stopped early still covers every cell.")] = False,
) -> None:
    from lgdram_cli.errors import UserError
    from lgdram_cli.training import sweep as sw

    for name, value, least in (("--jobs", jobs, 1), ("--threads", threads, 1), ("--gpus", gpus, 0)):
        if value is not None and value < least:
            raise UserError(f"{name} {value}: must be at least {least}")
    sw.check_gpus(gpus)
    if precision is not None:
        if any(g.partition("=")[0].strip() == "precision" for g in grid or []):
            raise UserError("--precision and --grid precision both given; keep one of them")
        sets = [*(sets or []), f"precision={precision}"]
    plan = sw.make_plan(recipe, grid, seeds, sets, steps, out)
    runs = select(plan.runs, sw.parse_indices(only, "--only"))
    work = [(run, sw.run_state(run)) for run in runs]  # a foreign run folder stops us here
    if list_runs:
        print_runs(work, len(plan.runs))
        return
    if not gpus:
        check_cpu_precision([run for run, state in work if state.kind != "done"])
    if seeds_first:
        work.sort(key=lambda w: (plan.seeds.index(w[0].seed), w[0].index))
    jobs = jobs or gpus or cpu_cores()
    warn_oversubscribed(jobs, threads, gpus)
    sw.write_manifest(plan)
    outcome = run_pool(plan, work, jobs=jobs, threads=threads, gpus=gpus)
    summarize(out, outcome, skipped=sum(state.kind == "done" for _, state in work))


sweep.__doc__ = SWEEP_HELP


def run_pool(plan: Plan, work: list[tuple[Run, State]], *, jobs: int, threads: int, gpus: int) -> Outcome:
    """Skip what is done, run the rest; on Ctrl-C say how to continue (then exit 130)."""
    from rich.markup import escape

    from lgdram_cli.cli import common
    from lgdram_cli.training.sweep import Pool

    for run, state in work:
        if state.kind == "done":
            say(f"[{run.index}] skip {run.name}: done (step {state.step})")
    try:
        return Pool(plan, jobs=jobs, threads=threads, gpus=gpus, say=say).run([w for w in work if w[1].kind != "done"])
    except KeyboardInterrupt:
        err.print(f"[red]interrupted:[/] rerun the same command to resume the unfinished runs in {escape(str(plan.out))}")
        getattr(common, "INTERRUPT", {})["reported"] = True  # the top-level handler need not say it again
        raise


def summarize(out: Path, outcome: Outcome, skipped: int) -> None:
    """The final line; exit 1 naming every failed run and its log."""
    say(
        f"sweep {out}: {len(outcome.finished)} finished, {skipped} already done, {len(outcome.failed)} failed"
        + (f"; aggregate with: lgdram results {out}" if not outcome.failed else "")
    )
    for run, why in outcome.failed:
        say(f"  failed: {run.name} ({why}), log {run.log}")
    if outcome.failed:
        raise typer.Exit(1)


def say(text: str) -> None:
    """A status line on stderr, as it is (run names and log lines are not Rich markup)."""
    err.print(text, markup=False, highlight=False)


def check_cpu_precision(runs: list[Run]) -> None:
    """Refuse up front, not once per run, where a bf16 run still to train (from the recipe,
    --set, --grid or --precision) would be emulated on this CPU; finished ones are only skipped."""
    bf16 = [run for run in runs if run.spec.get("precision") == "bf16"]
    if bf16:
        import torch

        from lgdram_cli.training.precision import check_precision

        check_precision(
            "bf16", torch.device("cpu"), what=f"precision bf16 ({len(bf16)} of {len(runs)} runs, e.g. {bf16[0].name})",
            fix="use --precision fp32 (a sweep folder keeps one precision: a new --out if it holds bf16 runs), "
            "or run on CUDA devices with --gpus N",
        )


def select(runs: list[Run], only: list[int]) -> list[Run]:
    """The runs `--only` names (all without it); an index past the end is bad input."""
    from lgdram_cli.errors import UserError

    if not only:
        return runs
    bad = [i for i in only if i >= len(runs)]
    if bad:
        raise UserError(f"--only {', '.join(map(str, bad))}: this sweep has runs 0–{len(runs) - 1} (see --list)")
    return [runs[i] for i in sorted(only)]


def print_runs(work: list[tuple[Run, State]], total: int) -> None:
    from lgdram_cli.cli.common import out

    width = max(len(run.name) for run, _ in work)
    out.print(f"{total} run(s) (cells × seeds); index, run, state:", markup=False, highlight=False)
    for run, state in work:
        out.print(f"{run.index:4d}  {run.name:<{width}}  {state.describe()}", markup=False, highlight=False)


def warn_oversubscribed(jobs: int, threads: int, gpus: int) -> None:
    """More runs than cores (or GPUs) is allowed, but slower than it looks: say so."""
    cores = cpu_cores()
    if jobs * threads > cores:
        err.print(f"[yellow]warning:[/] {jobs} job(s) × {threads} thread(s) is more than the {cores} CPU core(s); runs will share cores")
    if gpus and jobs > gpus:
        err.print(f"[yellow]warning:[/] {jobs} jobs on {gpus} GPU(s): several runs share a GPU")


def results(
    dirs: Annotated[list[Path], typer.Argument(help="Sweep folders (or any folders of runs).")],
    prefix: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write PREFIX.md, .csv, .json and .curves.png \\[default: DIR/results].")] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="What to print on stdout: md, csv or json.")] = "md",
) -> None:
    """Aggregate finished runs per cell: mean ± std over seeds of the final test error, steps to
    80 % / 90 % test accuracy, location error and glimpses in the target box; a Markdown, CSV and
    JSON table and learning curves with a min–max band."""
    from lgdram_cli.errors import unknown_name
    from lgdram_cli.training import results as res
    from lgdram_cli.viz.curves import plot_spread, pyplot

    if fmt not in ("md", "csv", "json"):
        raise unknown_name("--format", fmt, ("md", "csv", "json"))
    pyplot("lgdram results (its .curves.png)")  # before anything is written
    found, notes = res.find_runs(dirs)
    cells = res.group(found)
    summary = res.summarize(cells, res.coverage(dirs, cells))
    from rich.markup import escape

    for note in notes:
        err.print(f"[yellow]left out:[/] {escape(note)}", highlight=False)
    prefix = prefix or dirs[0] / "results"
    written = res.write_outputs(summary, prefix)
    picture = prefix.with_name(prefix.name + ".curves.png")
    plot_spread(res.curves(summary), picture, title=res.headline(summary))
    written.append(picture)
    text = {"md": res.markdown, "csv": res.csv_text}.get(fmt, lambda s: json.dumps(s, indent=1) + "\n")(summary)
    typer.echo(text, nl=False)
    err.print(f"wrote {', '.join(map(str, written))}", markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    app.command("sweep", help=SWEEP_HELP)(sweep)
    app.command("results")(results)
