"""Reference RAM training step in the style of the most-used public PyTorch RAM code.

A plain re-implementation of that design, for timing only: the retina crops every image of the
batch in a Python loop (pad, slice, then `avg_pool2d` per larger scale), the glimpse network
has separate what/where FC layers, the core is Mnih et al.'s ReLU RNN, the location and
baseline networks read the detached state, and the loss is NLL + REINFORCE + baseline MSE.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def crop(images: torch.Tensor, loc: torch.Tensor, size: int) -> torch.Tensor:
    """Per-image loop: square patches of `size` centred at `loc` (in [-1, 1]), zero outside."""
    B, C, H, W = images.shape
    centre = (0.5 * ((loc + 1.0) * torch.tensor([W, H], dtype=loc.dtype))).long()
    start = centre - size // 2
    padded = F.pad(images, (size // 2, size // 2, size // 2, size // 2))
    patches = []
    for i in range(B):
        x, y = int(start[i, 0]) + size // 2, int(start[i, 1]) + size // 2
        patches.append(padded[i, :, y : y + size, x : x + size])
    return torch.stack(patches)


def retina(images: torch.Tensor, loc: torch.Tensor, g: int, k: int, s: int) -> torch.Tensor:
    phi = []
    size = g
    for _ in range(k):
        phi.append(crop(images, loc, size))
        size *= s
    for i in range(1, len(phi)):
        phi[i] = F.avg_pool2d(phi[i], phi[i].shape[-1] // g)
    return torch.cat(phi, 1).flatten(1)


class ReferenceRAM(nn.Module):
    def __init__(self, g: int = 12, k: int = 3, s: int = 2, c: int = 1, h_g: int = 128, h_l: int = 128,
                 hidden: int = 256, classes: int = 10, std: float = 0.11):
        super().__init__()
        self.g, self.k, self.s, self.std = g, k, s, std
        self.fc1 = nn.Linear(k * g * g * c, h_g)
        self.fc2 = nn.Linear(2, h_l)
        self.fc3 = nn.Linear(h_g, hidden)
        self.fc4 = nn.Linear(h_l, hidden)
        self.i2h = nn.Linear(hidden, hidden)
        self.h2h = nn.Linear(hidden, hidden)
        self.loc_fc = nn.Linear(hidden, hidden // 2)
        self.loc_out = nn.Linear(hidden // 2, 2)
        self.base = nn.Linear(hidden, 1)
        self.cls = nn.Linear(hidden, classes)

    def step(self, x, l_prev, h_prev):  # noqa: ANN001, ANN201
        phi = retina(x, l_prev, self.g, self.k, self.s)
        what = self.fc3(F.relu(self.fc1(phi)))
        where = self.fc4(F.relu(self.fc2(l_prev)))
        g_t = F.relu(what + where)
        h_t = F.relu(self.i2h(g_t) + self.h2h(h_prev))
        mu = torch.tanh(self.loc_out(F.relu(self.loc_fc(h_t.detach()))))
        l_t = torch.clamp(mu + torch.randn_like(mu) * self.std, -1, 1).detach()
        log_pi = torch.distributions.Normal(mu, self.std).log_prob(l_t).sum(1)
        b_t = self.base(h_t.detach()).squeeze(1)
        return h_t, l_t, b_t, log_pi


def reference_step(model: ReferenceRAM, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                   glimpses: int, mc: int) -> float:
    x, y = x.repeat(mc, 1, 1, 1), y.repeat(mc)
    B = x.shape[0]
    h = torch.zeros(B, model.h2h.in_features)
    l = torch.empty(B, 2).uniform_(-1, 1)
    log_pis, baselines = [], []
    for _ in range(glimpses - 1):
        h, l, b, log_pi = model.step(x, l, h)
        log_pis.append(log_pi)
        baselines.append(b)
    h, l, b, log_pi = model.step(x, l, h)
    log_pis.append(log_pi)
    baselines.append(b)
    log_probas = F.log_softmax(model.cls(h), dim=1)
    baselines_t, log_pi_t = torch.stack(baselines, 1), torch.stack(log_pis, 1)
    reward = (log_probas.argmax(1) == y).float()[:, None].repeat(1, glimpses)
    loss = (
        F.nll_loss(log_probas, y)
        + F.mse_loss(baselines_t, reward)
        + torch.mean(torch.sum(-log_pi_t * (reward - baselines_t.detach()), dim=1))
    )
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return float(loss.detach())
