"""RAM, DRAM and the whole-image baselines: shapes, gradient flow, determinism, contract."""

from __future__ import annotations

import pytest
import torch

from lgdram_cli.errors import UserError
from lgdram_cli.losses import BUILTIN_LOSSES, HybridLoss, LossBatch, baseline_loss, correct, policy_loss
from lgdram_cli.models.baselines import CNNClassifier, FCClassifier, ram_parameter_count
from lgdram_cli.models.dram import DRAM
from lgdram_cli.models.ram import RAM
from lgdram_cli.registry import LOSSES, MODELS
from lgdram_cli.specs import validate

torch.set_num_threads(1)

SMALL = dict(glimpses=3, glimpse_size=6, scales=2, hidden=32, glimpse_hidden=16)
SIZE = (32, 40)


def make(cls, channels=1, size=SIZE, **kw):
    torch.manual_seed(0)
    return cls(cls.Config(**{**SMALL, **kw}), channels=channels, size=size, classes=10)


def images(n=4, channels=1, size=SIZE):
    return torch.rand(n, channels, *size, generator=torch.Generator().manual_seed(1))


def groups(model):
    """Parameter-group name (first attribute) → its parameters."""
    out: dict[str, list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        out.setdefault(name.split(".")[0], []).append(p)
    return out


def grad_groups(model, loss):
    """The parameter groups that receive a nonzero gradient from `loss`."""
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {g for g, ps in groups(model).items() if any(p.grad is not None and p.grad.abs().sum() > 0 for p in ps)}


def loss_batch(n, replicas=1):
    g = torch.Generator().manual_seed(2)
    return LossBatch(
        labels=torch.randint(0, 10, (n,), generator=g),
        centers=torch.rand(n, 2, generator=g) * 2 - 1,
        annotated=torch.arange(n) % 3 != 0,
        replicas=replicas,
    )


# --- gradient flow: which loss trains which part -------------------------------------------

EXPECTED = {
    RAM: {
        "classification": {"glimpse", "core", "classifier"},
        "policy": {"glimpse", "core", "locator"},
        "location": {"glimpse", "core", "locator"},
        "baseline": {"baseline"},
        "reinforce": {"glimpse", "core", "locator", "baseline"},
    },
    DRAM: {
        # the top layer and the context only steer where to look: no classification gradient
        "classification": {"glimpse", "core", "classifier"},
        "policy": {"glimpse", "core", "top", "context", "locator"},
        "location": {"glimpse", "core", "top", "context", "locator"},
        "baseline": {"baseline"},
        "reinforce": {"glimpse", "core", "top", "context", "locator", "baseline"},
    },
}


@pytest.mark.parametrize("core", ["lstm", "rnn", "gru"])
@pytest.mark.parametrize("cls", [RAM, DRAM])
def test_gradient_flow_per_term(cls, core):
    model = make(cls, core=core)
    x = images()
    batch = loss_batch(4)
    advantage = torch.randn(4, 3 if cls is DRAM else 2)  # independent of the (random-init) reward

    def terms():
        torch.manual_seed(3)
        out = model(x)
        reward = correct(out.logits, batch.labels)
        return out, {
            "classification": BUILTIN_LOSSES["classification"]()(out, batch, 0).value,
            "policy": policy_loss(out.log_probs, advantage),
            "location": BUILTIN_LOSSES["location"]()(out, batch, 0).value,
            "baseline": baseline_loss(out.baselines, reward),
            "reinforce": BUILTIN_LOSSES["reinforce"]()(out, batch, 0).value,
        }

    for name, expected in EXPECTED[cls].items():
        _, losses = terms()
        assert grad_groups(model, losses[name]) == expected, name


class LeakyRAM(RAM):
    """The classic bug: feeding the *undetached* sample to the next glimpse."""

    @staticmethod
    def _act(mean, noise):
        return mean if noise is None else (mean + noise).clamp(-1.0, 1.0)


@pytest.mark.parametrize("cls", [RAM, DRAM])
def test_policy_gradient_is_the_reinforce_estimator(cls):
    """∂L_π/∂θ = Σ ∂L_π/∂μ · ∂μ/∂θ with the analytic ∂L_π/∂μ = −A·(l − μ)/(N P σ²): no other path."""

    def gap(model):
        torch.manual_seed(4)
        out = model(images())
        advantage = torch.randn(out.log_probs.shape, generator=torch.Generator().manual_seed(5))
        params = [p for p in model.parameters()]
        auto = torch.autograd.grad(policy_loss(out.log_probs, advantage), params, retain_graph=True, allow_unused=True)
        n, decisions, std = out.means.shape[0], out.means.shape[1], model.config.loc_std
        chosen = out.actions
        d_means = -advantage[..., None] * (chosen - out.means.detach()) / (n * decisions * std**2)
        analytic = torch.autograd.grad(out.means, params, grad_outputs=d_means, allow_unused=True)
        z = torch.zeros(())
        return max(
            float(((a if a is not None else z) - (b if b is not None else z)).abs().max())
            for a, b in zip(auto, analytic)
        )

    assert not make(cls)(images()).locations.requires_grad
    assert gap(make(cls)) < 1e-5
    if cls is RAM:  # the check has teeth: it catches the undetached sample
        assert gap(make(LeakyRAM)) > 1e-4


@pytest.mark.parametrize("cls", [RAM, DRAM])
@pytest.mark.parametrize("mu", [0.9, 0.99])
def test_score_is_unbiased_at_the_border(cls, mu):
    """E[∂log π/∂μ] = 0 for every policy mean, also next to the border: log π is scored at the
    unclamped action. Scored at the clamped location (the seed's rule) its mean is negative, a
    push away from the border (≈ −0.85 at μ = 0.9, σ = 0.11: 16 standard errors here), so the
    Monte-Carlo check has teeth."""
    model = make(cls)  # training mode, gradients on: RAM takes its fused loop
    with torch.no_grad():
        model.locator.weight.zero_()
        model.locator.bias.fill_(float(torch.atanh(torch.tensor(mu))))
    torch.manual_seed(3)
    out = model(images(2), replicas=4000)
    (score,) = torch.autograd.grad(out.log_probs.sum(), out.means)  # per row: ∂log π/∂μ
    std = model.config.loc_std
    n = score.numel()
    mean, se = float(score.mean()), float(score.std()) / n**0.5
    assert abs(mean) < 4 * se, (mean, se)
    # the retina still reads inside the image; the actions are the unclamped samples
    assert out.locations.abs().max() <= 1.0 and out.actions.max() > 1.0
    clamped = ((out.actions.clamp(-1, 1) - out.means.detach()) / std**2).mean()
    assert float(clamped) < -8 * se  # the old rule's bias, far outside the tolerance


def test_product_glimpse_combine_is_ba_et_al():
    """glimpse_combine="product": g = ReLU(what) ⊙ ReLU(where); trains through autograd (not the
    fused loop), and every part still learns."""
    model = make(RAM, glimpse_combine="product")
    assert not model._can_fuse()
    net = model.glimpse
    patches, loc = torch.rand(5, 2 * 36), torch.rand(5, 2) * 2 - 1
    what = net.what_out(torch.relu(net.what(patches)))
    where = net.where_out(torch.relu(net.where(loc)))
    torch.testing.assert_close(net(patches, loc), torch.relu(what) * torch.relu(where))
    out = model(images())
    assert grad_groups(model, out.logits.sum() + out.log_probs.sum()) >= {"glimpse", "core", "classifier", "locator"}


# --- the fused training loop (models/unroll.py) against autograd --------------------------------


def _outputs_and_grads(model, x, replicas, deterministic, fused):
    """One forward + a loss touching every output (weighted so no gradient cancels), backward."""
    model.fused = fused
    torch.manual_seed(11)
    out = model(x, replicas=replicas, deterministic=deterministic)
    g = torch.Generator().manual_seed(12)
    loss = (out.logits * torch.randn(out.logits.shape, generator=g, dtype=x.dtype)).sum()
    loss = loss + (out.means * torch.randn(out.means.shape, generator=g, dtype=x.dtype)).sum()
    loss = loss + out.log_probs.sum() * 0.3 + out.baselines.sum()
    model.zero_grad(set_to_none=True)
    loss.backward()
    return out, {name: p.grad for name, p in model.named_parameters()}


@pytest.mark.parametrize("core", ["lstm", "rnn", "gru"])
@pytest.mark.parametrize("loc_range", [1.0, 0.8])
@pytest.mark.parametrize("glimpses,replicas,start,deterministic", [
    (1, 1, "centre", False), (1, 3, "centre", False), (2, 3, "centre", False), (4, 2, "random", False),
    (3, 2, "centre", True),
])  # fmt: skip
def test_fused_loop_matches_autograd(core, glimpses, replicas, start, deterministic, loc_range):
    """Same outputs and the same gradients (float64) as the step-by-step autograd path."""
    model = make(RAM, channels=2, core=core, glimpses=glimpses, start=start, loc_range=loc_range).double()
    assert model._can_fuse()
    x = images(3, channels=2).double()
    plain, plain_grads = _outputs_and_grads(model, x, replicas, deterministic, fused=False)
    fused, fused_grads = _outputs_and_grads(model, x, replicas, deterministic, fused=True)
    for field in ("logits", "locations", "means", "log_probs", "baselines", "actions"):
        torch.testing.assert_close(getattr(fused, field), getattr(plain, field), rtol=1e-12, atol=1e-12)
    for name, grad in plain_grads.items():
        if grad is None or not grad.any():  # e.g. W_hh of a one-glimpse model
            assert fused_grads[name] is None or not fused_grads[name].any(), name
        else:
            torch.testing.assert_close(fused_grads[name], grad, rtol=1e-10, atol=1e-12, msg=name)


@pytest.mark.parametrize("core", ["lstm", "rnn", "gru"])
@pytest.mark.parametrize("glimpses,replicas,start,deterministic", [
    (1, 3, "centre", False), (4, 3, "centre", False), (3, 2, "random", False), (3, 2, "centre", True),
])  # fmt: skip
def test_fused_loop_mixed_matches_autograd(core, glimpses, replicas, start, deterministic):
    """The mixed-precision loop (`LoopPlan.operands`, bf16 under `precision = "bf16"`) checked
    where rounding cannot flip a glimpse: a float64 model with float32 operands against the
    float64 autograd path, to float32 accuracy. Every cast, the bf16-only branches and the
    separate policy-mean product of the backward pass run as they do in bf16."""
    model = make(RAM, channels=2, core=core, glimpses=glimpses, start=start, loc_range=0.8).double()
    x = images(3, channels=2).double()
    plain, plain_grads = _outputs_and_grads(model, x, replicas, deterministic, fused=False)
    model._operands = lambda images: torch.float32
    fused, fused_grads = _outputs_and_grads(model, x, replicas, deterministic, fused=True)
    for field in ("logits", "locations", "means", "log_probs", "baselines", "actions"):
        torch.testing.assert_close(getattr(fused, field), getattr(plain, field), rtol=1e-5, atol=1e-6)
    for name, grad in plain_grads.items():
        got = fused_grads[name]
        if grad is None or not grad.any():
            assert got is None or not got.any(), name
        else:
            assert got.dtype == torch.float64, name
            torch.testing.assert_close(got, grad, rtol=1e-4, atol=1e-5 * grad.abs().max().item(), msg=name)


def test_fused_loop_only_where_it_applies():
    """Evaluation, other sensors and subclasses that change a part keep the autograd path."""
    model = make(RAM)
    assert model._can_fuse()
    with torch.no_grad():
        assert not model._can_fuse()
    assert not model.eval()._can_fuse()  # gradients in eval mode (saliency) reach every step
    model.train()
    assert not make(RAM, sensor="conv")._can_fuse()
    assert not make(LeakyRAM)._can_fuse()  # a changed sampling rule
    swapped = make(RAM)
    swapped.glimpse = torch.nn.Sequential()  # a plugin's own glimpse network
    assert not swapped._can_fuse()
    model.fused = False
    assert not model._can_fuse()


# --- determinism ------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [RAM, DRAM])
def test_same_seed_same_output(cls):
    model, x = make(cls), images()
    torch.manual_seed(7)
    a = model(x)
    torch.manual_seed(7)
    b = model(x)
    for field in ("logits", "step_logits", "locations", "means", "log_probs", "baselines"):
        fa, fb = getattr(a, field), getattr(b, field)
        assert (fa is None and fb is None) or torch.equal(fa, fb), field
    torch.manual_seed(8)
    assert not torch.equal(model(x).locations, a.locations)


@pytest.mark.parametrize("cls", [RAM, DRAM])
def test_deterministic_uses_the_mean_and_no_randomness(cls):
    model, x = make(cls), images()
    rng = torch.get_rng_state()
    a, b = model(x, deterministic=True), model(x, deterministic=True)
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.locations, b.locations)
    chosen = a.locations if cls is DRAM else a.locations[:, 1:]
    assert torch.equal(chosen, a.means.detach())
    if cls is RAM:
        assert torch.equal(a.locations[:, 0], torch.zeros(4, 2))  # first glimpse: the centre


