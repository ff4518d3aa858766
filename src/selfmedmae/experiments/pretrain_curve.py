"""``selfmedmae pretrain-curve CONFIG [key=value ...] --pretrain CONFIG --epochs 100,300,900 [--seeds N]``:
how long to pre-train. Fine-tuned validation score against the length of the MAE pre-training.

1. For each length E of ``--epochs``: the ``--pretrain`` config run with ``train.epochs=E`` and nothing else
   changed (its warm-up too, but cut to E - 1 epochs where it would be longer), in ``<out>/pretrain/e<E>/``; the length the config itself names runs in the config's own
   ``run.dir``, so the demo's pre-training is reused when it is finished.
2. CONFIG fine-tuned from each (``init=mae:<that run>/checkpoints/last.pt``) for each seed, and from scratch
   (``--scratch-config``, default CONFIG with ``init=scratch``) as the 0-epoch reference, in
   ``<out>/runs/``: every fine-tuning has the same config, budget and seeds; only the start differs.
3. Each fine-tuning judged by its best validation score (what picks ``best.pt``, as ``selfmedmae tune``):
   the test split is never read, so the length can be chosen with this curve and reported on test once.
4. ``pretrain_curve.md`` / ``.csv`` / ``.json`` / ``.png`` in ``--out`` (default: ``pretrain_curve/``
   beside CONFIG's run folder): mean ± sample std over seeds per length, each pre-training's final loss and
   wall time, the scratch reference as a line.

Re-running skips finished runs and resumes interrupted ones (:mod:`selfmedmae.experiments.stages`).
"""
from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from selfmedmae.config import load_config
from selfmedmae.data.facade import build
from selfmedmae.errors import UserError
from selfmedmae.experiments.compare import mean_std, pm
from selfmedmae.experiments.stages import train
from selfmedmae.experiments.tune import best_score, strict_json
from selfmedmae.outputs.atomic import replacing, write_text

OWNED = {"override": ("init", "run.dir", "run.seed", "run.resume", "stage"),  # keys the curve sets itself
         "--pretrain-set": ("train.epochs", "run.resume", "stage")}


@dataclass
class Length:
    epochs: int
    run_dir: Path
    sets: list[str] = field(default_factory=list)  # overrides of the pre-training config
    final_loss: float = math.nan
    wall_s: Optional[float] = None  # None: reused, not run now


@dataclass
class Tuning:
    epochs: int  # 0: from scratch
    seed: int
    run_dir: Path
    metric: str = ""
    score: float = math.nan


