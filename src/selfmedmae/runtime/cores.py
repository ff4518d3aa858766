"""The CPU cores this process may use, and the data-loading worker count that follows from them."""
from __future__ import annotations

import os


def usable_cores() -> int:
    """Cores in this process's affinity mask (a container's or ``taskset``'s limit), else the machine's."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_workers() -> int:
    """``data.num_workers`` when a config does not set it: none on two cores or fewer, where a worker
    process takes a core from the model's threads for crops that cost less than moving them between
    processes (benchmarks/RESULTS.md, "Pre-training steps"); else half the cores, at most 4."""
    cores = usable_cores()
    return 0 if cores <= 2 else min(4, cores // 2)


def reading_threads(num_workers: int) -> int:
    """Threads that decode and check files up front (a cache fill, check-data): ``data.num_workers``, or the
    usable cores up to 4 when that is more, since these threads wait on files rather than on the model."""
    return max(1, int(num_workers), min(4, usable_cores()))
