"""Cache fill per BTCV-sized volume, and random crops per second out of the cache.

Method. ``--volumes`` synthetic BTCV-like CT volumes of 512 x 512 x 150 voxels (int16 HU, LAS,
0.6-0.98 mm in plane, 2.5-5 mm slices, 13 organ labels; :func:`selfmedmae.data.synthetic.make_btcv`,
generated once into a temp folder and reused) go through the deterministic prefix of the training
transforms of ``configs/btcv/pretrain.yaml`` (what ``CacheDataset`` / ``PersistentDataset`` compute once
per volume): decode (NIfTI .nii.gz), reorient (RAS), resample (1.5 x 1.5 x 2.0 mm), then the rest
(HU window, foreground crop, pad, label to uint8, candidate crop centres). Each step is timed on its
own. Then the random suffix (4 label-guided 96^3 crops + flips, what a worker does per volume and step)
runs ``--crop-reps`` times on the cached volume: crops per second for one worker.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import torch
from monai.transforms import Compose

from benchlib import PeakMemory, REPO, fmt_bytes
from selfmedmae.config import load_config
from selfmedmae.data.synthetic import make_btcv
from selfmedmae.data.transforms_3d import deterministic_prefix, random_suffix

STEPS = {"LoadImaged": "decode", "Orientationd": "reorient", "Spacingd": "resample"}


def dataset(n: int, size: list[int]) -> Path:
    data = Path(tempfile.gettempdir()) / f"selfmedmae-bench-btcv-{n}-{'x'.join(map(str, size))}"
    if not (data / "transunet.json").is_file():
        t = time.perf_counter()
        make_btcv(data, n=n, size=size, seed=0)
        print(f"generated {n} volumes of {size} in {time.perf_counter() - t:.1f} s -> {data}", flush=True)
    return data


def run(volumes: int, size: list[int], crop_reps: int) -> tuple[list[list], dict]:
    data = dataset(volumes, size)
    cfg = load_config(REPO / "configs" / "btcv" / "pretrain.yaml", [f"data.root={data}"])
    items = json.loads((data / "transunet.json").read_text())["training"]
    prefix = deterministic_prefix(cfg.data, ("image", "label"), crop_indices=True)
    suffix = Compose(random_suffix(cfg.data, "pretrain", labelled=True))  # maps over the list of crops
    rows, crops_per_s = [], []
    for item in items[:volumes]:
        d = {k: str(data / v) for k, v in item.items()}
        parts = {"decode": 0.0, "reorient": 0.0, "resample": 0.0, "rest": 0.0}
        with PeakMemory(torch.device("cpu")) as mem:
            for t in prefix:
                start = time.perf_counter()
                d = t(d)
                parts[STEPS.get(type(t).__name__, "rest")] += time.perf_counter() - start
        total = sum(parts.values())
        torch.manual_seed(0)
        start, crops = time.perf_counter(), 0
        for _ in range(crop_reps):
            crops += len(suffix(dict(d)))
        rate = crops / (time.perf_counter() - start)
        crops_per_s.append(rate)
        shape = "x".join(str(s) for s in d["image"].shape[1:])
        rows.append([Path(item["image"]).name, "x".join(map(str, size)), shape] +
                    [f"{parts[k]:.2f}" for k in ("decode", "reorient", "resample", "rest")] +
                    [f"{total:.2f}", fmt_bytes(mem.peak), f"{rate:.1f}"])
    return rows, {"crops_per_s": sum(crops_per_s) / len(crops_per_s)}


HEADER = ["volume", "file size", "cached size", "decode (s)", "reorient (s)", "resample (s)", "rest (s)",
          "fill (s)", "peak memory", "crops/s (1 worker)"]
