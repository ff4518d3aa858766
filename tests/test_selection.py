"""Which images each stage sees: unlabelled images join pre-training, held-out cases stay out, splits are
decided over labelled cases only, and label fractions keep seeded, nested subsets of the train split."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from selfmedmae.cli import main
from selfmedmae.config import load_config
from selfmedmae.data.selection import label_count, label_subset
from selfmedmae.data import build, splits
from selfmedmae.data.synthetic import make_msd
from selfmedmae.errors import UserError


def csv_task(root: Path, n_labelled: int, n_unlabelled: int) -> Path:
    """A 3D CSV dataset (paths only: the split logic never opens a file); labelled rows first."""
    root.mkdir(parents=True, exist_ok=True)
    rows = ["image,label"] + [f"img/l{i:02d}.nii.gz,lab/l{i:02d}.nii.gz" for i in range(n_labelled)]
    rows += [f"img/u{i:02d}.nii.gz," for i in range(n_unlabelled)]
    (root / "cases.csv").write_text("\n".join(rows) + "\n")
    return root


def data_cfg(root: Path, *overrides: str, stage: str = "finetune"):
    return load_config(None, [f"stage={stage}", "data.format=csv", f"data.root={root}", "data.csv=cases.csv",
                              "data.labels=[background,fg]", *overrides]).data


def split_cases(data_cfg):
    """The train / val / test cases of ``data_cfg``, from the one scan of its datalist."""
    scan = build(data_cfg).scan
    return splits.split_cases(data_cfg, scan.datalist)


def pretrain_cases(data_cfg):
    """(labelled, unlabelled) cases pre-training sees."""
    scan = build(data_cfg).scan
    return splits.pretrain_cases(data_cfg, scan.datalist, scan.extra)


def write_splits(run_dir, data_cfg, stage="finetune"):
    """``<run_dir>/splits.json`` as the stage writes it."""
    build(data_cfg, run_dir).write_splits(stage)
    return Path(run_dir) / "splits.json"


def ids(cases):
    return [c["id"] for c in cases]


def test_csv_unlabelled_rows_join_pretraining_and_leave_the_splits_alone(tmp_path):
    mixed, plain = csv_task(tmp_path / "mixed", 10, 10), csv_task(tmp_path / "plain", 10, 0)
    a, b = split_cases(data_cfg(mixed)), split_cases(data_cfg(plain))
    for name in ("train", "val", "test"):
        assert ids(a[name]) == ids(b[name])  # unlabelled rows never move a labelled case
    assert (len(a["train"]), len(a["val"]), len(a["test"])) == (6, 2, 2)
    labelled, unlabelled = pretrain_cases(data_cfg(mixed, stage="pretrain"))
    assert ids(labelled) == ids(a["train"]) and len(unlabelled) == 10  # 16 images, no val / test case
    assert all("label" not in u for u in unlabelled) and all("label" in c for c in labelled)
    labelled, unlabelled = pretrain_cases(data_cfg(mixed, "data.pretrain_on=all", stage="pretrain"))
    assert len(labelled) == 10 and len(unlabelled) == 10


def test_a_csv_without_any_label_serves_pretraining_and_is_refused_for_finetuning(tmp_path, capsys):
    root = csv_task(tmp_path / "unl", 0, 5)
    labelled, unlabelled = pretrain_cases(data_cfg(root, stage="pretrain"))
    assert labelled == [] and len(unlabelled) == 5
    with pytest.raises(UserError, match="split 'train' is empty"):
        split_cases(data_cfg(root))


def test_msd_test_images_and_an_extra_folder_join_pretraining(tmp_path, capsys):
    root = make_msd(tmp_path / "task", n=5, size=(12, 12, 12), n_test=2, seed=3)
    extra = root / "more"
    extra.mkdir()
    for name in ("a.nii.gz", "b.nii.gz", "._a.nii.gz", "notes.txt"):  # macOS junk and a text file are skipped
        (extra / name).write_bytes((root / "imagesTs" / "case_006.nii.gz").read_bytes())
    base = ["stage=pretrain", "data.format=msd", f"data.root={root}", "data.val_fraction=0.2",
            "data.test_fraction=0.2", "data.roi_size=[8,8,8]", "model.patch_size=4", "data.spacing=null",
            "data.num_workers=0"]
    cfg = load_config(None, base)
    labelled, unlabelled = pretrain_cases(cfg.data)
    assert len(labelled) == 3 and sorted(ids(unlabelled)) == ["case_006", "case_007"]
    for pattern in ("more", "more/*.nii*"):
        cfg = load_config(None, base + [f"data.extra_unlabelled={pattern}"])
        _, unlabelled = pretrain_cases(cfg.data)
        assert sorted(ids(unlabelled)) == ["a", "b", "case_006", "case_007"], pattern
    rc = main(["check-data", str(_yaml(tmp_path, base + ["data.extra_unlabelled=more"]))])
    out = capsys.readouterr().out
    assert rc == 0 and "pre-training sees 7 image(s): 3 labelled (train split) + 4 unlabelled" in out, out
    cfg = load_config(None, base + ["data.extra_unlabelled=nowhere"])
    with pytest.raises(UserError, match="nowhere: data.extra_unlabelled: no such folder"):
        pretrain_cases(cfg.data)


def _yaml(tmp_path: Path, overrides) -> Path:
    """A config file holding ``overrides`` (check-data takes a file)."""
    from omegaconf import OmegaConf

    path = tmp_path / "cfg.yaml"
    path.write_text(OmegaConf.to_yaml(OmegaConf.from_dotlist(list(overrides))))
    return path


def test_a_dataset_json_unlabelled_list_joins_pretraining(tmp_path):
    root = make_msd(tmp_path / "task", n=5, size=(12, 12, 12), n_test=1, seed=3)
    meta = json.loads((root / "dataset.json").read_text())
    meta["unlabelled"] = ["./imagesTs/case_006.nii.gz", {"image": "./more/x.nii.gz"}]
    meta["test"] = []
    (root / "dataset.json").write_text(json.dumps(meta))
    cfg = load_config(None, ["stage=pretrain", "data.format=msd", f"data.root={root}"])
    before = split_cases(cfg.data)
    _, unlabelled = pretrain_cases(cfg.data)
    assert sorted(ids(unlabelled)) == ["case_006", "x"]
    meta["unlabelled"] = []
    (root / "dataset.json").write_text(json.dumps(meta))
    after = split_cases(cfg.data)
    assert all(ids(before[s]) == ids(after[s]) for s in ("train", "val", "test"))


def test_held_out_images_stay_out_even_when_extra_lists_them_again(tmp_path):
    root = make_msd(tmp_path / "task", n=5, size=(12, 12, 12), n_test=1, seed=3)
    cfg = load_config(None, ["stage=pretrain", "data.format=msd", f"data.root={root}",
                             "data.extra_unlabelled=dataset.json"])
    splits = split_cases(cfg.data)
    labelled, unlabelled = pretrain_cases(cfg.data)
    seen = set(ids(labelled)) | set(ids(unlabelled))
    assert not seen & set(ids(splits["val"] + splits["test"])) and seen == set(ids(splits["train"])) | {"case_006"}


def test_label_subsets_are_seeded_nested_and_order_free():
    pool = [f"c{i:03d}" for i in range(40)]
    for seed in range(3):
        chain = [label_subset(pool, f, seed=seed) for f in (0.1, 0.25, 0.5, 1.0)]
        assert [len(c) for c in chain] == [4, 10, 20, 40]
        assert all(set(a) <= set(b) for a, b in zip(chain, chain[1:]))
        assert label_subset(list(reversed(pool)), 0.25, seed=seed) == chain[1]
    assert label_subset(pool, 0.25, seed=0) != label_subset(pool, 0.25, seed=1)
    assert label_count(6, 0.1) == 1 and label_count(40, 1.0, max_labelled=7) == 7
    assert set(label_subset(pool, 1.0, 7, seed=2)) <= set(label_subset(pool, 1.0, 12, seed=2))


def test_label_fraction_keeps_val_and_test_and_is_recorded(tmp_path):
    root = csv_task(tmp_path / "c", 20, 3)
    full = split_cases(data_cfg(root))
    cfg = data_cfg(root, "data.label_fraction=0.25", "data.label_seed=1")
    part = split_cases(cfg)
    assert ids(part["val"]) == ids(full["val"]) and ids(part["test"]) == ids(full["test"])
    assert len(part["train"]) == 3 and set(ids(part["train"])) < set(ids(full["train"]))
    record = json.loads(write_splits(tmp_path / "run", cfg).read_text())
    assert record["train"] == ids(part["train"]) and record["train_pool"] == ids(full["train"])
    assert "label_fraction=0.25" in record["label_subset"] and "RandomState(1)" in record["label_subset"]
    pre = json.loads(write_splits(tmp_path / "pre", data_cfg(root, "data.label_fraction=0.25",
                                                              stage="pretrain"), stage="pretrain").read_text())
    assert pre["pretrain_labelled"] == ids(full["train"]) and len(pre["pretrain_unlabelled"]) == 3  # no subset


@pytest.mark.parametrize("override, key", [("data.label_fraction=0", "data.label_fraction"),
                                           ("data.label_fraction=1.5", "data.label_fraction"),
                                           ("data.max_labelled=0", "data.max_labelled"),
                                           ("data.pretrain_on=everything", "data.pretrain_on")])
def test_bad_selection_settings_are_refused_naming_the_key(tmp_path, override, key):
    root = csv_task(tmp_path / "c", 10, 0)
    with pytest.raises(UserError, match=key):
        split_cases(data_cfg(root, override))


def test_2d_label_fraction_and_pretraining_pool(tmp_path):
    from selfmedmae.data.synthetic_2d import make_cxr14_like

    make_cxr14_like(tmp_path / "cxr", n_images=40, size=32, seed=0, full_size=False)
    base = ["data.format=cxr14", f"data.root={tmp_path / 'cxr'}", "data.spatial_dims=2", "data.image_size=32",
            "data.crop_size=24", "data.cache=none", "data.num_workers=0"]
    def split_ids_2d(data_cfg):
        data = build(data_cfg)
        return {k: [r.id for r in data.items(k)] for k in ("train", "train_pool", "val", "test")}

    full = split_ids_2d(load_config(None, base).data)
    cfg = load_config(None, base + ["data.label_fraction=0.5", "data.label_seed=2"]).data
    part = split_ids_2d(cfg)
    assert part["val"] == full["val"] and part["test"] == full["test"] and part["train_pool"] == full["train"]
    assert len(part["train"]) == int(np.floor(len(full["train"]) * 0.5 + 0.5))
    assert set(part["train"]) < set(full["train"])
    assert len(build(cfg).dataset("train", train=True)) == len(part["train"])
    assert len(build(cfg).dataset("pretrain", train=True)) == len(full["train"])  # pre-training: the whole train split


@pytest.mark.slow
def test_pretraining_runs_on_a_csv_of_labelled_and_unlabelled_volumes(tmp_path, capsys):
    from train_helpers import tiny_config

    task = make_msd(tmp_path / "task", n=20, size=(16, 16, 16), n_test=0, seed=5)
    rows = ["image,label"] + [f"imagesTr/case_{i:03d}.nii.gz,labelsTr/case_{i:03d}.nii.gz" for i in range(1, 11)]
    rows += [f"imagesTr/case_{i:03d}.nii.gz," for i in range(11, 21)]
    (task / "mixed.csv").write_text("\n".join(rows) + "\n")
    (task / "unlabelled.csv").write_text("\n".join(["image,label"] + rows[11:]) + "\n")  # empty label cells
    cfg = tiny_config(tmp_path / "p.yaml", task)
    common = ["data.format=csv", "data.labels=[background,class1,class2]", "data.test_fraction=0.2",
              "train.epochs=1", "train.warmup_epochs=0"]
    for csv_name, run, labelled, unlabelled in (("mixed.csv", "mixed", 6, 10), ("unlabelled.csv", "unl", 0, 10)):
        assert main(["pretrain", str(cfg), *common, f"data.csv={csv_name}",
                     f"run.dir={tmp_path / run}"]) == 0, capsys.readouterr().err
        record = json.loads((tmp_path / run / "splits.json").read_text())
        assert (len(record["pretrain_labelled"]), len(record["pretrain_unlabelled"])) == (labelled, unlabelled)
        assert (tmp_path / run / "checkpoints" / "encoder.pt").is_file()
    capsys.readouterr()
    assert main(["check-data", str(cfg), *common, "data.csv=unlabelled.csv", "stage=finetune"]) == 2
    assert "split 'train' is empty" in capsys.readouterr().err