@pytest.mark.parametrize("cls", [RAM, DRAM])
def test_replicas_equal_repeated_images(cls):
    model, x = make(cls), images(3)
    torch.manual_seed(9)
    a = model(x, replicas=4)
    torch.manual_seed(9)
    b = model(x.repeat_interleave(4, dim=0))
    torch.testing.assert_close(a.logits, b.logits)
    torch.testing.assert_close(a.locations, b.locations)
    torch.testing.assert_close(a.log_probs, b.log_probs)


# --- every configuration trains ------------------------------------------------------------


@pytest.mark.parametrize("sensor", ["fc", "conv"])
@pytest.mark.parametrize("core", ["lstm", "rnn", "gru"])
@pytest.mark.parametrize("cls", [RAM, DRAM])
def test_every_config_shapes_and_all_parameters_learn(cls, core, sensor):
    model = make(cls, channels=3, core=core, sensor=sensor)
    T, P = 3, 3 if cls is DRAM else 2
    torch.manual_seed(10)
    out = model(images(2, 3), replicas=3)
    assert out.logits.shape == (6, 10)
    assert out.step_logits is None  # training mode: only the final prediction is computed
    assert out.locations.shape == (6, T, 2) and out.means.shape == (6, P, 2)
    assert out.log_probs.shape == (6, P) and out.baselines.shape == (6, P)
    with torch.no_grad():
        model.eval()
        ev = model(images(2, 3), replicas=3, deterministic=True)
        model.train()
    assert ev.step_logits.shape == (6, T, 10)  # evaluation: a prediction after every glimpse
    assert torch.equal(ev.logits, ev.step_logits[:, -1])
    assert out.locations.abs().max() <= 1 and out.means.abs().max() < 1
    hybrid = HybridLoss({"classification": {}, "reinforce": {}, "location": {}}, BUILTIN_LOSSES)
    total, metrics = hybrid(out, loss_batch(6, replicas=3), step=0)
    model.zero_grad()
    total.backward()
    assert torch.isfinite(total) and all(v == v for v in metrics.values())
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_single_glimpse_ram_makes_no_decision():
    model = make(RAM, glimpses=1)
    out = model(images())
    assert out.means.shape == (4, 0, 2) and out.log_probs.shape == (4, 0) and out.baselines.shape == (4, 0)
    hybrid = HybridLoss({"classification": {}, "reinforce": {}, "location": {}}, BUILTIN_LOSSES)
    total, _ = hybrid(out, loss_batch(4), 0)
    assert torch.isfinite(total)


