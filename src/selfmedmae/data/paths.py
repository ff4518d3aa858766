"""How a message names a data path: absolute, a folder called a folder, and, for a relative ``data.root``,
the folder it was resolved against (``data.root`` is relative to the folder the command runs in)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional


def shown(path: str | os.PathLike) -> str:
    """``path`` made absolute against the current folder (symbolic links kept as named)."""
    return os.path.abspath(path)


def root_note(root: Optional[str | os.PathLike]) -> str:
    """For a relative ``data.root``: ``data.root 'x' is relative to the current folder /cwd``; else ''."""
    if root is None or os.path.isabs(str(root)):
        return ""
    return f"data.root {str(root)!r} is relative to the current folder {os.getcwd()}"


def _notes(*parts: str) -> str:
    kept = [p for p in parts if p]
    return f" ({'; '.join(kept)})" if kept else ""


def missing_file(path: str | os.PathLike, key: str, root: Optional[str | os.PathLike] = None) -> str:
    """The problem line of a data file (``key``: ``data.csv``, ...) that is not a file: ``<path>: file not
    found (...)`` or ``<path>: is a folder, not a file (...)``."""
    what = "is a folder, not a file" if Path(path).is_dir() else "file not found"
    return f"{shown(path)}: {what}{_notes(key, root_note(root))}"


def missing_root(root: str | os.PathLike) -> str:
    """The problem line of a ``data.root`` that is not a folder."""
    what = "is a file, not the dataset folder" if Path(root).is_file() else "dataset folder not found"
    return f"{shown(root)}: {what}{_notes('data.root' if not root_note(root) else '', root_note(root))}"


def missing_listed(path: str | os.PathLike, where: str, kind: str, root: Optional[str | os.PathLike] = None) -> str:
    """The problem line of a path a data file lists (``where``: ``listed in <file> line N``) that is not a
    ``kind`` (``image file``, ``volume file``) where it points."""
    if Path(path).is_dir():
        article = "an" if kind[0] in "aeiou" else "a"
        return f"{shown(path)}: is a folder, not {article} {kind}{_notes(where, root_note(root))}"
    return f"{shown(path)}: {where} but not found{_notes(root_note(root))}"
