"""Synthetic 3D datasets in the real on-disk formats, for tests and for benchmarks at realistic sizes.

Each writer follows a released layout (docs/own-data-3d.md §4 BTCV, §5 BraTS, §2 MSD):

* :func:`make_btcv`: ``imagesTr/img00XX.nii.gz`` int16 HU CT (air -1000, a soft-tissue body, 13 organ
  ellipsoids) + ``labelsTr/label00XX.nii.gz`` uint8 0..13, LAS affine (negative x step) with anisotropic
  spacing (0.6-0.98 mm in plane, 2.5-5 mm slices); real BTCV ids alternating between the TransUNet train
  and test lists; ``transunet.json`` and ``dataset_0.json`` list only the generated ids.
* :func:`make_brats`: MSD Task01 layout, (X, Y, Z, 4) float32 images, zero outside an ellipsoidal brain,
  uint8 labels nested 3 in 2 in 1, the exact ``dataset.json`` keys with an unsorted ``training`` list,
  ``./`` prefixes, ``test`` as strings, and one macOS ``._BRATS_001.nii.gz`` junk file.
* :func:`make_msd`: a generic MSD task (any channel count and number of labels).

Command line: ``python -m selfmedmae.data.synthetic {btcv,brats,msd} OUT --n N --size X Y Z --seed S``.
The 2D (CXR-like) generator lives in ``synthetic_2d.py``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence, Tuple

import nibabel as nib
import numpy as np

from selfmedmae.data.btcv import SHORT_NAMES, published_split
from selfmedmae.data.brats import MSD_LABELS

# Mean HU of each BTCV organ 1..13 (contrast-enhanced, portal-venous phase), roughly.
ORGAN_HU = (50, 160, 160, 10, 40, 60, 30, 200, 150, 170, 40, 30, 30)
# AppleDouble header of the "._*" files in the MSD archives (magic 0x00051607, "Mac OS X").
APPLEDOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(4066)


def _ellipsoid(shape: Sequence[int], centre, radii) -> Tuple[tuple, np.ndarray]:
    """(bounding-box slices, boolean mask inside it) of an axis-aligned ellipsoid; cheap on big volumes."""
    lo = [max(0, int(np.floor(c - r))) for c, r in zip(centre, radii)]
    hi = [min(s, int(np.ceil(c + r)) + 1) for s, c, r in zip(shape, centre, radii)]
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    grids = np.ogrid[box]
    dist = sum(((g - c) / max(r, 1e-6)) ** 2 for g, c, r in zip(grids, centre, radii))
    return box, dist <= 1.0


def _save(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(array, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))


def _write_json(obj: dict, path: Path) -> None:
    path.write_text(json.dumps(obj, indent=4) + "\n")


def btcv_case(size: Sequence[int], rng: np.random.RandomState) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(int16 HU image, uint8 label 0..13, LAS affine) of one BTCV-like volume of ``size`` voxels."""
    size = tuple(int(s) for s in size)
    sx = rng.uniform(0.6, 0.98)
    sz = float(rng.choice([2.5, 3.0, 5.0]))
    affine = np.diag([-sx, sx, sz, 1.0])  # LAS, as nibabel reports for img0001
    affine[:3, 3] = [sx * (size[0] - 1) / 2, -sx * (size[1] - 1) / 2, -sz * size[2] / 2]
    image = np.full(size, -1000.0, np.float32)
    label = np.zeros(size, np.uint8)
    centre = np.array(size) / 2
    body_r = np.array([0.45 * size[0], 0.35 * size[1], 10.0 * size[2]])  # a cylinder-like body
    box, body = _ellipsoid(size, centre, body_r)
    image[box][body] = -80.0  # fat
    inner, organ_space = _ellipsoid(size, centre, body_r * [0.85, 0.85, 1.0])
    image[inner][organ_space] = 35.0
    for organ in range(1, 14):
        c = centre + rng.uniform(-0.5, 0.5, 3) * body_r * [0.6, 0.6, 0.0] + [0, 0, rng.uniform(-0.3, 0.3) * size[2]]
        r = np.array(size) * rng.uniform(0.05, 0.14, 3)
        obox, mask = _ellipsoid(size, c, r)
        image[obox][mask] = ORGAN_HU[organ - 1]
        label[obox][mask] = organ
    image += rng.normal(0.0, 12.0, size).astype(np.float32)
    return np.clip(np.rint(image), -1024, 3071).astype(np.int16), label, affine


def _btcv_ids(n: int) -> list:
    """Real BTCV ids, alternating TransUNet train / test so both splits get cases."""
    split = published_split("transunet")
    train, test = sorted(split["train"]), sorted(split["test"])
    ids = [x for pair in zip(train, test) for x in pair] + train[len(test):]
    if n > len(ids):
        raise ValueError(f"--n: BTCV has {len(ids)} labelled cases, asked for {n}")
    return ids[:n]


def make_btcv(out: str | Path, n: int = 4, size: Sequence[int] = (48, 48, 24), seed: int = 0) -> Path:
    """Write a BTCV-like dataset (MONAI re-layout + ``transunet.json`` + ``dataset_0.json``) to ``out``."""
    out, rng = Path(out), np.random.RandomState(seed)
    ids = _btcv_ids(n)
    for cid in ids:
        image, label, affine = btcv_case(size, rng)
        _save(image, affine, out / "imagesTr" / f"img{cid}.nii.gz")
        _save(label, affine, out / "labelsTr" / f"label{cid}.nii.gz")
    labels = {"0": "background", **{str(i + 1): name for i, name in enumerate(SHORT_NAMES)}}

    def pairs(wanted):
        return [{"image": f"imagesTr/img{c}.nii.gz", "label": f"labelsTr/label{c}.nii.gz"} for c in wanted if c in ids]

    common = {"description": "synthetic BTCV-like data", "labels": labels, "licence": "CC0 (synthetic)",
              "modality": {"0": "CT"}, "name": "btcv", "reference": "selfmedmae.data.synthetic",
              "release": "synthetic", "tensorImageSize": "3D", "numTest": 0, "test": []}
    for fname, split in (("transunet.json", "transunet"), ("dataset_0.json", "unetr")):
        lists = published_split(split)
        _write_json({**common, "numTraining": len(ids), "training": pairs(lists["train"]),
                     "validation": pairs(lists["test"])}, out / fname)
    return out