# --- configuration and contract ------------------------------------------------------------


@pytest.mark.parametrize(
    "bad,fragment",
    [
        ({"glimpse_size": 0}, "glimpse_size"),
        ({"scales": 0}, "scales"),
        ({"glimpses": 0}, "glimpses"),
        ({"loc_std": 0}, "loc_std"),
        ({"loc_std": -0.1}, "loc_std"),
        ({"scale_factor": 1.5}, "scale_factor"),
        ({"core": "lstn"}, "core"),
        ({"sensor": "cnn"}, "sensor"),
        ({"hiden": 3}, "hiden"),
    ],
)
def test_config_validation(bad, fragment):
    with pytest.raises(UserError, match=fragment):
        validate(RAM.Config, bad, where="model")
    with pytest.raises(ValueError):
        DRAM.Config(**bad)


def test_config_defaults():
    c = RAM.Config()
    assert (c.type, c.glimpses, c.glimpse_size, c.scales, c.scale_factor) == ("ram", 6, 12, 3, 2)
    assert (c.hidden, c.glimpse_hidden, c.loc_std, c.sensor, c.core) == (256, 128, 0.11, "fc", "lstm")
    assert DRAM.Config().type == "dram" and FCClassifier.Config().type == "fc" and CNNClassifier.Config().type == "cnn"
    assert (DRAM.Config().scales, DRAM.Config().glimpse_combine) == (2, "sum")  # the seed's table: 2 scales


