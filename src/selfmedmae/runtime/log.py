"""What a run tells while it works: ``metrics.jsonl``, TensorBoard events (scalars and images) beside it,
and progress: a tqdm bar on a terminal, or plain lines when the output goes to a file (a batch job's log),
one per ``train.log_every`` steps and one per epoch, with loss, lr, samples/s and ETA."""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

import numpy as np
from tqdm import tqdm


def _step_of(line: str) -> Optional[int]:
    """The step of one metrics.jsonl line; None for a blank or cut line (a process killed mid-write)."""
    try:
        return int(json.loads(line).get("step", 0))
    except (ValueError, AttributeError, TypeError):
        return None


def _is_end(line: str) -> bool:
    try:
        return json.loads(line).get("kind") == "end"
    except (ValueError, AttributeError):
        return False


def to_terminal() -> bool:
    """Whether progress goes to a terminal (tqdm bars) rather than a file (plain lines)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


def log_line(text: str) -> None:
    """One progress line on stderr, after whatever stdout holds, so a shared log file keeps the order."""
    sys.stdout.flush()
    print(text, file=sys.stderr, flush=True)


def clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def progress_iter(items: Iterable, total: int, desc: str, unit: str, enabled: bool = True,
                  every_s: float = 30.0) -> Iterator:
    """Iterate ``items`` showing progress: a transient tqdm bar on a terminal; otherwise a line at the start,
    one every ``every_s`` seconds with the elapsed time and ETA, and one at the end."""
    if not enabled:
        yield from items
        return
    if to_terminal():
        yield from tqdm(items, total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True)
        return
    t0 = last = time.perf_counter()
    units = unit + ("es" if unit.endswith(("ch", "s", "x")) else "s")
    log_line(f"{desc}: {total} {unit if total == 1 else units}")
    done = 0
    for item in items:
        yield item
        done += 1
        now = time.perf_counter()
        if done == total or now - last >= every_s:
            last = now
            eta = (now - t0) / done * (total - done)
            log_line(f"{desc}: {done}/{total} {units}, {clock(now - t0)} elapsed, ETA {clock(eta)}")


class MetricsLog:
    """Appends one JSON object per line; on resume drops lines past the step it resumes from."""

    def __init__(self, run_dir: Path, enabled: bool, resume_step: Optional[int] = None):
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self.writer = None
        if not enabled:
            return
        if resume_step is not None and self.path.exists():
            # the run's "end" record is written again at its end: resuming a finished run keeps one, not two
            kept = [line for line in self.path.read_text().splitlines()
                    if _step_of(line) is not None and _step_of(line) <= resume_step and not _is_end(line)]
            self.path.write_text("".join(line + "\n" for line in kept))
        elif self.path.exists():
            self.path.unlink()
        self._tb_dir = run_dir / "tensorboard"
        self._tb_tried = False

    def _tb(self) -> Any:
        """The TensorBoard writer, made at the first scalar or image: a resume with nothing left to train (a
        finished run) adds no empty event file to ``tensorboard/``."""
        if self.enabled and not self._tb_tried:
            self._tb_tried = True
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(log_dir=str(self._tb_dir))
            except ImportError:  # tensorboard is a dependency, but a run must not die for want of it
                self.writer = None
        return self.writer

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        with self.path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")
        scalars = {k: v for k, v in record.items()
                   if k not in ("step", "epoch", "kind") and isinstance(v, (int, float))}
        if scalars and self._tb() is not None:
            step = record.get("step", 0)
            for key, value in scalars.items():
                self.writer.add_scalar(f"{record.get('kind', 'train')}/{key}", value, step)

    def add_image(self, tag: str, image: np.ndarray, step: int) -> None:
        """An [H, W, 3] uint8 image in TensorBoard (Images tab), beside the scalars."""
        if self.enabled and self._tb() is not None:
            self.writer.add_image(tag, image, step, dataformats="HWC")
            self.writer.flush()

    def add_png(self, tag: str, path: Optional[Path], step: int) -> None:
        """A figure already written as PNG (e.g. the reconstruction figure) in TensorBoard."""
        if path is None or not self.enabled or self._tb() is None:
            return
        from PIL import Image

        with Image.open(path) as img:
            self.add_image(tag, np.asarray(img.convert("RGB")), step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class Progress:
    """Progress over optimiser steps (rank 0 only): a tqdm bar with epoch, loss, lr and samples/s on a
    terminal; plain lines otherwise, every ``log_every`` steps and at the end of each epoch, with the
    elapsed time and the ETA of the whole run."""

    def __init__(self, total_steps: int, start_step: int, enabled: bool, steps_per_epoch: int = 0,
                 log_every: int = 0):
        self.lines = enabled and not to_terminal()
        self.bar = tqdm(total=total_steps, initial=start_step, disable=not enabled or self.lines,
                        dynamic_ncols=True, unit="step", mininterval=1.0)
        self.t0, self.samples = time.perf_counter(), 0
        self.total, self.step, self.start = total_steps, start_step, start_step
        self.steps_per_epoch, self.log_every = steps_per_epoch, log_every
        if self.lines:
            log_line(f"training: {total_steps} steps ({steps_per_epoch} per epoch), from step {start_step}")

    def _times(self) -> str:
        elapsed = time.perf_counter() - self.t0
        done = self.step - self.start
        eta = elapsed / done * (self.total - self.step) if done else math.nan
        return f"{clock(elapsed)} elapsed, ETA {clock(eta) if math.isfinite(eta) else '?'}"

    def _epochs(self, epoch: int) -> str:
        n = self.total // self.steps_per_epoch if self.steps_per_epoch else 0
        return f"epoch {epoch + 1}/{n}" if n else f"epoch {epoch + 1}"

    def update(self, epoch: int, loss: float, lr: float, samples: int) -> float:
        self.samples += samples
        self.step += 1
        rate = self.samples / max(time.perf_counter() - self.t0, 1e-9)
        self.bar.set_postfix_str(f"{self._epochs(epoch)} loss {loss:.4f} lr {lr:.2e} {rate:.1f} samples/s", refresh=False)
        self.bar.update(1)
        if self.lines and self.log_every and self.step % self.log_every == 0:
            log_line(f"{self._epochs(epoch)} step {self.step}/{self.total} loss {loss:.4f} lr {lr:.2e} "
                     f"{rate:.1f} samples/s, {self._times()}")
        return rate

    def epoch_done(self, epoch: int, loss: float, lr: Optional[float] = None) -> None:
        """The epoch's line (mean loss) when writing lines; nothing extra on a terminal."""
        if self.lines:
            rate = self.samples / max(time.perf_counter() - self.t0, 1e-9)
            lr_text = f" lr {lr:.2e}" if lr is not None else ""
            log_line(f"{self._epochs(epoch)} done: mean loss {loss:.4f}{lr_text} {rate:.1f} samples/s, "
                     f"step {self.step}/{self.total}, {self._times()}")

    def note(self, text: str) -> None:
        """A line that must be seen (e.g. validation results), on a terminal above the bar."""
        if self.bar.disable and not self.lines:
            return
        if self.lines:
            log_line(text)
        else:
            self.bar.write(text)

    def close(self) -> None:
        self.bar.close()
