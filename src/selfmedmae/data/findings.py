"""What a data check found: problems (each 'file: problem'), warnings, and a summary for good data."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List


@dataclass
class DataReport:
    problems: List[str] = field(default_factory=list)  # each one line: "<file>: <problem>"
    warnings: List[str] = field(default_factory=list)
    summary: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def extend(self, other: "DataReport") -> None:
        self.problems += other.problems
        self.warnings += other.warnings
        self.summary += other.summary
