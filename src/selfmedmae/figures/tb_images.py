"""Images for TensorBoard, drawn with numpy alone: a validation volume's slice as image | label | prediction."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

# background transparent, then distinct colours (RGB) for label values 1, 2, ...
PALETTE = np.array([[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                    [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212],
                    [0, 128, 128], [220, 190, 255], [170, 110, 40]], dtype=np.float32)


def _label_map(onehot: torch.Tensor, multilabel: bool) -> np.ndarray:
    """[K, *S] one-hot (or region channels) -> [*S] integer map (regions: the highest channel set wins)."""
    x = onehot.float().numpy()
    if multilabel:
        ks = np.arange(1, x.shape[0] + 1, dtype=np.float32).reshape(-1, *[1] * (x.ndim - 1))
        return (x * ks).max(0).astype(np.int64)
    return x.argmax(0)


def slice_of(image: Any, label: torch.Tensor, pred: torch.Tensor, multilabel: bool) -> dict:
    """The 2D slice (last axis) with the most labelled voxels: {"image", "label", "pred"} as numpy arrays."""
    img = torch.as_tensor(image).float()[0].numpy()  # first channel, [*S]
    lab, prd = _label_map(label, multilabel), _label_map(pred, multilabel)
    z = int(np.argmax((lab > 0).reshape(-1, lab.shape[-1]).sum(0))) if lab.ndim == 3 else None
    pick = (lambda a: a[..., z]) if z is not None else (lambda a: a)
    return {"image": pick(img), "label": pick(lab), "pred": pick(prd)}


def overlay_panel(image: np.ndarray, label: np.ndarray, pred: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """[H, 3W, 3] uint8: the image, the image with the label, the image with the prediction, side by side."""
    lo, hi = np.percentile(image, [1, 99]) if image.size else (0.0, 1.0)
    grey = np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1)[..., None].repeat(3, -1) * 255

    def tint(labels: np.ndarray) -> np.ndarray:
        colour = PALETTE[np.clip(labels, 0, len(PALETTE) - 1)]
        mask = (labels > 0)[..., None]
        return np.where(mask, (1 - alpha) * grey + alpha * colour, grey)

    # each view turned so that the first array axis runs left-right, as a viewer shows it; small slices are
    # enlarged (nearest neighbour) to at least 128 pixels
    views = [np.rot90(v) for v in (grey, tint(label), tint(pred))]
    scale = max(1, -(-128 // max(1, min(views[0].shape[:2]))))
    panel = np.concatenate(views, axis=1).repeat(scale, 0).repeat(scale, 1)
    return np.ascontiguousarray(panel.astype(np.uint8))
