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

import numpy as np
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
from selfmedmae.metrics.stats import multilabel_auc_ci, paired_multilabel_auc
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


MIN_POSITIVES = 5  # test positives a label needs to count in the eligible mean


def with_intervals(m: dict, ids: Sequence[str], targets: np.ndarray, scores: np.ndarray,
                   names: Sequence[str]) -> dict:
    """``m`` (of :func:`multilabel_auc`) with DeLong 95 % intervals per label, the bootstrap interval of the
    mean, the mean over labels with at least :data:`MIN_POSITIVES` positives (and its interval), those
    labels, and every image's targets and scores (what a paired comparison of two models needs)."""
    ci = multilabel_auc_ci(targets, scores, names, min_positives=MIN_POSITIVES)
    for name, v in m["labels"].items():
        c = ci["labels"][name]
        v["auc_ci"], v["few_positives"] = [c["lo"], c["hi"]], bool(c["few_positives"])
    m["mean_auc_ci"] = [ci["mean_all"]["lo"], ci["mean_all"]["hi"]]
    eligible = ci["mean_eligible"]
    m.update(min_positives=MIN_POSITIVES, eligible_labels=list(eligible["labels"]),
             mean_auc_eligible=eligible["mean"], mean_auc_eligible_ci=[eligible["lo"], eligible["hi"]],
             interval="DeLong per label (logit scale); bootstrap over images for the means (2000 resamples, seed 0)")
    m["images"] = {"ids": [str(i) for i in ids], "targets": targets.astype(int).tolist(),
                   "scores": np.round(scores.astype(float), 6).tolist()}
    return m


def _ci(v: Mapping[str, Any], key: str) -> str:
    ci = v.get(key)
    return "" if not ci else f"{num(ci[0], 3)} to {num(ci[1], 3)}"


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
        return with_intervals(multilabel_auc(targets.numpy(), scores.numpy(), names), ids, targets.numpy(),
                              scores.numpy(), names)

    @staticmethod
    def rows(m: Mapping[str, Any]) -> list[str]:
        """The markdown table of a metrics dict of :meth:`evaluate`."""
        few = f" (< {m.get('min_positives')}: few)"
        rows = [[name, num(v["auc"], 4), _ci(v, "auc_ci"), str(v["n_pos"]) + (few if v.get("few_positives") else ""),
                 str(v["n_neg"])] for name, v in m["labels"].items()]
        n_used = len(m["labels"]) - m["n_labels_excluded"]
        rows.append([f"**mean ({n_used} of {len(m['labels'])} labels)**", f"**{num(m['mean_auc'], 4)}**",
                     _ci(m, "mean_auc_ci"), "", ""])
        if "mean_auc_eligible" in m:
            rows.append([f"**mean of the {len(m['eligible_labels'])} labels with ≥ {m['min_positives']} positives**",
                         f"**{num(m['mean_auc_eligible'], 4)}**", _ci(m, "mean_auc_eligible_ci"), "", ""])
        lines = table(["Label", "AUC", "95 % CI", "positives", "negatives"], rows)
        if m["n_labels_excluded"]:
            lines += ["", f"{m['n_labels_excluded']} label(s) excluded from the mean (targets all one value, "
                          f"AUC undefined): " + ", ".join(m["excluded_labels"])]
        if m.get("interval"):
            lines += ["", f"Intervals: {m['interval']}. Labels marked few have fewer than "
                          f"{m['min_positives']} positive images in this split: their AUC is shown, but too noisy to "
                          f"read, and they stay out of the eligible mean."]
        return lines

    @staticmethod
    def scores(m: Mapping[str, Any]) -> dict[str, Optional[float]]:
        """``AUC <label>`` for every label, then ``AUC mean``."""
        out = {f"AUC {name}": v.get("auc") for name, v in m.get("labels", {}).items()}
        out["AUC mean"] = m.get("mean_auc")
        return out

    @staticmethod
    def intervals(m: Mapping[str, Any]) -> dict[str, Optional[list]]:
        """The 95 % interval ([lo, hi]) of each row of :meth:`scores`, where the metrics dict has one."""
        out = {f"AUC {name}": v.get("auc_ci") for name, v in m.get("labels", {}).items()}
        out["AUC mean"] = m.get("mean_auc_ci")
        return out

    @staticmethod
    def headline(m: Mapping[str, Any]) -> tuple[str, Any]:
        return "mean AUC", m.get("mean_auc")

    @staticmethod
    def compared(name: str) -> bool:
        return name.startswith("AUC")

    chance = 0.5  # the AUC of a model that ranks at random

    @staticmethod
    def paired(a: Sequence[Mapping[str, Any]], b: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """``a`` minus ``b`` of the mean AUC over the labels with enough positives, on the same test images,
        with its 95 % interval: each side's scores averaged over its seeds, images resampled (paired bootstrap)."""
        names = list(a[0]["labels"])
        sides = []
        for runs in (a, b):
            by_id = [dict(zip(m["images"]["ids"], zip(m["images"]["targets"], m["images"]["scores"]))) for m in runs]
            sides.append(by_id)
        ids = sorted(set.intersection(*(set(t) for side in sides for t in side)))
        y = np.array([sides[0][0][i][0] for i in ids], dtype=int)
        scores = [np.mean([[t[i][1] for i in ids] for t in side], axis=0) for side in sides]
        res = paired_multilabel_auc(y, scores[0], scores[1], names, min_positives=MIN_POSITIVES)
        k = len(res["mean_eligible"].get("labels", []))
        return {**res["mean_eligible"], "metric": f"mean AUC ({k} labels with ≥ {MIN_POSITIVES} positives)",
                "unit": "images", "n": len(ids), "seeds": [len(a), len(b)]}

    # -- predict ---------------------------------------------------------------------------------------
    volumes = False  # predict's inputs are 2D images
    # predict's options this task has no use for, each with what to do instead (refused before any work)
    predict_refuses = {
        "--probabilities": "predictions.csv always holds the probability of every class (one column per class); "
                           "leave the option out",
        "--figures": "overlays are drawn for segmentation only; predictions.csv holds every class's probability",
    }

    @staticmethod
    def predict_outputs(files: Sequence[Path], probs: bool, figures: bool,
                        output_format: str = "nifti") -> list[tuple[str, str]]:
        """The files :meth:`predict` writes (relative to its folder) and what each is."""
        return [("predictions.csv", "the predictions of every image")]

    def predict(self, run: LoadedRun, files: Sequence[Path], out: Path, probs: bool, figures: bool,
                output_format: str = "nifti") -> None:  # output_format: volumes only (predict refuses dicom-seg here)
        for f in files:  # every image, before any inference
            check_image(f)
        from selfmedmae.data.facade import build

        dataset = build(run.cfg.data).files_dataset(files)
        loader = DataLoader(dataset, batch_size=BATCH, shuffle=False, num_workers=int(run.cfg.data.num_workers))
        ids, scores, _ = classify(run, loader)
        path = write_scores_csv(out / "predictions.csv", ids, scores.numpy(), self.labels.names)
        print(f"wrote {path} ({len(ids)} images x {len(self.labels.names)} labels)")


TASK = Classification
