"""The public plugin API: everything a third-party dataset, model, loss or logger builds on.

A plugin is a class registered under an entry-point group of its distribution:

    [project.entry-points."lgdram.datasets"]   my-task  = "my_pkg:MyTask"      # DatasetGenerator
    [project.entry-points."lgdram.models"]     my-model = "my_pkg:MyModel"     # Model
    [project.entry-points."lgdram.losses"]     my-loss  = "my_pkg:MyLoss"      # Loss
    [project.entry-points."lgdram.loggers"]    my-log   = "my_pkg:MyLogger"    # Logger

Each class has a `Config` (a `StrictModel` subclass: pydantic v2, unknown keys rejected, with a
`type` field for datasets and models), a one-line `description` (default: the first line of
the class's own docstring), and `plugin_api_version` inherited from its base — a class
declaring another version is refused by lgdram.

Conventions (version 1):
- images: uint8 [N, C, H, W] from generators; float32 in [0, 1] into models;
- locations and centres: (x, y) in [-1, 1], x horizontal, the `grid_sample` convention
  (align_corners=False): pixel column i of W has centre x = (2i + 1) / W − 1;
- boxes: (x_min, y_min, x_max, y_max) in pixels, max exclusive;
- a model's forward takes (images [B, C, H, W], deterministic, replicas M) and returns a
  `ModelOutput` with B·M rows, the M replicas of an image contiguous;
- a loss's `__call__(out, batch, step)` returns a `LossTerm` whose value is a scalar tensor
  with its weight already applied;
- a metrics logger (no `Config` needed: the base's is empty) implements
  `open(run_dir, spec, resume_step)`, `log(record)` and `close()`; records are dicts
  `{"kind": "train" | "eval", "step": int, ...metrics}` (see `lgdram_cli.training.loggers`).

Built-ins to extend or reuse:
- models: `RAM`/`RAMConfig`, `DRAM`/`DRAMConfig`, and RAM's parts — `Retina`,
  `GlimpseNetwork`, `Core`, `ContextNetwork` — with the protocols a replacement part honours
  (`RetinaProtocol`, `GlimpseNetworkProtocol`, `CoreProtocol`, `LocationPolicyProtocol`,
  `ContextNetworkProtocol`; signatures and shapes in `lgdram_cli.models.contract`);
- datasets: `CanvasTask`/`CanvasConfig`/`TranslatedTask` (digit canvases), `compose` (one
  chunk of canvases from digits), `load_digits`/`DigitSet` (digit sources), `digit_boxes`,
  `chunk_generator`/`chunks`/`CHUNK` (the seeded per-chunk random streams that make a stream
  deterministic and slicing-independent);
- coordinates: `loc_to_px`, `px_to_loc`, `box_centre`, `box_contains` (`lgdram_cli.geometry`).

Plugin authors import this module as `lgdram.plugin_api`; `lgdram.testing` checks all of this
for a plugin (`check_dataset`, `check_model`, `check_loss`); `lgdram.register` registers a
class in-process (notebooks) through the same validation as an entry point.
"""

from lgdram_cli import PLUGIN_API_VERSION
from lgdram_cli.data.canvas import DIGIT, CanvasBatch, compose, digit_boxes
from lgdram_cli.data.generators import (
    CHUNK,
    CanvasConfig,
    CanvasTask,
    DatasetConfig,
    DatasetGenerator,
    TranslatedTask,
    chunk_generator,
    chunks,
)
from lgdram_cli.data.sources import DigitSet, load_digits
from lgdram_cli.errors import RunFailure, UserError
from lgdram_cli.geometry import box_centre, box_contains, loc_to_px, px_to_loc
from lgdram_cli.losses import Loss, LossBatch, LossConfig, LossTerm
from lgdram_cli.models.base import Model, ModelConfig, ModelOutput
from lgdram_cli.models.contract import (
    ContextNetworkProtocol,
    CoreProtocol,
    GlimpseNetworkProtocol,
    LocationPolicyProtocol,
    RetinaProtocol,
)
from lgdram_cli.models.cores import Core
from lgdram_cli.models.dram import DRAM, ContextNetwork, DRAMConfig
from lgdram_cli.models.ram import RAM, AttentionConfig, GlimpseNetwork, RAMConfig, gaussian_log_prob
from lgdram_cli.models.retina import Retina
from lgdram_cli.specs import StrictModel
from lgdram_cli.training.loggers import Logger, LoggerConfig

__all__ = [
    "CHUNK",
    "DIGIT",
    "DRAM",
    "PLUGIN_API_VERSION",
    "RAM",
    "AttentionConfig",
    "CanvasBatch",
    "CanvasConfig",
    "CanvasTask",
    "ContextNetwork",
    "ContextNetworkProtocol",
    "Core",
    "CoreProtocol",
    "DRAMConfig",
    "DatasetConfig",
    "DatasetGenerator",
    "DigitSet",
    "GlimpseNetwork",
    "GlimpseNetworkProtocol",
    "LocationPolicyProtocol",
    "Logger",
    "LoggerConfig",
    "Loss",
    "LossBatch",
    "LossConfig",
    "LossTerm",
    "Model",
    "ModelConfig",
    "ModelOutput",
    "RAMConfig",
    "Retina",
    "RetinaProtocol",
    "RunFailure",
    "StrictModel",
    "TranslatedTask",
    "UserError",
    "box_centre",
    "box_contains",
    "chunk_generator",
    "chunks",
    "compose",
    "digit_boxes",
    "gaussian_log_prob",
    "load_digits",
    "loc_to_px",
    "px_to_loc",
]
