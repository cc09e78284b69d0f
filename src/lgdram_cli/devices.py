"""Which torch device a command or API call runs on (`--device`, `device=`, `$LGDRAM_DEVICE`)."""

from __future__ import annotations

import os
from typing import Any

from lgdram_cli.errors import UserError


def resolve_device(name: str | None, default: str = "auto") -> Any:
    """The torch device of a `--device` option; when it is not given, `$LGDRAM_DEVICE`, then
    the command's own default (`auto`: CUDA when present)."""
    import torch

    name = name or os.environ.get("LGDRAM_DEVICE") or default
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise UserError(f"--device {name}: not a device; use auto, cpu or cuda[:N]") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(
            f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s), "
            f"numbered from 0; use --device cuda:0 … cuda:{torch.cuda.device_count() - 1}"
        )
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"--device {name}: lgdram runs on cpu or cuda[:N]")
    return device
