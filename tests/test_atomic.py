"""Write-then-rename (`lgdram_cli.atomic`): finished outputs are never half-written or lost."""

from __future__ import annotations

import pytest

from lgdram_cli.atomic import atomic_path
from lgdram_cli.errors import UserError


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    out = tmp_path / "data.h5"
    out.write_text("finished")
    with pytest.raises(RuntimeError), atomic_path(out) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert out.read_text() == "finished"
    assert [p.name for p in tmp_path.iterdir()] == ["data.h5"]


def test_the_temp_name_is_hidden_and_keeps_the_suffix(tmp_path):
    with atomic_path(tmp_path / "m.pt2") as tmp:  # torch.export.save needs the .pt2 suffix
        assert tmp.name.startswith(".m.pt2.") and tmp.suffix == ".pt2"
        tmp.write_text("x")
    assert (tmp_path / "m.pt2").read_text() == "x"


def test_refusals_come_before_anything_is_written(tmp_path):
    (tmp_path / "out").write_text("mine")
    with pytest.raises(UserError, match="already exists.*--force"):
        with atomic_path(tmp_path / "out", force=False):
            pytest.fail("must not be reached")
    with pytest.raises(UserError, match="does not exist"):
        with atomic_path(tmp_path / "no" / "out"):
            pytest.fail("must not be reached")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_folders_replace_files_and_folders_only_when_complete(tmp_path):
    out = tmp_path / "model"
    out.write_text("a file in the way")
    with atomic_path(out, folder=True) as tmp:
        (tmp / "config.json").write_text("{}")
    assert (out / "config.json").read_text() == "{}"
    with pytest.raises(RuntimeError), atomic_path(out, folder=True) as tmp:
        (tmp / "half.json").write_text("{")
        raise RuntimeError("interrupted")
    assert sorted(p.name for p in out.iterdir()) == ["config.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
