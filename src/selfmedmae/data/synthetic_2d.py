"""Synthetic chest-X-ray-like data in the exact ChestX-ray14 release format (docs/own-data-2d.md §2).

    <root>/images_001/images/PPPPPPPP_FFF.png, <root>/images_002/images/...   8-bit L PNGs
    <root>/Data_Entry_2017_v2020.csv   the real 11-field header (optionally with trailing commas)
    <root>/train_val_list.txt, <root>/test_list.txt   patient-disjoint

Each picture is a bright body with two dark lungs and noise; every finding adds a bright blob at a place
of its own, so a classifier can learn the labels (for demos and benchmarks). Labels cycle through the 14
findings within each list, and every 15th image is "No Finding", so each class has positives and negatives
in both lists. Some patients have several images (follow-ups), to exercise patient-disjoint splits.
Optionally one image is full size (1024 x 1024) and one is RGBA with R = G = B, A = 255, as in the release.

    python -m selfmedmae.data.synthetic_2d OUT --n 60 --size 64 --seed 0
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
from PIL import Image

from selfmedmae.data.chestxray14 import CXR14_LABELS, NO_FINDING

HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
          "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]")
MIN_PER_LIST = len(CXR14_LABELS) + 1  # one image per finding plus one "No Finding"
MIN_IMAGES = 2 * MIN_PER_LIST + 2  # + the most a 3-image patient can overshoot the test list


def draw_cxr(size: int, findings: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """A uint8 [size, size] chest-like picture with a blob for each finding index (0..13)."""
    yy, xx = np.mgrid[0:size, 0:size] / float(size)  # [S, S] in [0, 1)
    img = 40 + 110 * np.exp(-(((xx - 0.5) / 0.42) ** 2 + ((yy - 0.55) / 0.5) ** 2) ** 2)  # body
    for cx in (0.32, 0.68):  # lungs are dark on a radiograph
        lung = ((xx - cx) / 0.15) ** 2 + ((yy - 0.5) / 0.3) ** 2 < 1
        img[lung] -= 60
    for k in findings:  # blob k sits on a 4 x 4 grid over the chest
        cy, cx = 0.25 + 0.5 * (k // 4) / 3, 0.2 + 0.6 * (k % 4) / 3
        img += 90 * np.exp(-(((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 0.04 ** 2)))
    img += rng.normal(0, 6, size=img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def _patients(n_images: int, rng: np.random.Generator) -> List[int]:
    """Images per patient (1 to 3), summing to n_images."""
    sizes: List[int] = []
    while sum(sizes) < n_images:
        sizes.append(int(min(rng.integers(1, 4), n_images - sum(sizes))))
    return sizes


def _findings(k: int, rng: np.random.Generator) -> List[int]:
    """Findings of the k-th image of a list: every 15th none, else finding k % 15 and maybe one more."""
    if k % MIN_PER_LIST == MIN_PER_LIST - 1:
        return []
    first = k % MIN_PER_LIST
    extra = int(rng.integers(0, len(CXR14_LABELS)))
    return sorted({first, extra}) if rng.random() < 0.3 else [first]


def make_cxr14_like(root, n_images: int = 40, size: int = 64, seed: int = 0, *, full_size: bool = True,
                    rgba: bool = True, trailing_comma: bool = False,
                    test_fraction: float = 0.25) -> Dict[str, List[str]]:
    """Write the dataset under ``root``; returns {"train_val": [...], "test": [...]} file names.

    ``n_images`` >= 32: each list needs 15 images to show every finding and a "No Finding", and a patient
    (up to 3 images) never straddles the two lists.
    """
    if n_images < MIN_IMAGES:
        raise ValueError(f"n_images must be at least {MIN_IMAGES}, got {n_images}")
    rng = np.random.default_rng(seed)
    root = Path(root)
    sizes = _patients(n_images, rng)
    pids = sorted(rng.choice(np.arange(1, 30806), size=len(sizes), replace=False).tolist())
    order = rng.permutation(len(sizes))  # which patients go to test: the first ones of a random order
    n_test_target = max(MIN_PER_LIST, int(round(test_fraction * n_images)))
    test_patients, count = set(), 0
    for j in order:
        if count >= n_test_target:
            break
        test_patients.add(j)
        count += sizes[j]
    if n_images - count < MIN_PER_LIST:
        raise ValueError(f"n_images={n_images} leaves fewer than {MIN_PER_LIST} images for train_val")
    names = {"train_val": [], "test": []}
    rows, per_list = [], {"train_val": 0, "test": 0}
    for j, (pid, n) in enumerate(zip(pids, sizes)):
        which = "test" if j in test_patients else "train_val"
        for f in range(n):
            name = f"{pid:08d}_{f:03d}.png"
            findings = _findings(per_list[which], rng)
            per_list[which] += 1
            names[which].append(name)
            cell = "|".join(CXR14_LABELS[i] for i in findings) or NO_FINDING
            rows.append((name, cell, f, pid, findings))
    all_names = sorted(n for v in names.values() for n in v)
    position = {n: i for i, n in enumerate(all_names)}  # first half of the names in images_001, as released
    special = _special_files(all_names, full_size, rgba, rng)
    for name, cell, follow_up, pid, findings in rows:
        folder = root / ("images_001" if position[name] < len(all_names) // 2 else "images_002") / "images"
        folder.mkdir(parents=True, exist_ok=True)
        kind = special.get(name)
        img = draw_cxr(1024 if kind == "full" else size, findings, rng)
        pil = Image.fromarray(img, "L")
        if kind == "rgba":
            pil = Image.merge("RGBA", (pil, pil, pil, Image.new("L", pil.size, 255)))
        pil.save(folder / name)
    _write_csv(root / "Data_Entry_2017_v2020.csv", rows, trailing_comma, rng)
    for which, fname in (("train_val", "train_val_list.txt"), ("test", "test_list.txt")):
        (root / fname).write_text("".join(f"{n}\n" for n in sorted(names[which])))
    return {k: sorted(v) for k, v in names.items()}


def _special_files(names: List[str], full_size: bool, rgba: bool, rng) -> Dict[str, str]:
    picks = rng.choice(len(names), size=2, replace=False)
    out: Dict[str, str] = {}
    if full_size:
        out[names[picks[0]]] = "full"
    if rgba:
        out[names[picks[1]]] = "rgba"
    return out


def _write_csv(path: Path, rows, trailing_comma: bool, rng) -> None:
    end = ",\n" if trailing_comma else "\n"
    lines = [HEADER + end]
    for i in rng.permutation(len(rows)):  # the release's rows are not sorted by file name either
        name, cell, follow_up, pid, _ = rows[i]
        age, sex, view = int(rng.integers(1, 95)), "MF"[int(rng.integers(0, 2))], ("PA", "AP")[int(rng.integers(0, 2))]
        w, h, sp = int(rng.integers(2000, 3000)), int(rng.integers(2000, 3000)), 0.143
        lines.append(f"{name},{cell},{follow_up},{pid},{age},{sex},{view},{w},{h},{sp},{sp}{end}")
    path.write_text("".join(lines))


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m selfmedmae.data.synthetic_2d", description=__doc__.split("\n\n")[0])
    p.add_argument("out", metavar="OUT", help="folder to write (created)")
    p.add_argument("--n", type=int, default=40, help="number of images (>= 32)")
    p.add_argument("--size", type=int, default=64, help="side of the PNGs in pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--test-fraction", type=float, default=0.25)
    p.add_argument("--trailing-comma", action="store_true", help="write the CSV variant with trailing commas")
    p.add_argument("--no-full-size", action="store_true", help="no 1024 x 1024 image")
    p.add_argument("--no-rgba", action="store_true", help="no RGBA image")
    a = p.parse_args(argv)
    lists = make_cxr14_like(a.out, a.n, a.size, a.seed, full_size=not a.no_full_size, rgba=not a.no_rgba,
                            trailing_comma=a.trailing_comma, test_fraction=a.test_fraction)
    print(f"wrote {a.out}: train_val {len(lists['train_val'])} images, test {len(lists['test'])} images")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
