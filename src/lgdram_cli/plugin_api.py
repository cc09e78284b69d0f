"""The public plugin API: everything a third-party dataset, model or loss builds on.

A plugin is a class registered under an entry-point group of its distribution:

    [project.entry-points."lgdram.datasets"]   my-task  = "my_pkg:MyTask"      # DatasetGenerator
    [project.entry-points."lgdram.models"]     my-model = "my_pkg:MyModel"     # Model
    [project.entry-points."lgdram.losses"]     my-loss  = "my_pkg:MyLoss"      # Loss

Each class has a `Config` (a `StrictModel` subclass: pydantic v2, unknown keys rejected, with a
`type` field for datasets and models), a one-line `description`, and `plugin_api_version`
inherited from its base — a class declaring another version is refused by lgdram.

Conventions (version 1):
- images: uint8 [N, C, H, W] from generators; float32 in [0, 1] into models;
- locations and centres: (x, y) in [-1, 1], x horizontal, the `grid_sample` convention
  (align_corners=False): pixel column i of W has centre x = (2i + 1) / W − 1;
- boxes: (x_min, y_min, x_max, y_max) in pixels, max exclusive;
- a model's forward takes (images [B, C, H, W], deterministic, replicas M) and returns a
  `ModelOutput` with B·M rows, the M replicas of an image contiguous;
- a loss's `__call__(out, batch, step)` returns a `LossTerm` whose value is a scalar tensor
  with its weight already applied.

Built-ins to extend: `CanvasTask`/`TranslatedTask` (digit canvases), `RAM`/`RAMConfig`.
Plugin authors import this module as `lgdram.plugin_api`; `lgdram.testing` checks all of this
for a plugin (`check_dataset`, `check_model`, `check_loss`).
"""

from lgdram_cli import PLUGIN_API_VERSION
from lgdram_cli.data.canvas import CanvasBatch
from lgdram_cli.data.generators import CanvasConfig, CanvasTask, DatasetConfig, DatasetGenerator, TranslatedTask
from lgdram_cli.errors import RunFailure, UserError
from lgdram_cli.losses import Loss, LossBatch, LossConfig, LossTerm
from lgdram_cli.models.base import Model, ModelConfig, ModelOutput
from lgdram_cli.models.ram import RAM, RAMConfig
from lgdram_cli.specs import StrictModel

__all__ = [
    "PLUGIN_API_VERSION",
    "CanvasBatch",
    "CanvasConfig",
    "CanvasTask",
    "DatasetConfig",
    "DatasetGenerator",
    "Loss",
    "LossBatch",
    "LossConfig",
    "LossTerm",
    "Model",
    "ModelConfig",
    "ModelOutput",
    "RAM",
    "RAMConfig",
    "RunFailure",
    "StrictModel",
    "TranslatedTask",
    "UserError",
]
