"""docs/plugins.md's authoring examples run as written: the loss term, "Replace one part of RAM",
"Build a canvas task" and "Without a package" (in order, in an empty folder, one namespace), so a
plugin can be written from the guide alone."""

from __future__ import annotations

import re


from helpers import REPO, python_blocks, run_doc_blocks

DOC = REPO / "docs" / "plugins.md"
#: The sections whose ```python blocks run (in this order: later blocks use earlier classes).
SECTIONS = ("### A loss term", "## 3. Replace one part of RAM", "## 4. Build a canvas task", "## 5. Without a package")


def section(text: str, heading: str) -> str:
    """The text under `heading` (a line starting with it) up to the next heading of its level or above."""
    level = heading.split(" ")[0]
    start = next(m.end() for m in re.finditer(rf"^{re.escape(heading)}.*$", text, flags=re.M))
    stop = re.compile(rf"^#{{1,{len(level)}}} ", flags=re.M).search(text, start)
    return text[start : stop.start() if stop else len(text)]


def test_the_plugin_guide_examples_run(tmp_path, monkeypatch):
    text = DOC.read_text()
    blocks = [(heading, block) for heading in SECTIONS for block in python_blocks(section(text, heading))]
    assert len(blocks) >= 8, "docs/plugins.md lost its examples"
    monkeypatch.chdir(tmp_path)
    labelled = [(f"docs/plugins.md {heading!r} block {i + 1}", b) for i, (heading, b) in enumerate(blocks)]
    namespace, seconds = run_doc_blocks(labelled, "__plugins_doc__")
    assert seconds < 120  # tiny settings: seconds on a CPU
    assert (tmp_path / "runs" / "speckle" / "run.safetensors").is_file()
    # what the guide promises about the classes it wrote
    assert namespace["ConvRAM"].description.startswith("RAM with a convolutional glimpse network")
    assert namespace["report"].skipped == {}


def test_the_guide_states_the_import_rule():
    text = DOC.read_text()
    assert "import from `lgdram` only" in text and "`lgdram_cli` is the implementation" in text
    for block in python_blocks(text):
        assert "lgdram_cli" not in block, block
