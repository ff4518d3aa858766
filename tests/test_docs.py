"""The user documentation stays true: the config reference covers every key and is the generated page,
and every docs/ page and section the code, configs, README and docs cite exists."""
from __future__ import annotations

import re
from pathlib import Path

from selfmedmae.config import reference as ref

REPO = Path(__file__).resolve().parents[1]
# pages other branches add (the experiments helper writes docs/experiments.md): checked once they exist
PENDING: set[str] = set()  # pages linked before they exist (none now)

PAGE = re.compile(r"docs/([\w-]+\.md)")  # a docs page named anywhere
LINK = re.compile(r"\]\(([\w-]+\.md)(?:#[^)]*)?\)")  # a Markdown link from one docs page to another
SECTION = re.compile(r"§(\d+(?:\.\d+)*)")
HEADING = re.compile(r"^#+\s+(\d+(?:\.\d+)*)\.?\s", re.M)


def test_every_config_key_has_a_reference_entry_and_every_entry_a_key():
    assert ref.reference_problems() == []


def test_reference_check_fails_on_a_missing_or_stray_entry():
    entries = dict(ref.ENTRIES)
    entries.pop("train.epochs")
    entries["train.no_such_key"] = ("nothing", None)
    problems = ref.reference_problems(entries)
    assert any(p.startswith("train.epochs: config key without an entry") for p in problems)
    assert any(p.startswith("train.no_such_key: entry") for p in problems)


def test_committed_config_reference_is_the_generated_one():
    committed = (REPO / "docs" / "config-reference.md").read_text()
    assert committed == ref.render(), "regenerate: python -m selfmedmae.config.reference --write"
    for key, _, _ in ref.schema_keys():
        assert f"| `{key}` |" in committed


def _sources() -> list[Path]:
    files = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    for folder, pattern in (("src", "*.py"), ("configs", "*.yaml"), ("tests", "*.py")):
        files += sorted((REPO / folder).rglob(pattern))
    return [f for f in files if f != Path(__file__).resolve()]  # this file cites bad pages on purpose


def citation_problems(text: str, where: str, docs: Path) -> list[str]:
    """Cited docs pages that do not exist, and §N sections their page lacks. A § reference belongs to the
    last page named before it on its line, else to docs/official-code.md."""
    problems = []
    headings: dict[str, set] = {}
    page_pattern = LINK if where.startswith("docs/") else PAGE
    for n, line in enumerate(text.splitlines(), 1):
        marks = [(m.start(), "page", m.group(1)) for m in page_pattern.finditer(line)]
        marks += [(m.start(), "page", m.group(1)) for m in PAGE.finditer(line) if page_pattern is LINK]
        marks += [(m.start(), "section", m.group(1)) for m in SECTION.finditer(line)]
        page = "official-code.md"
        for _, kind, value in sorted(marks):
            pending = value in PENDING and not (docs / value).is_file()
            if kind == "page":
                page = value
                if not (docs / value).is_file() and not pending:
                    problems.append(f"{where}:{n}: docs/{value} does not exist")
                continue
            if page not in headings:
                path = docs / page
                headings[page] = set(HEADING.findall(path.read_text())) if path.is_file() else set()
            if value not in headings[page] and not (page in PENDING and not (docs / page).is_file()):
                problems.append(f"{where}:{n}: docs/{page} has no section {value}")
    return sorted(set(problems), key=problems.index)


def test_every_cited_docs_page_and_section_exists():
    problems = []
    for path in _sources():
        problems += citation_problems(path.read_text(encoding="utf-8"), path.relative_to(REPO).as_posix(),
                                      REPO / "docs")
    assert problems == []


def test_citation_check_finds_a_missing_page_and_a_missing_section(tmp_path):
    (tmp_path / "official-code.md").write_text("## 1. Models\n### 1.1 Block\n")
    text = ("see docs/official-code.md §1.1 and §1.9\n"
            "# §1 / §2\n"
            "read docs/nowhere.md first\n")
    problems = citation_problems(text, "x.py", tmp_path)
    assert problems == ["x.py:1: docs/official-code.md has no section 1.9",
                        "x.py:2: docs/official-code.md has no section 2",
                        "x.py:3: docs/nowhere.md does not exist"]


def test_readme_links_the_user_docs_and_keeps_its_two_commands_first():
    readme = (REPO / "README.md").read_text()
    first_block = readme.split("```bash", 1)[1].split("```", 1)[0]
    assert first_block.strip().splitlines()[0].startswith("make demo")
    assert first_block.strip().splitlines()[1].startswith("make test")
    assert readme.index("make demo") < readme.index("## Documentation")
    for page in ("getting-started", "own-data-3d", "own-data-2d", "config-reference", "checkpoints",
                 "experiments", "official-code"):
        assert f"(docs/{page}.md)" in readme
