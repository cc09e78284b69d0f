"""glibc malloc tuning for training processes (`lgdram_cli.allocator`)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CHECK = "from lgdram_cli.allocator import keep_freed_memory as k; print(k(), k())"


def _run(env: dict[str, str]) -> str:
    return subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, env=env, check=True).stdout


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_applies_once_on_glibc():
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    assert _run(env).split() == ["True", "True"]


def test_leaves_a_users_own_malloc_settings_alone():
    assert _run({**os.environ, "MALLOC_TRIM_THRESHOLD_": "131072"}).split() == ["False", "False"]
