"""docs/guarantees.md maps every guarantee to its tests: each test it names exists (no database).

The doc names tests as `` `file::function` `` with ``file`` under ``tests/`` (or a path from the
repository root: ``tests/...``, ``chaos/...``), `` `::function` `` for another test of the file
named just before, and `` `file` `` for a whole module."""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GUARANTEES = ROOT / "docs" / "guarantees.md"
TEST_NAME = re.compile(r"^(?P<file>(?:[\w.-]+/)*test_\w+\.py)?(?:::(?P<function>\w+))?$")


def _path(file: str) -> Path:
    return ROOT / file if file.startswith(("tests/", "chaos/")) else ROOT / "tests" / file


@cache
def _functions(path: Path) -> frozenset[str]:
    tree = ast.parse(path.read_text(), str(path))
    return frozenset(
        node.name for node in tree.body if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    )


def _references() -> list[tuple[str, str | None]]:
    """(file, function or None) for every test the doc names, in order."""
    found: list[tuple[str, str | None]] = []
    last_file: str | None = None
    for span in re.findall(r"`([^`\n]+)`", GUARANTEES.read_text()):
        match = TEST_NAME.match(span)
        if match is None or not (match["file"] or match["function"]):
            continue
        if match["file"] is None and not span.startswith("::"):
            continue
        file = match["file"] or last_file
        assert file is not None, f"`{span}` continues no file named before it"
        last_file = file
        found.append((file, match["function"]))
    return found


def test_every_test_named_in_docs_guarantees_exists() -> None:
    references = _references()
    assert len(references) > 80, "the doc's test names were not found: has their form changed?"
    missing = []
    for file, function in references:
        path = _path(file)
        if not path.is_file():
            missing.append(f"{file} (no such file)")
        elif function is not None and function not in _functions(path):
            missing.append(f"{file}::{function}")
    assert not missing, "docs/guarantees.md names tests that do not exist:\n" + "\n".join(missing)


def test_the_map_names_the_tests_of_every_guarantee() -> None:
    """Each of the nine guarantees has its proof list, and each list names tests."""
    text = GUARANTEES.read_text()
    sections = re.split(r"^## \d\. ", text, flags=re.M)[1:]
    assert len(sections) == 9
    for section in sections:
        proof = section.split("**Proof.**", 1)
        assert len(proof) == 2, f"no proof list under: {section.splitlines()[0]}"
        assert "::test_" in proof[1], f"no test named under: {section.splitlines()[0]}"
