"""``selfmedmae predict CHECKPOINT INPUT... --out DIR [--probabilities] [--figures] [--format nifti|dicom-seg]``:
a fine-tuned model on new data.

The inputs are files, folders or (volumes) an MSD ``dataset.json``, with the suffixes the run's data take
(:mod:`selfmedmae.data.inputs`), every one checked before any inference. What is written is the task's:
label maps (and probabilities) in each input's own geometry for segmentation
(:mod:`selfmedmae.tasks.volume_output`), ``predictions.csv`` of label probabilities for classification
(:mod:`selfmedmae.tasks.classification`).

``key=value`` items among the inputs override the run config (e.g. ``run.device=cpu``, ``eval.overlap=0.25``).
"""
from __future__ import annotations

import os
from typing import Sequence

from selfmedmae.config.overrides import separate
from selfmedmae.data.inputs import check_name, collect
from selfmedmae.data.suffixes import is_series
from selfmedmae.errors import UserError
from selfmedmae.inference.forward import load_run
from selfmedmae.outputs import prepare
from selfmedmae.tasks import task_of_kind


def run(checkpoint: str | os.PathLike, inputs: Sequence[str], out: str | os.PathLike, probs: bool = False,
        figures: bool = False, overrides: Sequence[str] = (), overwrite: bool = False,
        output_format: str = "nifti") -> int:
    """Predict every input; returns 0. Bad inputs and a bad ``out`` raise UserError before any inference.
    ``output_format``: ``nifti`` or ``dicom-seg`` (label maps of DICOM series inputs as DICOM SEG files)."""
    check_name(out, "--out")
    inputs, more = separate(inputs)
    loaded = load_run(checkpoint, list(overrides) + more)
    task = task_of_kind(loaded.kind)(loaded.labels)
    for flag, given in (("--probabilities", probs), ("--figures", figures)):
        if given and flag in task.predict_refuses:
            raise UserError(f"{flag}: {task.predict_refuses[flag]}")
    files = collect(inputs, volumes=task.volumes)
    if output_format == "dicom-seg":
        not_dicom = [f for f in files if not (task.volumes and is_series(f))]
        if not_dicom:
            raise UserError(f"{not_dicom[0]}: --format dicom-seg needs DICOM series inputs (a folder holding one "
                            f"series) and a segmentation model; use --format nifti for it")
    # never where an input lives (outputs take the input names), never over earlier results unasked
    target = prepare(out, [*inputs, *files, checkpoint], overwrite)
    target.plan(task.predict_outputs(files, probs, figures, output_format), files)  # two outputs of one name: refused now
    with target:  # records exactly what it writes; Ctrl-C / SIGTERM removes it again
        task.predict(loaded, files, target.path, probs, figures, output_format)
    return 0