def parse_epochs(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--epochs: {text!r} is not a comma-separated list of whole numbers") from None
    if not values or any(v < 1 for v in values):
        raise UserError(f"--epochs: each length must be a whole number of epochs >= 1, got {text!r}")
    return sorted(set(values))


def length_overrides(pre, epochs: int) -> list[str]:
    """``train.*`` overrides of the pre-training config for one length: none for the config's own."""
    t = pre.train
    if epochs == int(t.epochs):
        return []
    sets = [f"train.epochs={epochs}"]
    if t.warmup_epochs >= epochs:
        sets.append(f"train.warmup_epochs={epochs - 1}")
    return sets


def final_loss(run_dir: Path) -> float:
    """The mean training loss of the last finished epoch in ``<run_dir>/metrics.jsonl``."""
    path, loss = run_dir / "metrics.jsonl", math.nan
    for line in path.read_text().splitlines() if path.is_file() else []:
        row = json.loads(line)
        if row.get("kind") == "epoch" and isinstance(row.get("loss"), (int, float)):
            loss = float(row["loss"])
    return loss


def _check_overrides(overrides: Sequence[str], what: str) -> None:
    for o in overrides:
        if o.partition("=")[0] in OWNED[what]:
            raise UserError(f"{what} {o}: set by the curve itself")


def run(config: str, overrides: Sequence[str] = (), *, pretrain: str, epochs: Sequence[int], seeds: int = 1,
        pretrain_overrides: Sequence[str] = (), scratch_config: Optional[str] = None,
        out: Optional[str] = None) -> int:
    if seeds < 1:
        raise UserError(f"--seeds: {seeds} must be at least 1")
    _check_overrides(overrides, "override")
    _check_overrides(pretrain_overrides, "--pretrain-set")
    fine = load_config(config, list(overrides))
    if fine.stage != "finetune":
        raise UserError(f"{config}: stage is {fine.stage!r}; pretrain-curve needs a fine-tuning config")
    pre = load_config(pretrain, list(pretrain_overrides))
    if pre.stage != "pretrain":
        raise UserError(f"{pretrain}: stage is {pre.stage!r}; --pretrain needs a pre-training config")
    out_dir = Path(out) if out else Path(fine.run.dir).parent / "pretrain_curve"
    lengths = []
    for e in epochs:
        sets = length_overrides(pre, e)
        run_dir = Path(pre.run.dir) if not sets else out_dir / "pretrain" / f"e{e}"
        load_config(pretrain, [*pretrain_overrides, *sets])  # every length's config checked up front
        lengths.append(Length(e, run_dir, sets))
    scratch = scratch_config or config
    scratch_sets = [*overrides] + ([] if scratch_config else ["init=scratch"])
    load_config(scratch, scratch_sets)
    build(fine.data).check_or_raise("finetune")
    build(pre.data).check_or_raise("pretrain")

    tunings = [Tuning(0, s, out_dir / "runs" / f"scratch_s{s}") for s in range(seeds)]
    tunings += [Tuning(L.epochs, s, out_dir / "runs" / f"e{L.epochs}_s{s}") for L in lengths for s in range(seeds)]
    total = len(lengths) + len(tunings)
    earlier = _earlier_walls(out_dir / "pretrain_curve.json")
    k = 0
    for L in lengths:
        k += 1
        t0 = time.perf_counter()
        ran = train("pretrain", pretrain, [*pretrain_overrides, *L.sets], L.run_dir, L.epochs,
                    f"[pretrain-curve {k}/{total}] MAE pre-training, {L.epochs} epochs")
        L.wall_s = earlier.get(str(L.run_dir)) if ran is None else time.perf_counter() - t0
        L.final_loss = final_loss(L.run_dir)
    by_epochs = {L.epochs: L for L in lengths}
    for t in tunings:
        k += 1
        if t.epochs == 0:
            own, sets, what = scratch, [*scratch_sets, f"run.seed={t.seed}"], "from scratch"
        else:
            init = f"mae:{by_epochs[t.epochs].run_dir / 'checkpoints' / 'last.pt'}"
            own, sets, what = config, [*overrides, f"init={init}", f"run.seed={t.seed}"], f"from {t.epochs} epochs"
        n = int(load_config(own, sets).train.epochs)
        train("finetune", own, sets, t.run_dir, n, f"[pretrain-curve {k}/{total}] fine-tuning {what}, seed {t.seed}")
        t.metric, t.score = best_score(t.run_dir)
        print(f"[pretrain-curve {k}/{total}] {what}, seed {t.seed}: best validation {t.metric} {t.score:.4f}",
              flush=True)
    command = _command(config, overrides, pretrain, pretrain_overrides, epochs, seeds, scratch_config, out)
    paths = write_outputs(lengths, tunings, out_dir, command)
    print(Path(paths[0]).read_text())
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _earlier_walls(path: Path) -> dict[str, float]:
    """{pre-training run folder: wall seconds} of an earlier write of this curve, so a re-run keeps them."""
    try:
        record = json.loads(path.read_text())
        return {p["run_dir"]: float(p["wall_s"]) for p in record.get("pretrain", []) if p.get("wall_s") is not None}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}


def _command(config, overrides, pretrain, pretrain_overrides, epochs, seeds, scratch_config, out) -> str:
    parts = ["selfmedmae pretrain-curve", str(config), *overrides, "--pretrain", str(pretrain),
             *(f"--pretrain-set {o}" for o in pretrain_overrides), "--epochs", ",".join(map(str, epochs)),
             "--seeds", str(seeds)]
    if scratch_config:
        parts += ["--scratch-config", str(scratch_config)]
    return " ".join(parts + (["--out", str(out)] if out else []))


def summarize(tunings: Sequence[Tuning]) -> list[dict]:
    """One row per pre-training length (0 = scratch): mean, std, n and the per-seed scores."""
    rows = []
    for e in sorted({t.epochs for t in tunings}):
        group = sorted((t for t in tunings if t.epochs == e), key=lambda t: t.seed)
        scores = [t.score for t in group]
        mean, std, n = mean_std(scores)
        rows.append({"epochs": e, "mean": mean, "std": std, "n_seeds": n, "scores": scores,
                     "seeds": [t.seed for t in group]})
    return rows


