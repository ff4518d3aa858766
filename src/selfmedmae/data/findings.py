"""What a data check found: problems (each 'file: problem'), warnings, and a summary for good data.

Every problem and warning is one line, whatever the file names or cell values it quotes: :class:`Lines`
escapes line breaks and other control characters as they are added (found by fuzzing the readers: a CSV
cell holding a line break used to split its message over two lines).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable


def one_line(text: Any) -> str:
    """``text`` as one printable line: control characters (line breaks, tabs, NUL, ...) shown escaped."""
    s = str(text)
    if s.isprintable():
        return s
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in s)


def constant_problem(path: Any, value: Any, unit: str = "voxel") -> str:
    """The problem line of an image with one value everywhere (all zero: a failed export): nothing to learn,
    and its intensity normalisation divides by zero."""
    what = f"every {unit} is 0 (an empty or failed export?)" if value == 0 else f"every {unit} is {value}"
    return f"{path}: {what}; a constant image cannot be normalised or learnt from"


def duplicated_columns(path: Any, header: Iterable[str]) -> list:
    """A problem line for each name a CSV header holds twice (a reader keyed by name would keep one column
    and drop the other): the name, its column numbers (from 1) and the file."""
    first: dict = {}
    problems = []
    for number, name in enumerate(header, start=1):
        if not name:
            continue
        if name in first:
            problems.append(f"{path}: column {name!r} appears twice in the header (columns {first[name]} and "
                            f"{number}); rename or remove one")
        else:
            first[name] = number
    return problems


class Lines(list):
    """A list of messages that keeps each one on one line (:func:`one_line`)."""

    def __init__(self, items: Iterable[Any] = ()):
        super().__init__(one_line(x) for x in items)

    def append(self, item: Any) -> None:
        super().append(one_line(item))

    def insert(self, index: int, item: Any) -> None:  # type: ignore[override]
        super().insert(index, one_line(item))

    def extend(self, items: Iterable[Any]) -> None:
        super().extend(one_line(x) for x in items)

    def __iadd__(self, items: Iterable[Any]) -> "Lines":  # type: ignore[override]
        self.extend(items)
        return self


@dataclass
class DataReport:
    problems: Lines = field(default_factory=Lines)  # each one line: "<file>: <problem>"
    warnings: Lines = field(default_factory=Lines)
    summary: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self.problems, self.warnings = Lines(self.problems), Lines(self.warnings)

    @property
    def ok(self) -> bool:
        return not self.problems

    def extend(self, other: "DataReport") -> None:
        self.problems += other.problems
        self.warnings += other.warnings
        self.summary += other.summary
