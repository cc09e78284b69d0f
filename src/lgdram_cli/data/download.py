"""Downloading files from a list of mirrors with checksum verification and atomic writes.

A file is streamed to a temp file beside its destination, its MD5 checked against the
published one, and only then renamed into place: an interrupted or corrupt download never
leaves a file that looks finished.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from lgdram_cli.errors import UserError

TIMEOUT_S = 20.0


class DownloadUnavailable(Exception):
    """No mirror could be reached (offline, DNS failure, HTTP error): callers may fall back."""


def md5_of(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download(filename: str, mirrors: list[str], dest: Path, md5: str) -> Path:
    """Fetch `filename` from the first mirror that serves it intact; return `dest`.

    Raises DownloadUnavailable when no mirror answers, UserError when every answer
    had the wrong checksum (a corrupt or tampered mirror is not something to paper over).
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []
    mismatches: list[str] = []
    for base in mirrors:
        url = base.rstrip("/") + "/" + filename
        try:
            got = _fetch(url, dest, md5)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            failures.append(f"{url}: {getattr(exc, 'reason', exc)}")
            continue
        if got == md5:
            return dest
        mismatches.append(f"{url} (md5 {got}, expected {md5})")
    if mismatches:
        raise UserError(
            f"checksum mismatch downloading {filename}: {'; '.join(mismatches)}; "
            "set LGDRAM_MNIST_MIRRORS to a trustworthy mirror"
        )
    raise DownloadUnavailable("; ".join(failures) or "no mirrors configured")


def _fetch(url: str, dest: Path, md5: str) -> str:
    """Stream `url` into `dest` atomically; return the MD5 of what was received."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    h = hashlib.md5()
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out, Progress(
                TextColumn("[bold]download[/] {task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                transient=True,
                disable=not sys.stderr.isatty(),
            ) as bar:
                task = bar.add_task(dest.name, total=total)
                for block in iter(lambda: response.read(1 << 16), b""):
                    out.write(block)
                    h.update(block)
                    bar.advance(task, len(block))
            if total is not None and os.path.getsize(tmp) != total:
                raise OSError(f"connection closed after {os.path.getsize(tmp)} of {total} bytes")
            if h.hexdigest() != md5:  # never rename unverified bytes into place
                Path(tmp).unlink(missing_ok=True)
                return h.hexdigest()
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return h.hexdigest()
