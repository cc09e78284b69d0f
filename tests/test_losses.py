"""Loss terms on hand-computed examples, the γ schedule, and the hybrid sum."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lgdram_cli.errors import UserError
from lgdram_cli.losses import (
    BUILTIN_LOSSES,
    ClassificationLoss,
    HybridLoss,
    LocationLoss,
    LossBatch,
    ReinforceLoss,
    RLOOLoss,
    gamma_at,
    leave_one_out,
)
from lgdram_cli.models.base import ModelOutput
from lgdram_cli.specs import validate

torch.set_num_threads(1)


def output(logits, log_probs=None, baselines=None, means=None):
    return ModelOutput(
        logits=torch.tensor(logits, dtype=torch.float32, requires_grad=True),
        log_probs=None if log_probs is None else torch.tensor(log_probs, requires_grad=True),
        baselines=None if baselines is None else torch.tensor(baselines, requires_grad=True),
        means=None if means is None else torch.tensor(means, requires_grad=True),
    )


def batch(labels, centers=None, annotated=None, replicas=1):
    n = len(labels)
    return LossBatch(
        labels=torch.tensor(labels),
        centers=torch.zeros(n, 2) if centers is None else torch.tensor(centers),
        annotated=torch.ones(n, dtype=torch.bool) if annotated is None else torch.tensor(annotated),
        replicas=replicas,
    )


def test_classification_is_weighted_cross_entropy():
    out = output([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
    b = batch([0, 0, 0])
    term = ClassificationLoss(ClassificationLoss.Config(weight=0.5))(out, b, 0)
    assert term.value.item() == pytest.approx(0.5 * F.cross_entropy(out.logits, b.labels).item())
    assert term.metrics["accuracy"] == pytest.approx(2 / 3)


def test_reinforce_hand_example():
    # row 0 right (reward 1), row 1 wrong (reward 0); two decisions each
    out = output(
        [[2.0, 0.0], [2.0, 0.0]], log_probs=[[-1.0, -2.0], [-0.5, 0.5]], baselines=[[0.5, 0.2], [0.1, 0.3]]
    )
    term = ReinforceLoss()(out, batch([0, 1]), 0)
    # advantages: row 0: 1 − (0.5, 0.2) = (0.5, 0.8); row 1: 0 − (0.1, 0.3) = (−0.1, −0.3)
    policy = -((-1.0 * 0.5 + -2.0 * 0.8) + (-0.5 * -0.1 + 0.5 * -0.3)) / 4  # mean over rows and decisions
    mse = ((0.5 - 1) ** 2 + (0.2 - 1) ** 2 + 0.1**2 + 0.3**2) / 4
    assert term.value.item() == pytest.approx(policy + mse)
    assert term.metrics == pytest.approx({"reward": 0.5, "policy": policy, "baseline_mse": mse})
    term.value.backward()
    # the baseline learns only from its regression, not through the advantage
    torch.testing.assert_close(out.baselines.grad, 2 * (out.baselines.detach() - torch.tensor([[1.0], [0.0]])) / 4)
    assert out.logits.grad is None  # the reward carries no gradient
    torch.testing.assert_close(out.log_probs.grad, -torch.tensor([[0.5, 0.8], [-0.1, -0.3]]) / 4)


def test_rloo_hand_example():
    reward = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 1.0])
    torch.testing.assert_close(leave_one_out(reward, 3), torch.tensor([0.5, 1.0, 0.5, 0.5, 0.5, 0.0]))
    logits = [[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]]
    labels = [0, 0, 0, 0, 0, 0]  # → rewards as above
    log_probs = [[-1.0], [-1.0], [-2.0], [-1.0], [-3.0], [-1.0]]
    out = output(logits, log_probs=log_probs, baselines=[[9.0]] * 6)  # the learned baseline is ignored
    term = RLOOLoss()(out, batch(labels, replicas=3), 0)
    advantage = [0.5, -1.0, 0.5, -0.5, -0.5, 1.0]
    expected = -sum(lp[0] * a for lp, a in zip(log_probs, advantage)) / 6
    assert term.value.item() == pytest.approx(expected)
    assert term.metrics["reward"] == pytest.approx(0.5)
    with pytest.raises(UserError, match="replicas"):
        RLOOLoss()(out, batch(labels, replicas=1), 0)
    with pytest.raises(UserError, match="multiple"):
        RLOOLoss()(out, batch(labels, replicas=4), 0)


LOCATION_MEANS = [[[0.0, 0.0], [0.5, 0.5]], [[1.0, 1.0], [1.0, 1.0]], [[0.2, 0.0], [0.0, 0.0]]]
LOCATION_CENTERS = [[0.0, 0.5], [0.0, 0.0], [0.0, 0.0]]


@pytest.mark.parametrize("normalize,divisor", [("batch", 3), ("annotated", 2)])
def test_location_hand_example(normalize, divisor):
    """Rows 0 and 2 annotated: row 0 (0 + .25) + (.25 + 0) = .5, row 2 .04 + 0 = .04; the sum
    .54 is divided by all 3 rows (the seed's rule, default) or by the 2 annotated ones."""
    out = output([[0.0, 1.0]] * 3, means=LOCATION_MEANS)
    loss = LocationLoss(LocationLoss.Config(weight=2.0, normalize=normalize))
    term = loss(out, batch([0, 0, 0], LOCATION_CENTERS, [True, False, True]), 0)
    assert term.value.item() == pytest.approx(2 * 0.54 / divisor)
    assert term.metrics["gamma"] == 1.0 and term.metrics["error"] == pytest.approx(0.54 / divisor)
    term.value.backward()
    assert out.means.grad[1].abs().sum() == 0  # the unannotated row gets no pull


def test_location_default_is_the_seeds_batch_mean():
    """The seed (src/losses.py) multiplies by has_label and averages over every row: at a share
    p of annotated rows the term's expected value is p times the fully annotated one."""
    assert LocationLoss().config.normalize == "batch"
    torch.manual_seed(0)
    n = 4000
    means = torch.rand(n, 3, 2) * 2 - 1
    centers = torch.zeros(n, 2)
    full = LocationLoss()(output([[0.0, 1.0]] * n, means=means.tolist()), batch([0] * n, centers.tolist(), [True] * n), 0)
    some = torch.rand(n) < 0.1
    part = LocationLoss()(output([[0.0, 1.0]] * n, means=means.tolist()), batch([0] * n, centers.tolist(), some.tolist()), 0)
    share = float(some.float().mean())
    assert part.value.item() == pytest.approx(share * full.value.item(), rel=0.1)


def test_location_is_zero_not_nan_without_annotations():
    out = output([[0.0, 1.0]] * 2, means=[[[0.3, 0.1]], [[-0.2, 0.9]]])
    term = LocationLoss()(out, batch([0, 1], [[float("nan")] * 2] * 2, [False, False]), 5)
    assert term.value.item() == 0.0 and not math.isnan(term.value.item())
    term.value.backward()
    assert torch.isfinite(out.means.grad).all() and out.means.grad.abs().sum() == 0


def test_gamma_schedule():
    loss = LocationLoss(LocationLoss.Config(gamma_start=2.0, decay=0.5, decay_every=10, gamma_min=0.1))
    assert [loss.gamma(s) for s in (0, 9, 10, 25, 30, 49, 1000)] == [2.0, 2.0, 1.0, 0.5, 0.25, 0.125, 0.1]
    assert gamma_at(300, 1.0, 0.97, 100, 0.0) == pytest.approx(0.97**3)
    default = LocationLoss()
    assert (default.config.gamma_start, default.config.decay, default.config.decay_every) == (1.0, 0.97, 100)
    out = output([[0.0, 1.0]], means=[[[1.0, 0.0]]])
    assert loss(out, batch([0]), 30).value.item() == pytest.approx(0.25 * 1.0)


@pytest.mark.parametrize(
    "cls,cfg,fragment",
    [
        (LocationLoss, {"decay": 1.5}, "decay"),
        (LocationLoss, {"decay_every": 0}, "decay_every"),
        (LocationLoss, {"gamma_min": -1}, "gamma"),
        (ReinforceLoss, {"weight": -1}, "weight"),
        (ClassificationLoss, {"wieght": 1}, "wieght"),
    ],
)
def test_config_validation(cls, cfg, fragment):
    with pytest.raises(UserError, match=fragment):
        validate(cls.Config, cfg, where="loss.x")


@pytest.mark.parametrize("cls", [ReinforceLoss, LocationLoss, RLOOLoss])
def test_policy_losses_need_an_attention_model(cls):
    with pytest.raises(UserError, match="attention model"):
        cls()(output([[0.0, 1.0]] * 2), batch([0, 1], replicas=2), 0)


def test_hybrid_sums_weighted_terms_and_reports_metrics():
    out = output(
        [[2.0, 0.0], [0.0, 2.0]],
        log_probs=[[-1.0], [-2.0]],
        baselines=[[0.5], [0.5]],
        means=[[[0.1, 0.1]], [[0.0, 0.0]]],
    )
    b = batch([0, 0], [[0.0, 0.0], [0.0, 0.0]])
    spec = {"classification": {"weight": 1.0}, "reinforce": None, "location": {"weight": 3.0, "decay_every": 5}}
    total, metrics = HybridLoss(spec, BUILTIN_LOSSES)(out, b, step=5)
    parts = [
        ClassificationLoss()(out, b, 5).value,
        ReinforceLoss()(out, b, 5).value,
        LocationLoss(LocationLoss.Config(weight=3.0, decay_every=5))(out, b, 5).value,
    ]
    assert total.item() == pytest.approx(sum(p.item() for p in parts))
    assert metrics["loss/location"] == pytest.approx(3 * 0.97 * 0.01)  # rows: 0.02 and 0
    assert metrics["location/gamma"] == pytest.approx(0.97)
    expected = {"loss/total", "loss/classification", "loss/reinforce", "reinforce/reward", "classification/accuracy"}
    assert expected <= set(metrics)
    with pytest.raises(UserError, match=r"loss\.location.*decay"):
        HybridLoss({"location": {"decay": 2}}, BUILTIN_LOSSES)
    with pytest.raises(UserError, match="did you mean 'location'"):
        HybridLoss({"locaton": {}}, BUILTIN_LOSSES)


def test_hybrid_resolves_names_through_the_registry(monkeypatch):
    from lgdram_cli.registry import LOSSES, Entry

    entries = {
        name: Entry(LOSSES, name, f"lgdram_cli.losses:{cls.__name__}", "lgdram", "test")
        for name, cls in BUILTIN_LOSSES.items()
    }
    monkeypatch.setitem(LOSSES.__dict__, "_entries", entries)
    hybrid = HybridLoss({"classification": {}, "location": {"gamma_min": 0.5}})
    assert isinstance(hybrid.terms["location"], LocationLoss)
    assert hybrid.terms["location"].config.gamma_min == 0.5


def test_read_metrics_equals_item_for_every_kind_of_metric():
    """One stacked copy gives each metric exactly what `.item()` would, in the given order."""
    from lgdram_cli.losses import read_metrics

    metrics = {"f32": torch.tensor(0.1), "f64": torch.tensor(1 / 3, dtype=torch.float64), "plain": 0.25,
               "flag": torch.tensor(True), "count": 3, "one": torch.tensor([2.5])}
    read = read_metrics(metrics)
    assert list(read) == list(metrics)
    assert all(type(v) is float for v in read.values())
    for k, v in metrics.items():
        assert read[k] == (v.item() if torch.is_tensor(v) else float(v)), k
