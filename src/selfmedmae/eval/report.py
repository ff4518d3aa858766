"""``selfmedmae report RUN_DIR... [--out DIR] [--split NAME]``: several runs in one table, mean ± std per metric.

For seeds of one recipe, or MAE against scratch: each run contributes the metrics of its evaluation
(``<run>/eval_<split>/metrics.json`` written by ``selfmedmae evaluate``; the newest one, or the one of
``--split``), or, when it has none, its best validation line in ``<run>/metrics.jsonl`` (best by
``val_dice_subset``, ``val_dice`` or ``val_auc``, whichever the run logged first in that order; higher is
better except for keys naming a loss or a distance). Metrics are flattened to rows such as ``Dice Anterior``,
``HD95 mean``, ``Dice 8 organs``, ``AUC Effusion``, ``AUC mean``.

Per row: each run's value, then the mean and the *sample* standard deviation over the runs that have the
metric (n - 1 in the denominator, as for seeds; "n/a" with one run), and how many runs had it.
Writes ``report.md``, ``report.json`` and ``learning_curves.png`` (training loss, lr and validation metrics of
every run with a ``metrics.jsonl``) into ``--out`` (default: ``report/`` in the runs' common parent folder),
and prints the table.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from selfmedmae.errors import UserError
from selfmedmae.outputs.atomic import write_text
from selfmedmae.tasks import task_of_metrics
from selfmedmae.figures.curves import plot_learning_curves, read_jsonl

PRIMARY = ("val_dice_subset", "val_dice", "val_auc")  # the metric fine-tuning keeps best.pt by


@dataclass
class RunResult:
    name: str
    dir: Path
    source: str  # where the numbers came from, for the reader
    split: Optional[str]
    metrics: dict[str, float] = field(default_factory=dict)
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)  # 95 % interval per row, if any


def _number(v: Any) -> Optional[float]:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None  # JSON null (NaN when written), strings, flags
    return float(v)


def flatten(metrics: dict[str, Any]) -> dict[str, float]:
    """The rows of one metrics.json of `evaluate`, as its task names them (:meth:`Segmentation.scores`,
    :meth:`Classification.scores`); empty for a dict of no task."""
    task = task_of_metrics(metrics)
    rows = task.scores(metrics) if task is not None else {}
    return {k: float(v) for k, v in rows.items() if _number(v) is not None}


def intervals_of(metrics: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """The 95 % intervals evaluate wrote beside the rows of :func:`flatten` (older metrics files have none)."""
    task = task_of_metrics(metrics)
    found = task.intervals(metrics) if task is not None and hasattr(task, "intervals") else {}
    return {k: (float(v[0]), float(v[1])) for k, v in found.items()
            if v and _number(v[0]) is not None and _number(v[1]) is not None}


def _lower_is_better(key: str) -> bool:
    return "loss" in key or "hd" in key.lower()


def best_validation(records: Sequence[dict[str, Any]]) -> tuple[dict[str, float], Optional[dict[str, Any]]]:
    """(val_* numbers of the best validation record, that record) of a run's metrics.jsonl."""
    vals = [r for r in records if any(k.startswith("val") and _number(v) is not None for k, v in r.items())]
    if not vals:
        return {}, None
    keys = [k for r in vals for k in r if k.startswith("val") and _number(r[k]) is not None]
    primary = next((k for k in PRIMARY if k in keys), keys[0])
    scored = [r for r in vals if _number(r.get(primary)) is not None]
    sign = -1.0 if _lower_is_better(primary) else 1.0
    best = max(scored, key=lambda r: sign * float(r[primary]))  # the first of equal values
    return {k: float(v) for k, v in best.items() if k.startswith("val") and _number(v) is not None}, best


def read_run(run_dir: str | os.PathLike, split: Optional[str] = None) -> RunResult:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run folder")
    pattern = f"eval_{split}/metrics.json" if split else "eval_*/metrics.json"
    evals = sorted(run_dir.glob(pattern), key=lambda p: (p.stat().st_mtime, str(p)))
    if evals:
        path = evals[-1]
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UserError(f"{path}: not valid JSON ({exc})") from None
        metrics = flatten(data)
        if not metrics:
            raise UserError(f"{path}: holds no segmentation or classification metrics")
        return RunResult(run_dir.name, run_dir, str(path.relative_to(run_dir)), data.get("split"), metrics,
                         intervals_of(data))
    if split and split != "val":  # the validation lines of metrics.jsonl are the val split, nothing else
        have = sorted(p.parent.name[len("eval_"):] for p in run_dir.glob("eval_*/metrics.json"))
        raise UserError(f"{run_dir}: no eval_{split}/metrics.json for --split {split} (evaluated splits here: "
                        f"{', '.join(have) or 'none'}; run `selfmedmae evaluate {run_dir}/checkpoints/best.pt "
                        f"eval.split={split}` first)")
    log = run_dir / "metrics.jsonl"
    if log.is_file():
        metrics, best = best_validation(read_jsonl(log))
        if best is not None:
            where = f"best validation in metrics.jsonl (epoch {best.get('epoch', '?')}, step {best.get('step', '?')})"
            return RunResult(run_dir.name, run_dir, where, "val", metrics)
    wanted = f"eval_{split}/metrics.json" if split else "eval_*/metrics.json"
    raise UserError(f"{run_dir}: no {wanted} and no validation lines in metrics.jsonl "
                    f"(run `selfmedmae evaluate {run_dir}/checkpoints/best.pt` first)")


