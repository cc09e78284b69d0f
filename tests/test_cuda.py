"""The CUDA paths: the same numbers as the CPU, training and evaluation on the GPU, NCCL.

Skipped where no CUDA device is present (CI has none); `bench/gpu_check.sh` runs them on a
GPU machine. Comparisons against the CPU are made in float64 so that only a real difference
in the computation, not float32 rounding order, can fail them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import checkpoint_metadata, checkpoint_tensors, offline_env, read_jsonl, tiny_train_args, torchrun
from lgdram_cli.data.presets import make_generator, resolve_dataset
from lgdram_cli.models.dram import DRAM
from lgdram_cli.models.ram import RAM
from lgdram_cli.models.retina import Retina

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

CUDA = torch.device("cuda")
SMALL = dict(glimpses=4, glimpse_size=6, scales=3, hidden=32, glimpse_hidden=16)


def lgdram(*args: str, cache: Path, timeout: float = 300, device: str | None = "cuda") -> subprocess.CompletedProcess:
    """`python -m lgdram_cli ARGS` in a subprocess (works wherever the package is importable),
    with $LGDRAM_DEVICE = `device` (the suite's default is the CPU) or unset."""
    env = offline_env(cache)
    env.pop("LGDRAM_DEVICE", None)
    if device:
        env["LGDRAM_DEVICE"] = device
    return subprocess.run([sys.executable, "-m", "lgdram_cli", *args], env=env, capture_output=True, text=True, timeout=timeout)


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stderr[-4000:]}"
    assert "Traceback" not in result.stderr
    return result


# ---------------------------------------------------------------- data and retina


@pytest.mark.parametrize("dataset,sets", [
    ("cmnist-60", {}),
    ("mcmnist-100", {"colour": True}),
    ("translated-60", {}),
])  # fmt: skip
def test_generation_is_bit_identical_on_cuda(dataset, sets):
    """The README promises the same canvases for a seed on any device; 300 spans two chunks."""
    generator = make_generator({**resolve_dataset(dataset), "digits": "mnist-mini", **sets})
    cpu = generator.generate(300, "train", 7, "cpu", start=100)
    gpu = generator.generate(300, "train", 7, CUDA, start=100)
    for field in ("images", "labels", "centers", "boxes", "n_distractors"):
        a, b = getattr(cpu, field), getattr(gpu, field)
        assert b.device.type == "cuda", field
        assert torch.equal(a, b.cpu()), f"{field}: {int((a != b.cpu()).sum())} of {a.numel()} values differ"


