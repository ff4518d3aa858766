"""What every benchmark here shares: the machine's description, step timing, peak memory, matmul peaks.

Timing: ``time.perf_counter`` around work that has finished (CPU ops are synchronous; on a GPU
``torch.cuda.synchronize`` first). Memory: on a GPU ``torch.cuda.max_memory_allocated``; on the CPU the
process's resident set size (RSS, /proc/self/statm) sampled every 2 ms by a thread while the measured work
runs, reported as the peak above the RSS just before it (freed heap handed back to the system first with
glibc's ``malloc_trim``), so a row shows what its own work adds: activations, gradients, windows.
"""
from __future__ import annotations

import ctypes
import datetime as _dt
import os
import platform
import subprocess
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import torch

from selfmedmae.runtime import autoprec

REPO = Path(__file__).resolve().parents[1]
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def cpu_flags() -> dict[str, bool]:
    """The flags that decide bf16 speed on a CPU (AMX and AVX512-BF16 are native bf16, AVX2 only is not),
    each with whether this CPU has it; read by :mod:`selfmedmae.runtime.autoprec`."""
    have = set(autoprec.cpu_flags())
    return {name: name in have for name in autoprec.FLAGS}


def machine() -> str:
    flags = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in cpu_flags().items())
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{autoprec.cpu_model()}, {os.cpu_count()} cores ({flags}), torch {torch.__version__} "
            f"({torch.get_num_threads()} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}), "
            f"{gpu}, Python {platform.python_version()}")


def commit() -> str:
    try:
        sha = subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, text=True).strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "src"], cwd=REPO).returncode != 0
        return sha + ("+uncommitted changes in src/" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def load_avg() -> str:
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:
        return "n/a"


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def _trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Peak memory (bytes) that the work inside ``with`` adds; see the module docstring."""

    def __init__(self, device: torch.device):
        self.device, self.peak = device, 0

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
            return self
        _trim()
        self._base, self._max, self._stop = _rss(), 0, threading.Event()

        def sample():
            while not self._stop.is_set():
                self._max = max(self._max, _rss())
                time.sleep(0.002)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self._base
            return
        self._stop.set()
        self._thread.join()
        self.peak = max(self._max, _rss()) - self._base


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@contextmanager
def timer(device: torch.device, out: list) -> Iterator[None]:
    """Append the seconds the block took to ``out``."""
    sync(device)
    start = time.perf_counter()
    yield
    sync(device)
    out.append(time.perf_counter() - start)


def matmul_peak(dtype: torch.dtype, device: torch.device, n_max: int = 2048, reps: int = 3) -> float:
    """Best FLOP/s of an n x n x n matmul in ``dtype``: n doubles from 256 while one matmul takes under
    0.5 s (up to ``n_max``; emulated bf16 stops early, it is ~70x slower), then the best of ``reps``."""
    n = 256
    while True:
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        times: list = []
        with timer(device, times):
            a @ b
        if times[0] > 0.5 or n >= n_max:
            break
        n *= 2
    times = []
    for _ in range(reps):
        with timer(device, times):
            a @ b
    return 2 * n ** 3 / min(times)


def fmt_bytes(n: float) -> str:
    return f"{n / 2 ** 20:,.0f} MiB" if n < 2 ** 30 else f"{n / 2 ** 30:.2f} GiB"


def table(header: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


def best(times: list) -> float:
    """Best of the measured repetitions: the least disturbed by other jobs on a shared machine."""
    return min(times) if times else float("nan")


def timed(fn: Callable[[], object], device: torch.device, reps: int) -> list:
    times: list = []
    for _ in range(reps):
        with timer(device, times):
            fn()
    return times