def unique_names(dirs: Sequence[Path]) -> list[str]:
    """The shortest trailing parts of each path that tell the runs apart (seed0/finetune, seed1/finetune)."""
    parts = [Path(os.path.abspath(d)).parts for d in dirs]
    for k in range(1, max(len(p) for p in parts) + 1):
        names = ["/".join(p[-k:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return [str(d) for d in dirs]


def summarize(runs: Sequence[RunResult]) -> dict[str, dict[str, Any]]:
    """{metric: {"values": [per run or None], "mean", "std" (ddof=1; NaN for one run), "n"}}, in first-seen order."""
    keys = list(dict.fromkeys(k for r in runs for k in r.metrics))
    out = {}
    for key in keys:
        values = [r.metrics.get(key) for r in runs]
        present = np.array([v for v in values if v is not None], dtype=np.float64)
        std = float(present.std(ddof=1)) if present.size > 1 else float("nan")
        out[key] = {"values": values, "mean": float(present.mean()), "std": std, "n": int(present.size)}
    return out


def _fmt(x: Optional[float], digits: int) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def markdown(runs: Sequence[RunResult], summary: dict[str, dict[str, Any]]) -> str:
    lines = [f"# Report over {len(runs)} run{'s' if len(runs) != 1 else ''}", ""]
    lines += [f"- {r.name}: {r.dir} - {r.source}" for r in runs]
    splits = sorted({str(r.split) for r in runs})
    if len(splits) > 1:
        lines += ["", f"**Warning:** the runs were measured on different splits ({', '.join(splits)}); "
                      f"pass --split to compare like with like."]
    header = ["Metric", *[r.name for r in runs], "mean ± std", "runs"]
    lines += ["", "| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for key, s in summary.items():
        digits = 2 if key.startswith("HD") else 4
        pm = f"{_fmt(s['mean'], digits)} ± {_fmt(s['std'], digits)}"
        cells = [_fmt(v, digits) + _ci(r.intervals.get(key), digits) for v, r in zip(s["values"], runs)]
        lines.append("| " + " | ".join([key, *cells, pm, str(s["n"])]) + " |")
    lines += ["", "std: sample standard deviation over the runs that have the metric (n - 1 in the denominator)."]
    if any(r.intervals for r in runs):
        lines += ["In parentheses: each run's 95 % interval on its test cases (bootstrap over cases; DeLong for "
                  "an AUC), as evaluate wrote it."]
    return "\n".join(lines) + "\n"


def _ci(ci: Optional[tuple[float, float]], digits: int) -> str:
    return "" if ci is None else f" ({_fmt(ci[0], digits)} to {_fmt(ci[1], digits)})"


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def run(run_dirs: Sequence[str | os.PathLike], out: Optional[str | os.PathLike] = None,
        split: Optional[str] = None) -> int:
    """Gather the runs, write report.md / report.json / learning_curves.png, print the table."""
    if not run_dirs:
        raise UserError("report: give at least one run folder")
    runs = [read_run(d, split) for d in run_dirs]  # every run checked before anything is written
    for r, name in zip(runs, unique_names([r.dir for r in runs])):
        r.name = name
    if out is None:
        out = Path(os.path.commonpath([os.path.abspath(r.dir) for r in runs])) / "report"
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(runs)
    text = markdown(runs, summary)
    write_text(out / "report.md", text)  # a full disk: one line, no partial file
    record = {"runs": [{"name": r.name, "dir": str(r.dir), "source": r.source, "split": r.split,
                        "metrics": r.metrics, "intervals": r.intervals} for r in runs], "metrics": summary,
              "std": "sample standard deviation over runs (ddof=1)"}
    write_text(out / "report.json", json.dumps(_json_safe(record), indent=2) + "\n")
    print(text, end="")
    curves = _learning_curves(runs, out / "learning_curves.png")
    print(f"\nwrote {out / 'report.md'}, {out / 'report.json'}" + (f" and {curves}" if curves else ""))
    return 0


def _learning_curves(runs: Sequence[RunResult], path: Path) -> Optional[Path]:
    logs = {r.name: read_jsonl(r.dir / "metrics.jsonl") for r in runs if (r.dir / "metrics.jsonl").is_file()}
    if not logs:
        print("note: no run has a metrics.jsonl; no learning curves")
        return None
    try:
        return plot_learning_curves(logs, path, title=f"{len(logs)} run{'s' if len(logs) != 1 else ''}")
    except ValueError as exc:  # logs without loss, lr or validation numbers
        print(f"note: no learning curves ({exc})")
        return None
