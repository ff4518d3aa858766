"""3D segmentation (UNETR or the Primus decoder on the ViT): everything of the task in one place.

- **Loss:** Dice + cross-entropy over softmax classes (label maps), or Dice over sigmoid regions (BraTS, as the
  official code); with ``model.deep_supervision`` the weighted sum over the decoder's resolutions.
- **Validation and best.pt:** mean Dice over whole validation volumes (``val_dice``; BTCV's 8-organ mean,
  ``val_dice_subset``, where the data report a subset). Validation runs what ``evaluate`` runs: the same
  datasets, the same sliding window (:mod:`selfmedmae.inference.forward`), the same decision rule and
  per-case scores, so ``val_dice`` of a checkpoint equals the mean Dice ``evaluate`` reports for it on the
  same split and machine. Only HD95 is left out of validation (it costs more than the rest).
- **Evaluate:** per case and class Dice and HD95 in mm on the evaluated (resampled) grid, as the official
  evaluation (docs/official-code.md §2.4); empty masks follow the BraTS convention
  (:mod:`selfmedmae.metrics.dice`), the HD penalty is the data's (:attr:`~selfmedmae.data.formats.Labels.hd_penalty`).
- **Predict:** label maps (and probabilities) in each input's own geometry (:mod:`selfmedmae.tasks.volume_output`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from monai.losses import DiceCELoss, DiceLoss
from torch import nn
from torch.utils.data import DataLoader

from selfmedmae.data.formats import Labels
from selfmedmae.errors import UserError
from selfmedmae.figures.tb_images import slice_of
from selfmedmae.inference.forward import LoadedRun, segment_logits, sliding_window_logits
from selfmedmae.metrics.dice import (CaseScores, class_means, mean_over, onehot_from_labelmap, onehot_from_logits,
                                     segmentation_scores, summarize_segmentation)
from selfmedmae.metrics.stats import bootstrap_ci, bootstrap_mean_ci, paired_bootstrap_diff
from selfmedmae.metrics.table import num, pm, table
from selfmedmae.runtime.device import Precision
from selfmedmae.runtime.distributed import Dist
from selfmedmae.runtime.log import progress_iter


def supervision_weights(n: int) -> list[float]:
    """nnU-Net's deep-supervision weights: halving from the full-resolution output down, summing to 1."""
    raw = [0.5 ** i for i in range(n)]
    return [w / sum(raw) for w in raw]


def supervised_loss(criterion: Callable, outputs: list[torch.Tensor], label: torch.Tensor) -> torch.Tensor:
    """Weighted sum of ``criterion`` over ``outputs`` [B, K, *S / 2^i], the label [B, L, *S] brought to each
    output's grid by nearest neighbour (``nearest-exact``, as nnU-Net v2's ``DownsampleSegForDSTransform``)."""
    label = label.to(outputs[0].device)
    total = outputs[0].new_zeros((), dtype=torch.float32)
    for weight, out in zip(supervision_weights(len(outputs)), outputs):
        target = label
        if tuple(out.shape[2:]) != tuple(label.shape[2:]):
            target = F.interpolate(label.float(), size=out.shape[2:], mode="nearest-exact").to(label.dtype)
        total = total + weight * criterion(out.float(), target)  # target [B, L, *out's grid]
    return total


def score_volume(logits: torch.Tensor, label: torch.Tensor, labels: Labels, spacing: Sequence[float],
                 case_id: str, *, with_hd: bool = True, percentile: float = 95.0) -> tuple[CaseScores, torch.Tensor]:
    """One case: logits [1, K, *S] and its label ([1, *S] label map or [K, *S] regions) -> (its scores, the
    one-hot prediction [1, K, *S])."""
    pred = onehot_from_logits(logits, labels.multilabel)
    label = label.as_tensor() if hasattr(label, "as_tensor") else torch.as_tensor(label)
    try:
        truth = (label[None] > 0.5).to(torch.uint8) if labels.multilabel else \
            onehot_from_labelmap(label[None], labels.out_channels)
    except ValueError as exc:
        raise UserError(f"{case_id}: label map does not fit the {labels.out_channels} classes ({exc})") from None
    scores = segmentation_scores(pred, truth, spacing, labels.scored, percentile=percentile,
                                 include_background=labels.multilabel, hd_penalty=labels.hd_penalty,
                                 case_ids=[case_id], with_hd=with_hd)
    return scores[0], pred


