"""Ctrl-C that lands at a safe point.

A KeyboardInterrupt raised at an arbitrary bytecode can be swallowed (Python drops exceptions
raised inside weakref callbacks and finalisers, which h5py and torch run often) or leave a
half-updated training step. So long-running commands catch SIGINT as a flag and check it
between units of work: the first Ctrl-C stops at the next check, a second one at once.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Any


class StopFlag:
    """Context manager: `requested` turns true on Ctrl-C; `check()` raises KeyboardInterrupt then."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> StopFlag:
        in_main = threading.current_thread() is threading.main_thread()
        # A SIGINT ignored by whoever started us (a background job) stays ignored.
        if in_main and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
