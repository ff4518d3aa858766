"""Test helper: the fenced blocks of a docs page, so a test runs the page's worked example as written."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def blocks(page: str, lang: str) -> list[str]:
    """The ``lang`` fenced blocks of ``docs/<page>``, in order."""
    text = (REPO / "docs" / page).read_text()
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def example_commands(page: str) -> list[list[str]]:
    """The ``selfmedmae ...`` lines of the page's last bash block (its worked example), as argv lists."""
    return [shlex.split(line)[1:] for line in blocks(page, "bash")[-1].splitlines()
            if line.startswith("selfmedmae ")]
