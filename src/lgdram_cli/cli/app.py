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
    from lgdram_cli.cli import bench, gen_data, plugins_cmd, sweep_cmd, train_cmd, visualize_cmd

    gen_data.register(app)
    plugins_cmd.register(app)
    bench.register(app)
    train_cmd.register(app)
    visualize_cmd.register(app)
    sweep_cmd.register(app)


_register()


#: Typer's own type labels in help (`<int>`, `<str>`, `<bool>` even for flags) → Click's.
_TYPE_NAMES = {"int": "INTEGER", "float": "FLOAT", "str": "TEXT", "bool": "BOOLEAN", "path": "PATH",
               "file": "FILE", "directory": "DIRECTORY", "datetime": "DATETIME"}


def _help_metavar(param, ctx) -> Optional[str]:  # noqa: ANN001
    """What help shows after an option: nothing for a flag, `INTEGER`, `TEXT`, `PATH`, `[a|b]`."""
    if param.metavar is not None:
        return param.metavar
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        return None
    label = param.display_type(ctx).strip("<>")
    inner = label[5:-1] if label.startswith("list[") and label.endswith("]") else label
    if param.type_descriptor.is_choice:
        name = f"[{inner}]"
    else:
        name = _TYPE_NAMES.get(inner, inner.upper())
    # an argument's name already carries the "..." of several values
    return f"{name}..." if param.nargs != 1 and param.param_type_name == "option" else name


def _plain_help_metavars() -> None:
    from typer.core import TyperArgument, TyperOption

    TyperOption.display_type_rich = _help_metavar
    TyperArgument.display_type_rich = _help_metavar


_plain_help_metavars()


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

    from lgdram_cli.cli.common import INTERRUPT

    args = list(sys.argv[1:] if argv is None else argv)
    # `--debug` anywhere before a `--`: `lgdram --debug train …` and `lgdram train … --debug`
    end = args.index("--") if "--" in args else len(args)
    debug = "--debug" in args[:end]
    args = [a for a in args[:end] if a != "--debug"] + args[end:]
    _debug["on"] = debug or os.environ.get("LGDRAM_DEBUG", "") not in ("", "0")
    INTERRUPT["reported"] = False
    warnings.showwarning = _show_warning
    code = 0
    from rich.markup import escape

    try:
        result = app(args=args, prog_name="lgdram", standalone_mode=False)
        if isinstance(result, int) and not isinstance(result, bool) and result:
            if result == 130 and not INTERRUPT["reported"]:  # Typer turns Ctrl-C into Exit(130) and returns it
                err.print("[red]interrupted[/]")
            code = result
    except typer.Exit as exc:
        code = exc.exit_code
    except (KeyboardInterrupt, typer.Abort):
        if not INTERRUPT["reported"]:
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
        ctx = getattr(exc, "ctx", None)  # the (sub)command whose usage was wrong
        where = ctx.command_path if ctx is not None and ctx.command_path else "lgdram"
        err.print(f"[red]error:[/] {escape(exc.format_message())} (see '{escape(where)} --help')")
        code = getattr(exc, "exit_code", 2)
    except OSError as exc:  # not mapped where it happened: disk full, a path too long, …
        from lgdram_cli.errors import from_os_error

        mapped = from_os_error(exc)
        if _debug["on"]:
            err.print_exception()
        if mapped is None:
            err.print(f"[red]failed:[/] {type(exc).__name__}: {escape(str(exc).splitlines()[0] if str(exc) else '')} (rerun with --debug for the traceback)")
        else:
            err.print(f"[red]error:[/] {escape(str(mapped))}")
        code = 1 if mapped is None else mapped.exit_code
    except Exception as exc:
        if _debug["on"]:
            err.print_exception()
        err.print(f"[red]failed:[/] {type(exc).__name__}: {escape(str(exc))} (rerun with --debug for the traceback)")
        code = 1
    sys.exit(code)
