"""The runtime contract checks, in one place: what every command runs on plugin output.

- `check_batch` / `require_batch` / `generate_checked`: a generator's `CanvasBatch`
  (`lgdram_cli.data.contract`);
- `check_output` / `require_output`: a model's `ModelOutput` (`lgdram_cli.models.contract`);
- `probe`: both, on two canvases and one small forward pass, before a run starts.

`check_*` return None or what is wrong; `require_*` raise a one-line `UserError` naming the
plugin and its distribution (exit 2 on the command line). The conformance kit
(`lgdram_cli.testing`, a layer above) builds on the same functions.
"""

from __future__ import annotations

from typing import Any

import torch

from lgdram_cli.data.contract import check_batch, generate_checked, require_batch
from lgdram_cli.models.base import ModelOutput
from lgdram_cli.models.contract import check_output, require_output

__all__ = ["check_batch", "check_output", "generate_checked", "probe", "require_batch", "require_output"]


def probe(generator: Any, model: Any, replicas: int = 2) -> ModelOutput:
    """Catch a plugin that breaks the tensor contract before training starts, naming it: two
    training canvases, then one forward pass with `replicas` replicas (the global random state
    is left as it was, so probing does not shift a run's random stream)."""
    sample = generate_checked(generator, 2, "train", 0)
    state = torch.get_rng_state()
    try:
        with torch.no_grad():
            out = model(sample.images.float() / 255, replicas=replicas)
    finally:
        torch.set_rng_state(state)
    return require_output(model, out, 2 * replicas, generator.classes, replicas)
