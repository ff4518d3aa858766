"""What a run tells while it works: ``metrics.jsonl``, TensorBoard events beside it, a progress bar."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Optional

from tqdm import tqdm


def _step_of(line: str) -> Optional[int]:
    """The step of one metrics.jsonl line; None for a blank or cut line (a process killed mid-write)."""
    try:
        return int(json.loads(line).get("step", 0))
    except (ValueError, AttributeError, TypeError):
        return None


class MetricsLog:
    """Appends one JSON object per line; on resume drops lines past the step it resumes from."""

    def __init__(self, run_dir: Path, enabled: bool, resume_step: Optional[int] = None):
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self.writer = None
        if not enabled:
            return
        if resume_step is not None and self.path.exists():
            kept = [line for line in self.path.read_text().splitlines()
                    if _step_of(line) is not None and _step_of(line) <= resume_step]
            self.path.write_text("".join(line + "\n" for line in kept))
        elif self.path.exists():
            self.path.unlink()
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        except ImportError:  # tensorboard is a dependency, but a run must not die for want of it
            self.writer = None

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        with self.path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.writer is not None:
            step = record.get("step", 0)
            for key, value in record.items():
                if key not in ("step", "epoch", "kind") and isinstance(value, (int, float)):
                    self.writer.add_scalar(f"{record.get('kind', 'train')}/{key}", value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class Progress:
    """tqdm bar over optimiser steps: epoch, loss, lr, samples/s and ETA (rank 0 only)."""

    def __init__(self, total_steps: int, start_step: int, enabled: bool):
        self.bar = tqdm(total=total_steps, initial=start_step, disable=not enabled, dynamic_ncols=True,
                        unit="step", mininterval=1.0)
        self.t0, self.samples = time.perf_counter(), 0

    def update(self, epoch: int, loss: float, lr: float, samples: int) -> float:
        self.samples += samples
        rate = self.samples / max(time.perf_counter() - self.t0, 1e-9)
        self.bar.set_postfix_str(f"epoch {epoch} loss {loss:.4f} lr {lr:.2e} {rate:.1f} samples/s", refresh=False)
        self.bar.update(1)
        return rate

    def close(self) -> None:
        self.bar.close()
