"""docs/recipes.md shows the recipes' code as it is: every Python excerpt is found verbatim in
an example that tests/processes/test_recipes.py runs, except the few sketches named here, which
must still compile."""

from __future__ import annotations

import ast
import re
import textwrap

from tests.support import ROOT

DOC = ROOT / "docs" / "recipes.md"
EXAMPLE_FILES = [
    *sorted((ROOT / "examples" / "fastapi_app").glob("*.py")),
    *sorted((ROOT / "examples" / "django_project").rglob("*.py")),
    ROOT / "examples" / "script.py",
    ROOT / "examples" / "script_tasks.py",
]
# Sketches of code that is not in the examples, by their first line.
SKETCHES = {
    "from pg_scheduler import SyncScheduler",  # the blocking API at a glance
    "with transaction.atomic():",  # on_commit: the examples have no models
}


def python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", DOC.read_text(), flags=re.S | re.M)


def test_every_excerpt_is_verbatim_in_an_example_and_every_sketch_compiles() -> None:
    sources = [path.read_text() for path in EXAMPLE_FILES]
    blocks = python_blocks()
    assert len(blocks) >= 8
    sketches = set()
    for block in blocks:
        first = block.splitlines()[0]
        if first in SKETCHES:
            sketches.add(first)
            ast.parse(textwrap.dedent(block))
            continue
        assert any(block in source for source in sources), f"not in any example:\n{block}"
    assert sketches == SKETCHES
