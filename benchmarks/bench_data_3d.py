"""Benchmark: training samples per second of the 3D data pipeline on BTCV-sized synthetic CT.

Method: ``--n`` synthetic BTCV-like volumes of ``--size`` voxels (int16 HU, LAS, anisotropic spacing,
13 organ labels; ``selfmedmae.data.synthetic.make_btcv``) go through exactly the training path of
``configs/_data/btcv.yaml`` (fine-tuning recipe: RAS, 1.5 x 1.5 x 2.0 mm, HU window, foreground crop,
4 label-guided 96^3 crops per volume, flips, rot90, intensity augmentation) via
``selfmedmae.train.engine.make_loader`` (the loader training uses). For each cache mode (``memory``: CacheDataset, ``disk``:
PersistentDataset, ``none``) the cache is filled once and timed apart ("fill"); then, for each worker
count, ``--epochs`` passes over the data are timed end to end (worker start-up included) and
samples/s = crops delivered / seconds. A "sample" is one 96^3 crop, as a training step consumes them.

Run: ``python benchmarks/bench_data_3d.py [--write]``; ``--write`` puts the table into
benchmarks/RESULTS.md under "3D data pipeline".
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import monai
import torch
from monai.data import list_data_collate

from selfmedmae.config import load_config
from selfmedmae.data.loader import build_train_dataset
from selfmedmae.runtime.distributed import Dist
from selfmedmae.train.engine import make_loader
from selfmedmae.data.synthetic import make_btcv

REPO = Path(__file__).resolve().parents[1]
HEADING = "## 3D data pipeline"


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"MONAI {monai.__version__}, Python {platform.python_version()}")


def commit() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def config(data: Path, cache: str, workers: int, cache_dir: str, batch_size: int):
    return load_config(REPO / "configs" / "_data" / "btcv.yaml", [
        f"data.root={data}", "data.val_fraction=0", f"data.cache={cache}", f"data.num_workers={workers}",
        f"data.cache_dir={cache_dir}", f"train.batch_size={batch_size}"])


def time_epochs(cfg, dataset, epochs: int) -> tuple[int, float]:
    start, crops = time.perf_counter(), 0
    loader = make_loader(dataset, int(cfg.train.batch_size), Dist(), 0, int(cfg.data.num_workers), list_data_collate)
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        loader.dataset.set_epoch(epoch)
        for batch in loader:
            crops += batch["image"].shape[0]
    seconds = time.perf_counter() - start
    del loader  # stop persistent workers before the next setting
    return crops, seconds


def load() -> str:
    """The 1-minute load average: other jobs on the machine slow every row alike."""
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:
        return "n/a"


def run(args) -> list[str]:
    name = f"selfmedmae-bench-btcv-{args.n}-{'x'.join(map(str, args.size))}"
    data = Path(args.data or Path(tempfile.gettempdir()) / name)
    if not (data / "transunet.json").is_file():
        t = time.perf_counter()
        make_btcv(data, n=args.n, size=args.size, seed=0)
        print(f"generated {args.n} volumes of {args.size} in {time.perf_counter() - t:.1f} s -> {data}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as cache_dir:
        for cache in args.cache:
            cfg = config(data, cache, max(args.workers), cache_dir, args.batch_size)
            t = time.perf_counter()
            dataset = build_train_dataset(cfg, "finetune", split="all")  # all 4 volumes
            if cache == "disk":  # PersistentDataset fills its cache on first access
                for i in range(len(dataset)):
                    dataset[i]
            fill = time.perf_counter() - t if cache != "none" else 0.0
            n_volumes = len(dataset)
            for workers in args.workers:
                cfg = config(data, cache, workers, cache_dir, args.batch_size)
                crops, seconds = time_epochs(cfg, dataset, args.epochs)
                row = (f"| {cache} | {workers} | {n_volumes} | {fill:.1f} | {args.epochs} | {crops} | {seconds:.1f} "
                       f"| {crops / seconds:.2f} | {load()} |")
                print(row, flush=True)
                rows.append(row)
            del dataset
    return rows


def write(rows: list[str], args) -> None:
    path = REPO / "benchmarks" / "RESULTS.md"
    text = path.read_text() if path.is_file() else "# Benchmark results\n"
    section = "\n".join([
        HEADING, "",
        f"- Machine: {machine()}; no GPU.",
        f"- Commit: {commit()} (`python benchmarks/bench_data_3d.py --write`).",
        f"- Method: {args.n} synthetic BTCV-like CT volumes of {' x '.join(map(str, args.size))} voxels "
        "(int16 HU, LAS, 0.6-0.98 mm in plane, 2.5-5 mm slices) through the fine-tuning path of "
        "`configs/_data/btcv.yaml` (RAS, 1.5 x 1.5 x 2.0 mm, HU window, foreground crop, 4 label-guided "
        f"96^3 crops per volume, flips, rot90, intensity aug), batch {args.batch_size} volumes "
        f"= {4 * args.batch_size} crops. Cache filled once and timed apart (fill); then {args.epochs} epoch(s) "
        "timed end to end per worker count, worker start-up included. samples/s = 96^3 crops per second. "
        "load avg: the machine's 1-minute load average after the row (other jobs share the cores).",
        "- Reading: the fill column is the decoding and resampling of every volume, done once when cached and "
        "at every access when not (cache none); the cached rows are the random crops alone.",
        "",
        "| cache | workers | volumes | fill (s) | epochs | crops | seconds | samples/s | load avg |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows, "",
    ])
    if HEADING in text:  # replace our section, keep everyone else's
        head, rest = text.split(HEADING, 1)
        tail = rest.split("\n## ", 1)
        text = head + section + ("\n## " + tail[1] if len(tail) > 1 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)
    print(f"wrote {path}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=4, help="volumes (BTCV ids, alternating train / test)")
    parser.add_argument("--size", type=int, nargs=3, default=[512, 512, 150])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--cache", nargs="+", default=["memory", "disk", "none"])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--data", help="dataset folder (generated there if missing; default: a temp folder)")
    parser.add_argument("--write", action="store_true", help="write the table into benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    rows = run(args)
    if args.write:
        write(rows, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
