"""``selfmedmae tune CONFIG [key=value ...] --grid train.lr=5e-4,1e-3 --grid train.layer_decay=0.75,1.0
[--init mae=mae:PATH --init scratch=scratch] [--seeds N] [--out DIR]``: a fine-tuning recipe search.

Every init gets the same grid: each combination of the ``--grid`` values is fine-tuned from each init for
each seed, and judged by the best validation score of its run (``val_dice`` / ``val_dice_subset`` /
``val_auc``: what picks ``best.pt``). The test split is never read. The winner of each init is the
combination with the highest mean over seeds; ``tune.md`` / ``tune.json`` / ``tune.csv`` in ``--out`` hold
the grid, every run's score and the winners, as ``key=value`` overrides ready to use. So a comparison of
inits gives each its own best recipe from one grid, chosen on validation data only.

Re-running skips finished runs and resumes interrupted ones (:mod:`selfmedmae.experiments.stages`). The runs
live in ``<out>/runs/<init>/<combination>/seed<k>/``.
"""
from __future__ import annotations

import csv
import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from selfmedmae.config import load_config
from selfmedmae.errors import UserError
from selfmedmae.outputs.atomic import replacing, write_text
from selfmedmae.experiments.compare import mean_std, pm
from selfmedmae.experiments.stages import train

OWNED = ("init", "run.dir", "run.seed", "run.resume", "stage")  # keys the search sets itself


@dataclass
class Trial:
    init: str  # the init's name (a column of the table)
    sets: tuple[str, ...]  # the grid's key=value of this combination
    seed: int
    run_dir: Path
    score: float = float("nan")  # best validation score of the run
    metric: str = ""


@dataclass
class Grid:
    axes: list[tuple[str, list[str]]] = field(default_factory=list)  # (key, values as written)

    def combinations(self) -> list[tuple[str, ...]]:
        return [tuple(f"{k}={v}" for (k, _), v in zip(self.axes, values))
                for values in itertools.product(*(vals for _, vals in self.axes))]


def parse_grid(items: Sequence[str]) -> Grid:
    """``KEY=V1,V2,...`` items (one per ``--grid``) -> the grid; a key given twice or without values is refused."""
    grid = Grid()
    for item in items:
        key, sep, values = item.partition("=")
        vals = [v.strip() for v in _split_values(values)]
        if not sep or not key or not vals or any(not v for v in vals):
            raise UserError(f"--grid {item!r}: expected KEY=V1,V2,... (e.g. train.lr=5e-4,1e-3)")
        if key in OWNED:
            raise UserError(f"--grid {key}: set by the search itself (use --init for inits)")
        if key in (k for k, _ in grid.axes):
            raise UserError(f"--grid {key}: given twice")
        grid.axes.append((key, vals))
    if not grid.axes:
        raise UserError("--grid: give at least one KEY=V1,V2,...")
    return grid


def _split_values(text: str) -> list[str]:
    """Split on commas outside brackets, so list values (data.roi_size=[32,32,32],[40,56,40]) stay whole."""
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    return out + [cur] if cur or out else []


def parse_inits(items: Sequence[str], config_init: str) -> dict[str, str]:
    """``NAME=INIT`` items -> {name: init}; none given: the config's own init (as ``mae`` when it is one) and
    ``scratch``."""
    if not items:
        first = "mae" if str(config_init).startswith("mae:") else "config"
        return {first: str(config_init), "scratch": "scratch"} if config_init != "scratch" else {"scratch": "scratch"}
    inits = {}
    for item in items:
        name, sep, init = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z0-9_-]+", name) or not init:
            raise UserError(f"--init {item!r}: expected NAME=INIT (e.g. mae=mae:runs/x/checkpoints/last.pt)")
        inits[name] = init
    return inits


def slug(sets: Sequence[str]) -> str:
    """A folder name for one combination: train.lr=5e-4 train.layer_decay=1.0 -> lr5e-4_layer_decay1.0."""
    parts = [s.split("=", 1)[0].rsplit(".", 1)[-1] + s.split("=", 1)[1] for s in sets]
    return re.sub(r"[^A-Za-z0-9_.+-]", "", "_".join(parts))[:120]


def best_score(run_dir: Path) -> tuple[str, float]:
    """(metric, best value) of the validations in ``<run_dir>/metrics.jsonl``: the score best.pt was kept for."""
    path = run_dir / "metrics.jsonl"
    best, name = float("nan"), ""
    for line in path.read_text().splitlines() if path.is_file() else []:
        row = json.loads(line)
        if row.get("kind") != "val":
            continue
        name = next((k for k in ("val_dice_subset", "val_dice", "val_auc") if k in row), name)
        value = row.get(name)
        if isinstance(value, (int, float)) and not (value <= best):
            best = float(value)
    return name, best


