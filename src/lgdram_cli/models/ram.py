"""RAM, the recurrent attention model of Mnih et al. (2014), and the parts DRAM shares with it.

One step: retina patches at l_t → glimpse network → recurrent core → h_t; the location
network reads h_t and proposes an action a_{t+1} ~ N(tanh(W·h_t), σ²); the next glimpse is
taken at l_{t+1} = clamp(a_{t+1}, −1, 1). The first glimpse is taken at the image centre
(0, 0), deterministically, so RAM makes P = T − 1 policy decisions.

log π is scored at the unclamped action a, not at the clamped l: near the border the clamp
piles probability mass onto ±1, and the score (l − μ)/σ² at the clamped value then has a
non-zero mean (−0.89/σ at μ = 0.9), a bias that pushes every policy mean away from the edge.
At a the score's mean is exactly 0 (tests/test_models.py checks it by Monte Carlo).

Gradient rules (the usual bugs of public RAM code, avoided on purpose):
- a sampled location is detached before it is fed to the next glimpse, so the policy gradient
  reaches the location network only through log π(l) = log N(l; mean, σ²);
- the baseline reads the core state detached, so it learns only from its own regression;
- the classifier reads the core state and trains the core and glimpse network.

Two implementations of RAM's loop: the step-by-step autograd code here (the reference; used for
evaluation, export, the conv sensor and subclasses that replace a part) and, while gradients
are recorded, `unroll.GlimpseLoop` — the same arithmetic with a hand-written backward that
batches the glimpse network's gradients over all glimpses. Tests hold the two equal.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import model_validator
from torch import nn

from lgdram_cli.errors import UserError
from lgdram_cli.models.base import Model, ModelConfig, ModelOutput
from lgdram_cli.models.cores import Core, CoreName
from lgdram_cli.models.precision import autocasting, fp32
from lgdram_cli.models.retina import Retina, exporting
from lgdram_cli.models.unroll import GlimpseLoop, LoopPlan, weights_of

#: Largest patch side allowed, as a multiple of the larger canvas side.
MAX_PATCH_OVER_CANVAS = 4


class AttentionConfig(ModelConfig):
    """Hyper-parameters shared by RAM and DRAM (defaults: Mnih et al.'s 60×60 cluttered setup)."""

    type: str = "ram"
    glimpses: int = 6
    glimpse_size: int = 12
    scales: int = 3
    scale_factor: int = 2
    hidden: int = 256
    glimpse_hidden: int = 128
    loc_std: float = 0.11
    #: policy means are loc_range·tanh(W·h): 0.8 is the LG-DRAM seed's `convert_ratio`, which
    #: keeps a saturated policy's glimpses on the image; with 1.0 a policy whose tanh saturates
    #: at a corner looks at zero padding and gets no gradient back (docs/results.md)
    loc_range: float = 1.0
    sensor: Literal["fc", "conv"] = "fc"
    core: CoreName = "lstm"
    #: how the glimpse network merges "what" and "where": "sum" (Mnih et al. 2014, the seed's
    #: code) or "product" (Ba et al. 2014: ReLU(what) ⊙ ReLU(where))
    glimpse_combine: Literal["sum", "product"] = "sum"

    @model_validator(mode="after")
    def _check(self) -> AttentionConfig:
        for name in ("glimpses", "glimpse_size", "scales", "scale_factor", "hidden", "glimpse_hidden"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not (self.loc_std > 0 and math.isfinite(self.loc_std)):
            raise ValueError(f"loc_std must be a positive number, got {self.loc_std}")
        if self.loc_std > 2:
            raise ValueError(f"loc_std {self.loc_std} exceeds the whole [-1, 1] location range; use <= 2")
        if not 0 < self.loc_range <= 1:
            raise ValueError(f"loc_range must be in (0, 1], got {self.loc_range}")
        return self


class GlimpseNetwork(nn.Module):
    """g = ReLU(A·what(patches) + B·where(l)), what/where each one ReLU layer of `glimpse_hidden`;
    with combine="product" (Ba et al. 2014), g = ReLU(A·what(patches) + a) ⊙ ReLU(B·where(l)).

    sensor="fc": `what` is a linear layer on the flattened patches; sensor="conv": two small
    convolutions (16, 32 channels, the second with stride 2) then a linear projection.
    """

    def __init__(
        self, in_channels: int, size: int, glimpse_hidden: int, hidden: int, sensor: str, combine: str = "sum"
    ) -> None:
        super().__init__()
        self.combine = combine
        if sensor == "fc":
            self.what: nn.Module = nn.Sequential(nn.Flatten(), nn.Linear(in_channels * size * size, glimpse_hidden))
        else:
            half = (size + 1) // 2
            self.what = nn.Sequential(
                nn.Conv2d(in_channels, 16, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(16, 32, 3, stride=2, padding=1),
                nn.ReLU(),
                nn.Flatten(),
                nn.Linear(32 * half * half, glimpse_hidden),
            )
        self.where = nn.Linear(2, glimpse_hidden)
        self.what_out = nn.Linear(glimpse_hidden, hidden)
        self.where_out = nn.Linear(glimpse_hidden, hidden, bias=False)  # one bias is enough

    def forward(self, patches: torch.Tensor, loc: torch.Tensor) -> torch.Tensor:
        what = self.what_out(F.relu(self.what(patches)))
        where = F.relu(self.where(loc))
        if self.combine == "product":
            return F.relu(what) * F.relu(self.where_out(where))
        return F.relu(torch.addmm(what, where, self.where_out.weight.t()))


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, std: float) -> torch.Tensor:
    """log N(x; mean, std²) summed over the last axis (= Normal(mean, std).log_prob(x).sum(-1))."""
    const = math.log(std) + 0.5 * math.log(2 * math.pi)
    return (-((x - mean) ** 2) / (2 * std * std) - const).sum(-1)


class AttentionModel(Model):
    """Shared parts of RAM and DRAM: retina, glimpse network, location/baseline/classifier heads."""

    Config: ClassVar[type[AttentionConfig]] = AttentionConfig
    config: AttentionConfig

    def __init__(self, config: AttentionConfig, *, channels: int, size: tuple[int, int], classes: int) -> None:
        super().__init__(config, channels=channels, size=size, classes=classes)
        c = config
        widest = c.glimpse_size * c.scale_factor ** (c.scales - 1)
        if widest > MAX_PATCH_OVER_CANVAS * max(size):
            raise UserError(
                f"the largest glimpse patch is {widest} px wide (glimpse_size {c.glimpse_size} × "
                f"scale_factor {c.scale_factor}^{c.scales - 1}), more than {MAX_PATCH_OVER_CANVAS}× the "
                f"{size[0]}x{size[1]} canvas; lower scales, scale_factor or glimpse_size"
            )
        self.retina = Retina(c.glimpse_size, c.scales, c.scale_factor)
        self.glimpse = GlimpseNetwork(
            channels * c.scales, c.glimpse_size, c.glimpse_hidden, c.hidden, c.sensor, c.glimpse_combine
        )
        self.locator = nn.Linear(c.hidden, 2)  # mean = tanh(locator(h))
        self.baseline = nn.Linear(c.hidden, 1)  # reads detached states only
        self.classifier = nn.Linear(c.hidden, classes)

    def _noise(self, n: int, steps: int, like: torch.Tensor, deterministic: bool) -> torch.Tensor | None:
        """All exploration noise of a forward pass, drawn at once (σ·ε, [n, steps, 2])."""
        if deterministic or steps == 0:
            return None
        return torch.randn(n, steps, 2, device=like.device, dtype=like.dtype) * self.config.loc_std

    @staticmethod
    def _rows(images: torch.Tensor, replicas: int) -> int:
        """Rows of the output: every image `replicas` times."""
        if replicas < 1:
            raise ValueError(f"replicas must be a positive integer, got {replicas}")
        return images.shape[0] * replicas

    def policy_mean(self, h: torch.Tensor) -> torch.Tensor:
        """The location policy's mean for state `h`: loc_range·tanh(W·h + b), in float32."""
        mean = torch.tanh(fp32(self.locator, h))
        return mean if self.config.loc_range == 1.0 else mean * self.config.loc_range

    @staticmethod
    def _act(mean: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        """The action: the mean, or a sample mean + σ·ε, detached either way and NOT clamped
        (log π is scored here; `look` clamps it to where the retina can read)."""
        mean = mean.detach()
        return mean if noise is None else mean + noise

    @staticmethod
    def look(action: torch.Tensor) -> torch.Tensor:
        """Where a glimpse is taken for `action`: clamped to the image, [-1, 1]."""
        return action.clamp(-1.0, 1.0)

    def _output(
        self,
        states: torch.Tensor,
        decision_states: torch.Tensor,
        means: torch.Tensor,
        locations: torch.Tensor,
        final: torch.Tensor | None = None,
        baselines: torch.Tensor | None = None,
        actions: torch.Tensor | None = None,
    ) -> ModelOutput:
        """Heads applied to all steps at once (one matmul each, not one per step); inputs are
        time-major: the T `states` [T, n, hidden] feed the classifier, the P `decision_states`
        [P, n, hidden] the baseline, and the P decisions (`means` [P, n, 2]) chose the last P of
        the T `locations` [T, n, 2]; `final` (default: the last state) feeds the prediction;
        `baselines` [P, n], when given, were already computed (RAM's fused loop does);
        `actions` [P, n, 2] are the unclamped samples (default: the last P locations).
        Outputs are row-major ([n, T, …]), as `ModelOutput` says.
        """
        # Per-glimpse predictions are for evaluation and pictures; training needs only the final
        # one, and skipping the rest saves a skinny [n·T, hidden] × [hidden, classes] matmul pair.
        step_logits = None if self.training else fp32(self.classifier, states).transpose(0, 1).contiguous()
        if step_logits is None:
            logits = fp32(self.classifier, states[-1] if final is None else final)
        else:
            logits = step_logits[:, -1]
        where = locations.transpose(0, 1).contiguous()  # [n, T, 2]
        n = logits.shape[0]
        if means.shape[0]:
            mean = means.transpose(0, 1).contiguous()  # [n, P, 2]
            if baselines is None:  # detached: the baseline learns only from its regression
                baselines = fp32(self.baseline, decision_states.detach()).squeeze(-1)
            baselines = baselines.t().contiguous()
        else:  # a single-glimpse RAM makes no decision
            mean = logits.new_zeros(n, 0, 2)
            baselines = logits.new_zeros(n, 0)
        if actions is None:
            act = where[:, where.shape[1] - mean.shape[1] :]
        else:
            act = actions.transpose(0, 1).contiguous() if actions.shape[0] else mean.detach()
        return ModelOutput(
            logits=logits,
            step_logits=step_logits,
            locations=where,
            means=mean,
            log_probs=gaussian_log_prob(act, mean, self.config.loc_std),
            baselines=baselines,
            actions=act,
        )


class RAMConfig(AttentionConfig):
    """RAM's options: `start` is where the first glimpse goes while training ("centre", or
    "random": uniform over the image, which explores more; evaluation always starts at the centre)."""

    start: Literal["centre", "random"] = "centre"


class RAM(AttentionModel):
    """Recurrent attention model (Mnih et al. 2014): one core, first glimpse at the centre."""

    Config: ClassVar[type[RAMConfig]] = RAMConfig
    config: RAMConfig

    description: ClassVar[str] = "recurrent attention model (Mnih et al. 2014), first glimpse at the centre"

    def __init__(self, config: AttentionConfig, *, channels: int, size: tuple[int, int], classes: int) -> None:
        super().__init__(config, channels=channels, size=size, classes=classes)
        self.core = Core(config.core, config.hidden, config.hidden)

    #: Train through `unroll.GlimpseLoop` (same numbers, hand-written batched backward) when the
    #: parts are the built-in ones; subclasses that change any part fall back to autograd.
    fused: bool = True
    #: In the fused loop, compute a fixed first glimpse once per image rather than once per
    #: Monte-Carlo replica (the same numbers; off only to measure the plain model's work).
    share_first: bool = True

    def _can_fuse(self) -> bool:
        return (
            self.fused
            and self.training
            and torch.is_grad_enabled()
            and not exporting()
            and self.config.sensor == "fc"
            and self.config.glimpse_combine == "sum"
            and type(self.glimpse) is GlimpseNetwork
            and type(self.retina) is Retina
            and type(self.core) is Core
            and type(self.locator) is nn.Linear
            and type(self.baseline) is nn.Linear
            and type(self)._act is AttentionModel._act
            and type(self).policy_mean is AttentionModel.policy_mean
        )

    def _operands(self, images: torch.Tensor) -> torch.dtype | None:
        """The fused loop's product operands: the autocast dtype inside an autocast region
        (`precision = "bf16"`), else the weights' own (None)."""
        return torch.get_autocast_dtype(images.device.type) if autocasting(images) else None

    def forward(self, images: torch.Tensor, deterministic: bool = False, replicas: int = 1) -> ModelOutput:
        """`images` [B, C, H, W]; with `replicas` M every image is run M times (rows r·M … r·M+M−1)."""
        T = self.config.glimpses
        n = self._rows(images, replicas)
        sensed = self.retina.prepare(images, reuse=True)  # the pyramid is built for the B distinct images only
        noise = self._noise(n, T - 1, images, deterministic)
        loc = images.new_zeros(n, 2)  # first glimpse: the image centre ...
        if self.config.start == "random" and not deterministic:  # ... or anywhere, to explore
            loc = torch.rand(n, 2, device=images.device, dtype=images.dtype) * 2 - 1
        if self._can_fuse():
            # a fixed first location is the same for every replica of an image: one glimpse per image
            shared = self.share_first and replicas > 1 and (self.config.start == "centre" or deterministic)
            plan = LoopPlan(
                self.retina, sensed, replicas, T, self.config.core, shared_first=shared,
                loc_range=self.config.loc_range, operands=self._operands(images),
            )
            # the loop chooses its own dtypes (bf16 products, float32 state and heads)
            with torch.autocast(images.device.type, enabled=False):
                H, last, M, L, baselines = GlimpseLoop.apply(plan, loc, noise, *weights_of(self))
            # the loop reads clamp(M + noise); log π is scored at the unclamped M + noise
            actions = M.detach() if noise is None else M.detach() + noise.transpose(0, 1)
            return self._output(H, H[:-1], M, L, final=last, baselines=baselines, actions=actions)
        state = self.core.init_state()
        states, means, locations, actions = [], [], [loc], []
        for t in range(T):
            g = self.glimpse(self.retina.glimpse(sensed, loc, replicas), loc)
            h, state = self.core(g, state)
            states.append(h)
            if t < T - 1:
                means.append(self.policy_mean(h))
                actions.append(self._act(means[-1], None if noise is None else noise[:, t]))
                loc = self.look(actions[-1])
                locations.append(loc)
        H = torch.stack(states)
        none = H.new_zeros(0, n, 2)
        return self._output(
            H, H[:-1], torch.stack(means) if means else none, torch.stack(locations),
            actions=torch.stack(actions) if actions else none,
        )