@pytest.mark.parametrize("replicas", [1, 3])
def test_retina_on_cuda_equals_cpu(replicas):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(5, 2, 37, 50, generator=g, dtype=torch.float64)
    loc = torch.rand(5 * replicas, 2, generator=g, dtype=torch.float64) * 2.4 - 1.2  # some outside
    retina = Retina(6, 3, 2)
    expected = retina.glimpse(retina.prepare(images), loc, replicas)
    for reuse in (False, True, True):  # a fresh state, then the reused one twice
        got = retina.glimpse(retina.prepare(images.to(CUDA), reuse=reuse), loc.to(CUDA), replicas)
        torch.testing.assert_close(got.cpu(), expected, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- models: outputs and gradients


def _run(model: torch.nn.Module, device: torch.device, fused: bool, replicas: int) -> tuple[dict, dict]:
    """Forward with fixed exploration noise, a loss touching every output, backward."""
    model = model.to(device)
    model.fused = fused
    g = torch.Generator().manual_seed(3)
    x = torch.rand(4, 1, 40, 44, generator=g, dtype=torch.float64)
    rows, steps = 4 * replicas, model.config.glimpses
    noise = torch.randn(rows, steps, 2, generator=g, dtype=torch.float64) * model.config.loc_std
    model._noise = lambda n, t, like, det: None if det or t == 0 else noise[:n, :t].to(like)
    out = model(x.to(device), replicas=replicas)
    w = {k: torch.randn(getattr(out, k).shape, generator=g, dtype=torch.float64) for k in ("logits", "means")}
    loss = sum((getattr(out, k) * w[k].to(device)).sum() for k in w) + 0.3 * out.log_probs.sum() + out.baselines.sum()
    model.zero_grad(set_to_none=True)
    loss.backward()
    fields = {k: getattr(out, k).detach().cpu() for k in ("logits", "locations", "means", "log_probs", "baselines")}
    grads = {n: p.grad.detach().cpu() for n, p in model.named_parameters() if p.grad is not None}
    return fields, grads


@pytest.mark.parametrize("cls,core,fused", [
    (RAM, "lstm", True), (RAM, "lstm", False), (RAM, "rnn", True), (RAM, "gru", True), (DRAM, "lstm", False),
])  # fmt: skip
def test_model_on_cuda_equals_cpu(cls, core, fused):
    """Outputs and every parameter's gradient, CUDA against CPU (float64, same weights, same noise)."""
    torch.manual_seed(0)
    model = cls(cls.Config(**SMALL, core=core), channels=1, size=(40, 44), classes=10).double()
    if fused:
        assert model._can_fuse()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    cpu_out, cpu_grads = _run(model, torch.device("cpu"), fused, replicas=3)
    model.load_state_dict(state)
    gpu_out, gpu_grads = _run(model, CUDA, fused, replicas=3)
    for k in cpu_out:
        torch.testing.assert_close(gpu_out[k], cpu_out[k], rtol=1e-10, atol=1e-10, msg=k)
    assert gpu_grads.keys() == cpu_grads.keys()
    for name in cpu_grads:
        torch.testing.assert_close(gpu_grads[name], cpu_grads[name], rtol=1e-8, atol=1e-10, msg=name)


# ---------------------------------------------------------------- the command line on the GPU


@pytest.fixture(scope="module")
def cuda_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    root = tmp_path_factory.mktemp("cuda-run")
    out = root / "run.safetensors"
    result = lgdram(*tiny_train_args(out, "--device", "cuda", "--json", steps=6, eval_every=3), cache=root / "cache")
    return out, ok(result)


def test_train_on_cuda_writes_a_checkpoint_that_loads_anywhere(cuda_run, tmp_path):
    out, result = cuda_run
    meta = checkpoint_metadata(out)
    assert meta["lgdram.step"] == "6"
    assert all(t.device.type == "cpu" for t in checkpoint_tensors(out).values())
    recorded = json.loads(meta["lgdram.metrics"])
    for device in ("cuda", "cpu"):
        evaluated = json.loads(ok(lgdram("eval", str(out), "--json", "--device", device, cache=tmp_path)).stdout)
        # on the device it was recorded on: exactly; on the CPU a near-tie may round the other way
        slack = 0 if device == "cuda" else 1 / evaluated["n"]
        assert abs(evaluated["accuracy"] - recorded["accuracy"]) <= slack, device
    assert [r["step"] for r in read_jsonl(out.with_suffix("").with_suffix(".metrics.jsonl")) if r["kind"] == "eval"] == [3, 6]


def test_resume_on_cuda_continues_the_run(cuda_run, tmp_path):
    """Interrupted at step 3 and resumed to 6 on the GPU: the weights of the uninterrupted run.
    Close, not bitwise: CUDA's atomic adds (index_add's backward) do not fix the order of sums."""
    whole, _ = cuda_run
    out = tmp_path / "run.safetensors"
    ok(lgdram(*tiny_train_args(out, "--device", "cuda", steps=3, eval_every=3), cache=tmp_path / "c"))
    ok(lgdram(*tiny_train_args(out, "--device", "cuda", "--resume", steps=6, eval_every=3), cache=tmp_path / "c"))
    a, b = checkpoint_tensors(whole), checkpoint_tensors(out)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)


def test_ddp_with_nccl(tmp_path):
    """The same command under torchrun on the GPU(s): NCCL, one writer. With one GPU the group
    has a single process (NCCL refuses two ranks on one device), still through DDP and NCCL."""
    nproc = min(2, torch.cuda.device_count())
    out = tmp_path / "run.safetensors"
    result = ok(torchrun(*tiny_train_args(out, "--device", "cuda", steps=4, eval_every=2),
                         nproc=nproc, env=offline_env(tmp_path / "cache"), timeout=300))
    assert f"distributed: {nproc} process(es), backend nccl" in result.stderr
    assert checkpoint_metadata(out)["lgdram.step"] == "4"
    assert result.stderr.count("spec: ") == 1


def test_bench_train_on_cuda(tmp_path):
    result = ok(lgdram(
        "bench", "train", "--device", "cuda", "--dataset", "cmnist-60", "--set", "dataset.digits=mnist-mini",
        "--batch-size", "64", "--mc", "2", "--steps", "5", "--json", cache=tmp_path,
    ))
    report = json.loads(result.stdout)
    assert report["device"].startswith("cuda")
    assert report["ms_per_step"] > 0 and report["images_per_s"] > 0


def test_device_auto_picks_cuda(tmp_path):
    out = tmp_path / "run.safetensors"
    result = lgdram(*tiny_train_args(out, steps=1, eval_every=1), cache=tmp_path / "c", device=None)
    ok(result)
    assert "device: cuda:0 (" in result.stderr  # the card's name follows
    assert os.path.getsize(out) > 0


def test_more_processes_than_gpus_is_one_clear_line(tmp_path):
    nproc = torch.cuda.device_count() + 1
    out = tmp_path / "run.safetensors"
    result = torchrun(*tiny_train_args(out, "--device", "cuda", steps=1, eval_every=1),
                      nproc=nproc, env=offline_env(tmp_path / "cache"), timeout=300)
    assert result.returncode != 0
    assert f"error: torchrun started {nproc} processes on this machine but it has" in result.stderr
    assert not out.exists()