def spacing_of(image: Any) -> list[float]:
    """The voxel size (mm) of a preprocessed volume: its MetaTensor's, else 1 per axis."""
    dims = image.ndim - 1
    pixdim = getattr(image, "pixdim", None)
    return [float(s) for s in pixdim[:dims]] if pixdim is not None else [1.0] * dims


def gather_in_order(local: list, ctx: Dist) -> list:
    """Every rank's cases in the dataset's order (rank r held items r, r + world, ...)."""
    if not ctx.enabled:
        return local
    parts: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(parts, local)
    out = []
    for i in range(max(len(p) for p in parts)):
        out += [p[i] for p in parts if i < len(p)]
    return out


@torch.no_grad()
def validate(model: nn.Module, dataset: Any, labels: Labels, cfg: Any, prec: Precision, ctx: Dist,
             show: bool = False, snapshot: Optional[dict] = None) -> dict[str, float]:
    """``val_dice`` (mean over classes of the mean over cases) and ``val_dice_subset`` for a reported subset,
    over this rank's share of ``dataset`` gathered from every rank. ``snapshot``: filled with a slice of the
    first volume (image, label, prediction) for TensorBoard."""
    model.eval()
    roi = [int(s) for s in cfg.data.roi_size]
    cases = []
    for i in progress_iter(range(len(dataset)), len(dataset), "validation", "volume", enabled=show):
        item = dataset[i]
        logits = sliding_window_logits(model, item["image"], roi, int(cfg.eval.sw_batch_size),
                                       float(cfg.eval.overlap), ctx.device, prec.autocast, tta=bool(cfg.eval.tta))
        case, pred = score_volume(logits, item["label"], labels, spacing_of(item["image"]), str(item["id"]),
                                  with_hd=False)
        if i == 0 and snapshot is not None:
            label = torch.as_tensor(item["label"])
            shown = label if labels.multilabel else onehot_from_labelmap(label[None], labels.out_channels)[0]
            snapshot.update(slice_of(item["image"], shown, pred[0], labels.multilabel))
        cases.append(case)
    cases = gather_in_order(cases, ctx)
    per_class = class_means(cases, labels.scored)
    out = {"val_dice": mean_over(per_class, labels.scored)}
    for members in list(labels.subsets.values())[:1]:
        out["val_dice_subset"] = mean_over(per_class, members)
    return out


def _ci(values: Mapping[str, Any], key: str, digits: int) -> str:
    """'lo to hi' of ``<key>_ci``, or '' where the metrics dict has no interval."""
    ci = values.get(f"{key}_ci")
    return "" if not ci else f"{num(ci[0], digits)} to {num(ci[1], digits)}"


def _first(batch: list) -> Any:
    return batch[0]  # one whole volume per step: shapes differ, and the MetaTensor meta must survive


def add_intervals(summary: dict, level: float = 0.95) -> dict:
    """``summary`` (of :func:`summarize_segmentation`) with 95 % bootstrap intervals over cases: ``dice_ci`` and
    ``hd95_ci`` ([lo, hi]) of every class, of the mean over classes and of every subset's mean."""
    names = list(summary["classes"])
    table = {key: np.array([[case[key].get(n, np.nan) for n in names] for case in summary["cases"]], dtype=float)
             for key in ("dice", "hd95")}  # [cases, classes]; NaN where a value is undefined (null in JSON)
    for key, values in table.items():
        for j, name in enumerate(names):
            ci = bootstrap_ci(values[:, j], level=level)
            summary["classes"][name][f"{key}_ci"] = [ci["lo"], ci["hi"]]
        ci = bootstrap_mean_ci(values, level=level)
        summary["mean"][f"{key}_ci"] = [ci["lo"], ci["hi"]]
        for sub in summary.get("subsets", {}).values():
            ci = bootstrap_mean_ci(values[:, [names.index(n) for n in sub["classes"]]], level=level)
            sub[f"{key}_ci"] = [ci["lo"], ci["hi"]]
    summary["interval"] = f"{level * 100:g} % percentile bootstrap over cases (2000 resamples, seed 0)"
    return summary


def case_table(metrics: Mapping[str, Any], classes: Sequence[str]) -> dict[str, np.ndarray]:
    """Per-case Dice of ``classes`` by case id: what paired comparisons resample."""
    return {str(c["case_id"]): np.array([np.nan if c["dice"].get(n) is None else c["dice"][n] for n in classes], float)
            for c in metrics.get("cases", [])}


