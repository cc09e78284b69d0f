"""Plugin registries through real entry points: fake installed distributions on PYTHONPATH,
exercised through the `lgdram` console script in a subprocess."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

from helpers import BUILTIN_DATASETS, PRESETS, assert_one_line_error, leftovers, run_cli
from lgdram_cli.data.h5io import CanvasFile

GOOD = '''
from lgdram_cli.data.generators import TranslatedConfig, TranslatedTask


class SmallConfig(TranslatedConfig):
    type: str = "smalltrans"
    canvas: tuple[int, int] = (36, 44)


class SmallTask(TranslatedTask):
    """A third-party translated task on a 36x44 canvas."""

    Config = SmallConfig
'''

BROKEN = '''
raise RuntimeError("broken plugin exploded at import")
'''

OLD_API = '''
from lgdram_cli.data.generators import TranslatedTask


class OldTask(TranslatedTask):
    """Built for an older plugin API."""

    plugin_api_version = 0
'''

NOT_A_GENERATOR = '''
class Thing:
    """Not a DatasetGenerator at all."""
'''

TWIN = '''
from lgdram_cli.data.generators import TranslatedTask


class Twin(TranslatedTask):
    """One of two plugins that claim the same name."""
'''


def install(site: Path, dist: str, version: str, module: str, source: str, entries: dict[str, str]) -> None:
    """A minimal installed distribution: a module plus `<dist>-<version>.dist-info`."""
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = "\n".join(f"{name} = {target}" for name, target in entries.items())
    (info / "entry_points.txt").write_text(f"[lgdram.datasets]\n{lines}\n")
    (info / "RECORD").write_text("")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("site")
    install(site, "lgdram-smalltrans", "1.2.3", "smalltrans_plugin", GOOD, {"smalltrans": "smalltrans_plugin:SmallTask"})
    install(site, "lgdram-broken", "0.1.0", "broken_plugin", BROKEN, {"exploding": "broken_plugin:Task"})
    install(site, "lgdram-oldapi", "2.0", "oldapi_plugin", OLD_API, {"oldapi": "oldapi_plugin:OldTask"})
    install(site, "lgdram-notgen", "0.0.1", "notgen_plugin", NOT_A_GENERATOR, {"notgen": "notgen_plugin:Thing"})
    install(site, "twin-alpha", "1.0", "twin_alpha", TWIN, {"twin": "twin_alpha:Twin"})
    install(site, "twin-beta", "3.1", "twin_beta", TWIN, {"twin": "twin_beta:Twin"})
    return site


def lgdram(site: Path, *args: str, cwd: Path | None = None, **env: str):
    pythonpath = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    return run_cli(*args, cwd=cwd, env={"PYTHONPATH": pythonpath, "COLUMNS": "250", **env})


@pytest.fixture(scope="module")
def listing(site) -> dict:
    result = lgdram(site, "plugins", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def rows(listing: dict) -> dict[str, dict]:
    return {r["name"]: r for r in listing["entries"] if r["kind"] == "dataset"}


def test_third_party_plugin_is_listed_with_its_distribution(listing):
    entry = rows(listing)["smalltrans"]
    assert entry["distribution"] == "lgdram-smalltrans"
    assert entry["version"] == "1.2.3"
    assert entry["ok"] is True and entry["error"] is None
    assert entry["description"] == "A third-party translated task on a 36x44 canvas."
    for name in BUILTIN_DATASETS:  # built-ins unaffected by the broken neighbours
        assert rows(listing)[name]["ok"] and rows(listing)[name]["distribution"] == "lgdram"


def test_third_party_plugin_is_usable_by_gen_data(site, tmp_path):
    result = lgdram(site, "gen-data", "--dataset", "smalltrans", "--n", "12", "--set", "digits=mnist-mini", "--out", "p.h5", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    cf = CanvasFile(tmp_path / "p.h5")
    assert cf.n == 12 and cf.shape == (1, 36, 44)
    assert cf.spec["dataset"]["type"] == "smalltrans"


def test_plugin_that_fails_to_import_is_reported_not_fatal(listing, site, tmp_path):
    entry = rows(listing)["exploding"]
    assert entry["ok"] is False
    assert entry["distribution"] == "lgdram-broken"
    assert "RuntimeError" in entry["error"] and "exploded at import" in entry["error"]
    assert any("lgdram-broken" in p and "exploding" in p for p in listing["problems"])

    table = lgdram(site, "plugins")
    assert table.returncode == 0, table.stderr
    assert "lgdram-broken" in table.stdout and "exploded at import" in table.stdout

    # other commands keep working while the broken plugin is installed
    ok = lgdram(site, "gen-data", "--dataset", "translated", "--n", "5", "--set", "digits=mnist-mini", "--out", "ok.h5", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    schema = lgdram(site, "schema", "gen-data")
    assert schema.returncode == 0, schema.stderr
    json.loads(schema.stdout)

    # using the broken entry itself is a one-line bad-input error naming the distribution
    bad = lgdram(site, "gen-data", "--dataset", "exploding", "--n", "5", "--out", "bad.h5", cwd=tmp_path)
    assert_one_line_error(bad.returncode, bad.stderr, "exploding", "lgdram-broken", "exploded at import")
    assert leftovers(tmp_path) == ["ok.h5"]


def test_wrong_plugin_api_version_is_refused(listing, site, tmp_path):
    entry = rows(listing)["oldapi"]
    assert entry["ok"] is False
    assert "plugin API version 0" in entry["error"] and "upgrade" in entry["error"]
    result = lgdram(site, "gen-data", "--dataset", "oldapi", "--n", "5", "--out", "x.h5", cwd=tmp_path)
    assert_one_line_error(result.returncode, result.stderr, "lgdram-oldapi 2.0", "plugin API version 0")
    assert leftovers(tmp_path) == []


def test_entry_that_is_not_a_generator_is_refused(listing):
    entry = rows(listing)["notgen"]
    assert entry["ok"] is False
    assert "not a subclass" in entry["error"] and "DatasetGenerator" in entry["error"]


def test_duplicate_names_name_both_distributions(listing, site, tmp_path):
    entry = rows(listing)["twin"]
    assert entry["ok"] is False
    problem = [p for p in listing["problems"] if "'twin'" in p]
    assert len(problem) == 1, listing["problems"]
    assert "twin-alpha 1.0" in problem[0] and "twin-beta 3.1" in problem[0]
    result = lgdram(site, "gen-data", "--dataset", "twin", "--n", "5", "--out", "x.h5", cwd=tmp_path)
    assert_one_line_error(result.returncode, result.stderr, "twin-alpha", "twin-beta", "registered twice")
    assert leftovers(tmp_path) == []


def test_disable_plugins_hides_third_party_entries(site):
    result = lgdram(site, "plugins", "--json", LGDRAM_DISABLE_PLUGINS="1")
    assert result.returncode == 0, result.stderr
    listing = json.loads(result.stdout)
    datasets = rows(listing)
    assert set(datasets) == set(BUILTIN_DATASETS)
    assert all(r["distribution"] == "lgdram" and r["ok"] for r in datasets.values())
    assert listing["problems"] == []
    presets = {r["name"] for r in listing["entries"] if r["kind"] == "preset"}
    assert presets == set(PRESETS)


def test_unknown_name_suggests_the_closest(site, tmp_path):
    result = lgdram(site, "gen-data", "--dataset", "smaltrans", "--n", "5", "--out", "x.h5", cwd=tmp_path)
    line = assert_one_line_error(result.returncode, result.stderr, "unknown dataset 'smaltrans'", "did you mean 'smalltrans'")
    assert "mcmnist-100" in line  # the available names, presets included, are listed
    assert leftovers(tmp_path) == []
