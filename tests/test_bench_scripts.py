"""The README's benchmark commands still run and print the figures it quotes (tiny settings:
this checks the scripts, not the speed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_json(*args: str) -> dict:
    done = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_bench_train_precision_section():
    """DRAM and RAM-LSTM: the fp32 step's share of the same-run matmul rate, bf16 as a ratio
    (bf16 steps only on a CPU with bf16 instructions, as `train` allows)."""
    from lgdram_cli.training.precision import cpu_has_bf16

    out = run_json("bench/bench_train.py", "--section", "precision", "--steps", "1", "--warmup", "1", "--blocks", "1")
    bf16_keys = ("bf16_ms", "bf16_over_fp32")
    for name in ("dram", "ram_lstm"):
        for key in ("fp32_ms", "fp32_share_of_matmul_rate"):
            assert out[f"{name}_{key}"] > 0, key
        for key in bf16_keys:
            assert (out[f"{name}_{key}"] > 0) if cpu_has_bf16() else f"{name}_{key}" not in out, key
    assert out["matmul_gflops_fp32"] > 0 and out["matmul_gflops_bf16"] > 0


def test_bench_train_reports_both_shares():
    out = run_json("bench/bench_train.py", "--section", "rnn", "--steps", "2", "--warmup", "1", "--blocks", "2")
    for key in (
        "lgdram_ms_per_step_b32_m1", "reference_ms_per_step_b32_m1", "lgdram_ms_per_step_b32_m10",
        "share_of_matmul_rate_b32_m10", "share_of_matmul_rate_b32_m10_best", "nominal_share_b32_m10",
        "unshared_ms_per_step_b32_m10", "unshared_share_of_matmul_rate_b32_m10",
    ):  # fmt: skip
        assert out[key] > 0, key
    # the shared first glimpse executes fewer FLOPs than the plain model's count
    assert out["nominal_gflops_b32_m10"] > out["model_gflops_b32_m10"]


def test_bench_retina_checks_its_two_paths_agree():
    out = run_json("bench/bench_retina.py", "--batch", "4", "--replicas", "2", "--size", "40")
    assert out["glimpse_rows"] == 8 and out["prepare_us"] > 0
    assert out["glimpse_us_row_runs"] > 0 and out["glimpse_us_cell_by_cell"] > 0
