"""Loss terms (entry-point group `lgdram.losses`) and the hybrid loss that sums them.

All the REINFORCE and location-guidance arithmetic lives here, in small functions:

    reward      r    = 1[argmax logits == label]                      (no gradient)
    advantage   A_t  = r − b_t.detach()        (reinforce: learned baseline b_t)
                A    = r − mean(r of the other M−1 replicas)          (rloo)
    policy      L_π  = −mean_{batch, t} log π(a_t) · A_t  (gradient reaches the location net
                                                            only through log π, via the means;
                                                            a_t is the unclamped sampled action)
    baseline    L_b  = mean (b_t − r)²                    (trains the baseline head only)
    location    L_lg = γ(step) · (1/D) Σ_rows annotated_i · Σ_t ‖mean_t − centre‖²
                D    = all N rows of the batch (normalize="batch", the seed's) or the
                       annotated rows only (normalize="annotated")
                γ(step) = max(γ_min, γ_0 · decay^(step // decay_every))

Every term's `value` is already multiplied by its `weight` (and γ): the total is their sum.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import model_validator

from lgdram_cli import PLUGIN_API_VERSION
from lgdram_cli.errors import UserError, unknown_name
from lgdram_cli.models.base import ModelOutput
from lgdram_cli.registry import LOSSES, own_description
from lgdram_cli.specs import StrictModel, validate


@dataclass
class LossBatch:
    """Targets for one batch of N rows; the M replicas of an image are contiguous (row r → image r // M)."""

    labels: torch.Tensor  # int64 [N]
    centers: torch.Tensor  # float32 [N, 2]: annotated target centre (x, y) in [-1, 1]
    annotated: torch.Tensor  # bool [N]: whether `centers` is known for that row
    replicas: int = 1
    boxes: torch.Tensor | None = None  # float32 [N, 4]: target box (x0, y0, x1, y1) in pixels, when known
    size: tuple[int, int] | None = None  # canvas (H, W) in pixels, to relate `boxes` to locations


@dataclass
class LossTerm:
    value: torch.Tensor  # scalar, weight (and schedule) already applied
    #: numbers to log; give scalar tensors rather than calling `.item()`: the trainer reads all
    #: of a step's metrics at once, one host–device synchronisation per step on a GPU
    metrics: dict[str, float | torch.Tensor] = field(default_factory=dict)


def read_metrics(metrics: Mapping[str, float | torch.Tensor]) -> dict[str, float]:
    """Plain floats for every metric; the tensors among them are copied to the host together."""
    names = [k for k, v in metrics.items() if torch.is_tensor(v)]
    floats = {k: float(v) for k, v in metrics.items() if not torch.is_tensor(v)}
    if names:
        device = metrics[names[0]].device  # type: ignore[union-attr]
        # one stack (dtypes promote) and one copy to the host; .to is a no-op on the same device
        stacked = torch.stack([metrics[k].detach().reshape(()).to(device) for k in names])  # type: ignore[union-attr]
        floats.update(zip(names, stacked.tolist()))
    return {k: floats[k] for k in metrics}


# --- the arithmetic -----------------------------------------------------------------------


def correct(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The REINFORCE reward: 1.0 where the final prediction is right, else 0.0 (no gradient)."""
    return (logits.detach().argmax(-1) == labels).to(logits.dtype)


def policy_loss(log_probs: torch.Tensor, advantage: torch.Tensor) -> torch.Tensor:
    """−mean over rows and decisions of log π(l_t)·A_t; `advantage` [N, P] or [N, 1] carries no gradient.

    The mean over the P decisions (not their sum, as the estimator is usually written) keeps the
    policy term's scale independent of the number of glimpses. It matters: with the sum, the
    policy gradient outweighs the classifier's under global-norm clipping and plain REINFORCE on
    cmnist-60 reached 40 % at step 3,000 instead of ~75 % (README, "Learning").
    """
    if log_probs.numel() == 0:
        return log_probs.sum()
    return -(log_probs * advantage).mean()


def baseline_loss(baselines: torch.Tensor, reward: torch.Tensor) -> torch.Tensor:
    """Mean squared error of the predicted rewards [N, P] (zero when there is no decision)."""
    if baselines.numel() == 0:
        return baselines.sum()
    return ((baselines - reward[:, None]) ** 2).mean()


def leave_one_out(reward: torch.Tensor, replicas: int) -> torch.Tensor:
    """Per row, the mean reward of the other M−1 replicas of the same image."""
    r = reward.view(-1, replicas)
    return ((r.sum(1, keepdim=True) - r) / (replicas - 1)).reshape(-1)


def location_error(
    means: torch.Tensor, centers: torch.Tensor, annotated: torch.Tensor, normalize: str = "annotated"
) -> torch.Tensor:
    """Σ_t ‖mean_t − centre‖² summed over annotated rows, divided by the number of annotated
    rows (`normalize="annotated"`) or of all rows (`"batch"`); exactly 0 (not NaN) when no row
    is annotated.

    "batch" is the LG-DRAM seed's rule: the term's expected weight scales with the annotated
    share, so 1 % annotations give a steady, weak pull. "annotated" gives every batch that holds
    an annotated image the full-strength term: spiky at small shares (at 1 % and batch 32, about
    27 % of batches pull with the weight of a fully annotated one).

    Unannotated rows may hold any centre, NaN included: it is replaced before any arithmetic,
    since NaN·0 would still poison the value and the gradient.
    """
    centers = torch.where(annotated[:, None], centers, torch.zeros_like(centers))
    per_row = ((means - centers[:, None, :]) ** 2).sum(dim=(1, 2))  # [N]
    mask = annotated.to(per_row.dtype)
    if normalize == "batch":
        return (per_row * mask).sum() / max(per_row.shape[0], 1)
    return (per_row * mask).sum() / mask.sum().clamp(min=1.0)


def gamma_at(step: int, start: float, decay: float, every: int, minimum: float) -> float:
    """The location-guidance weight γ at `step`: stepwise exponential decay, floored at `minimum`."""
    return max(minimum, start * decay ** (step // every))


# --- the plugin contract ------------------------------------------------------------------


class LossConfig(StrictModel):
    """Base of every loss config."""

    weight: float = 1.0

    @model_validator(mode="after")
    def _check_weight(self) -> LossConfig:
        if not (math.isfinite(self.weight) and self.weight >= 0):
            raise ValueError(f"weight must be a finite number >= 0, got {self.weight}")
        return self


class Loss:
    """A loss term. Subclasses set `Config` and `description` and implement `__call__`."""

    plugin_api_version: ClassVar[int] = PLUGIN_API_VERSION
    Config: ClassVar[type[LossConfig]] = LossConfig
    #: one line for `lgdram plugins`; default: the first line of the class's own docstring
    description: ClassVar[str] = ""
    name: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own_description(cls)

    def __init__(self, config: LossConfig | None = None) -> None:
        self.config = config if config is not None else self.Config()

    def __call__(self, out: ModelOutput, batch: LossBatch, step: int) -> LossTerm:  # pragma: no cover
        raise NotImplementedError

    def _needs(self, out: ModelOutput, *fields: str) -> None:
        """Refuse outputs without policy fields (a whole-image model) with a clear message."""
        if any(getattr(out, f) is None for f in fields):
            raise UserError(
                f"loss '{self.name}' needs an attention model (ram, dram): this model makes no glimpse decisions"
            )


class ClassificationLoss(Loss):
    """Cross-entropy of the final prediction."""

    name = "classification"
    description: ClassVar[str] = "cross-entropy of the final prediction"

    def __call__(self, out: ModelOutput, batch: LossBatch, step: int) -> LossTerm:
        ce = F.cross_entropy(out.logits, batch.labels)
        accuracy = correct(out.logits, batch.labels).mean()
        return LossTerm(self.config.weight * ce, {"ce": ce.detach(), "accuracy": accuracy})


class ReinforceConfig(LossConfig):
    #: weight of the baseline regression relative to the policy term (both inside this term)
    baseline_weight: float = 1.0


class ReinforceLoss(Loss):
    """REINFORCE with a learned per-step baseline; the baseline's regression is part of this term."""

    name = "reinforce"
    Config: ClassVar[type[ReinforceConfig]] = ReinforceConfig
    config: ReinforceConfig
    description: ClassVar[str] = "REINFORCE (reward = correct) with a learned baseline + its MSE"

    def __call__(self, out: ModelOutput, batch: LossBatch, step: int) -> LossTerm:
        self._needs(out, "log_probs", "baselines")
        reward = correct(out.logits, batch.labels)
        advantage = reward[:, None] - out.baselines.detach()
        pol = policy_loss(out.log_probs, advantage)
        mse = baseline_loss(out.baselines, reward)
        value = self.config.weight * (pol + self.config.baseline_weight * mse)
        return LossTerm(value, {"reward": reward.mean(), "policy": pol.detach(), "baseline_mse": mse.detach()})


class LocationConfig(LossConfig):
    #: divide the summed squared error by all rows ("batch", the seed's) or by annotated rows
    normalize: Literal["batch", "annotated"] = "batch"
    gamma_start: float = 1.0
    decay: float = 0.97
    #: steps between decays: 0.97^(step/100) halves γ about every 2,300 steps, so the guidance
    #: shapes early training and fades over the usual 10k–100k steps
    decay_every: int = 100
    gamma_min: float = 0.0

    @model_validator(mode="after")
    def _check_schedule(self) -> LocationConfig:
        if not 0 < self.decay <= 1:
            raise ValueError(f"decay must be in (0, 1], got {self.decay}")
        if self.decay_every < 1:
            raise ValueError(f"decay_every must be at least 1, got {self.decay_every}")
        if self.gamma_start < 0 or self.gamma_min < 0:
            raise ValueError("gamma_start and gamma_min must be >= 0")
        return self


class LocationLoss(Loss):
    """Location guidance: pull every policy mean towards the annotated target centre, weight γ(step)."""

    name = "location"
    Config: ClassVar[type[LocationConfig]] = LocationConfig
    config: LocationConfig
    description: ClassVar[str] = "location guidance: squared distance of the policy means to the target centre"

    def gamma(self, step: int) -> float:
        c = self.config
        return gamma_at(step, c.gamma_start, c.decay, c.decay_every, c.gamma_min)

    def __call__(self, out: ModelOutput, batch: LossBatch, step: int) -> LossTerm:
        self._needs(out, "means")
        gamma = self.gamma(step)
        err = location_error(out.means, batch.centers.to(out.means.dtype), batch.annotated, self.config.normalize)
        # "error" is 0.0 when no row is annotated (see "annotated", the fraction that is)
        metrics = {"gamma": gamma, "error": err.detach(), "annotated": batch.annotated.float().mean()}
        return LossTerm(self.config.weight * gamma * err, metrics)


class RLOOLoss(Loss):
    """REINFORCE leave-one-out: each replica's baseline is the mean reward of the other M−1."""

    name = "rloo"
    description: ClassVar[str] = "REINFORCE with a leave-one-out baseline over the M replicas (M >= 2)"

    def __call__(self, out: ModelOutput, batch: LossBatch, step: int) -> LossTerm:
        self._needs(out, "log_probs")
        m = batch.replicas
        if m < 2:
            raise UserError(f"loss 'rloo' needs at least 2 replicas per image (set replicas >= 2), got {m}")
        if batch.labels.shape[0] % m:
            raise UserError(f"loss 'rloo': {batch.labels.shape[0]} rows are not a multiple of replicas {m}")
        reward = correct(out.logits, batch.labels)
        advantage = (reward - leave_one_out(reward, m))[:, None]
        pol = policy_loss(out.log_probs, advantage)
        return LossTerm(self.config.weight * pol, {"reward": reward.mean(), "policy": pol.detach()})


#: The built-in terms by registry name (the same table pyproject's entry points declare).
BUILTIN_LOSSES: dict[str, type[Loss]] = {
    cls.name: cls for cls in (ClassificationLoss, ReinforceLoss, LocationLoss, RLOOLoss)
}


class HybridLoss:
    """The sum of named loss terms, e.g. {"classification": {}, "reinforce": {}, "location": {"weight": 0.5}}.

    Classes come from the `lgdram.losses` registry, or from `classes` when given (tests, embedding).
    """

    def __init__(
        self, spec: Mapping[str, Mapping[str, Any] | None], classes: Mapping[str, type[Loss]] | None = None
    ) -> None:
        if not spec:
            raise UserError("no loss terms given; e.g. classification, reinforce, location")
        self.terms: dict[str, Loss] = {}
        for name, cfg in spec.items():
            if classes is None:
                cls = LOSSES.get(name)
            elif name in classes:
                cls = classes[name]
            else:
                raise unknown_name("loss", name, classes)
            self.terms[name] = cls(validate(cls.Config, dict(cfg or {}), where=f"loss.{name}"))

    def __call__(self, out: ModelOutput, batch: LossBatch, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """(total loss, metrics): `loss/<name>` per term, `<name>/<metric>`, and `loss/total`."""
        total, metrics = self.unread(out, batch, step)
        return total, read_metrics(metrics)

    def unread(
        self, out: ModelOutput, batch: LossBatch, step: int
    ) -> tuple[torch.Tensor, dict[str, float | torch.Tensor]]:
        """As `__call__`, with the metrics not yet read from the device (see `read_metrics`)."""
        total: torch.Tensor | None = None
        metrics: dict[str, float | torch.Tensor] = {}
        for name, term in self.terms.items():
            result = term(out, batch, step)
            total = result.value if total is None else total + result.value
            metrics[f"loss/{name}"] = result.value.detach()
            metrics.update({f"{name}/{k}": v for k, v in result.metrics.items()})
        assert total is not None
        metrics["loss/total"] = total.detach()
        return total, metrics
