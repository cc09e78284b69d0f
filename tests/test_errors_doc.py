"""docs/errors.md names, for each class of bad input and failure, the tests that back it: every
test it names must exist (`…::name` is another test of the file named before it in the row)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from helpers import REPO


def test_every_test_named_in_docs_errors_exists():
    text = (REPO / "docs" / "errors.md").read_text()
    defined: dict[str, set[str]] = {}
    missing = []
    rows = [line for line in text.splitlines() if line.startswith("|")]
    named = 0
    for row in rows:
        current = None
        for file, name in re.findall(r"`(test_\w+\.py|…)::(test_\w+)`", row):
            current = current if file == "…" else file
            assert current, f"'…::{name}' without a file before it: {row}"
            if current not in defined:
                tree = ast.parse((REPO / "tests" / current).read_text())
                defined[current] = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
            named += 1
            if name not in defined[current]:
                missing.append(f"{current}::{name}")
    assert not missing, f"docs/errors.md names tests that do not exist: {missing}"
    assert named >= 60
    assert Path(REPO / "docs" / "errors.md").is_file()
