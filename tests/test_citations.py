"""Every path and module the code, configs and docs cite exists in the repository, so a user can follow
each reference (docs pages and their sections are checked in test_docs)."""
from __future__ import annotations

import importlib
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# a repository path: src/..., docs/..., configs/..., benchmarks/..., tests/..., .ci/..., or selfmedmae/....py
PATH = re.compile(r"(?<![\w./-])((?:src/|docs/|configs/|benchmarks/|tests/|\.ci/)?selfmedmae/[\w/.-]+\.py"
                  r"|(?:src|docs|configs|benchmarks|tests|\.ci)/[\w./-]+)")
DOTTED = re.compile(r"(?<![\w.])selfmedmae(?:\.[A-Za-z_]\w*)+")  # selfmedmae.metrics.dice.dice_scores


def _sources() -> list[Path]:
    return [REPO / "README.md", REPO / "Makefile", *sorted((REPO / "docs").glob("*.md")),
            *sorted((REPO / "src").rglob("*.py")), *sorted((REPO / "configs").rglob("*.yaml")),
            *sorted((REPO / "benchmarks").glob("*.py"))]


def missing_paths(text: str) -> list[str]:
    out = []
    for m in PATH.finditer(text):
        path = m.group(1).rstrip(".,:;)")
        if any(c in path for c in "*<>{}") or "NNNN" in path:  # a pattern, not a file
            continue
        if not (REPO / path).exists() and not (REPO / "src" / path).exists():
            out.append(path)
    return out


def unresolved_names(text: str) -> list[str]:
    out = []
    for m in DOTTED.finditer(text):
        parts = m.group(0).split(".")
        for i in range(len(parts), 0, -1):  # the longest importable prefix, then attributes
            try:
                obj = importlib.import_module(".".join(parts[:i]))
            except ImportError:
                continue
            try:
                for attr in parts[i:]:
                    obj = getattr(obj, attr)
            except AttributeError:
                out.append(m.group(0))
            break
        else:
            out.append(m.group(0))
    return out


def test_the_checks_catch_a_stale_reference():
    gone = "docs/" + "official-code-spec.md"  # split, so that test_docs does not take it for a citation
    assert missing_paths(f"see src/selfmedmae/train/loop.py and {gone}") == ["src/selfmedmae/train/loop.py", gone]
    assert missing_paths("see src/selfmedmae/metrics/dice.py, figures/recon_epoch_NNNN.png") == []
    assert unresolved_names("selfmedmae.metrics_auc.roc_auc and selfmedmae.metrics.auc.roc_auc") == [
        "selfmedmae.metrics_auc.roc_auc"]


def test_every_cited_path_and_module_exists():
    problems = []
    for f in _sources():
        text = f.read_text()
        rel = f.relative_to(REPO)
        problems += [f"{rel}: {p}" for p in missing_paths(text) + unresolved_names(text)]
    assert problems == []