def write_outputs(lengths: Sequence[Length], tunings: Sequence[Tuning], out_dir: Path, command: str = "") -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    metric = next((t.metric for t in tunings if t.metric), "validation score")
    rows = summarize(tunings)
    by_len = {L.epochs: L for L in lengths}
    ref = next((r for r in rows if r["epochs"] == 0), None)
    md = [f"# Pre-training length: best validation {metric} of the fine-tuning against MAE pre-training epochs", "",
          "Each fine-tuning has the same config, budget and seeds; only its start differs (0 epochs: from "
          "scratch, with its own config). Mean ± sample std over seeds of each run's best validation score "
          "(the one its best.pt was kept for); the test split was not used.", "",
          "| pre-training epochs | final pre-training loss | pre-training wall time | fine-tuned validation "
          f"{metric} | minus scratch | seeds |", "|---|---|---|---|---|---|"]
    for r in rows:
        L = by_len.get(r["epochs"])
        loss = f"{L.final_loss:.4f}" if L and math.isfinite(L.final_loss) else ""
        wall = "" if L is None else ("reused (not timed here)" if L.wall_s is None else f"{L.wall_s / 60:.1f} min")
        gap = ""
        if ref is not None and r is not ref and len(r["scores"]) == len(ref["scores"]):
            d = mean_std([a - b for a, b in zip(r["scores"], ref["scores"])])
            gap = f"{d[0]:+.4f}" + (f" ± {d[1]:.4f}" if math.isfinite(d[1]) else "")
        name = "0 (scratch)" if r["epochs"] == 0 else str(r["epochs"])
        md.append(f"| {name} | {loss} | {wall} | {pm(r['mean'], r['std'], 4)} | {gap} | {r['n_seeds']} |")
    if command:
        md += ["", f"Command: `{command}`"]
    paths = [out_dir / "pretrain_curve.md", out_dir / "pretrain_curve.csv", out_dir / "pretrain_curve.json",
             out_dir / "pretrain_curve.png"]
    write_text(paths[0], "\n".join(md) + "\n")
    with replacing(paths[1]) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["pretrain_epochs", "seed", "metric", "value", "run_dir", "pretrain_dir"])
        for t in tunings:
            w.writerow([t.epochs, t.seed, t.metric, f"{t.score:.6f}", t.run_dir,
                        by_len[t.epochs].run_dir if t.epochs in by_len else ""])
    record = {"command": command, "metric": metric,
              "rows": rows,
              "pretrain": [{"epochs": L.epochs, "run_dir": str(L.run_dir), "overrides": L.sets,
                            "final_loss": L.final_loss, "wall_s": L.wall_s} for L in lengths]}
    write_text(paths[2], json.dumps(strict_json(record), indent=1, allow_nan=False) + "\n")
    plot(rows, metric, paths[3])
    return paths


def plot(rows: Sequence[dict], metric: str, path: Path) -> Path:
    """Validation score against pre-training epochs (log x), std error bars; scratch as a line with its band."""
    from matplotlib.figure import Figure

    from selfmedmae.figures.plotting import save

    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.add_subplot()
    mae = [r for r in rows if r["epochs"] > 0]
    ref = next((r for r in rows if r["epochs"] == 0), None)
    if mae:
        ax.errorbar([r["epochs"] for r in mae], [r["mean"] for r in mae],
                    yerr=[r["std"] if math.isfinite(r["std"]) else 0.0 for r in mae], capsize=4, marker="o",
                    color="tab:blue", label=f"MAE pre-trained ({max(r['n_seeds'] for r in mae)} seed(s))")
        ax.set_xscale("log")
        ax.set_xticks([r["epochs"] for r in mae])
        ax.set_xticklabels([str(r["epochs"]) for r in mae])
        ax.minorticks_off()
    if ref is not None and math.isfinite(ref["mean"]):
        ax.axhline(ref["mean"], color="tab:grey", linestyle="--", label=f"from scratch ({ref['n_seeds']} seed(s))")
        if math.isfinite(ref["std"]):
            ax.axhspan(ref["mean"] - ref["std"], ref["mean"] + ref["std"], color="tab:grey", alpha=0.15)
    ax.set_xlabel("MAE pre-training epochs")
    ax.set_ylabel(f"best validation {metric} after fine-tuning")
    ax.set_title("Fine-tuned validation score against pre-training length", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best")
    fig.tight_layout()
    return save(fig, path)
