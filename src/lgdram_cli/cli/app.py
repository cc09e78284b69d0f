"""The `lgdram` root command and its single top-level error handler.

Exit codes: 0 success; 2 bad input (one line, no traceback); 1 run-time failure;
130 interrupted. `--debug` (or LGDRAM_DEBUG=1) shows tracebacks.
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Annotated, Optional

import typer

from lgdram_cli import __version__
from lgdram_cli.cli.common import err

app = typer.Typer(
    name="lgdram",
    help="Train recurrent attention models (RAM, DRAM) with location guidance on cluttered digits.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
)
_debug = {"on": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lgdram {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
    version: Annotated[
        Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = None,
) -> None:
    """lgdram: hard-attention vision models trained with REINFORCE and location guidance."""
    _debug["on"] = debug or _debug["on"]


def _register() -> None:
    # Command modules import torch lazily, inside the commands, so `--help` stays fast.
    from lgdram_cli.cli import bench, gen_data, plugins_cmd, train_cmd, visualize_cmd

    gen_data.register(app)
    plugins_cmd.register(app)
    bench.register(app)
    train_cmd.register(app)
    visualize_cmd.register(app)


_register()


_shown: set[str] = set()


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    """Warnings as one yellow line each, every distinct message once per run."""
    from rich.markup import escape

    text = str(message)
    if text not in _shown:
        _shown.add(text)
        err.print(f"[yellow]warning:[/] {escape(text)}")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the app and map every failure to an exit code."""
    from lgdram_cli.errors import LgdramError

    args = sys.argv[1:] if argv is None else argv
    _debug["on"] = "--debug" in args or os.environ.get("LGDRAM_DEBUG", "") not in ("", "0")
    warnings.showwarning = _show_warning
    code = 0
    from rich.markup import escape

    try:
        result = app(args=args, prog_name="lgdram", standalone_mode=False)
        if isinstance(result, int) and not isinstance(result, bool) and result:
            if result == 130:  # Typer turns Ctrl-C into Exit(130) and returns it when not standalone
                err.print("[red]interrupted[/]")
            code = result
    except typer.Exit as exc:
        code = exc.exit_code
    except (KeyboardInterrupt, typer.Abort):
        err.print("[red]interrupted[/]")
        code = 130
    except LgdramError as exc:
        if _debug["on"]:
            err.print_exception()
        err.print(f"[red]error:[/] {escape(str(exc))}")
        code = exc.exit_code
    except typer.TyperException as exc:  # usage errors from Typer's own (vendored) Click
        if _debug["on"]:
            err.print_exception()
        err.print(f"[red]error:[/] {escape(exc.format_message())} (see 'lgdram --help')")
        code = getattr(exc, "exit_code", 2)
    except Exception as exc:
        if _debug["on"]:
            err.print_exception()
        err.print(f"[red]failed:[/] {type(exc).__name__}: {escape(str(exc))} (rerun with --debug for the traceback)")
        code = 1
    sys.exit(code)
