"""Evaluation: one inference path, one set of metrics, for validation during training and for the
``evaluate``, ``predict`` and ``report`` commands.

- :mod:`~selfmedmae.inference.forward`: a fine-tuned run rebuilt from its checkpoint, the sliding window and
  the classifier's forward pass;
- :mod:`~selfmedmae.metrics.dice` (Dice, HD95), :mod:`~selfmedmae.metrics.auc` (ROC AUC),
  :mod:`~selfmedmae.metrics.table` (the markdown tables);
- :mod:`~selfmedmae.tasks.validation`: the validation of a fine-tuning run, through the same inference and
  metrics as :mod:`~selfmedmae.eval.evaluate`;
- :mod:`~selfmedmae.eval.predict` (with :mod:`~selfmedmae.eval.inputs`), :mod:`~selfmedmae.eval.report`,
  and the figures (:mod:`~selfmedmae.figures.curves`, :mod:`~selfmedmae.figures.overlay`,
  :mod:`~selfmedmae.figures.plotting`).
"""
