"""Experiments built from the stages: the demo, the label-efficiency curve (``curve``), the paper's tables
(``reproduce``) and the comparison of two runs (``compare``)."""

REPRODUCE_DATASETS = ("btcv", "brats", "cxr14")  # the paper's tables `selfmedmae reproduce` runs
REPRODUCE_KINDS = ("pretrain", "finetune", "evaluate", "report")  # its stages (--only)
