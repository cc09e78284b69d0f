"""Property-based tests: whatever the spec parser, `--set`, and the HDF5, safetensors and IDX
readers are fed — random text, truncated, bit-flipped or oversized files — every outcome is a
result or a UserError (one line, exit 2 on the command line), never another exception.

Bounded: at most 50 examples per property and a deadline per example, so the default suite
stays fast. The HDF5 property runs in a child process too: libhdf5 is C, and a crash there
would take pytest with it (the child's exit code says which input did it).
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from lgdram_cli.errors import UserError  # noqa: E402

BOUNDED = settings(
    max_examples=50, deadline=timedelta(seconds=5), derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def outcome(call) -> str:
    """'ok' or 'user error'; anything else fails the property (with its traceback)."""
    try:
        call()
    except UserError as exc:
        text = str(exc)
        assert text and "\n" not in text, f"a UserError must be one line: {text!r}"
        return "user error"
    return "ok"


# ---------------------------------------------------------------- damaged bytes


def damaged(data: bytes) -> st.SearchStrategy[bytes]:
    """`data` truncated, bit-flipped (1–8 bits), padded with junk, or with a slice zeroed."""
    n = len(data)

    def truncate(k: int) -> bytes:
        return data[:k]

    def flip(positions: list[int]) -> bytes:
        out = bytearray(data)
        for p in positions:
            out[p // 8] ^= 1 << (p % 8)
        return bytes(out)

    def pad(junk: bytes) -> bytes:
        return data + junk

    def zero(span: tuple[int, int]) -> bytes:
        lo, length = span
        return data[:lo] + bytes(min(length, n - lo)) + data[lo + length:]

    return st.one_of(
        st.integers(0, max(0, n - 1)).map(truncate),
        st.lists(st.integers(0, 8 * n - 1), min_size=1, max_size=8).map(flip),
        st.binary(min_size=1, max_size=4096).map(pad),
        st.tuples(st.integers(0, max(0, n - 1)), st.integers(1, 4096)).map(zero),
    )


# ---------------------------------------------------------------- the spec parser


@BOUNDED
@given(suffix=st.sampled_from([".json", ".toml", ".yaml"]), text=st.one_of(st.text(max_size=400), st.binary(max_size=400)))
def test_spec_parser_takes_any_file(tmp_path_factory, suffix, text):
    from lgdram_cli.specs import read_spec_file

    path = tmp_path_factory.mktemp("spec") / f"s{suffix}"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    outcome(lambda: read_spec_file(path))


SPEC_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=False, allow_infinity=False),
              st.text(max_size=20)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(min_size=1, max_size=8), inner, max_size=4)),
    max_leaves=12,
)


@BOUNDED
@given(data=st.dictionaries(st.text(min_size=1, max_size=10), SPEC_VALUES, max_size=5), fmt=st.sampled_from(["json", "yaml"]))
def test_spec_parser_round_trips_valid_specs(tmp_path_factory, data, fmt):
    import yaml

    from lgdram_cli.specs import read_spec_file

    path = tmp_path_factory.mktemp("spec") / f"s.{fmt}"
    path.write_text(json.dumps(data) if fmt == "json" else yaml.safe_dump(data), encoding="utf-8")
    assert read_spec_file(path) == data


@BOUNDED
@given(sets=st.lists(st.text(max_size=30), max_size=6), base=st.dictionaries(st.text(min_size=1, max_size=6), SPEC_VALUES, max_size=4))
def test_set_parsing_takes_any_override(sets, base):
    from lgdram_cli.specs import apply_overrides, expand_set_keys

    def both() -> None:
        apply_overrides(base, sets)
        expand_set_keys(sets, top={"steps", "seed"}, sections={"dataset": lambda: ("canvas", "digits"),
                                                             "optim": lambda: ("lr", "clip")})

    outcome(both)


@BOUNDED
@given(sets=st.lists(st.from_regex(r"[a-z_.]{1,20}=[^\n]{0,20}", fullmatch=True), max_size=4))
def test_train_spec_from_any_set_is_a_spec_or_a_user_error(sets):
    from lgdram_cli.cli.train_cmd import train_spec

    outcome(lambda: train_spec(dataset="cmnist-60", sets=sets))


# ---------------------------------------------------------------- IDX files


def _idx_files() -> tuple[bytes, bytes]:
    from lgdram_cli.data import idx

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 28, 28), dtype=np.uint8)
    return idx.encode_images(images), idx.encode_labels(np.arange(12) % 10)


@BOUNDED
@given(which=st.sampled_from(["images", "labels"]), gz=st.booleans(), data=st.data())
def test_idx_reader_takes_any_damage(tmp_path_factory, which, gz, data):
    from lgdram_cli.data import sources

    image_bytes, label_bytes = _idx_files()
    files = {"images": gzip.compress(image_bytes, mtime=0) if gz else image_bytes,
             "labels": gzip.compress(label_bytes, mtime=0) if gz else label_bytes}
    files[which] = data.draw(damaged(files[which]))
    folder = tmp_path_factory.mktemp("idx")
    suffix = ".gz" if gz else ""
    (folder / f"train-images-idx3-ubyte{suffix}").write_bytes(files["images"])
    (folder / f"train-labels-idx1-ubyte{suffix}").write_bytes(files["labels"])
    outcome(lambda: sources._read_split(folder, "train", f"idx:{folder}"))


# ---------------------------------------------------------------- safetensors checkpoints


@BOUNDED
@given(data=st.data(), which=st.sampled_from(["weights", "optimizer"]))
def test_checkpoint_readers_take_any_damage(tiny_run, tmp_path_factory, data, which):
    import torch

    from lgdram_cli.training import checkpoint as ckpt

    source = tiny_run if which == "weights" else ckpt.optim_path(tiny_run)
    bad = tmp_path_factory.mktemp("ckpt") / source.name
    bad.write_bytes(data.draw(damaged(source.read_bytes())))
    if which == "weights":
        outcome(lambda: ckpt.load_checkpoint(bad))
    else:
        c = ckpt.load_checkpoint(tiny_run)
        from lgdram_cli.training.loop import build_model, make_optimizer

        model = build_model(c.spec["model"], 1, (60, 60), 10)
        optimizer = make_optimizer(model, 1e-3)
        tensors, metadata = {}, {}

        def read() -> None:
            nonlocal tensors, metadata
            tensors, metadata = ckpt._read(bad, "optimizer file")
            ckpt._restore_optimizer(bad, tensors, metadata, optimizer)

        outcome(read)
    assert torch.get_num_threads() >= 1


# ---------------------------------------------------------------- HDF5 canvas files

HDF5_CHILD = r"""
import sys, json
from pathlib import Path
from hypothesis import given, settings, HealthCheck, strategies as st
from datetime import timedelta
sys.path.insert(0, sys.argv[2])
from test_properties import damaged, outcome
from lgdram_cli.data.h5io import CanvasFile

good = Path(sys.argv[1]).read_bytes()
work = Path(sys.argv[1]).with_name("mutated.h5")
seen = {"ok": 0, "user error": 0}

@settings(max_examples=int(sys.argv[3]), deadline=timedelta(seconds=10), derandomize=True,
          suppress_health_check=list(HealthCheck), database=None)
@given(st.data())
def prop(data):
    work.write_bytes(data.draw(damaged(good)))
    def read():
        f = CanvasFile(work)
        try:
            f.read(slice(0, min(f.n, 64)))
            f.annotated()
            f.spec
        finally:
            f.close()
    seen[outcome(read)] += 1

prop()
print(json.dumps(seen))
"""


def test_hdf5_reader_takes_any_damage(tmp_path):
    """In a child process: a crash inside libhdf5 fails this test instead of killing pytest."""
    from lgdram_cli.data.gen import GenDataSpec, generate_file

    good = tmp_path / "good.h5"
    generate_file(GenDataSpec(dataset={"type": "cmnist", "digits": "mnist-mini"}, n=40), good)
    result = subprocess.run(
        [sys.executable, "-c", HDF5_CHILD, str(good), str(Path(__file__).parent), "50"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["user error"] > 0 and sum(seen.values()) >= 50
