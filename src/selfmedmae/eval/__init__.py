"""Evaluation: one inference path, one set of metrics, for validation during training and for the
``evaluate``, ``predict`` and ``report`` commands.

- :mod:`~selfmedmae.eval.inference`: a fine-tuned run rebuilt from its checkpoint, the sliding window and
  the classifier's forward pass;
- :mod:`~selfmedmae.eval.metrics` (Dice, HD95), :mod:`~selfmedmae.eval.auc` (ROC AUC),
  :mod:`~selfmedmae.eval.table` (the markdown tables);
- :mod:`~selfmedmae.eval.validation`: the validation of a fine-tuning run, through the same inference and
  metrics as :mod:`~selfmedmae.eval.evaluate`;
- :mod:`~selfmedmae.eval.predict` (with :mod:`~selfmedmae.eval.inputs`), :mod:`~selfmedmae.eval.report`,
  and the figures (:mod:`~selfmedmae.eval.figures`, :mod:`~selfmedmae.eval.overlay`,
  :mod:`~selfmedmae.eval.plotting`).
"""
