"""The `train` run spec: sections `dataset`, `model`, `loss`, `optim` plus run settings.

`--set` paths address the sections: `dataset.canvas=100`, `model.glimpses=8`,
`model.core=rnn`, `loss.location.gamma_start=1`, `optim.lr=1e-3`, `steps=3000`.
The `dataset`, `model` and each `loss.<name>` section are validated in a second stage by
the config model of the registry entry they name.
"""

from __future__ import annotations

import re
from typing import Any, Literal, Optional

from pydantic import Field, field_validator, model_validator

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
    annotations: float = Field(
        0.0, ge=0, le=1,
        description="share of training images with a location annotation: on the fly a fresh Bernoulli "
        "stream (the seed's), with --data that share of the file's images",
    )
    annotation_pool: Optional[int] = Field(
        None, ge=1,
        description="a fixed budget of annotated canvases instead of a share: on the fly a seeded pool "
        "of this many, reused throughout training; with --data this many of the file's images",
    )
    steps: int = Field(3000, ge=0, description="training steps")
    batch_size: int = Field(32, gt=0, description="distinct images per step (per process)")
    mc: int = Field(10, gt=0, description="Monte-Carlo replicas of each image per step")
    seed: int = Field(0, ge=0, lt=2**32, description="random seed, 0 <= seed < 2**32")
    eval_every: int = Field(250, ge=0, description="steps between held-out evaluations (0: only at the end)")
    eval_n: int = Field(1000, gt=0, description="held-out test canvases per evaluation")
    eval_seed: int = Field(1, ge=0, lt=2**32, description="seed of the held-out test canvases")
    log_every: int = Field(50, gt=0, description="steps between training-metric lines")
    checkpoint_every: int = Field(0, ge=0, description="steps between checkpoints (0: at every evaluation)")
    loggers: list[str] = Field(
        default_factory=lambda: ["jsonl"],
        description="metrics loggers, by registered name: jsonl, csv, tensorboard or a plugin's; jsonl "
        "(run.metrics.jsonl) is always on, because --resume and the results read it",
    )
    precision: Literal["fp32", "bf16"] = Field(
        "fp32",
        description="fp32, or bf16 mixed precision: bf16 matrix products on float32 master weights and "
        "optimizer state; heads, losses, log-probabilities and sampling in float32",
    )

    @model_validator(mode="before")
    @classmethod
    def _annotation_forms(cls, data: Any) -> Any:
        """`annotations` also takes the command line's forms: "1%" (a share) or a whole count
        ("100", or an integer in a spec file) for a fixed pool."""
        if isinstance(data, dict) and "annotations" in data:
            value = data["annotations"]
            if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                share, pool = parse_annotations(value)
                data = {**data, "annotations": share}
                if pool is not None:
                    data["annotation_pool"] = pool
        return data

    @field_validator("loggers")
    @classmethod
    def _jsonl_always_on(cls, names: list[str]) -> list[str]:
        from lgdram_cli.errors import UserError
        from lgdram_cli.registry import LOGGERS

        for name in names:
            try:
                LOGGERS.entry(name)  # a registered name or `module:Class`; loaded when the run starts
            except UserError as exc:
                raise ValueError(str(exc)) from None
        return list(dict.fromkeys(["jsonl", *names]))

    @model_validator(mode="after")
    def _one_budget(self) -> TrainSpec:
        if self.annotation_pool is not None and self.annotations:
            raise ValueError(
                f"give either a share of annotated images (annotations={self.annotations}) or a fixed "
                f"pool (annotation_pool={self.annotation_pool}), not both"
            )
        return self


def parse_annotations(text: str | float | int, name: str = "annotations") -> tuple[float, int | None]:
    """'1%' or 0.01 → (0.01, None), a share; '100' → (0.0, 100), a fixed pool of 100 annotated
    canvases; '0' → (0.0, None), plain reinforcement learning."""
    from lgdram_cli.errors import UserError

    s = str(text).strip()
    m = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)\s*%", s)
    if m:
        share = float(m.group(1)) / 100
        if share > 1:
            raise UserError(f"{name} {s}: a share must be between 0% and 100%")
        return share, None
    if re.fullmatch(r"\d+", s):
        return 0.0, (int(s) or None)
    if re.fullmatch(r"(0?\.\d+|1\.0*|0\.?)", s):
        return float(s), None
    raise UserError(f"{name} '{s}': use a share such as 1% or 0.5%, or a whole count such as 100")


def train_schema() -> dict[str, Any]:
    """JSON Schema of the train spec, with each section's registered alternatives inlined."""
    from lgdram_cli.registry import DATASETS, LOSSES, MODELS, plugin_description

    schema = TrainSpec.model_json_schema()
    props = schema["properties"]
    props["dataset"] = {"oneOf": [c.Config.model_json_schema() for c in DATASETS.usable().values()]}
    props["model"] = {"oneOf": [c.Config.model_json_schema() for c in MODELS.usable().values()]}
    on = ", ".join(DEFAULT_LOSS)
    terms = {}
    for name, c in LOSSES.usable().items():
        terms[name] = c.Config.model_json_schema()
        state = "on by default" if name in DEFAULT_LOSS else f"off by default; add it with --set loss.{name}.weight=W or --loss {name}"
        terms[name]["description"] = f"{plugin_description(c)} ({state})"
    props["loss"] = {
        "type": "object",
        "description": (
            f"hybrid loss: the sum of its terms, registered loss name → its config (weight, schedule, …). "
            f"On by default: {on} (weight 1 each). `--set loss.NAME.KEY=VALUE` (e.g. loss.rloo.weight=1) or "
            f"`--loss NAME[=WEIGHT]` adds a term to these or sets one of its parameters; `--set loss.NAME=null` "
            f"removes one; a spec file's [loss] table replaces the default terms"
        ),
        "default": {k: dict(v) for k, v in DEFAULT_LOSS.items()},
        "properties": terms,
        "additionalProperties": False,
    }
    return schema


def spec_diff(a: dict[str, Any], b: dict[str, Any], ignore: tuple[str, ...] = ()) -> list[str]:
    """The dotted keys whose values differ between two resolved train specs. A run setting that
    one spec lacks (written by an lgdram without it, e.g. `precision`) counts as its default."""
    from lgdram_cli.specs import flatten_spec

    defaults = {k: v for k, v in TrainSpec().model_dump(mode="json").items() if not isinstance(v, dict)}
    fa, fb = {**defaults, **flatten_spec(a)}, {**defaults, **flatten_spec(b)}
    return sorted(k for k in set(fa) | set(fb) if fa.get(k) != fb.get(k) and k.split(".")[0] not in ignore)
