"""The table of data formats: each one is a small object with the same protocol, registered once in
:data:`FORMATS` under its ``(data.format, data.spatial_dims)``.

Protocol (what :class:`~selfmedmae.data.facade.Data` calls):

- ``scan(data_cfg)``: read the datalist once (file names, labels, splits); problems are collected;
- ``check(data_cfg, scan, stage)``: every problem of the files, as a :class:`~selfmedmae.data.findings.DataReport`;
- ``labels(data_cfg, scan)``: class names, multi-label or not, the subset the paper reports;
- ``split_items(data_cfg, scan, stage)``: the items of each split (``train`` is fine-tuning's label subset,
  ``pretrain`` what pre-training sees);
- ``write_splits(run_dir, data_cfg, scan, stage)``: ``splits.json``;
- ``dataset(data_cfg, items, train, stage, cache_dir, labelled)``: the torch dataset with the format's
  transforms (random crops for training, whole volumes / centre crops for evaluation).

3D volumes (``msd``, ``brats``, ``btcv``, ``csv``) share :class:`Volumes` and differ in their reader; 2D
images (``cxr14``, ``csv``) share :class:`Images` and differ in their scanning module. Each format's
modules are imported when it is used, so that reading 2D data with the library does not import MONAI:
``import selfmedmae.data.loader`` (3D) took 6.0 s against 2.6 s for ``selfmedmae.data.dataset_2d`` on this
project's 2-core CPU (under load). The commands import the models, and with them MONAI, anyway.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from importlib import import_module
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch

from selfmedmae.config.rules import choice, err
from selfmedmae.data.findings import DataReport
from selfmedmae.data.settings import common_settings, image_input, image_settings, volume_input, volume_settings
from selfmedmae.data.suffixes import IMAGE_SUFFIXES, VOLUME_SUFFIXES
from selfmedmae.errors import UserError


SUBSET_NAME = "8 organs"  # the BTCV subset the paper reports (TransUNet protocol)


@dataclass
class Labels:
    """What a model head, its loss, its metrics and the files ``predict`` writes need to know of the classes.
    Fine-tuning checkpoints carry it (:meth:`to_dict`), so evaluation and prediction know the classes without
    the training data."""

    names: List[str]  # by output channel (3D label maps: background first)
    multilabel: bool  # sigmoid per channel (BraTS regions, ChestX-ray14 findings) or softmax over classes
    subsets: Dict[str, List[str]] = field(default_factory=dict)  # reported means over some classes: BTCV's 8 organs
    map_names: Optional[List[str]] = None  # names of the values 1.. of a written label map; None: names[1:]
    hd_penalty: Optional[float] = None  # HD95 when one mask is empty (BraTS's); None: the volume's diagonal

    @property
    def scored(self) -> List[str]:
        """The classes metrics score: every channel of overlapping regions, label maps without background."""
        return list(self.names) if self.multilabel else list(self.names[1:])

    @property
    def out_channels(self) -> int:
        return len(self.names)

    @property
    def written(self) -> List[str]:
        """Names of the label values 1, 2, ... of the label maps ``predict`` writes."""
        return list(self.map_names) if self.map_names is not None else list(self.names[1:])

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Labels":
        return cls(**{k: d[k] for k in ("names", "multilabel", "subsets", "map_names", "hd_penalty") if k in d})

    @classmethod
    def generic(cls, n: int, multilabel: bool) -> "Labels":
        """Names when nothing tells them: ``class 1`` ... (label maps: ``background`` first)."""
        names = [f"class {i}" for i in range(1, n + 1)] if multilabel else \
            ["background"] + [f"class {i}" for i in range(1, n)]
        return cls(names, multilabel)


@dataclass
class VolumeScan:
    datalist: Any  # decathlon.Datalist
    extra: Any  # data.extra_unlabelled, read (a Datalist) or None


def _read_msd(c):
    from selfmedmae.data.decathlon import read_msd

    return read_msd(c.root, c.dataset_json)


def _read_btcv(c):
    from selfmedmae.data.btcv import read_btcv

    return read_btcv(c.root, c.dataset_json, c.btcv_split)


def _read_csv(c):
    from selfmedmae.data.csv_folder import read_csv_folder

    return read_csv_folder(c.root, c.csv, c.image_column, c.label_column, c.labels)


class Volumes:
    """3D volumes read through a datalist; MONAI transforms (transforms_3d), cached decoding (loader)."""

    spatial_dims = 3
    items_are = "volumes"  # what one item of a split is, in messages
    task = "segmentation"
    input_key = "data.roi_size"
    multilabel = False  # one softmax over the classes of a label map
    suffixes = VOLUME_SUFFIXES

    check_settings = staticmethod(volume_settings)  # data.* rules of volumes (data/settings.py)
    input_shape = staticmethod(volume_input)

    def __init__(self, name: str, reader: Callable[[Any], Any]):
        self.name, self.reader = name, reader

    def scan(self, data_cfg) -> VolumeScan:
        from selfmedmae.data.splits import read_datalist, read_extra_unlabelled

        return VolumeScan(read_datalist(data_cfg, self.reader), read_extra_unlabelled(data_cfg))

    def check(self, data_cfg, scan: VolumeScan, stage: str) -> DataReport:
        from selfmedmae.data.check import check_3d

        return check_3d(data_cfg, stage, scan.datalist, scan.extra)

    def labels(self, data_cfg, scan: VolumeScan) -> Labels:
        names = scan.datalist.labels
        if not names:
            raise UserError(f"{data_cfg.root}: the label names are unknown; set data.labels (background first)")
        return Labels(list(names), False, self._subsets(data_cfg, list(names)))

    def _subsets(self, data_cfg, names: List[str]) -> Dict[str, List[str]]:
        """{"8 organs": [names]} for BTCV (``data.organ_subset`` as label values, default the paper's 8 organs)."""
        values = list(data_cfg.organ_subset) if data_cfg.organ_subset else None
        if values is None and self.name == "btcv":
            from selfmedmae.data.btcv import PAPER_ORGANS

            values = list(PAPER_ORGANS)
        if not values:
            return {}
        bad = [v for v in values if not 1 <= int(v) < len(names)]
        if bad:
            raise UserError(f"data.organ_subset: label values {bad} are not foreground classes 1..{len(names) - 1}")
        title = SUBSET_NAME if len(values) == 8 else f"{len(values)}-class subset"
        return {title: [names[int(v)] for v in values]}

    def split_items(self, data_cfg, scan: VolumeScan, stage: str) -> Dict[str, List[dict]]:
        from selfmedmae.data.splits import pretrain_cases, split_cases

        if stage == "pretrain":
            labelled, unlabelled = pretrain_cases(data_cfg, scan.datalist, scan.extra)
            return {"pretrain": labelled + unlabelled}  # the dataset tells them apart by their "label" key
        return split_cases(data_cfg, scan.datalist)

    def write_splits(self, run_dir: Path, data_cfg, scan: VolumeScan, stage: str) -> None:
        from selfmedmae.data.splits import write_splits

        write_splits(run_dir, data_cfg, scan.datalist, scan.extra, stage)

    def dataset(self, data_cfg, items, train: bool, stage: str, cache_dir: str, labelled: bool = True):
        from selfmedmae.data.loader import eval_dataset, train_dataset

        if train:
            return train_dataset(data_cfg, items, stage, cache_dir)
        return eval_dataset(data_cfg, items, cache_dir, labelled)

    def files_dataset(self, data_cfg, files: List[str]):
        from selfmedmae.data.loader import eval_dataset

        return eval_dataset(data_cfg, [{"id": f, "image": f} for f in files], None, with_label=False)

    def label_map(self, decided, data_cfg):
        """The label map [1, *S] uint8 ``predict`` writes, from the decided output [*S] (the argmax)."""
        return decided[None].to(torch.uint8)


class BratsVolumes(Volumes):
    """MSD BraTS: the model predicts the overlapping regions TC / WT / ET (one sigmoid each); ``predict``
    writes them back as the MSD label map they came from (:mod:`selfmedmae.data.brats`)."""

    multilabel = True

    def labels(self, data_cfg, scan: Optional[VolumeScan] = None) -> Labels:
        from selfmedmae.data.brats import BRATS_HD_PENALTY_MM, MSD_LABELS, REGIONS

        return Labels(list(REGIONS), True, map_names=list(MSD_LABELS[1:]), hd_penalty=BRATS_HD_PENALTY_MM)

    def label_map(self, decided, data_cfg):
        """Regions [3, *S] (bool) -> the MSD label map [1, *S] uint8."""
        from selfmedmae.data.brats import regions_to_labels

        return regions_to_labels(decided, int(data_cfg.brats_et_label))


class Images:
    """2D images listed by a scanning module (``scan``, ``check``); one preprocessing (transforms_2d) and
    a shared preprocessing cache (dataset_2d)."""

    spatial_dims = 2
    items_are = "images"
    task = "classification"
    input_key = "data.crop_size"
    multilabel = True  # one sigmoid per finding
    suffixes = IMAGE_SUFFIXES

    check_settings = staticmethod(image_settings)  # data.* rules of images (data/settings.py)
    input_shape = staticmethod(image_input)

    def __init__(self, name: str, module: str):
        self.name, self.module = name, module

    def _mod(self):
        return import_module(self.module)

    def scan(self, data_cfg):
        return self._mod().scan(data_cfg)

    def check(self, data_cfg, scan, stage: str) -> DataReport:
        return self._mod().check(data_cfg, scan, stage)

    def labels(self, data_cfg, scan) -> Labels:
        from selfmedmae.data.dataset_2d import raise_if_problems

        raise_if_problems(scan.report)
        return Labels(list(self._mod().class_names(data_cfg, scan)), True)

    def split_items(self, data_cfg, scan, stage: str) -> Dict[str, list]:
        from selfmedmae.data.dataset_2d import select_records

        return select_records(scan, data_cfg)

    def write_splits(self, run_dir: Path, data_cfg, scan, stage: str) -> None:
        from selfmedmae.data.dataset_2d import splits_record_2d
        from selfmedmae.data.splits import save_splits

        save_splits(run_dir, splits_record_2d(data_cfg, scan))

    def dataset(self, data_cfg, items, train: bool, stage: str, cache_dir: Optional[str], labelled: bool = True):
        from selfmedmae.data.dataset_2d import Image2DDataset

        return Image2DDataset(items, data_cfg, train=train, cache_dir=cache_dir)

    def files_dataset(self, data_cfg, files: List[str]):
        from selfmedmae.data.dataset_2d import Image2DDataset, Record2D

        records = [Record2D(id=f, path=f, label=None, group=f) for f in files]
        return Image2DDataset(records, data_cfg, train=False, cache_dir=None)


FORMATS = {
    ("msd", 3): Volumes("msd", _read_msd),
    ("brats", 3): BratsVolumes("brats", _read_msd),
    ("btcv", 3): Volumes("btcv", _read_btcv),
    ("csv", 3): Volumes("csv", _read_csv),
    ("cxr14", 2): Images("cxr14", "selfmedmae.data.chestxray14"),
    ("csv", 2): Images("csv", "selfmedmae.data.csv_2d"),
}


def format_of(data_cfg):
    """The registered format of a data section; UserError naming data.format / data.spatial_dims."""
    key = (str(data_cfg.format), int(data_cfg.spatial_dims))
    if key in FORMATS:
        return FORMATS[key]
    dims = sorted({d for f, d in FORMATS if f == key[0]})
    if dims:
        readable = " or ".join(map(str, dims))
        raise UserError(f"data.spatial_dims: data.format={key[0]} reads {readable}D data, not {key[1]}D")
    names = sorted({f for f, _ in FORMATS})
    raise UserError(f"data.format: {key[0]!r} is not one of {', '.join(names)}")


def check_data_settings(cfg: Any) -> None:
    """Every data.* value of a run config, by the rules of its format; a one-line ConfigError naming the key."""
    choice(cfg, "data.format", tuple(sorted({name for name, _ in FORMATS})))
    choice(cfg, "data.spatial_dims", tuple(sorted({dims for _, dims in FORMATS})))
    try:
        fmt = format_of(cfg.data)
    except UserError as exc:
        key, _, text = str(exc).partition(": ")
        raise err(key, text) from None
    common_settings(cfg)
    fmt.check_settings(cfg)


def check_task(cfg: Any) -> None:
    """Fine-tuning's ``task`` must be the one the data serve (volumes: segmentation, images: classification)."""
    fmt = format_of(cfg.data)
    if cfg.task != fmt.task:
        raise err("task", f"{cfg.task} fine-tuning does not take data.format={cfg.data.format} with "
                           f"data.spatial_dims={cfg.data.spatial_dims} ({fmt.task} data)")


def input_key(cfg: Any) -> str:
    """The key that sets the model's input size."""
    return format_of(cfg.data).input_key


def input_shape(cfg: Any) -> List[int]:
    """The model's input size, checked for its number of axes."""
    return format_of(cfg.data).input_shape(cfg)
