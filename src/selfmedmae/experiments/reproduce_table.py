"""The tables of ``selfmedmae reproduce``: our test-split numbers beside the paper's (Zhou et al., ISBI 2023).

Our numbers are read with :func:`selfmedmae.eval.report.read_run` from each fine-tuned run's
``eval_test/metrics.json`` and given as mean ± sample std over the seeds, in percent like the paper.
Paper numbers are only those we have a source for; every other cell says "not stated" (never a guess).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from selfmedmae.eval.report import read_run, run as report

NOT_STATED = "not stated"
INITS = ("scratch", "imagenet", "mae")  # table row order: random init, ImageNet, MAE self pre-training
INIT_NAMES = {"scratch": "Random init (scratch)", "imagenet": "ImageNet init",
              "mae": "MAE self pre-training"}


@dataclass(frozen=True)
class Metric:
    key: str  # a row name of report.flatten, e.g. "Dice 8 organs"
    label: str  # as printed
    percent: bool  # the paper prints it x 100


# The paper's headline rows (UNETR on BTCV / BraTS, ViT-B/16 on ChestX-ray14). The ImageNet rows, the HD95
# values and the mask-ratio x epochs ablation (Table 3) are not stated in the sources this project holds.
PAPER: dict[str, dict] = {
    "btcv": {"metrics": [Metric("Dice 8 organs", "DSC, 8 organs (%)", True), Metric("HD95 8 organs", "HD95, 8 organs (mm)", False)],
             "paper": {("Dice 8 organs", "scratch"): 78.8, ("Dice 8 organs", "mae"): 83.5},
             "model": "UNETR (ViT-B/16, 16^3 patches)"},
    "brats": {"metrics": [Metric("Dice mean", "DSC, mean of TC / WT / ET (%)", True), Metric("HD95 mean", "HD95, mean (mm)", False)],
              "paper": {("Dice mean", "scratch"): 77.4, ("Dice mean", "mae"): 78.9},
              "model": "UNETR (ViT-B/16, 16^3 patches)"},
    "cxr14": {"metrics": [Metric("AUC mean", "mAUC over 14 findings (%)", True)],
              "paper": {("AUC mean", "scratch"): 74.4, ("AUC mean", "mae"): 81.5},
              "model": "ViT-B/16 + linear head"},
}


def primary(dataset: str) -> Metric:
    return PAPER[dataset]["metrics"][0]


def _values(run_dirs: Sequence[Path], metric: Metric) -> list[float]:
    out = []
    for d in run_dirs:
        value = read_run(d, "test").metrics.get(metric.key)
        if value is not None:
            out.append(100.0 * value if metric.percent else value)
    return out


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else math.nan
    return mean, std


def cell(values: Sequence[float], digits: int = 1) -> str:
    if not values:
        return "n/a"
    mean, std = mean_std(values)
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if len(values) > 1 else "")


def main_table(dataset: str, runs: dict[str, list[Path]], missing: dict[str, str]) -> tuple[str, dict]:
    """Markdown and a JSON record: one row per (initialisation, metric); ``runs`` maps init -> evaluated
    run folders, ``missing`` maps init -> why it has none (e.g. no ImageNet checkpoint given)."""
    spec = PAPER[dataset]
    lines = [f"# selfmedmae reproduce {dataset}: our numbers beside the paper's", "",
             f"Model: {spec['model']}. Ours: test split, mean ± sample std over the seeds. "
             f"Paper: Zhou et al., ISBI 2023; \"{NOT_STATED}\" where our sources give no number.", "",
             "| Initialisation | Metric | Ours | Seeds | Paper |", "|---|---|---:|---:|---:|"]
    record: dict = {"dataset": dataset, "rows": []}
    for init in INITS:
        for metric in spec["metrics"]:
            paper = spec["paper"].get((metric.key, init))
            values = _values(runs.get(init, []), metric)
            ours = cell(values, 1 if metric.percent else 2) if init in runs else f"not run ({missing.get(init, '')})"
            lines.append(f"| {INIT_NAMES[init]} | {metric.label} | {ours} | {len(values)} | "
                         f"{NOT_STATED if paper is None else f'{paper:.1f}'} |")
            record["rows"].append({"init": init, "metric": metric.key, "values": values, "paper": paper,
                                   "runs": [str(d) for d in runs.get(init, [])]})
    return "\n".join(lines) + "\n", record


def ablation_table(dataset: str, grid: dict[tuple[float, int], list[Path]], ratios: Sequence[float],
                   epochs: Sequence[int]) -> tuple[str, dict]:
    """Mask ratio (rows) x pre-training epochs (columns): the fine-tuned test metric of each grid point."""
    metric = primary(dataset)
    lines = [f"# selfmedmae reproduce {dataset} --ablation: mask ratio x pre-training epochs", "",
             f"{metric.label} on the test split after fine-tuning from each pre-training (mean ± sample std over "
             f"the seeds). The paper's values for this grid (its Table 3): {NOT_STATED} in our sources.", "",
             "| mask ratio \\ pre-training epochs | " + " | ".join(str(e) for e in epochs) + " |",
             "|---|" + "---:|" * len(epochs)]
    record: dict = {"dataset": dataset, "metric": metric.key, "cells": []}
    for r in ratios:
        row = []
        for e in epochs:
            values = _values(grid.get((r, e), []), metric)
            row.append(cell(values, 1 if metric.percent else 2))
            record["cells"].append({"mask_ratio": r, "epochs": e, "values": values})
        lines.append(f"| {r:g} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n", record


def write(text: str, record: dict, md: Path, js: Optional[Path] = None) -> None:
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text(text)
    if js is not None:
        js.write_text(json.dumps(record, indent=2, allow_nan=False, default=str) + "\n")


def write_tables(opts, stages: Sequence, done: set) -> None:
    """``reproduce.md`` / ``.json`` (or ``ablation.md`` / ``.json``) and ``report/`` from the evaluated runs."""
    evaluated = [s for s in stages if s.kind == "evaluate" and s.name in done]
    if opts.ablation:
        ratios = list(dict.fromkeys(s.point[0] for s in stages if s.kind == "pretrain"))
        epochs = sorted({s.point[1] for s in stages if s.kind == "pretrain"})
        cells: dict = {}
        for s in evaluated:
            cells.setdefault(s.point, []).append(s.dir)
        text, record = ablation_table(opts.dataset, cells, ratios, epochs)
        name, report_dir = "ablation", opts.out / "ablation" / "report"
    else:
        runs: dict[str, list[Path]] = {s.init: [] for s in stages if s.kind == "finetune"}
        for s in evaluated:
            runs[s.init].append(s.dir)
        text, record = main_table(opts.dataset, runs, {"imagenet": "give --imagenet PATH"})
        name, report_dir = "reproduce", opts.out / "report"
    write(text, record, opts.out / f"{name}.md", opts.out / f"{name}.json")
    print(text, end="")
    print(f"\nwrote {opts.out / f'{name}.md'} and {opts.out / f'{name}.json'}")
    if evaluated:
        report([s.dir for s in evaluated], out=report_dir, split="test")
