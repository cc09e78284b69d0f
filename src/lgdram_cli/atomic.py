"""Write-then-rename for every file and folder lgdram writes.

A crash, an error or Ctrl-C mid-write must never leave a half-written output behind, nor damage
a finished dataset, checkpoint or export of the same name: the output is written under a hidden
temporary name beside its destination and renamed into place only once complete.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lgdram_cli.errors import UserError


@contextmanager
def atomic_path(out: Path, *, force: bool = True, folder: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `out` (an empty folder with `folder`, else a file name with
    `out`'s suffix, which some writers need); when the block succeeds it replaces `out`, else it
    is removed. Without `force` an existing `out` is a UserError, as is a missing or read-only
    parent folder: all checked before anything is written."""
    out = Path(out)
    if out.exists() and not force:
        raise UserError(f"{out} already exists; pass --force to overwrite it")
    if out.is_dir() and not folder:
        raise UserError(f"{out} is a directory; give a file name")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise UserError(f"cannot write {out}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise UserError(f"cannot write {out}: folder {parent} is not writable")
    if folder:
        tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".{out.name}."))
    else:
        fd, name = tempfile.mkstemp(dir=parent, prefix=f".{out.name}.", suffix=out.suffix)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o755 if folder else 0o644)  # mkstemp/mkdtemp create owner-only entries
        if out.is_dir():
            shutil.rmtree(out)
        elif folder and out.exists():  # a folder replaces a file (with force) only once complete
            out.unlink()
        os.replace(tmp, out)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