def test_glimpse_much_larger_than_canvas_is_a_user_error():
    with pytest.raises(UserError, match="canvas"):
        RAM(RAM.Config(glimpse_size=12, scales=5, scale_factor=3), channels=1, size=(28, 28), classes=10)


@pytest.mark.parametrize("cls", [RAM, DRAM, FCClassifier, CNNClassifier])
def test_registry_contract(cls):
    assert MODELS.validate(cls) is None


@pytest.mark.parametrize("cls", BUILTIN_LOSSES.values())
def test_loss_registry_contract(cls):
    assert LOSSES.validate(cls) is None


# --- whole-image baselines -------------------------------------------------------------------


@pytest.mark.parametrize("cls", [FCClassifier, CNNClassifier])
@pytest.mark.parametrize("size", [(28, 28), (60, 60), (40, 90)])
def test_baselines_match_ram_parameter_count(cls, size):
    model = cls(cls.Config(), channels=1, size=size, classes=10)
    budget = ram_parameter_count(1, 10)
    assert abs(sum(p.numel() for p in model.parameters()) - budget) / budget < 0.05
    out = model(torch.rand(3, 1, *size), replicas=2)
    assert out.logits.shape == (6, 10)
    assert out.means is None and out.log_probs is None and out.locations is None
    narrow = cls(cls.Config(width=16), channels=1, size=size, classes=10)
    assert narrow.width == 16


