"""Cache fill per BTCV-sized volume, and random crops per second out of the cache.

Method. ``--volumes`` synthetic BTCV-like CT volumes of 512 x 512 x 150 voxels (int16 HU, LAS,
0.6-0.98 mm in plane, 2.5-5 mm slices, 13 organ labels; :func:`selfmedmae.data.synthetic.make_btcv`,
generated once into a temp folder and reused) go through the deterministic prefix of the training
transforms of ``configs/btcv/pretrain.yaml`` (what ``CacheDataset`` / ``PersistentDataset`` compute once
per volume), after one untimed warm-up pass of each pipeline on the first volume: decode (NIfTI
.nii.gz), reorient (RAS), resample (1.5 x 1.5 x 2.0 mm), then the rest (HU window, foreground crop, pad,
label to uint8, candidate crop centres). Each step is timed on its
own. Then the random suffix (4 label-guided 96^3 crops + flips, what a worker does per volume and step)
runs ``--crop-reps`` times on the cached volume: crops per second for one worker.

Side by side: each volume goes through the prefix twice in the same run, alternating, first as training
runs it (``ours``: MONAI's ``LoadImaged`` with :class:`~selfmedmae.data.nifti_reader.TorchCopyNibabelReader`,
and :class:`~selfmedmae.data.resample.SeparableSpacingd`), then with MONAI's stock ``LoadImaged`` and
``Spacingd`` in their place (``MONAI``), every other step the same; the two cached volumes are compared
(labels and crop centres equal, image max abs difference reported).
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import torch
from monai.transforms import Compose, LoadImaged, Spacingd

from benchlib import PeakMemory, REPO, fmt_bytes
from selfmedmae.config import load_config
from selfmedmae.data.resample import SeparableSpacingd
from selfmedmae.data.synthetic import make_btcv
from selfmedmae.data.transforms_3d import deterministic_prefix, random_suffix

STEPS = {"LoadImaged": "decode", "Orientationd": "reorient", "Spacingd": "resample",
         "SeparableSpacingd": "resample"}
PARTS = ("decode", "reorient", "resample", "rest")


def dataset(n: int, size: list[int]) -> Path:
    data = Path(tempfile.gettempdir()) / f"selfmedmae-bench-btcv-{n}-{'x'.join(map(str, size))}"
    if not (data / "transunet.json").is_file():
        t = time.perf_counter()
        make_btcv(data, n=n, size=size, seed=0)
        print(f"generated {n} volumes of {size} in {time.perf_counter() - t:.1f} s -> {data}", flush=True)
    return data


def stock_monai(prefix: list) -> list:
    """The same prefix with MONAI's own ``LoadImaged`` and ``Spacingd`` in place of ours, same settings."""
    out = []
    for t in prefix:
        if isinstance(t, LoadImaged):
            t = LoadImaged(t.keys, image_only=True, ensure_channel_first=True)
        elif isinstance(t, SeparableSpacingd):
            t = Spacingd(t.keys, pixdim=t.spacing_transform.pixdim, mode=t.mode, padding_mode=t.padding_mode,
                         align_corners=t.align_corners, dtype=t.dtype)
        out.append(t)
    return out


def fill(prefix: list, item: dict) -> tuple[dict, dict, int]:
    """Run the prefix on one item: (cached item, seconds per part, peak memory)."""
    d, parts = dict(item), dict.fromkeys(PARTS, 0.0)
    with PeakMemory(torch.device("cpu")) as mem:
        for t in prefix:
            start = time.perf_counter()
            d = t(d)
            parts[STEPS.get(type(t).__name__, "rest")] += time.perf_counter() - start
    return d, parts, mem.peak


def crop_rate(suffix: Compose, cached: dict, reps: int) -> float:
    """Crops per second of the random suffix on one cached volume."""
    torch.manual_seed(0)
    start, crops = time.perf_counter(), 0
    for _ in range(reps):
        crops += len(suffix(dict(cached)))
    return crops / (time.perf_counter() - start)


def run(volumes: int, size: list[int], crop_reps: int) -> tuple[list[list], dict]:
    data = dataset(volumes, size)
    cfg = load_config(REPO / "configs" / "btcv" / "pretrain.yaml", [f"data.root={data}"])
    lists = json.loads((data / "transunet.json").read_text())
    items = lists["training"] + lists["validation"]  # every generated volume
    keys = ("image", "label")
    prefixes = {"ours": deterministic_prefix(cfg.data, keys, crop_indices=True)}
    prefixes["MONAI"] = stock_monai(prefixes["ours"])
    suffix = Compose(random_suffix(cfg.data, "pretrain", labelled=True))  # maps over the list of crops
    rows, crops_per_s, diffs, fills = [], [], [], {name: [] for name in prefixes}
    for prefix in prefixes.values():  # warm-up, untimed: first calls, thread pools, file cache
        fill(prefix, {k: str(data / v) for k, v in items[0].items()})
    for item in items[:volumes]:
        paths = {k: str(data / v) for k, v in item.items()}
        cached = {}
        for name, prefix in prefixes.items():
            d, parts, peak = fill(prefix, paths)
            cached[name] = d
            total = sum(parts.values())
            fills[name].append(total)
            rate = ""
            if name == "ours":  # the random crops a worker cuts from the cached volume
                crops_per_s.append(crop_rate(suffix, d, crop_reps))
                rate = f"{crops_per_s[-1]:.1f}"
            shape = "x".join(str(s) for s in d["image"].shape[1:])
            rows.append([Path(item["image"]).name, name, "x".join(map(str, size)), shape] +
                        [f"{parts[k]:.2f}" for k in PARTS] + [f"{total:.2f}", fmt_bytes(peak), rate])
        ours, monai = cached["ours"], cached["MONAI"]
        if not all(torch.equal(torch.as_tensor(ours[k]), torch.as_tensor(monai[k]))
                   for k in ("label", "label_fg_indices", "label_bg_indices")):
            raise SystemExit(f"{item['image']}: our cached labels or crop centres differ from MONAI's")
        diffs.append(float((ours["image"] - monai["image"]).abs().max()))
    speedup = sum(fills["MONAI"]) / sum(fills["ours"])
    return rows, {"crops_per_s": sum(crops_per_s) / len(crops_per_s), "fill_speedup": speedup,
                  "image_max_abs_diff": max(diffs)}


HEADER = ["volume", "pipeline", "file size", "cached size", "decode (s)", "reorient (s)", "resample (s)",
          "rest (s)", "fill (s)", "peak memory", "crops/s (1 worker)"]
