"""The `train` run spec: sections `dataset`, `model`, `loss`, `optim` plus run settings.

`--set` paths address the sections: `dataset.canvas=100`, `model.glimpses=8`,
`model.core=rnn`, `loss.location.gamma_start=1`, `optim.lr=1e-3`, `steps=3000`.
The `dataset`, `model` and each `loss.<name>` section are validated in a second stage by
the config model of the registry entry they name.
"""

from __future__ import annotations

from typing import Any, Optional

from pydantic import Field

from lgdram_cli.specs import StrictModel


class OptimSpec(StrictModel):
    """Adam with exponential learning-rate decay to a floor and global-norm clipping (seed defaults)."""

    lr: float = Field(1e-3, gt=0, description="initial learning rate")
    lr_min: float = Field(1e-5, ge=0, description="learning-rate floor")
    lr_decay: float = Field(0.97, gt=0, le=1, description="multiplier applied every decay_every steps")
    decay_every: int = Field(100, gt=0, description="steps between learning-rate decays")
    clip: float = Field(5.0, gt=0, description="global gradient-norm clip")


DEFAULT_LOSS: dict[str, dict[str, Any]] = {"classification": {}, "reinforce": {}, "location": {}}


class TrainSpec(StrictModel):
    """Everything that determines a training run."""

    dataset: dict[str, Any] = Field(
        default_factory=lambda: {"type": "cmnist"}, description="dataset spec: 'type' + generator parameters"
    )
    data: Optional[str] = Field(None, description="train on this HDF5 file instead of generating on the fly")
    test_data: Optional[str] = Field(None, description="evaluate on this HDF5 file instead of generated test canvases")
    model: dict[str, Any] = Field(default_factory=lambda: {"type": "ram"}, description="model spec: 'type' + parameters")
    loss: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {k: dict(v) for k, v in DEFAULT_LOSS.items()},
        description="hybrid loss: registered loss name → its config (weight, schedule, ...)",
    )
    optim: OptimSpec = Field(default_factory=OptimSpec)
    annotations: float = Field(0.0, ge=0, le=1, description="share of training images with location annotation")
    steps: int = Field(3000, ge=0, description="training steps")
    batch_size: int = Field(32, gt=0, description="distinct images per step (per process)")
    mc: int = Field(10, gt=0, description="Monte-Carlo replicas of each image per step")
    seed: int = Field(0, ge=0, lt=2**32, description="random seed, 0 <= seed < 2**32")
    eval_every: int = Field(250, ge=0, description="steps between held-out evaluations (0: only at the end)")
    eval_n: int = Field(1000, gt=0, description="held-out test canvases per evaluation")
    eval_seed: int = Field(1, ge=0, lt=2**32, description="seed of the held-out test canvases")
    log_every: int = Field(50, gt=0, description="steps between training-metric lines")
    checkpoint_every: int = Field(0, ge=0, description="steps between checkpoints (0: at every evaluation)")


def train_schema() -> dict[str, Any]:
    """JSON Schema of the train spec, with each section's registered alternatives inlined."""
    from lgdram_cli.registry import DATASETS, LOSSES, MODELS

    schema = TrainSpec.model_json_schema()
    props = schema["properties"]
    props["dataset"] = {"oneOf": [c.Config.model_json_schema() for c in DATASETS.usable().values()]}
    props["model"] = {"oneOf": [c.Config.model_json_schema() for c in MODELS.usable().values()]}
    props["loss"] = {
        "type": "object",
        "properties": {name: c.Config.model_json_schema() for name, c in LOSSES.usable().items()},
        "additionalProperties": False,
    }
    return schema
