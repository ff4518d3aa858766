"""Experiments built from the stages: the demo, the label-efficiency curve (``curve``), the paper's tables
(``reproduce``) and the comparison of two runs (``compare``)."""
