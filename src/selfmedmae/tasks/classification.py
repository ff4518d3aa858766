"""Multi-label classification (ViT + linear head): everything of the task in one place.

- **Loss:** binary cross-entropy, one sigmoid per label (multi-label findings).
- **Validation and best.pt:** the mean ROC AUC over the labels (``val_auc``), through the classifier pass
  ``evaluate`` uses (:func:`selfmedmae.inference.forward.classify_batches`).
- **Evaluate:** per-label ROC AUC and their mean (a label whose targets are all one value is left out of the
  mean and named; :mod:`selfmedmae.metrics.auc`), the ROC curves in ``figures/roc_curves.png`` and the
  scores of every image in ``predictions.csv``.
- **Predict:** ``DIR/predictions.csv``, one row per image (its path as given) and one column per label with
  the sigmoid probability, after the evaluation preprocessing (:mod:`selfmedmae.data.transforms_2d`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from selfmedmae.data.formats import Labels
from selfmedmae.data.inputs import check_image
from selfmedmae.errors import UserError
from selfmedmae.figures.curves import plot_roc_curves
from selfmedmae.inference.forward import LoadedRun, classify, classify_batches
from selfmedmae.metrics.auc import multilabel_auc
from selfmedmae.metrics.table import num, table, write_scores_csv
from selfmedmae.runtime.device import Precision
from selfmedmae.runtime.distributed import Dist

BATCH = 32  # images per forward pass in evaluation and prediction (memory-safe on a CPU for ViT-B at 224^2)


@torch.no_grad()
def validate(model: nn.Module, loader: Any, labels: Labels, prec: Precision, ctx: Dist,
             show: bool = False) -> dict[str, float]:
    """``val_auc`` (mean ROC AUC over labels) and ``val_auc/<label>``, over every rank's images."""
    model.eval()
    _, s, t = classify_batches(model, loader, ctx.device, prec.autocast, enabled=show, desc="validation")
    if ctx.enabled:
        gathered: list[Any] = [None] * ctx.world_size
        dist.all_gather_object(gathered, (s, t))
        s, t = torch.cat([g[0] for g in gathered]), torch.cat([g[1] for g in gathered])
    result = multilabel_auc(t.numpy(), s.numpy(), labels.names)
    out = {"val_auc": float(result["mean_auc"])}
    out.update({f"val_auc/{name}": float(v["auc"]) for name, v in result["labels"].items()})
    return out


class Classification:
    """The classification task of a run whose data have ``labels``."""

    name = "classification"
    kind = "classifier"
    unit = "images"
    metric = "val_auc"

    def __init__(self, labels: Labels):
        self.labels = labels
        self.num_classes = len(labels.names)

    # -- fine-tuning -----------------------------------------------------------------------------------
    def loss(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits.float(), batch["label"].to(logits.device).float())

    def validation(self, model: nn.Module, data: Any, cfg: Any, prec: Precision, ctx: Dist, micro_batch: int,
                   snapshot: Optional[dict]) -> Callable[[], dict]:
        dataset = data.dataset("val", rank=ctx.rank, world_size=ctx.world_size)
        loader = DataLoader(dataset, batch_size=max(1, micro_batch), num_workers=cfg.data.num_workers)
        return lambda: validate(model, loader, self.labels, prec, ctx, show=ctx.is_main)

    # -- evaluate --------------------------------------------------------------------------------------
    def evaluate(self, run: LoadedRun, data: Any, split: str, out_dir: Path, figures: int = 3) -> dict[str, Any]:
        """Per-label ROC AUC of ``run`` on ``split``; ROC curves and per-image scores."""
        cfg, names = run.cfg, self.labels.names
        dataset = data.dataset(split)
        if len(dataset) == 0 or not dataset.labelled:
            raise UserError(f"{cfg.data.root}: split {split!r} has no labelled images to evaluate against")
        loader = DataLoader(dataset, batch_size=BATCH, shuffle=False, num_workers=int(cfg.data.num_workers))
        ids, scores, targets = classify(run, loader)
        out_dir = Path(out_dir)
        plot_roc_curves(targets, scores, names, out_dir / "figures" / "roc_curves.png", title=f"{split} split")
        write_scores_csv(out_dir / "predictions.csv", ids, scores.numpy(), names, targets.numpy())
        return multilabel_auc(targets.numpy(), scores.numpy(), names)

    @staticmethod
    def rows(m: Mapping[str, Any]) -> list[str]:
        """The markdown table of a metrics dict of :meth:`evaluate`."""
        rows = [[name, num(v["auc"], 4), str(v["n_pos"]), str(v["n_neg"])] for name, v in m["labels"].items()]
        n_used = len(m["labels"]) - m["n_labels_excluded"]
        rows.append([f"**mean ({n_used} of {len(m['labels'])} labels)**", f"**{num(m['mean_auc'], 4)}**", "", ""])
        lines = table(["Label", "AUC", "positives", "negatives"], rows)
        if m["n_labels_excluded"]:
            lines += ["", f"{m['n_labels_excluded']} label(s) excluded from the mean (targets all one value, "
                          f"AUC undefined): " + ", ".join(m["excluded_labels"])]
        return lines

    @staticmethod
    def scores(m: Mapping[str, Any]) -> dict[str, Optional[float]]:
        """``AUC <label>`` for every label, then ``AUC mean``."""
        out = {f"AUC {name}": v.get("auc") for name, v in m.get("labels", {}).items()}
        out["AUC mean"] = m.get("mean_auc")
        return out

    @staticmethod
    def headline(m: Mapping[str, Any]) -> tuple[str, Any]:
        return "mean AUC", m.get("mean_auc")

    @staticmethod
    def compared(name: str) -> bool:
        return name.startswith("AUC")

    # -- predict ---------------------------------------------------------------------------------------
    volumes = False  # predict's inputs are 2D images

    def predict(self, run: LoadedRun, files: Sequence[Path], out: Path, probs: bool, figures: bool) -> None:
        if probs or figures:
            print("note: --probabilities / --figures apply to segmentation; the CSV holds the probabilities")
        for f in files:  # every image, before any inference
            check_image(f)
        from selfmedmae.data.facade import build

        dataset = build(run.cfg.data).files_dataset(files)
        loader = DataLoader(dataset, batch_size=BATCH, shuffle=False, num_workers=int(run.cfg.data.num_workers))
        ids, scores, _ = classify(run, loader)
        path = write_scores_csv(out / "predictions.csv", ids, scores.numpy(), self.labels.names)
        print(f"wrote {path} ({len(ids)} images x {len(self.labels.names)} labels)")


TASK = Classification
