"""One writer per output: an advisory lock on `<out>.lock` for as long as a command writes `out`.

`train`, `gen-data` and `export` hold `fcntl.flock` on a file beside their output, holding the
writer's pid, for their whole life. A second writer of the same output is refused (exit 2,
naming the holder's pid) instead of interleaving its metrics and checkpoints with the first.
The kernel releases a lock when its holder dies, however it dies: a lock file left by a killed
process is taken over by the next writer (and removed when that one finishes).

Where the platform has no `fcntl` (Windows), or the file system refuses locks, lgdram writes
without a lock.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lgdram_cli.errors import PATH_ERRNOS, UserError, from_os_error, short_path

try:
    import fcntl
except ImportError:  # pragma: no cover (Windows)
    fcntl = None  # type: ignore[assignment]


def lock_path(out: Path) -> Path:
    """run.safetensors → run.safetensors.lock (beside it)."""
    out = Path(out)
    return out.with_name(out.name + ".lock")


def holder(path: Path) -> int | None:
    """The pid written in a lock file (None when it holds none)."""
    try:
        text = Path(path).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


@contextmanager
def output_lock(out: Path, what: str = "") -> Iterator[Path | None]:
    """Hold the lock of `out` for the block; yield the lock file (None when locking is not
    possible here). A live holder is a UserError naming its pid. When `out`'s folder does not
    exist (yet), nothing is locked: the command's own check reports the folder."""
    out = Path(out)
    path = lock_path(out)
    parent = path.parent if str(path.parent) else Path(".")
    try:
        usable = parent.is_dir()
    except OSError as exc:  # a path too long for the system
        raise (from_os_error(exc, out) or UserError(f"cannot write {short_path(out)}: {exc}")) from exc
    if fcntl is None or not usable:
        yield None
        return
    fd = _acquire(out, path, what)
    if fd is None:
        yield None
        return
    try:
        yield path
    finally:
        _release(fd, path)


def _acquire(out: Path, path: Path, what: str) -> int | None:
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            if exc.errno in PATH_ERRNOS:
                raise from_os_error(exc, out) from exc  # type: ignore[misc]
            if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise UserError(f"cannot write {short_path(out)}: folder {short_path(path.parent)} is not writable") from exc
            return None  # a folder that takes no lock file: the write itself will say why
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                pid = holder(path)
                by = f"another lgdram process (pid {pid})" if pid else "another lgdram process"
                doing = f" ({what})" if what else ""
                raise UserError(
                    f"{short_path(out)} is being written by {by}{doing}; wait for it to finish, "
                    "or write to another --out"
                ) from exc
            return None  # the file system does not do locks (some network file systems)
        # The lock file may have been removed (and re-created) by the previous holder between our
        # open and our lock: then we hold a lock on a name nobody sees; take the current file.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            continue
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:  # a full disk: the lock holds all the same, only without the pid
            pass
        return fd


def _release(fd: int, path: Path) -> None:
    try:
        path.unlink(missing_ok=True)  # while still holding it: a waiter re-checks the name
    except OSError:
        pass
    finally:
        os.close(fd)  # releases the lock
