"""`precision = "bf16"`: where it may run, and the autocast region the training step enters.

Only the forward pass runs under autocast (the backward follows the dtypes it recorded);
parameters, gradients and Adam's moments stay float32, as in Lightning's "bf16-mixed".
On a CPU without bf16 instructions bf16 arithmetic is emulated and slower than float32, so
it is refused rather than silently slow. fp32 runs on CUDA may use TF32 products.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import torch

from lgdram_cli.errors import UserError
from lgdram_cli.models.precision import weight_casts

#: CPU feature flags (/proc/cpuinfo) that mean native bf16 arithmetic
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


@lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (x86: AVX512-BF16 or AMX; Arm: the bf16 extension)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = {f for line in text.splitlines() if line.startswith(("flags", "Features")) for f in line.split()}
    return any(f in flags for f in BF16_FLAGS)


#: what a resumed bf16 run can do where bf16 is refused: `--resume` keeps the run's spec, so
#: `--precision fp32` is no way out for it
RESUME_ELSEWHERE = (
    "this run was started in bf16 and keeps its precision: resume it on a CPU with bf16 instructions "
    "or a CUDA GPU (--device cuda), or start a new run with --precision fp32"
)


def check_precision(
    precision: str, device: torch.device, *, what: str = "precision bf16", fix: str = "use --precision fp32",
) -> None:
    """Refuse bf16 where it would be emulated (the line starts with `what` and ends with `fix`:
    the way out depends on the command); let fp32 runs on CUDA use TF32 products."""
    if precision == "bf16":
        if device.type == "cpu" and not cpu_has_bf16():
            raise UserError(
                f"{what}: this CPU has no bf16 instructions (avx512_bf16/amx_bf16), so bf16 would be "
                f"emulated and slower than fp32; {fix}"
            )
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise UserError(f"precision bf16: {torch.cuda.get_device_name(device)} has no bf16 support; use fp32")
    elif device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


@contextlib.contextmanager
def mixed_precision(precision: str, device: torch.device) -> Iterator[None]:
    """The forward pass's autocast region (nothing for fp32)."""
    if precision != "bf16":
        yield
        return
    with torch.autocast(device.type, dtype=torch.bfloat16), weight_casts():
        yield
