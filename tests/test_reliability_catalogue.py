"""docs/reliability.md is a catalogue of failures guarded against, each with the test that shows it: every
test it names must exist (a renamed or deleted test would leave a promise without proof)."""
from __future__ import annotations

import ast
import re

from tiny_runs import REPO

DOC = REPO / "docs" / "reliability.md"
REF = re.compile(r"`(tests/[\w/]+\.py)::(\w+)(?:\[([^\]]*(?:\][^\]`]*)*)\])?`")


def _rows() -> list[str]:
    return [line for line in DOC.read_text().splitlines() if re.match(r"\| \d+ \|", line)]


def _functions(path) -> set:
    tree = ast.parse(path.read_text())
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}


def test_the_catalogue_has_at_least_40_entries_each_with_a_behaviour_and_a_test():
    rows = _rows()
    assert len(rows) >= 40, len(rows)
    numbers = [int(r.split("|")[1]) for r in rows]
    assert numbers == list(range(1, len(rows) + 1))  # numbered once each, in order
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert len(cells) >= 4 and all(cells[:3]), row
        assert REF.search(row) or "benchmarks/soak.py" in row, f"no test named: {row}"


def test_every_test_named_in_the_catalogue_exists():
    missing = []
    for row in _rows():
        for path, name, param in REF.findall(row):
            file = REPO / path
            if not file.is_file() or name not in _functions(file):
                missing.append(f"{path}::{name}")
            elif param:  # a parametrised case: its id must be built from what the file holds
                source = file.read_text()
                parts = [p for p in re.split(r"[: \-]", param) if p]
                if not all(p in source for p in parts):
                    missing.append(f"{path}::{name}[{param}]")
    assert not missing, missing


def test_the_soak_script_exists_and_the_makefile_runs_it():
    assert (REPO / "benchmarks" / "soak.py").is_file()
    assert "benchmarks/soak.py" in (REPO / "Makefile").read_text()