def headline_classes(m: Mapping[str, Any]) -> list[str]:
    """The classes the headline averages: the first subset's (BTCV's 8 organs) or every class."""
    subsets = m.get("subsets") or {}
    return list(next(iter(subsets.values()))["classes"]) if subsets else list(m.get("classes", {}))


class Segmentation:
    """The segmentation task of a run whose data have ``labels``."""

    name = "segmentation"
    kind = "unetr"  # the checkpoint kind of its models (UNETR and the Primus decoder)
    unit = "cases"  # what a test split counts

    def __init__(self, labels: Labels):
        self.labels = labels
        self.num_classes = labels.out_channels
        self.metric = "val_dice_subset" if labels.subsets else "val_dice"
        if labels.multilabel:
            self.criterion = DiceLoss(sigmoid=True, squared_pred=True, smooth_nr=0.0, smooth_dr=1e-6)
        else:
            self.criterion = DiceCELoss(to_onehot_y=True, softmax=True, squared_pred=True, smooth_nr=0.0,
                                        smooth_dr=1e-6)

    # -- fine-tuning -----------------------------------------------------------------------------------
    def loss(self, logits: torch.Tensor | list[torch.Tensor], batch: dict) -> torch.Tensor:
        if isinstance(logits, (list, tuple)):  # deep supervision: [full resolution, 1/2, 1/4, ...]
            return supervised_loss(self.criterion, logits, batch["label"])
        return self.criterion(logits.float(), batch["label"].to(logits.device))

    def validation(self, model: nn.Module, data: Any, cfg: Any, prec: Precision, ctx: Dist, micro_batch: int,
                   snapshot: Optional[dict]) -> Callable[[], dict]:
        dataset = data.dataset("val", rank=ctx.rank, world_size=ctx.world_size)
        return lambda: validate(model, dataset, self.labels, cfg, prec, ctx, show=ctx.is_main, snapshot=snapshot)

    # -- evaluate --------------------------------------------------------------------------------------
    def evaluate(self, run: LoadedRun, data: Any, split: str, out_dir: Path, figures: int = 3) -> dict[str, Any]:
        """Per-case and per-class Dice / HD95 of ``run`` on ``split``; overlays of the first ``figures`` cases."""
        cfg, labels = run.cfg, self.labels
        dataset = data.dataset(split, cache="none" if cfg.data.cache == "memory" else None)  # one pass
        if len(dataset) == 0:
            raise UserError(f"{cfg.data.root}: split {split!r} has no labelled cases")
        loader = DataLoader(dataset, batch_size=1, shuffle=False, num_workers=int(cfg.data.num_workers),
                            collate_fn=_first)
        from selfmedmae.figures.overlay import plot_segmentation_overlay  # evaluate only, not training

        cases = []
        for i, item in enumerate(progress_iter(loader, len(dataset), f"evaluate {split}", "case")):
            image, label, case_id = item["image"], item["label"], str(item["id"])
            spacing = spacing_of(image)  # mm, of the resampled grid the metrics are taken on
            case, pred = score_volume(segment_logits(run, image), label, labels, spacing, case_id,
                                      percentile=float(cfg.eval.hd_percentile))
            cases.append(case)
            if i < figures:
                shown = pred[0] if labels.multilabel else pred[0].argmax(0)  # the scored decision
                plot_segmentation_overlay(image.as_tensor(), shown, Path(out_dir) / "figures" / f"{case_id}.png",
                                          label=label.as_tensor(), class_names=labels.scored, spacing=spacing,
                                          multilabel=labels.multilabel,
                                          title=f"{case_id} ({split}): mean Dice {np.mean(list(case.dice.values())):.3f}")
        summary = add_intervals(summarize_segmentation(cases, labels.scored, labels.subsets,
                                                       float(cfg.eval.hd_percentile)))
        penalty = f"{labels.hd_penalty:g} mm" if labels.hd_penalty is not None else "diagonal of the evaluated volume"
        return {"overlap": float(cfg.eval.overlap), "tta": bool(cfg.eval.tta), "hd_penalty": penalty, **summary}

    @staticmethod
    def rows(m: Mapping[str, Any]) -> list[str]:
        """The markdown table of a metrics dict of :meth:`evaluate`, with the 95 % intervals where present."""
        hd = f"HD{m.get('hd_percentile', 95):g}"
        rows = [[name, pm(c["dice"], c["dice_std"], 4), _ci(c, "dice", 4), pm(c["hd95"], c["hd95_std"], 2),
                 _ci(c, "hd95", 2), str(c["n"]), str(c["n_gt_empty"])] for name, c in m["classes"].items()]
        for name, s in [("mean", m["mean"]), *m.get("subsets", {}).items()]:
            n = len(s["classes"])
            rows.append([f"**{name} ({n} class{'es' if n != 1 else ''})**", f"**{num(s['dice'], 4)}**",
                         _ci(s, "dice", 4), f"**{num(s['hd95'], 2)}**", _ci(s, "hd95", 2), "", ""])
        lines = table(["Class", "Dice (mean ± std)", "Dice 95 % CI", f"{hd} mm (mean ± std)", f"{hd} 95 % CI",
                       "cases", "GT empty"], rows)
        lines += ["", "Empty masks: both empty -> Dice 1, HD 0; one empty -> Dice 0, HD = penalty (BraTS convention)."]
        return lines + ([f"Intervals: {m['interval']}."] if m.get("interval") else [])

    @staticmethod
    def scores(m: Mapping[str, Any]) -> dict[str, Optional[float]]:
        """Every Dice row, then every HD row: ``Dice <class>``, ``Dice mean``, ``HD95 <class>``, ..."""
        hd = f"HD{float(m.get('hd_percentile', 95)):g}"
        groups = [(name, c) for name, c in m.get("classes", {}).items()]
        groups += [("mean", m.get("mean", {}))] + list(m.get("subsets", {}).items())
        return {f"{label} {name}": c.get(key) for key, label in (("dice", "Dice"), ("hd95", hd)) for name, c in groups}

    @staticmethod
    def intervals(m: Mapping[str, Any]) -> dict[str, Optional[list]]:
        """The 95 % interval ([lo, hi]) of each row of :meth:`scores`, where the metrics dict has one."""
        hd = f"HD{float(m.get('hd_percentile', 95)):g}"
        groups = [(name, c) for name, c in m.get("classes", {}).items()]
        groups += [("mean", m.get("mean", {}))] + list(m.get("subsets", {}).items())
        return {f"{label} {name}": c.get(f"{key}_ci") for key, label in (("dice", "Dice"), ("hd95", hd))
                for name, c in groups}

    @staticmethod
    def headline(m: Mapping[str, Any]) -> tuple[str, Any]:
        """The one number a run is judged by: the subset's mean Dice where the data report one (BTCV's 8
        organs, as the paper), else the mean Dice over the classes."""
        subsets = m.get("subsets") or {}
        if subsets:
            name, values = next(iter(subsets.items()))
            return f"mean Dice ({name})", values.get("dice")
        return "mean Dice", (m.get("mean") or {}).get("dice")

    @staticmethod
    def compared(name: str) -> bool:
        """The rows of :meth:`scores` that comparisons of two inits show."""
        return name.startswith("Dice")

    chance = None  # no chance level to state beside a Dice

    @staticmethod
    def paired(a: Sequence[Mapping[str, Any]], b: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """``a`` minus ``b`` of the headline Dice on the same test cases, with its 95 % interval: per-case
        Dice averaged over the seeds of each side, cases resampled (paired bootstrap; sign-flip p)."""
        classes = headline_classes(a[0])
        tables = [[case_table(m, classes) for m in side] for side in (a, b)]
        ids = sorted(set.intersection(*(set(t) for side in tables for t in side)))
        name = Segmentation.headline(a[0])[0]
        if not ids:
            return {"diff": float("nan"), "lo": float("nan"), "hi": float("nan"), "level": 0.95, "n": 0,
                    "metric": name}
        mats = [np.mean([[t[i] for i in ids] for t in side], axis=0) for side in tables]  # [cases, classes]
        return {**paired_bootstrap_diff(mats[0], mats[1]), "metric": name, "unit": "cases",
                "seeds": [len(a), len(b)]}

    # -- predict ---------------------------------------------------------------------------------------
    volumes = True  # predict's inputs are volumes
    predict_refuses: dict = {}  # every predict option applies

    @staticmethod
    def predict_outputs(files: Sequence[Path], probs: bool, figures: bool,
                        output_format: str = "nifti") -> list[tuple[str, str]]:
        """The files :meth:`predict` writes (relative to its folder) and what each is."""
        from selfmedmae.tasks.volume_output import planned_outputs

        return planned_outputs(files, probs, figures, output_format)

    def predict(self, run: LoadedRun, files: Sequence[Path], out: Path, probs: bool, figures: bool,
                output_format: str = "nifti") -> None:
        from selfmedmae.tasks.volume_output import predict_volumes

        predict_volumes(run, files, out, probs, figures, output_format)


TASK = Segmentation
