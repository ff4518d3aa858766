"""``selfmedmae evaluate CHECKPOINT [key=value ...] [--out DIR]``: the paper's metrics of a fine-tuned run.

The data, split and settings come from the run config saved in the checkpoint, changed by ``key=value``
overrides (``eval.split=test``, ``data.root=/elsewhere``, ``eval.overlap=0.25``, ...). Results go to
``--out`` or ``<run>/eval_<split>/``: ``metrics.json`` (per case and per class, strict JSON), ``metrics.md``
(the table, also printed) and ``figures/``.

Segmentation (UNETR, 3D), as the official evaluation (docs/official-code.md §2.4): whole volumes
after the deterministic preprocessing (orientation, resampling, intensity, foreground crop), sliding-window
logits (:mod:`selfmedmae.inference.forward`), argmax (label maps) or sigmoid > 0.5 (BraTS regions), then per case
and class Dice and HD95 in mm with the voxel spacing of the evaluated, resampled volume
(:func:`selfmedmae.metrics.dice.segmentation_scores`; empty masks follow the BraTS convention documented there:
both empty -> Dice 1 / HD 0, one empty -> Dice 0 / HD = penalty). The penalty is BraTS's 373.13 mm for
``data.format=brats``, the diagonal of the evaluated volume otherwise. Background is not scored for label
maps; BraTS scores its three overlapping regions TC / WT / ET. BTCV (``data.format=btcv`` or
``data.organ_subset`` set) also reports the mean over the paper's 8 organs next to the 13-organ mean.
Overlays of the first ``--figures`` cases (image, ground truth, prediction; the paper's Fig. 3) go to
``figures/<case>.png``.

Classification (ViT, 2D): centre-cropped images of the split, one sigmoid per label, ROC AUC per label and
their mean (a label whose targets are all one value is left out of the mean and named;
:mod:`selfmedmae.metrics.auc`), the ROC curves in ``figures/roc_curves.png`` and the scores of every image
in ``predictions.csv``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
from torch.utils.data import DataLoader

from selfmedmae.data.facade import build
from selfmedmae.errors import UserError
from selfmedmae.figures.curves import plot_roc_curves
from selfmedmae.inference.forward import LoadedRun, check_outputs, classify, load_run, segment_logits
from selfmedmae.metrics.dice import BRATS_HD_PENALTY_MM, multilabel_auc, summarize_segmentation, write_metrics
from selfmedmae.figures.overlay import plot_segmentation_overlay
from selfmedmae.metrics.table import write_scores_csv
from selfmedmae.tasks.validation import score_volume, spacing_of
from selfmedmae.outputs import prepare
from selfmedmae.runtime.log import progress_iter

BATCH_2D = 32  # images per forward pass in 2D evaluation (memory-safe on a CPU for ViT-B at 224^2)


def run(checkpoint: str | os.PathLike, overrides: Sequence[str] = (), out: Optional[str | os.PathLike] = None,
        figures: int = 3, overwrite: bool = False) -> int:
    """Evaluate a checkpoint on ``eval.split``; write metrics.json / metrics.md / figures, print the table.

    The output folder is checked first (:mod:`selfmedmae.outputs`): an earlier evaluation there is replaced
    only with ``overwrite``, and an unwritable folder is refused before any case is computed."""
    loaded = load_run(checkpoint, overrides)
    split = str(loaded.cfg.eval.split)
    out_dir = Path(out) if out is not None else loaded.run_dir / f"eval_{split}"
    target = prepare(out_dir, [checkpoint], overwrite, protected=[loaded.cfg.data.root])
    try:
        if loaded.task == "segmentation":
            metrics = evaluate_segmentation(loaded, split, out_dir, figures)
        else:
            metrics = evaluate_classification(loaded, split, out_dir)
        text = write_metrics(metrics, out_dir)
    finally:
        target.finish()
    print(text, end="")
    print(f"\nwrote {out_dir / 'metrics.json'}, {out_dir / 'metrics.md'} and {out_dir / 'figures'}")
    return 0


def _context(run: LoadedRun, split: str) -> dict[str, Any]:
    """Scalars listed above the table and kept in metrics.json: what was evaluated, and how."""
    return {"checkpoint": str(run.checkpoint), "split": split, "data": f"{run.cfg.data.format} {run.cfg.data.root}",
            "device": str(run.device), "precision": run.precision}


def _first(batch: list) -> Any:
    return batch[0]  # one whole volume per step: shapes differ, and the MetaTensor meta must survive


def evaluate_segmentation(run: LoadedRun, split: str, out_dir: Path, figures: int = 3) -> dict[str, Any]:
    """Per-case, per-class Dice / HD of a UNETR checkpoint on a 3D split; overlays of the first cases.
    Scored as validation scores (:func:`selfmedmae.tasks.validation.score_volume`), with HD95 added."""
    cfg = run.cfg
    data = build(cfg.data, run.run_dir)
    labels = data.labels
    check_outputs(run, labels.out_channels, "classes" if not labels.multilabel else "regions")
    # one pass: holding every volume in memory first would buy nothing
    dataset = data.dataset(split, cache="none" if cfg.data.cache == "memory" else None)
    if len(dataset) == 0:
        raise UserError(f"{cfg.data.root}: split {split!r} has no labelled cases")
    loader = DataLoader(dataset, batch_size=1, shuffle=False, num_workers=int(cfg.data.num_workers),
                        collate_fn=_first)
    penalty = BRATS_HD_PENALTY_MM if cfg.data.format == "brats" else None
    cases = []
    for i, item in enumerate(progress_iter(loader, len(dataset), f"evaluate {split}", "case")):
        image, label, case_id = item["image"], item["label"], str(item["id"])
        spacing = spacing_of(image)  # mm, of the resampled grid the metrics are taken on
        logits = segment_logits(run, image)  # [1, K, *S]
        case, pred = score_volume(logits, label, labels, spacing, case_id, percentile=float(cfg.eval.hd_percentile),
                                  hd_penalty=penalty)
        cases.append(case)
        if i < figures:
            dice = np.mean(list(case.dice.values()))
            shown_pred = pred[0] if labels.multilabel else pred[0].argmax(0)  # the scored decision
            plot_segmentation_overlay(image.as_tensor(), shown_pred, Path(out_dir) / "figures" / f"{case_id}.png",
                                      label=label.as_tensor(), class_names=labels.scored, spacing=spacing,
                                      multilabel=labels.multilabel,
                                      title=f"{case_id} ({split}): mean Dice {dice:.3f}")
    summary = summarize_segmentation(cases, labels.scored, labels.subsets, float(cfg.eval.hd_percentile))
    context = {**_context(run, split), "overlap": float(cfg.eval.overlap), "tta": bool(cfg.eval.tta),
               "hd_penalty": "373.13 mm (BraTS)" if penalty else "diagonal of the evaluated volume"}
    return {**context, **summary}


def evaluate_classification(run: LoadedRun, split: str, out_dir: Path) -> dict[str, Any]:
    """Per-label ROC AUC of a classifier checkpoint on a 2D split; ROC curves and per-image scores."""
    cfg = run.cfg
    data = build(cfg.data, run.run_dir)
    names = data.labels.names
    check_outputs(run, len(names), "labels")
    dataset = data.dataset(split)
    if len(dataset) == 0 or not dataset.labelled:
        raise UserError(f"{cfg.data.root}: split {split!r} has no labelled images to evaluate against")
    loader = DataLoader(dataset, batch_size=BATCH_2D, shuffle=False, num_workers=int(cfg.data.num_workers))
    ids, scores, targets = classify(run, loader)
    metrics = multilabel_auc(targets.numpy(), scores.numpy(), names)
    out_dir = Path(out_dir)
    plot_roc_curves(targets, scores, names, out_dir / "figures" / "roc_curves.png", title=f"{split} split")
    write_scores_csv(out_dir / "predictions.csv", ids, scores.numpy(), names, targets.numpy())
    return {**_context(run, split), **metrics}