def run(config: str, overrides: Sequence[str] = (), *, grid: Sequence[str], inits: Sequence[str] = (),
        seeds: int = 1, out: Optional[str] = None) -> int:
    """Fine-tune every combination of ``grid`` from every init and seed; write the table and the winners."""
    if seeds < 1:
        raise UserError(f"--seeds {seeds}: at least 1")
    base = load_config(config, list(overrides))
    g, named = parse_grid(grid), parse_inits(inits, str(base.init))
    out_dir = Path(out) if out else Path(base.run.dir).parent / "tune"
    trials = [Trial(name, sets, seed, out_dir / "runs" / name / slug(sets) / f"seed{seed}")
              for name in named for sets in g.combinations() for seed in range(seeds)]
    for t in trials:  # every combination's config is checked before the first run starts
        load_config(config, _sets(overrides, t, named))
    for i, t in enumerate(trials):
        title = f"tune {i + 1}/{len(trials)}: {t.init}, {' '.join(t.sets)}, seed {t.seed}"
        sets = _sets(overrides, t, named)
        train("finetune", config, sets, t.run_dir, int(load_config(config, sets).train.epochs), title)
        t.metric, t.score = best_score(t.run_dir)
    paths = write_outputs(trials, g, named, out_dir, _command(config, overrides, grid, named, seeds, out_dir))
    print(f"\nwrote {', '.join(str(p) for p in paths)}")
    return 0


def strict_json(obj):
    """``obj`` with every NaN or infinite float replaced by None, recursively (what strict JSON can hold)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    return obj


def _sets(overrides: Sequence[str], t: Trial, named: dict[str, str]) -> list[str]:
    return [*overrides, *t.sets, f"init={named[t.init]}", f"run.seed={t.seed}"]


def _command(config, overrides, grid, named, seeds, out_dir) -> str:
    parts = ["selfmedmae tune", str(config), *overrides, *(f"--grid {g}" for g in grid),
             *(f"--init {k}={v}" for k, v in named.items()), f"--seeds {seeds}", f"--out {out_dir}"]
    return " ".join(parts)


def summarize(trials: Sequence[Trial], grid: Grid, named: dict[str, str]) -> tuple[list[dict], dict]:
    """One row per combination (mean ± std over seeds per init) and the winner of each init."""
    rows, winners = [], {}
    for sets in grid.combinations():
        row: dict = {"sets": list(sets)}
        for name in named:
            scores = [t.score for t in trials if t.init == name and t.sets == sets]
            row[name] = dict(zip(("mean", "std", "n"), mean_std(scores)), scores=scores)
        rows.append(row)
    for name in named:
        ranked = [r for r in rows if r[name]["n"]]
        if ranked:
            top = max(ranked, key=lambda r: r[name]["mean"])
            winners[name] = {"sets": top["sets"], "init": named[name], **{k: top[name][k] for k in ("mean", "std", "n")}}
    return rows, winners


def write_outputs(trials: Sequence[Trial], grid: Grid, named: dict[str, str], out_dir: Path,
                  command: str = "") -> list[Path]:
    rows, winners = summarize(trials, grid, named)
    metric = next((t.metric for t in trials if t.metric), "validation score")
    out_dir.mkdir(parents=True, exist_ok=True)
    names = list(named)
    md = [f"# Fine-tuning recipe search: best {metric} on the validation split", "",
          f"Command: `{command}`" if command else "", "",
          "Each cell: mean ± sample std over seeds of the run's best validation score (the one its best.pt "
          "was kept for). The test split was not used.", "",
          "| " + " | ".join([k for k, _ in grid.axes] + names) + " |", "|" + "---|" * (len(grid.axes) + len(names))]
    for r in rows:
        values = [s.split("=", 1)[1] for s in r["sets"]]
        cells = [pm(r[n]["mean"], r[n]["std"], 4) + (" **(best)**" if winners.get(n, {}).get("sets") == r["sets"]
                                                     else "") for n in names]
        md.append("| " + " | ".join(values + cells) + " |")
    md += ["", "Winners (add these overrides to the fine-tuning config of each init):", ""]
    md += [f"- {n} (`init={w['init']}`): `{' '.join(w['sets'])}`: {pm(w['mean'], w['std'], 4)}"
           for n, w in winners.items()]
    paths = [out_dir / "tune.md", out_dir / "tune.json", out_dir / "tune.csv"]
    write_text(paths[0], "\n".join(md) + "\n")  # each through a temporary file: one line on a full disk
    record = {"command": command, "metric": metric, "grid": {k: v for k, v in grid.axes}, "inits": named,
              "rows": rows, "winners": winners,
              "runs": [{"init": t.init, "sets": list(t.sets), "seed": t.seed, "run_dir": str(t.run_dir),
                        "score": t.score} for t in trials]}
    write_text(paths[1], json.dumps(strict_json(record), indent=1, allow_nan=False, default=str) + "\n")
    with replacing(paths[2]) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["init", *[k for k, _ in grid.axes], "seed", metric, "run_dir"])
        for t in trials:
            w.writerow([t.init, *[s.split("=", 1)[1] for s in t.sets], t.seed, t.score, t.run_dir])
    return paths