def _brain_case(size, channels: int, n_labels: int, rng) -> Tuple[np.ndarray, np.ndarray]:
    """(float32 [*size, channels] zero outside a brain ellipsoid, uint8 nested labels 0..n_labels-1)."""
    size = tuple(int(s) for s in size)
    centre = np.array(size) / 2 + rng.uniform(-1, 1, 3)
    box, brain = _ellipsoid(size, centre, np.array(size) * 0.42)
    image = np.zeros(size + (channels,), np.float32)
    label = np.zeros(size, np.uint8)
    base = rng.uniform(200, 800, channels).astype(np.float32)
    noise = rng.normal(1.0, 0.1, size + (channels,)).astype(np.float32)
    image[box][brain] = base * np.abs(noise[box][brain]) + 1.0
    tumour_c = centre + rng.uniform(-0.1, 0.1, 3) * np.array(size)
    radii = np.array(size) * rng.uniform(0.16, 0.22, 3)  # inside the brain (radius 0.42 * size)
    for value in range(1, n_labels):  # nested: each label inside the previous one
        lbox, mask = _ellipsoid(size, tumour_c, radii * (1.0 - 0.3 * (value - 1)))
        label[lbox][mask] = value
        patch = image[lbox]
        patch[mask] = np.maximum(patch[mask], 1.0) * (1.0 + 0.4 * value)
    return image, label


def make_msd(out: str | Path, n: int = 4, size: Sequence[int] = (32, 32, 24), seed: int = 0, channels: int = 1,
             n_labels: int = 3, name: str = "Synthetic", prefix: str = "case", n_test: int = 1,
             modality: Sequence[str] | None = None, labels: Sequence[str] | None = None,
             spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> Path:
    """Write a generic MSD task (``dataset.json``, ``imagesTr``, ``labelsTr``, ``imagesTs``) to ``out``."""
    out, rng = Path(out), np.random.RandomState(seed)
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])  # LPS: exercises the reorientation
    training, test = [], []
    for i in range(1, n + n_test + 1):
        image, label = _brain_case(size, channels, n_labels, rng)
        image = image[..., 0] if channels == 1 else image
        fname = f"{prefix}_{i:03d}.nii.gz"
        if i <= n:
            _save(image, affine, out / "imagesTr" / fname)
            _save(label, affine, out / "labelsTr" / fname)
            training.append({"image": f"./imagesTr/{fname}", "label": f"./labelsTr/{fname}"})
        else:
            _save(image, affine, out / "imagesTs" / fname)
            test.append(f"./imagesTs/{fname}")
    order = rng.permutation(len(training))  # MSD lists are not sorted
    modality = list(modality) if modality else ["MRI"] * channels
    labels = list(labels) if labels else ["background"] + [f"class{i}" for i in range(1, n_labels)]
    _write_json({
        "name": name, "description": f"synthetic {name}", "reference": "selfmedmae.data.synthetic",
        "licence": "CC0 (synthetic)", "release": "1.0 synthetic",
        "tensorImageSize": "4D" if channels > 1 else "3D",
        "modality": {str(i): m for i, m in enumerate(modality)},
        "labels": {str(i): lab for i, lab in enumerate(labels)},
        "numTraining": n, "numTest": n_test,
        "training": [training[i] for i in order], "test": test,
    }, out / "dataset.json")
    return out


def make_brats(out: str | Path, n: int = 4, size: Sequence[int] = (48, 48, 32), seed: int = 0) -> Path:
    """Write a BraTS-like MSD Task01 (4 channels FLAIR, T1w, t1gd, T2w; labels 3 in 2 in 1) to ``out``."""
    out = make_msd(out, n, size, seed, channels=4, n_labels=4, name="BRATS", prefix="BRATS",
                   n_test=max(1, n // 4), modality=("FLAIR", "T1w", "t1gd", "T2w"), labels=MSD_LABELS)
    meta = json.loads((out / "dataset.json").read_text())
    meta["description"] = "Gliomas segmentation tumour and oedema in on brain images"
    meta["labels"] = {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"}
    _write_json(meta, out / "dataset.json")
    (out / "imagesTr" / "._BRATS_001.nii.gz").write_bytes(APPLEDOUBLE)
    return out


KINDS = {"btcv": make_btcv, "brats": make_brats, "msd": make_msd}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m selfmedmae.data.synthetic", description=__doc__.split("\n")[0])
    parser.add_argument("kind", choices=sorted(KINDS))
    parser.add_argument("out", help="dataset folder to write")
    parser.add_argument("--n", type=int, default=4, help="labelled cases")
    parser.add_argument("--size", type=int, nargs=3, metavar=("X", "Y", "Z"), default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    kwargs = {"n": args.n, "seed": args.seed}
    if args.size:
        kwargs["size"] = tuple(args.size)
    out = KINDS[args.kind](args.out, **kwargs)
    print(f"wrote {args.kind} dataset with {args.n} labelled cases to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
