"""The two kinds of failure the CLI distinguishes.

`UserError` is anything the user can fix by changing their input (exit code 2, one line,
no traceback); `RunFailure` is a failure at run time that is not the user's input (exit 1).
Library code raises these; only the CLI's top-level handler turns them into exit codes.
"""

from __future__ import annotations

import difflib
import errno
import os
from collections.abc import Iterable


class LgdramError(Exception):
    """Base class of every error lgdram raises on purpose. Its text is always one line: a line
    break that came with the user's input (a `--set` value, a file name) is shown as `\\n`."""

    exit_code = 1

    def __str__(self) -> str:
        return super().__str__().replace("\r", "\\r").replace("\n", "\\n")


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


#: errno values that mean "the output could not be written" (disk full, quota, file-size limit,
#: read-only file system, I/O error): run-time failures, exit 1.
WRITE_ERRNOS = frozenset(
    e for e in (errno.ENOSPC, getattr(errno, "EDQUOT", None), errno.EFBIG, errno.EROFS, errno.EIO) if e is not None
)
#: errno values that mean "this path cannot be one": bad input, exit 2.
PATH_ERRNOS = frozenset((errno.ENAMETOOLONG, errno.ELOOP))


def short_path(path: object, limit: int = 120) -> str:
    """A path for a one-line message: whole when short, else its start and end around an ellipsis."""
    text = str(path)
    return text if len(text) <= limit else f"{text[: limit // 2 - 1]}…{text[-(limit // 2):]}"


def from_os_error(exc: OSError, path: object = None) -> LgdramError | None:
    """The LgdramError an OSError stands for, naming `path` (else the error's own file name), or
    None when it is neither a write failure nor an impossible path (the caller re-raises it).

    Disk full, quota, file-size limit, read-only file system, I/O error → RunFailure (exit 1);
    a file name or path too long for the system, or a symlink loop → UserError (exit 2).
    """
    where = short_path(path if path is not None else (exc.filename or "the output"))
    reason = os.strerror(exc.errno) if exc.errno else str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if exc.errno in WRITE_ERRNOS:
        return RunFailure(f"cannot write {where}: {reason}")
    if exc.errno in PATH_ERRNOS:
        hint = "; use a shorter name or path" if exc.errno == errno.ENAMETOOLONG else ""
        return UserError(f"cannot use {where}: {reason}{hint}")
    return None
