"""``selfmedmae curve CONFIG [key=value ...] --fractions 0.1,0.25,0.5,1.0 --seeds 3 [--pretrain CONFIG]``:
the label-efficiency experiment, where a user decides whether self pre-training is worth it for their data.

1. MAE pre-training once, on every training image (labels are not needed; :mod:`selfmedmae.data.selection`),
   with the ``--pretrain`` config (skipped when its run is finished). Without ``--pretrain``, CONFIG's
   ``init: mae:PATH`` must name an existing checkpoint.
2. For each fraction and seed: fine-tuning from the MAE and from scratch with CONFIG (``key=value``
   overrides apply), identical in every setting and budget but ``init``, on a seeded subset of the
   labelled training cases (``data.label_fraction``, ``data.label_seed`` = the seed, nested across
   fractions; ``run.seed`` = the seed); val and test stay the same. ``--budget epochs`` (default) gives
   every fraction CONFIG's ``train.epochs``, so fewer labels also mean fewer steps; ``--budget steps``
   scales ``train.epochs`` (and ``warmup_epochs``, ``eval_every``) by (all cases / kept cases), so every
   fraction gets about as many optimiser steps as the full one.
3. Each run evaluated on the test split (``selfmedmae evaluate``).
4. ``curve.md`` / ``curve.csv`` / ``curve.json`` (mean ± sample std per fraction and init, n labelled
   cases) and ``curve.png`` (mean Dice or mean AUC against the fraction, MAE vs scratch, std error bars)
   in ``--out`` (default: ``curve/`` beside CONFIG's run folder).

Re-running skips finished runs and resumes interrupted ones (:mod:`selfmedmae.experiments.stages`). The runs live in
``<out>/runs/f<fraction>_s<seed>_<init>/``.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from selfmedmae.config import load_config
from selfmedmae.models.initialise import parse_init
from selfmedmae.data.facade import build
from selfmedmae.outputs.atomic import replacing, write_text
from selfmedmae.data.selection import label_count
from selfmedmae.errors import UserError
from selfmedmae.experiments.compare import compare, headline, mean_std, n_evaluated, pm, verdict
from selfmedmae.experiments.curve_plot import plot_curve
from selfmedmae.experiments.stages import evaluate, train
from selfmedmae.tasks import task_of_metrics

INITS = ("mae", "scratch")
BUDGETS = ("epochs", "steps")


@dataclass
class Point:
    fraction: float
    seed: int
    init: str
    run_dir: Path
    n_labelled: int = 0
    epochs: int = 0
    metrics: dict = field(default_factory=dict)


def parse_fractions(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--fractions: {text!r} is not a comma-separated list of numbers") from None
    bad = [v for v in values if not (math.isfinite(v) and 0.0 < v <= 1.0)]
    if not values or bad:
        raise UserError(f"--fractions: each fraction must be in (0, 1], got {text!r}")
    return sorted(set(values))


def run_name(fraction: float, seed: int, init: str) -> str:
    return f"f{fraction:g}_s{seed}_{init}"


def _prepare(config: str, overrides: Sequence[str], pretrain: Optional[str], pretrain_overrides: Sequence[str]):
    """Both configs loaded and checked before anything long starts; (fine cfg, pre cfg or None, mae init)."""
    fine = load_config(config, overrides)
    if fine.stage != "finetune":
        raise UserError(f"{config}: stage is {fine.stage!r}; curve needs a fine-tuning config (and --pretrain "
                        "for the pre-training one)")
    pre = None
    if pretrain is not None:
        pre = load_config(pretrain, pretrain_overrides)
        if pre.stage != "pretrain":
            raise UserError(f"{pretrain}: stage is {pre.stage!r}; --pretrain needs a pre-training config")
        init = f"mae:{Path(pre.run.dir) / 'checkpoints' / 'last.pt'}"
    else:
        kind, path = parse_init(str(fine.init))
        if kind != "mae" or not Path(path).is_file():
            raise UserError(f"{config}: init is {fine.init!r}; curve needs `init: mae:PATH` of a finished "
                            "pre-training, or --pretrain CONFIG to run it")
        init = str(fine.init)
    build(fine.data).check_or_raise("finetune")
    if pre is not None:
        build(pre.data).check_or_raise("pretrain")
    return fine, pre, init


def _n_labelled(run_dir: Path) -> int:
    return len(json.loads((run_dir / "splits.json").read_text())["train"])


def _train_pool(fine) -> int:
    """Labelled training cases (or images) before any fraction is taken."""
    return len(build(fine.data).items("train_pool"))


def budget_overrides(fine, fraction: float, budget: str, pool: int) -> list[str]:
    """``train.*`` overrides of one fraction: none for ``epochs``; for ``steps`` the epochs (and warm-up and
    validation interval) scaled by pool / kept, so the optimiser steps stay about those of the full set."""
    if budget == "epochs":
        return []

    ratio = pool / max(1, label_count(pool, fraction, fine.data.max_labelled))
    if ratio == 1:
        return []
    t = fine.train
    return [f"train.epochs={max(1, round(t.epochs * ratio))}", f"train.warmup_epochs={round(t.warmup_epochs * ratio)}",
            f"train.eval_every={max(1, round(t.eval_every * ratio))}"]


def run(config: str, overrides: Sequence[str] = (), *, fractions: Sequence[float], seeds: int,
        pretrain: Optional[str] = None, pretrain_overrides: Sequence[str] = (), out: Optional[str] = None,
        budget: str = "epochs", scratch_config: Optional[str] = None) -> int:
    """``scratch_config``: the fine-tuning config of the scratch runs (its own recipe, e.g. chosen by
    ``selfmedmae tune``); without it scratch runs CONFIG with ``init=scratch``."""
    if seeds < 1:
        raise UserError(f"--seeds: {seeds} must be at least 1")
    if budget not in BUDGETS:
        raise UserError(f"--budget: {budget!r} is not one of {', '.join(BUDGETS)}")
    fine, pre, init = _prepare(config, overrides, pretrain, pretrain_overrides)
    pool = _train_pool(fine)
    out_dir = Path(out) if out is not None else Path(fine.run.dir).parent / "curve"
    if pre is not None:
        train("pretrain", pretrain, list(pretrain_overrides), pre.run.dir, int(pre.train.epochs),
              "curve: MAE pre-training on every training image")
    points = [Point(f, s, i, out_dir / "runs" / run_name(f, s, i)) for f in fractions for s in range(seeds)
              for i in INITS]
    for k, p in enumerate(points, 1):
        head = f"[curve {k}/{len(points)}] fraction {p.fraction:g} seed {p.seed} {p.init}"
        scaled = budget_overrides(fine, p.fraction, budget, pool)
        sets = [*overrides, f"init={init if p.init == 'mae' else 'scratch'}", f"data.label_fraction={p.fraction}",
                f"data.label_seed={p.seed}", f"run.seed={p.seed}", *scaled]
        p.epochs = int(scaled[0].split("=")[1]) if scaled else int(fine.train.epochs)
        own = scratch_config if p.init == "scratch" and scratch_config else config
        train("finetune", own, sets, p.run_dir, p.epochs, f"{head}: fine-tuning")
        p.metrics = evaluate(p.run_dir, "test", f"{head}: evaluation on the test split")
        p.n_labelled = _n_labelled(p.run_dir)
        name, value = headline(p.metrics)
        print(f"{head}: {p.n_labelled} labelled cases, test {name} {value:.4f}", flush=True)
    files = write_outputs(points, out_dir, command=_command(config, overrides, fractions, seeds, pretrain,
                                                            pretrain_overrides, out, budget, scratch_config))
    print(Path(files[0]).read_text())
    print("wrote " + ", ".join(str(f) for f in files))
    return 0


def _command(config, overrides, fractions, seeds, pretrain, pretrain_overrides, out, budget,
             scratch_config=None) -> str:
    parts = ["selfmedmae curve", str(config), *overrides, "--fractions", ",".join(f"{f:g}" for f in fractions),
             "--seeds", str(seeds), "--budget", budget]
    if scratch_config:
        parts += ["--scratch-config", str(scratch_config)]
    if pretrain:
        parts += ["--pretrain", str(pretrain)] + [f"--pretrain-set {o}" for o in pretrain_overrides]
    return " ".join(parts + (["--out", str(out)] if out else []))


def summarize(points: Sequence[Point]) -> list[dict]:
    """One row per fraction and init: n labelled, mean, std and the per-seed values of the headline."""
    rows = []
    for f in sorted({p.fraction for p in points}):
        for init in INITS:
            group = sorted((p for p in points if p.fraction == f and p.init == init), key=lambda p: p.seed)
            if not group:
                continue
            values = [headline(p.metrics)[1] for p in group]
            mean, std, n = mean_std(values)
            rows.append({"fraction": f, "init": init, "n_labelled": sorted({p.n_labelled for p in group}),
                         "epochs": sorted({p.epochs for p in group}),
                         "mean": mean, "std": std, "n_seeds": n, "values": values,
                         "seeds": [p.seed for p in group]})
    return rows


def _signed(mean: float, std: float) -> str:
    if not math.isfinite(mean):
        return "n/a"
    return f"{mean:+.3f}" + (f" ± {std:.3f}" if math.isfinite(std) else "")


def write_outputs(points: Sequence[Point], out_dir: Path, command: str = "") -> list[Path]:
    """curve.md, curve.csv (one line per run), curve.json and curve.png in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    metric = headline(points[0].metrics)[0]
    n_test = n_evaluated(points[0].metrics)
    task = task_of_metrics(points[0].metrics)
    unit = task.unit if task is not None else "cases"
    rows = summarize(points)
    md = [f"# Label efficiency: test {metric} against the labelled fraction", "",
          f"Mean ± sample std over seeds; {n_test} test {unit}; MAE and "
          "scratch share every fine-tuning setting and budget, only `init` differs.", "",
          f"| fraction | labelled {unit} | epochs | MAE | scratch | "
          "MAE − scratch | seeds |", "|---|---|---|---|---|---|---|"]
    for f in sorted({r["fraction"] for r in rows}):
        by = {r["init"]: r for r in rows if r["fraction"] == f}
        m, s = by.get("mae"), by.get("scratch")
        gap = mean_std([a - b for a, b in zip(m["values"], s["values"])]) if m and s else (math.nan,) * 3
        n_lab = "/".join(str(n) for n in (m or s)["n_labelled"])
        epochs = "/".join(str(n) for n in (m or s)["epochs"])
        md.append(f"| {f:g} | {n_lab} | {epochs} | {pm(m['mean'], m['std']) if m else 'n/a'} | "
                  f"{pm(s['mean'], s['std']) if s else 'n/a'} | {_signed(gap[0], gap[1])} | "
                  f"{(m or s)['n_seeds']} |")
    md += ["", "Per fraction (seeds paired, only `init` differs):", ""]
    for f in sorted({p.fraction for p in points}):
        runs = {i: [p.metrics for p in sorted(points, key=lambda p: p.seed) if p.fraction == f and p.init == i]
                for i in INITS}
        if runs["mae"] and len(runs["mae"]) == len(runs["scratch"]):
            md.append(f"- fraction {f:g}: {verdict(compare(runs['mae'], runs['scratch']))}")
    if command:
        md += ["", f"Command: `{command}`"]
    paths = [out_dir / "curve.md", out_dir / "curve.csv", out_dir / "curve.json", out_dir / "curve.png"]
    write_text(paths[0], "\n".join(md) + "\n")  # each through a temporary file: one line on a full disk
    with replacing(paths[1]) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["fraction", "n_labelled", "epochs", "seed", "init", "metric", "value", "run_dir"])
        for p in sorted(points, key=lambda p: (p.fraction, p.init, p.seed)):
            w.writerow([f"{p.fraction:g}", p.n_labelled, p.epochs, p.seed, p.init, metric,
                        f"{headline(p.metrics)[1]:.6f}", str(p.run_dir)])
    write_text(paths[2], json.dumps({"metric": metric, "n_test": n_test, "command": command,
                                    "summary": [{**r, "std": r["std"] if math.isfinite(r["std"]) else None}
                                                for r in rows]}, indent=1) + "\n")
    plot_curve(rows, metric, n_test, paths[3], unit=unit, chance=task.chance if task is not None else None)
    return paths
