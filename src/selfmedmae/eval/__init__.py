"""The commands on fine-tuned runs: ``evaluate`` (:mod:`~selfmedmae.eval.evaluate`), ``predict``
(:mod:`~selfmedmae.eval.predict`) and ``report`` (:mod:`~selfmedmae.eval.report`). What each computes for a
task is the task's (:mod:`selfmedmae.tasks`); the inference path and the metrics are shared with validation
during training (:mod:`selfmedmae.inference`, :mod:`selfmedmae.metrics`).
"""
