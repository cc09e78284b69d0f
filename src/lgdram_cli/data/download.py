"""Downloading files from a list of mirrors with checksum verification and atomic writes.

A file is streamed to a temp file beside its destination, its MD5 checked against the
published one, and only then renamed into place: an interrupted or corrupt download never
leaves a file that looks finished.

Each file has an overall deadline (`$LGDRAM_DOWNLOAD_DEADLINE` seconds, default 300; not only a
per-read timeout: a server that sends a byte every few seconds never trips that one) and a size
cap (the file's known size plus a margin): a mirror that breaks either counts as unavailable.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from lgdram_cli.errors import UserError

TIMEOUT_S = 20.0  # per connection attempt and per read
DEADLINE_S = 300.0  # per file, from the request to the last byte
#: The cap of a file of unknown size (every file lgdram downloads has a known size).
DEFAULT_CAP = 64 << 20


class TooSlow(OSError):
    """A download that did not finish within its deadline."""


class TooLarge(OSError):
    """A download that grew past its size cap."""


def deadline_s() -> float:
    value = os.environ.get("LGDRAM_DOWNLOAD_DEADLINE", "").strip()
    if not value:
        return DEADLINE_S
    try:
        seconds = float(value)
    except ValueError:
        raise UserError(f"$LGDRAM_DOWNLOAD_DEADLINE={value!r}: give a number of seconds") from None
    if not seconds > 0:
        raise UserError(f"$LGDRAM_DOWNLOAD_DEADLINE={value!r}: give a positive number of seconds")
    return seconds


class DownloadUnavailable(Exception):
    """No mirror could be reached (offline, DNS failure, HTTP error): callers may fall back."""


def md5_of(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download(filename: str, mirrors: list[str], dest: Path, md5: str, size: int | None = None) -> Path:
    """Fetch `filename` from the first mirror that serves it intact; return `dest`.

    `size`: the file's known size; a larger answer is cut off (the cap is the size plus 1 %
    and 64 KiB; DEFAULT_CAP when unknown). Raises DownloadUnavailable when no mirror answers
    in time and within the cap (or the folder cannot be written), UserError when every answer
    had the wrong checksum (a corrupt or tampered mirror is not something to paper over).
    """
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # an unwritable cache: like no mirror at all, callers may fall back
        raise DownloadUnavailable(f"cannot create {dest.parent}: {exc.strerror or exc}") from exc
    cap = size + size // 100 + (64 << 10) if size else DEFAULT_CAP
    failures: list[str] = []
    mismatches: list[str] = []
    for base in mirrors:
        url = base.rstrip("/") + "/" + filename
        try:
            got = _fetch(url, dest, md5, cap, deadline_s())
        except (urllib.error.URLError, OSError, TimeoutError, ValueError) as exc:
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


def _fetch(url: str, dest: Path, md5: str, cap: int = DEFAULT_CAP, deadline: float = DEADLINE_S) -> str:
    """Stream `url` into `dest` atomically; return the MD5 of what was received. Raises TooSlow
    past `deadline` seconds and TooLarge past `cap` bytes (announced or received)."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    from lgdram_cli.atomic import clean_stale_temps, temp_prefix

    h = hashlib.md5()
    end = time.monotonic() + deadline

    def left() -> float:
        remaining = end - time.monotonic()
        if remaining <= 0:
            raise TooSlow(f"took longer than {deadline:g} s (LGDRAM_DOWNLOAD_DEADLINE)")
        return remaining

    try:
        response = urllib.request.urlopen(url, timeout=min(TIMEOUT_S, left()))
    except (TimeoutError, urllib.error.URLError) as exc:
        if isinstance(getattr(exc, "reason", exc), TimeoutError):
            left()  # past the deadline: say so
        raise
    with response:
        total = int(response.headers.get("Content-Length") or 0) or None
        if total is not None and total > cap:
            raise TooLarge(f"announces {total} bytes, more than the {cap} this file can have")
        sock = getattr(getattr(response, "fp", None), "raw", None)
        sock = getattr(sock, "_sock", None)  # to bound each read by the time left
        clean_stale_temps(dest.parent)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=temp_prefix(dest.name), suffix=".part")
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
                received = 0
                while True:
                    if sock is not None:
                        sock.settimeout(min(TIMEOUT_S, left()))
                    try:
                        block = response.read1(1 << 16)  # whatever has arrived: a trickle cannot stall it
                    except TimeoutError:
                        left()  # past the deadline: say so (else: the per-read timeout)
                        raise
                    left()
                    if not block:
                        break
                    received += len(block)
                    if received > cap:
                        raise TooLarge(f"sent more than the {cap} bytes this file can have")
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
