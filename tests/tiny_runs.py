"""Test helpers for evaluate / predict / report: fine-tuning checkpoints of untrained tiny models, the way
`selfmedmae finetune` writes them (native checkpoint + the resolved run config as a plain dict), and models
with known outputs to swap in."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from selfmedmae.config import load_config, to_dict
from selfmedmae.data import build
from selfmedmae.models.checkpoint import atomic_save, native
from selfmedmae.models.factory import build_model, model_args

REPO = Path(__file__).resolve().parents[1]
HIPPOCAMPUS = REPO / "data" / "Task04_Hippocampus"
CXR_SAMPLE = REPO / "data" / "cxr14-sample"
TINY = ["model.preset=vit_nano", "model.patch_size=8", "model.feature_size=4", "data.num_workers=0",
        "data.cache=none", "eval.sw_batch_size=8"]


def tiny_checkpoint(run_dir: Path, config: str | None, overrides: Sequence[str] = (), seed: int = 0) -> Path:
    """<run_dir>/checkpoints/best.pt of an untrained tiny UNETR (3D data) or classifier (2D data)."""
    task = "classification" if any(o == "data.spatial_dims=2" for o in overrides) or \
        (config and "cxr14" in str(config)) else "segmentation"
    cfg = load_config(config, ["stage=finetune", f"task={task}", *TINY, f"run.dir={run_dir}", *overrides])
    data = build(cfg.data)
    kind = "unetr" if task == "segmentation" else "classifier"
    args = model_args(kind, cfg.model, data.input_size, cfg.data.in_chans, data.labels.out_channels)
    torch.manual_seed(seed)
    model = build_model(kind, args)
    return atomic_save(native(kind, args, model.state_dict(), config=to_dict(cfg)),
                       Path(run_dir) / "checkpoints" / "best.pt")


def hippocampus_subset(dest: Path, ids: Sequence[str] = ("001", "004", "006")) -> Path:
    """A copy of a few real hippocampus cases as an MSD task (tests never write into data/)."""
    meta = json.loads((HIPPOCAMPUS / "dataset.json").read_text())
    training = []
    for i in ids:
        for sub in ("imagesTr", "labelsTr"):
            (dest / sub).mkdir(parents=True, exist_ok=True)
            shutil.copy(HIPPOCAMPUS / sub / f"hippocampus_{i}.nii.gz", dest / sub)
        training.append({"image": f"./imagesTr/hippocampus_{i}.nii.gz", "label": f"./labelsTr/hippocampus_{i}.nii.gz"})
    meta.update(training=training, numTraining=len(training), test=[])
    (dest / "dataset.json").write_text(json.dumps(meta))
    return dest


class ConstantLogits(nn.Module):
    """A 'model' whose logits are the same vector at every voxel: [B, C, *S] -> [B, K, *S]."""

    def __init__(self, logits: Sequence[float]):
        super().__init__()
        self.register_buffer("logits", torch.tensor(list(logits), dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (x.shape[0], len(self.logits), *x.shape[2:])
        return self.logits.view(1, -1, *[1] * (x.ndim - 2)).expand(shape).clone()


class Threshold(nn.Module):
    """Class 1 where the (preprocessed) intensity is above t, else background: a model whose answer is known."""

    def __init__(self, t: float, n_classes: int = 2):
        super().__init__()
        self.t, self.n = t, n_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fg = (x[:, :1] - self.t) * 100.0  # [B, 1, *S]
        rest = torch.full_like(fg, -1e4).expand(-1, self.n - 2, *x.shape[2:])
        return torch.cat([torch.zeros_like(fg), fg, rest], dim=1)
