"""``selfmedmae evaluate CHECKPOINT [key=value ...] [--out DIR]``: the paper's metrics of a fine-tuned run.

The data, split and settings come from the run config saved in the checkpoint, changed by ``key=value``
overrides (``eval.split=test``, ``data.root=/elsewhere``, ``eval.overlap=0.25``, ...). Results go to
``--out`` or ``<run>/eval_<split>/``: ``metrics.json`` (per case and per class, strict JSON), ``metrics.md``
(the table, also printed) and ``figures/``. What is scored, and how, is the task's
(:meth:`selfmedmae.tasks.segmentation.Segmentation.evaluate`: Dice and HD95 per case and class, overlays;
:meth:`selfmedmae.tasks.classification.Classification.evaluate`: ROC AUC per label, ROC curves, per-image
scores).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Sequence

from selfmedmae.data.facade import build
from selfmedmae.data.inputs import check_name
from selfmedmae.inference.forward import LoadedRun, check_outputs, load_run
from selfmedmae.metrics.dice import write_metrics
from selfmedmae.outputs import prepare
from selfmedmae.tasks import task_of_kind


def run(checkpoint: str | os.PathLike, overrides: Sequence[str] = (), out: Optional[str | os.PathLike] = None,
        figures: int = 3, overwrite: bool = False) -> int:
    """Evaluate a checkpoint on ``eval.split``; write metrics.json / metrics.md / figures, print the table.

    The output folder is checked first (:mod:`selfmedmae.outputs`): an earlier evaluation there is replaced
    only with ``overwrite``, and an unwritable folder is refused before any case is computed."""
    if out is not None:
        check_name(out, "--out")
    loaded = load_run(checkpoint, overrides)
    split = str(loaded.cfg.eval.split)
    out_dir = Path(out) if out is not None else loaded.run_dir / f"eval_{split}"
    data = build(loaded.cfg.data, loaded.run_dir)
    data.pin_recorded(loaded.run_dir, split)  # the run's own split (splits.json), not today's recomputation
    target = prepare(out_dir, [checkpoint], overwrite, protected=[loaded.cfg.data.root])
    target.plan([("metrics.json", "the metrics"), ("metrics.md", "the metrics table")])
    with target:  # records exactly what it writes; Ctrl-C / SIGTERM removes it again
        check_outputs(loaded, data.labels)
        task = task_of_kind(loaded.kind)(data.labels)
        metrics = {"task": task.name, **_context(loaded, split), **task.evaluate(loaded, data, split, out_dir, figures)}
        text = write_metrics(metrics, out_dir, task.rows(metrics))
    print(text, end="")
    print(f"\nwrote {out_dir / 'metrics.json'}, {out_dir / 'metrics.md'} and {out_dir / 'figures'}")
    return 0


def _context(run: LoadedRun, split: str) -> dict[str, Any]:
    """Scalars listed above the table and kept in metrics.json: what was evaluated, and how."""
    return {"checkpoint": str(run.checkpoint), "split": split, "data": f"{run.cfg.data.format} {run.cfg.data.root}",
            "device": str(run.device), "precision": run.precision}
