"""Small folders of a user's own data, as the own-data docs describe them: NIfTI volumes with label maps
(3D) and PNG radiographs with a CSV of 0/1 labels (2D). Seeded; the structures are easy to learn."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np


def nifti_folder(root: Path, cases: int = 10, shape=(32, 36, 30), spacing=(1.0, 1.0, 1.5), seed: int = 0) -> Path:
    """``root/my_scans/{images,labels}/caseNN.nii.gz`` (labels 0, 1, 2: nested spheres) and
    ``root/new_scans/patient_x.nii.gz``."""
    import nibabel as nib

    rng = np.random.default_rng(seed)
    affine = np.diag([*spacing, 1.0])

    def volume():
        img = rng.normal(100, 10, shape).astype(np.float32)
        grid = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
        centre = np.array(shape) / 2 + rng.integers(-3, 4, 3)
        r = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, centre)))
        lab = np.where(r < 5, 2, np.where(r < 9, 1, 0)).astype(np.uint8)
        img += 60.0 * (lab > 0) + 60.0 * (lab == 2)
        return nib.Nifti1Image(img, affine), nib.Nifti1Image(lab, affine)

    for sub in ("my_scans/images", "my_scans/labels", "new_scans"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(1, cases + 1):
        img, lab = volume()
        nib.save(img, root / f"my_scans/images/case{i:02d}.nii.gz")
        nib.save(lab, root / f"my_scans/labels/case{i:02d}.nii.gz")
    nib.save(volume()[0], root / "new_scans/patient_x.nii.gz")
    return root / "my_scans"


def png_folder(root: Path, images: int = 48, size=(72, 80), seed: int = 0, extra_columns: dict | None = None) -> Path:
    """``root/my_xrays/images/img_NNN.png`` + ``root/my_xrays/labels.csv`` (image, patient, effusion,
    nodule): two images per patient, both classes balanced."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder = root / "my_xrays"
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(images):
        effusion, nodule = i % 2, (i // 2) % 2
        img = rng.normal(110, 20, size)
        img[size[0] // 2:, :] += 60 * effusion
        img[20:30, 20:30] += 90 * nodule
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / "images" / f"img_{i:03d}.png")
        row = {"image": f"images/img_{i:03d}.png", "patient": f"p{i // 2:02d}", "effusion": effusion,
               "nodule": nodule}
        row.update({k: v(i) for k, v in (extra_columns or {}).items()})
        rows.append(row)
    with open(folder / "labels.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return folder
