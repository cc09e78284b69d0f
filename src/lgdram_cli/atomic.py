"""Write-then-rename for every file and folder lgdram writes.

A crash, an error or Ctrl-C mid-write must never leave a half-written output behind, nor damage
a finished dataset, checkpoint or export of the same name: the output is written under a hidden
temporary name beside its destination and renamed into place only once complete.

Temporary names carry the writer's host and process id (`.NAME.lgdram-HOST-PID-XXXXXXXX.SUFFIX`),
so a temp file or folder that a killed process (kill -9, power loss) left behind is recognised and
removed by the next write on the same host into the same folder, and never one that a live
process (or one on another host sharing the folder) is still writing.
A write that fails because the disk is full (or the quota, the file-size limit, a read-only
file system, an I/O error) is a RunFailure naming the output; the output's previous version
stays intact and no partial file remains.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lgdram_cli.errors import PATH_ERRNOS, WRITE_ERRNOS, RunFailure, UserError, from_os_error, short_path

#: `.NAME.lgdram-HOST-PID-RANDOM[SUFFIX]`: a temporary file or folder of a live or dead lgdram process.
TEMP_RE = re.compile(r"^\.(?P<target>.+)\.lgdram-(?P<host>[A-Za-z0-9]*)-(?P<pid>\d+)-[A-Za-z0-9_]+(?P<suffix>\.[^.]*)?$")
#: a full disk or quota: a run-time failure even before the first byte (a read-only or otherwise
#: unusable folder then is bad input: the user chose it)
FULL_ERRNOS = frozenset(e for e in (errno.ENOSPC, getattr(errno, "EDQUOT", None)) if e is not None)
_cleaned: set[tuple[int, str]] = set()  # (pid, folder): each folder is swept once per process


def host_tag() -> str:
    """This host's name as it goes into temporary names (letters and digits, at most 16)."""
    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:16]


def temp_prefix(name: str) -> str:
    """The prefix of this process's temporary names for an output called `name`."""
    return f".{name}.lgdram-{host_tag()}-{os.getpid()}-"


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (a zombie or another user's process counts)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_temps(folder: Path, *, once: bool = True) -> list[Path]:
    """Remove the temporary files and folders in `folder` whose writer is dead (its pid is in
    the name); return what was removed. With `once`, a folder is swept once per process."""
    folder = Path(folder) if str(folder) else Path(".")
    key = (os.getpid(), str(folder.resolve()) if folder.is_dir() else str(folder))
    if once and key in _cleaned:
        return []
    _cleaned.add(key)
    removed: list[Path] = []
    try:
        entries = [e for e in os.scandir(folder) if e.name.startswith(".")]
    except OSError:
        return removed
    for entry in entries:
        m = TEMP_RE.match(entry.name)
        if m is None or m["host"] != host_tag() or int(m["pid"]) == os.getpid() or pid_alive(int(m["pid"])):
            continue
        path = Path(entry.path)
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
        except OSError:
            pass
    return removed


def fsync_file(path: Path) -> None:
    """Flush a file's data to the disk (before it is renamed into place)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: Path) -> None:
    """Make renames in `folder` durable (best effort: some file systems refuse it)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_error(exc: OSError, out: Path) -> RunFailure | None:
    """The RunFailure of a failed write of `out` (disk full, …), or None for other errors."""
    if exc.errno in WRITE_ERRNOS:
        return RunFailure(f"{from_os_error(exc, out)}; nothing half-written was left behind")
    return None


@contextmanager
def atomic_path(out: Path, *, force: bool = True, folder: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `out` (an empty folder with `folder`, else a file name with
    `out`'s suffix, which some writers need); when the block succeeds it replaces `out`, else it
    is removed. Without `force` an existing `out` is a UserError, as is a missing or read-only
    parent folder: all checked before anything is written."""
    out = Path(out)
    parent = out.parent if str(out.parent) else Path(".")
    try:
        if out.exists() and not force:
            raise UserError(f"{out} already exists; pass --force to overwrite it")
        if out.is_dir() and not folder:
            raise UserError(f"{out} is a directory; give a file name")
        if not parent.is_dir():
            raise UserError(f"cannot write {short_path(out)}: folder {short_path(parent)} does not exist")
        if not os.access(parent, os.W_OK):
            raise UserError(f"cannot write {short_path(out)}: folder {short_path(parent)} is not writable")
        clean_stale_temps(parent)
        if folder:
            tmp = Path(tempfile.mkdtemp(dir=parent, prefix=temp_prefix(out.name)))
        else:
            fd, name = tempfile.mkstemp(dir=parent, prefix=temp_prefix(out.name), suffix=out.suffix)
            os.close(fd)
            tmp = Path(name)
    except OSError as exc:  # a name too long, a folder that takes no new files (/proc), disk full
        if exc.errno in FULL_ERRNOS or exc.errno in PATH_ERRNOS:
            raise from_os_error(exc, out) from exc  # type: ignore[misc]
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        if exc.errno == errno.ENOENT:  # /proc, /sys: folders that take no new files
            reason = f"folder {short_path(parent)} takes no new files ({reason})"
        raise UserError(f"cannot write {short_path(out)}: {reason}") from exc
    try:
        yield tmp
        os.chmod(tmp, 0o755 if folder else 0o644)  # mkstemp/mkdtemp create owner-only entries
        if not folder:
            fsync_file(tmp)  # the data on disk before the name: a crash never leaves an empty file
        if out.is_dir():
            shutil.rmtree(out)
        elif folder and out.exists():  # a folder replaces a file (with force) only once complete
            out.unlink()
        os.replace(tmp, out)
        fsync_dir(parent)
    except OSError as exc:
        error = write_error(exc, out)
        if error is not None:
            raise error from exc
        raise
    except RunFailure as exc:  # a write inside a temp folder failed: name the folder the user asked for
        cause = exc.__cause__
        if folder and isinstance(cause, OSError) and cause.errno in WRITE_ERRNOS:
            raise write_error(cause, out) from cause  # type: ignore[misc]
        raise
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
