"""Whether to use a checkpoint that was edited after lgdram wrote it (no torch here: the CLI sets
it before anything heavy is imported).

`ALLOW_EDITED` is set by `--allow-edited` (eval, visualize, export, train --resume): a checkpoint
whose tensors or metadata no longer match its recorded SHA-256 is then used with a warning
instead of refused (training/checkpoint.py).
"""

from __future__ import annotations

from contextvars import ContextVar

ALLOW_EDITED: ContextVar[bool] = ContextVar("lgdram_allow_edited", default=False)
