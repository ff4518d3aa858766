"""The two tasks, one module each: what differs between segmentation and classification lives there and
nowhere else: the model kind, the loss, the validation and the metric that keeps ``best.pt``, ``evaluate``'s
scores, the rows of the tables and reports, and what ``predict`` writes.

    task = task_named(cfg.task)(labels)              # fine-tuning
    task = task_of_kind(checkpoint_kind)(labels)      # evaluate / predict
    task_of_metrics(metrics)                          # report / compare: the task a metrics.json came from

A task's module is imported when it is asked for, so a 2D run never imports the 3D stack.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any, Mapping

from selfmedmae.errors import UserError
from selfmedmae.inference.forward import KINDS  # the task of each checkpoint kind

_MODULES = {"segmentation": "selfmedmae.tasks.segmentation", "classification": "selfmedmae.tasks.classification"}


def task_named(name: str) -> Any:
    """The task class of ``task`` (``segmentation`` | ``classification``)."""
    if name not in _MODULES:
        raise UserError(f"task: {name!r} is not one of {', '.join(_MODULES)}")
    return getattr(import_module(_MODULES[name]), "TASK")


def task_of_kind(kind: str) -> Any:
    """The task class whose model a checkpoint of ``kind`` holds (``unetr`` | ``classifier``)."""
    if kind not in KINDS:
        raise UserError(f"a {kind!r} checkpoint; evaluation and prediction need a fine-tuned model "
                        f"({' or '.join(KINDS)}), e.g. <run>/checkpoints/best.pt of `selfmedmae finetune`")
    return task_named(KINDS[kind])


def task_of_metrics(metrics: Mapping[str, Any]) -> Any:
    """The task class of an ``evaluate`` metrics dict (its ``task`` entry); None for another kind of dict."""
    name = metrics.get("task")
    return task_named(name) if name in _MODULES else None
