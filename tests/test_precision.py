"""bf16 mixed precision: what runs in bf16, what stays float32, and where bf16 is refused."""

from __future__ import annotations

import pytest
import torch

from lgdram_cli.models.dram import DRAM
from lgdram_cli.models.precision import MixedLSTMStep, cast_weight, cell_step, tanh, weight_casts
from lgdram_cli.models.ram import RAM
from lgdram_cli.training import precision

from helpers import assert_one_line_error, run_main

torch.set_num_threads(1)
SMALL = dict(glimpses=3, glimpse_size=6, scales=2, hidden=32, glimpse_hidden=16)
needs_bf16 = pytest.mark.skipif(not precision.cpu_has_bf16(), reason="this CPU has no bf16 instructions")


def test_fast_tanh_equals_tanh():
    x = torch.linspace(-30, 30, 20001)
    torch.testing.assert_close(tanh(x), torch.tanh(x), atol=3e-7, rtol=0)
    out = torch.empty_like(x)
    assert tanh(x, out=out) is out and torch.equal(out, tanh(x))
    x64 = x.double().requires_grad_()
    (g,) = torch.autograd.grad(tanh(x64).sum(), x64)
    torch.testing.assert_close(g, 1 - torch.tanh(x64.detach()) ** 2)


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_cell_step_is_the_torch_cell(kind):
    """The decomposed cell (used under bf16 autocast) computes what torch's cell computes."""
    torch.manual_seed(0)
    cell = {"lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell, "rnn": lambda i, h: torch.nn.RNNCell(i, h, nonlinearity="relu")}[kind](8, 8)  # fmt: skip
    x, h, c = torch.randn(5, 8), torch.randn(5, 8), torch.randn(5, 8)
    state = (h, c) if kind == "lstm" else (h,)
    ours, new_state = cell_step(kind, cell, x, state)
    theirs = cell(x, state if kind == "lstm" else h)
    torch.testing.assert_close(ours, theirs[0] if kind == "lstm" else theirs, atol=1e-6, rtol=1e-5)
    if kind == "lstm":
        torch.testing.assert_close(new_state[1], theirs[1], atol=1e-6, rtol=1e-5)


@needs_bf16
@pytest.mark.parametrize("cls", [RAM, DRAM])
def test_bf16_forward_keeps_heads_and_policy_in_float32(cls):
    """Under bf16 autocast the products run in bf16, but logits, policy means, log-probs and
    baselines are float32; they stay close to the fp32 forward; gradients are float32."""
    torch.manual_seed(0)
    model = cls(cls.Config(**SMALL), channels=1, size=(32, 40), classes=10)
    x = torch.rand(4, 1, 32, 40, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(5)
    ref = model(x, replicas=2)
    torch.manual_seed(5)
    with precision.mixed_precision("bf16", torch.device("cpu")):
        assert cls is not RAM or model._can_fuse()  # RAM: the fused loop's mixed mode (models/unroll.py)
        out = model(x, replicas=2)
    for name in ("logits", "means", "log_probs", "baselines", "actions"):
        assert getattr(out, name).dtype == torch.float32, name
    torch.testing.assert_close(out.logits, ref.logits, atol=0.05, rtol=0.05)
    torch.testing.assert_close(out.means, ref.means, atol=0.02, rtol=0.02)
    (out.logits.sum() + out.log_probs.sum() + out.means.sum()).backward()
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in model.parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights


@pytest.mark.parametrize("core", ["lstm", "gru", "rnn"])
def test_fused_loop_in_bf16_is_close_to_fp32_and_runs_bf16_products(core):
    """RAM's fused loop under bf16 autocast: float32 outputs and gradients within bf16 rounding
    of the fp32 loop's (deterministic glimpses, so no sampled location differs), and not equal
    to them (the products did run in bf16). The arithmetic itself is checked in float64/float32
    by tests/test_models.py::test_fused_loop_mixed_matches_autograd."""
    torch.manual_seed(0)
    model = RAM(RAM.Config(**SMALL, core=core), channels=1, size=(32, 40), classes=10)
    x = torch.rand(4, 1, 32, 40, generator=torch.Generator().manual_seed(1))

    def run(bf16: bool):
        with precision.mixed_precision("bf16" if bf16 else "fp32", torch.device("cpu")):
            assert model._can_fuse()
            out = model(x, replicas=2, deterministic=True)
        model.zero_grad(set_to_none=True)
        (out.logits.square().sum() + out.means.sum() + out.baselines.sum()).backward()
        return out, {k: p.grad for k, p in model.named_parameters() if p.grad is not None}

    ref, ref_grads = run(False)
    out, grads = run(True)
    for name in ("logits", "means", "baselines"):
        assert getattr(out, name).dtype == torch.float32, name
        torch.testing.assert_close(getattr(out, name), getattr(ref, name), atol=0.03, rtol=0.03)
    assert not torch.equal(out.logits, ref.logits)
    assert grads.keys() == ref_grads.keys()
    for name, g in grads.items():
        assert g.dtype == torch.float32, name
        scale = ref_grads[name].abs().max().item() + 1e-6
        assert (g - ref_grads[name]).abs().max().item() <= 0.05 * scale, name


TINY = ["--dataset", "cmnist-60", "--steps", "3", "--batch-size", "4", "--mc", "2", "--eval-n", "8",
        "--set", "dataset.digits=mnist-mini", "--set", "model.hidden=16", "--set", "model.glimpse_hidden=8",
        "--set", "model.glimpses=2"]  # fmt: skip


@needs_bf16
def test_train_bf16_runs_and_records_its_precision(tmp_path, capsys):
    from lgdram_cli.training.checkpoint import load_checkpoint

    out = tmp_path / "run.safetensors"
    code, _, err = run_main(["train", *TINY, "--set", "precision=bf16", "--out", str(out)], capsys)
    assert code == 0, err
    assert load_checkpoint(out).spec["precision"] == "bf16"
    # a run is resumed in the precision it was started with
    code, _, err = run_main(["train", "--out", str(out), "--resume", "--steps", "4", "--set", "precision=fp32"], capsys)
    assert_one_line_error(code, err, "precision")


def test_bf16_is_refused_on_a_cpu_without_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    out = tmp_path / "run.safetensors"
    code, _, err = run_main(["train", *TINY, "--set", "precision=bf16", "--out", str(out)], capsys)
    assert_one_line_error(code, err, "bf16", "--precision fp32")
    assert not out.exists()


def test_a_bf16_run_resumed_on_a_cpu_without_bf16_is_pointed_elsewhere(tmp_path, capsys, monkeypatch):
    """`--precision fp32` cannot help a resumed run (it keeps its spec): the message says so."""
    out = tmp_path / "run.safetensors"
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)  # started where bf16 runs (emulated here: tiny)
    code, _, err = run_main(["train", *TINY, "--set", "precision=bf16", "--out", str(out)], capsys)
    assert code == 0, err
    before = out.read_bytes()
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    code, _, err = run_main(["train", "--out", str(out), "--resume", "--steps", "6"], capsys)
    assert_one_line_error(code, err, "bf16", "keeps its precision", "--device cuda")
    assert "use --precision fp32" not in err
    assert out.read_bytes() == before


@pytest.mark.parametrize("first", [True, False])
def test_mixed_lstm_step_matches_the_torch_cell(first):
    """The hand-written LSTM step that bf16 DRAM takes (`MixedLSTMStep`): outputs and every
    gradient (input, state, weights, biases) equal the torch cell's, checked where rounding
    is small (a float64 cell, float32 operands)."""
    torch.manual_seed(0)
    cell = torch.nn.LSTMCell(6, 8).double()
    x = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    h = None if first else torch.randn(5, 8, dtype=torch.float64, requires_grad=True)
    c = None if first else torch.randn(5, 8, dtype=torch.float64, requires_grad=True)
    dh, dc = torch.randn(5, 8, dtype=torch.float64), torch.randn(5, 8, dtype=torch.float64)
    weights = [cell.weight_ih, cell.bias_ih, cell.weight_hh, cell.bias_hh]
    inputs = [t for t in (x, h, c) if t is not None] + weights

    ours = MixedLSTMStep.apply(x, h, c, *weights, torch.float32)
    theirs = cell(x, None if first else (h, c))
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    g_ours = torch.autograd.grad(ours, inputs, (dh, dc), allow_unused=True)
    g_theirs = torch.autograd.grad(theirs, inputs, (dh, dc), allow_unused=True)
    for a, b in zip(g_ours, g_theirs):
        if b is None or not b.any():  # W_hh gets no gradient from the zero state
            assert a is None or not a.any()
        else:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_weight_casts_are_fresh_after_an_optimizer_step():
    """The fused Adam step changes weights without bumping their version counter, so a cast
    is reused only within one `weight_casts()` region (one forward pass)."""
    w = torch.nn.Parameter(torch.randn(4, 4))
    opt = torch.optim.Adam([w], lr=0.1, fused=True)
    with weight_casts():
        a = cast_weight(w, torch.bfloat16)
        assert cast_weight(w, torch.bfloat16) is a
    w.grad = torch.ones(4, 4)
    opt.step()
    with weight_casts():
        assert torch.equal(cast_weight(w, torch.bfloat16), w.detach().bfloat16())
