"""The two kinds of failure the CLI distinguishes.

`UserError` is anything the user can fix by changing their input (exit code 2, one line,
no traceback); `RunFailure` is a failure at run time that is not the user's input (exit 1).
Library code raises these; only the CLI's top-level handler turns them into exit codes.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class LgdramError(Exception):
    """Base class of every error lgdram raises on purpose."""

    exit_code = 1


class UserError(LgdramError):
    """Bad input: a name, a value, a file. The message says what is wrong and how to fix it."""

    exit_code = 2


class RunFailure(LgdramError):
    """Something went wrong while running that is not the user's input (e.g. NaN loss)."""

    exit_code = 1


def suggest(name: str, choices: Iterable[str]) -> str:
    """' (did you mean X?)' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown_name(kind: str, name: str, choices: Iterable[str]) -> UserError:
    """The standard error for an unknown registry name: lists what exists, suggests the closest."""
    choices = sorted(choices)
    return UserError(
        f"unknown {kind} '{name}'{suggest(name, choices)}; available: {', '.join(choices) or 'none'}"
    )
