"""The model half of the runtime contract: what a forward pass returns, and what RAM's parts are.

`check_output` is run on every model before training starts (and by `lgdram.testing`).

The protocols below are the parts an attention model (`RAM`, `DRAM`) is assembled from, as
attributes of the model. Replace one in a subclass's `__init__` (after `super().__init__`) and
the rest of RAM keeps working; `lgdram.testing.check_model` checks the parts' shapes too.
Shapes: n rows = B images × M replicas, C channels, S scales, g = glimpse_size.

| attribute | protocol | call |
|---|---|---|
| `self.retina` | `RetinaProtocol` | `state = prepare(images [B, C, H, W], reuse=False)`; `glimpse(state, loc [n, 2], replicas) → [n, S·C, g, g]` (row r reads image r // M) |
| `self.glimpse` | `GlimpseNetworkProtocol` | `glimpse(patches [n, S·C, g, g], loc [n, 2]) → g_t [n, hidden]` |
| `self.core` | `CoreProtocol` | `init_state() → None` (the zero state); `core(g_t [n, hidden], state) → (h [n, hidden], state)` |
| the model's methods | `LocationPolicyProtocol` | `policy_mean(h [n, hidden]) → mean [n, 2]` in [-1, 1] (with gradient); `_act(mean, noise [n, 2] or None) → action` (detached, unclamped); `look(action) → loc [n, 2]` in [-1, 1] |
| `self.locator` | (an `nn.Module`) | what the built-in `policy_mean` reads: `locator(h) → [n, 2]` before the tanh |
| DRAM's `self.context` | `ContextNetworkProtocol` | `context(images [B, C, H, W]) → [B, hidden]`, the top layer's first state |

Locations follow `lgdram_cli.geometry`: (x, y) in [-1, 1], x horizontal, the `grid_sample`
convention (align_corners=False). A sampled location is detached before it is fed back; the
policy gradient reaches the location network only through `log_probs` (scored at the
unclamped action).
"""

from __future__ import annotations

from typing import Any, Optional, Protocol, runtime_checkable

import torch

from lgdram_cli.errors import UserError
from lgdram_cli.models.base import ModelOutput


@runtime_checkable
class RetinaProtocol(Protocol):
    """`self.retina`: multi-resolution patches around locations.

    `prepare` is called once per forward pass with the B distinct images; `glimpse` once per
    glimpse with the n = B·M rows' locations. The built-in `Retina` (area-averaged square
    patches, pixels outside the image read zero) is the reference."""

    def prepare(self, images: torch.Tensor, reuse: bool = False) -> Any:
        """Whatever `glimpse` needs from `images` [B, C, H, W] (float in [0, 1]); `reuse`: the
        caller no longer needs the previous state of the same shape (it may be overwritten)."""
        ...

    def glimpse(self, state: Any, loc: torch.Tensor, replicas: int = 1) -> torch.Tensor:
        """Patches at `loc` [n, 2] (x, y in [-1, 1]; row r reads image r // replicas) →
        [n, scales·C, g, g], scale-major then channel. No gradient is needed."""
        ...


@runtime_checkable
class GlimpseNetworkProtocol(Protocol):
    """`self.glimpse`: patches and their location → the glimpse feature g_t the core reads.

    Built in: `GlimpseNetwork`, g = ReLU(A·what(patches) + B·where(loc)) ("sum") or
    ReLU(what) ⊙ ReLU(where) ("product"). An `nn.Module` whose forward is:"""

    def __call__(self, patches: torch.Tensor, loc: torch.Tensor) -> torch.Tensor:
        """`patches` [n, scales·C, g, g] (flatten them yourself for a linear layer), `loc` [n, 2]
        → [n, hidden] (the model's `hidden`, what the core takes)."""
        ...