# --- export ---------------------------------------------------------------------------------


class Deterministic(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        out = self.model(x, deterministic=True)
        return out.logits, out.locations


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::DeprecationWarning", "ignore::UserWarning")
@pytest.mark.parametrize("cls", [RAM, DRAM])
def test_onnx_export(cls, tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    wrapped, x = Deterministic(make(cls)).eval(), images(2)
    path = tmp_path / "model.onnx"
    torch.onnx.export(wrapped, (x,), str(path), opset_version=17, dynamo=False)
    sess = ort.InferenceSession(str(path))
    logits, locations = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    want = wrapped(x)
    torch.testing.assert_close(torch.from_numpy(logits), want[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(torch.from_numpy(locations), want[1], rtol=1e-4, atol=1e-4)


def test_torch_export():
    wrapped, x = Deterministic(make(RAM)).eval(), images(2)
    program = torch.export.export(wrapped, (x,))
    torch.testing.assert_close(program.module()(x)[0], wrapped(x)[0])


def test_fused_gradients_do_not_alias():
    """Each parameter owns its gradient: clipping scales every one exactly once."""
    model = make(RAM, core="rnn")
    out = model(images())
    (out.logits.sum() + out.means.sum()).backward()
    pointers = [p.grad.data_ptr() for p in model.parameters() if p.grad is not None]
    assert len(pointers) == len(set(pointers))


@pytest.mark.parametrize("cls", [RAM, DRAM])
def test_loc_range_bounds_the_policy_means(cls):
    """loc_range r (the seed's convert_ratio 0.8): means = r·tanh(·), inside [-r, r] even when
    the tanh saturates."""
    model = make(cls, loc_range=0.8)
    with torch.no_grad():
        model.locator.bias.fill_(50.0)
    out = model(images(), deterministic=True)
    assert torch.allclose(out.means, torch.full_like(out.means, 0.8))