@runtime_checkable
class CoreProtocol(Protocol):
    """`self.core` (and DRAM's `self.top`): one recurrent step. Built in: `Core` (lstm, gru, rnn).

    The state is whatever the core likes (the built-in one: a tuple of tensors); the model only
    passes it back. `init_state()` returns None, the zero state, and `forward(x, None)` must
    accept it; DRAM also calls `init_state(h)` to start its top layer at the context vector."""

    def init_state(self, h: Optional[torch.Tensor] = None) -> Any:
        """None for the zero state; with `h` [n, hidden], a state whose output is `h`."""
        ...

    def __call__(self, x: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        """`x` [n, input] and the previous state → (h [n, hidden], the new state)."""
        ...


@runtime_checkable
class LocationPolicyProtocol(Protocol):
    """Where to look next: methods of the attention model itself (override them in a subclass).

    The next glimpse is `look(_act(policy_mean(h), noise))`; `log_probs` is
    log N(action; mean, loc_std²), so `policy_mean` carries the policy gradient and the action
    must not (detach it)."""

    def policy_mean(self, h: torch.Tensor) -> torch.Tensor:
        """The policy's mean for states `h` [n, hidden] → [n, 2] in [-1, 1], float32, with
        gradient (built in: loc_range·tanh(locator(h)))."""
        ...

    def _act(self, mean: torch.Tensor, noise: Optional[torch.Tensor]) -> torch.Tensor:
        """The action for `mean` [n, 2]: the mean itself (noise None, deterministic) or mean +
        noise (σ·ε, [n, 2]); detached, not clamped (log π is scored here). A staticmethod in RAM."""
        ...

    def look(self, action: torch.Tensor) -> torch.Tensor:
        """Where the glimpse for `action` is taken: [n, 2] in [-1, 1] (built in: a clamp)."""
        ...


@runtime_checkable
class ContextNetworkProtocol(Protocol):
    """DRAM's `self.context`: the coarse whole image → the top layer's initial state, which
    chooses the first glimpse (so DRAM makes P = T decisions, RAM P = T − 1)."""

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """`images` [B, C, H, W] → [B, hidden] (in (-1, 1) for LSTM/GRU cores)."""
        ...


#: attribute → protocol, for the conformance kit's checks of a model's parts.
PARTS: dict[str, type] = {
    "retina": RetinaProtocol,
    "glimpse": GlimpseNetworkProtocol,
    "core": CoreProtocol,
    "context": ContextNetworkProtocol,
}


def check_output(out: Any, rows: int, classes: int, replicas: int | None = None) -> str | None:
    """None when a forward pass's output honours the ModelOutput conventions for `rows` = B·M
    rows, else what is wrong."""
    if not isinstance(out, ModelOutput):
        return f"forward returned {type(out).__name__}, not a ModelOutput"
    rule = ""
    if replicas is not None:
        rule = (
            f" (one row per image and replica: B·M = {rows // replicas}·{replicas}; `forward(images, "
            f"replicas=M)` repeats each image M times in a row, rows r·M … r·M + M − 1 for image r)"
        )
    if not isinstance(out.logits, torch.Tensor) or tuple(out.logits.shape) != (rows, classes):
        shape = tuple(out.logits.shape) if isinstance(out.logits, torch.Tensor) else type(out.logits).__name__
        return f"logits have shape {shape}, expected {(rows, classes)}{rule}"
    if out.locations is not None and (out.locations.dim() != 3 or out.locations.shape[0] != rows or out.locations.shape[2] != 2):
        return f"locations have shape {tuple(out.locations.shape)}, expected [{rows}, T, 2]{rule}"
    if out.log_probs is not None:
        if out.means is None or out.baselines is None:
            return "log_probs without means and baselines"
        P = out.means.shape[1]
        if tuple(out.means.shape) != (rows, P, 2) or tuple(out.log_probs.shape) != (rows, P) or tuple(out.baselines.shape) != (rows, P):
            return (
                f"means {tuple(out.means.shape)}, log_probs {tuple(out.log_probs.shape)} and baselines "
                f"{tuple(out.baselines.shape)} disagree: expected [{rows}, P, 2], [{rows}, P], [{rows}, P]"
            )
    return None


def origin_of(model: Any) -> str:
    """How messages name a model: "model 'x' from 'lgdram-x 0.1.0'" when built from the registry."""
    return getattr(model, "origin", None) or f"model class {type(model).__qualname__}"


def require_output(model: Any, out: Any, rows: int, classes: int, replicas: int | None = None) -> Any:
    """`out` when it honours the contract, else a UserError naming the plugin."""
    problem = check_output(out, rows, classes, replicas)
    if problem:
        raise UserError(f"{origin_of(model)}: {problem}")
    return out
