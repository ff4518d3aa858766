"""2D data: ChestX-ray14 on the real in-repo sample (data/cxr14-sample), the paper's preprocessing, the
shared cache, the synthetic generator and the user's CSV format."""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from torch.utils.data import DataLoader

from selfmedmae.data import chestxray14 as cxr
from selfmedmae.data import csv_2d
from selfmedmae.config.sections import DataConfig
from selfmedmae.data import build
from selfmedmae.data.synthetic_2d import HEADER, make_cxr14_like
from selfmedmae.data.transforms_2d import CropNormalize, equalize_hist, load_grey, preprocess

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "cxr14-sample"
IMAGES = SAMPLE / "images_001" / "images"
RGBA_FILES = ("00000100_000.png", "00001369_000.png", "00004934_000.png", "00005224_000.png")
FULL_L_FILES = ("00000550_000.png", "00029050_000.png")


def cfg_for(root, **kw):
    return OmegaConf.structured(DataConfig(format="cxr14", root=str(root), spatial_dims=2, **kw))


def dataset_2d(cfg, split, train=False, cache_dir=None):
    """The torch dataset of ``split`` through the one entry point, ``data.build``."""
    if cache_dir is not None:
        cfg = OmegaConf.merge(cfg, {"cache_dir": cache_dir})
    return build(cfg).dataset(split, train=train)


def vec(*names):
    v = np.zeros(14, np.float32)
    for n in names:
        v[cxr.CXR14_LABELS.index(n)] = 1
    return v


@pytest.fixture(scope="module")
def sample_scan():
    return cxr.scan(cfg_for(SAMPLE))


# --- the real sample, through the full-dataset code path ---------------------------------------------------

def test_sample_splits_are_the_lists_and_patient_disjoint(sample_scan):
    sp = sample_scan.splits
    assert not sample_scan.report.problems
    train_val = (SAMPLE / "train_val_list.txt").read_text().split()
    test = (SAMPLE / "test_list.txt").read_text().split()
    assert (len(train_val), len(test)) == (296, 111)
    assert sorted(r.id for r in sp["train"] + sp["val"]) == sorted(train_val)
    assert sorted(r.id for r in sp["test"]) == sorted(test)
    assert (len(sp["train"]), len(sp["val"]), len(sp["test"])) == (237, 59, 111)  # val = round(0.2 * 296)
    groups = [{r.group for r in sp[k]} for k in ("train", "val", "test")]
    assert not (groups[0] & groups[1]) and not (groups[0] & groups[2]) and not (groups[1] & groups[2])
    assert all(r.group == r.id[:8] for r in sp["all"])  # patient id = first 8 digits of the file name
    # seeded: the same seed gives the same val, another seed another one
    again = cxr.scan(cfg_for(SAMPLE)).splits["val"]
    other = cxr.scan(cfg_for(SAMPLE, split_seed=1)).splits["val"]
    assert [r.id for r in again] == [r.id for r in sp["val"]]
    assert {r.id for r in other} != {r.id for r in sp["val"]}


def test_every_sample_image_decodes_to_the_model_input(sample_scan):
    cfg = cfg_for(SAMPLE)
    seen = 0
    for split in ("train", "val", "test"):
        ds = dataset_2d(cfg, split, train=False)
        for i in range(len(ds)):
            item = ds[i]
            assert item["image"].shape == (1, 224, 224) and item["image"].dtype == torch.float32
            assert item["label"].shape == (14,) and item["label"].dtype == torch.float32
            assert np.isfinite(item["image"].numpy()).all()
            seen += 1
    assert seen == 407
    # the six full-size originals are among them, in both modes
    modes = {n: Image.open(IMAGES / n).mode for n in RGBA_FILES + FULL_L_FILES}
    assert [modes[n] for n in RGBA_FILES] == ["RGBA"] * 4 and [modes[n] for n in FULL_L_FILES] == ["L"] * 2
    assert {Image.open(IMAGES / n).size for n in modes} == {(1024, 1024)}


def test_label_vectors_of_real_rows(sample_scan):
    labels = {r.id: r.label for r in sample_scan.splits["all"]}
    np.testing.assert_array_equal(labels["00000100_000.png"], vec("Atelectasis", "Effusion", "Infiltration"))
    np.testing.assert_array_equal(labels["00001524_000.png"], vec("Atelectasis", "Hernia", "Nodule"))
    np.testing.assert_array_equal(labels["00029050_000.png"], vec("Effusion", "Pleural_Thickening"))
    np.testing.assert_array_equal(labels["00001063_000.png"], vec("Pleural_Thickening"))
    np.testing.assert_array_equal(labels["00000550_000.png"], np.zeros(14))  # No Finding
    assert vec("Pleural_Thickening")[12] == 1 and vec("Hernia")[13] == 1  # CheXNet order
    # README counts: 65 "No Finding", 44 Pleural_Thickening, 13 Hernia in the 407
    all_labels = np.stack(list(labels.values()))
    assert int((all_labels.sum(1) == 0).sum()) == 65
    assert all_labels[:, 12].sum() == 44 and all_labels[:, 13].sum() == 13


def test_label_subset_from_config():
    sc = cxr.scan(cfg_for(SAMPLE, labels=["Effusion", "Hernia"]))
    labels = {r.id: r.label for r in sc.splits["all"]}
    np.testing.assert_array_equal(labels["00000100_000.png"], [1, 0])
    np.testing.assert_array_equal(labels["00001524_000.png"], [0, 1])


def test_rgba_gives_the_pixels_of_its_grey_conversion(tmp_path):
    src = IMAGES / "00000100_000.png"
    rgba = np.asarray(Image.open(src))
    assert rgba.shape == (1024, 1024, 4) and (rgba[..., 3] == 255).all()
    grey = load_grey(src)
    np.testing.assert_array_equal(grey, rgba[..., 0])
    np.testing.assert_array_equal(grey, np.asarray(Image.open(src).convert("L")))
    Image.fromarray(grey, "L").save(tmp_path / "grey.png")
    np.testing.assert_array_equal(preprocess(src, 256), preprocess(tmp_path / "grey.png", 256))


def test_sixteen_bit_grey_keeps_its_range(tmp_path):
    arr = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)  # 0 .. 65520
    Image.fromarray(arr).save(tmp_path / "a16.png")
    out = load_grey(tmp_path / "a16.png")
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255
    assert np.all(np.diff(out.ravel().astype(int)) >= 0)  # monotone, not clipped at 255 early


# --- preprocessing -------------------------------------------------------------------------------------

def test_histogram_equalisation_flattens_a_ramp():
    ramp = np.repeat(np.arange(64, 128, dtype=np.uint8), 16).reshape(32, 32)  # 64 levels, 16 pixels each
    out = equalize_hist(ramp)
    assert out.min() == 0 and out.max() == 255
    levels = np.unique(out)
    assert len(levels) == 64
    assert set(np.diff(levels.astype(int))) <= {4, 5}  # evenly spread over 0..255
    np.testing.assert_array_equal(np.histogram(out, bins=4, range=(0, 256))[0], [256] * 4)  # flat
    assert np.all(np.diff(out.ravel().astype(int)) >= 0)  # monotone map of a monotone ramp


def test_histogram_equalisation_of_a_skewed_image():
    rng = np.random.default_rng(0)
    img = np.clip(rng.exponential(20, size=(128, 128)), 0, 255).astype(np.uint8)  # mostly dark
    out = equalize_hist(img)
    hist = np.histogram(out, bins=8, range=(0, 256))[0] / out.size
    assert np.abs(hist - 1 / 8).max() < 0.05  # flat to within 5 points per eighth of the range
    assert np.array_equal(equalize_hist(np.full((4, 4), 7, np.uint8)), np.full((4, 4), 7))  # constant: kept
    # order of grey levels is kept
    order = np.argsort(img.ravel(), kind="stable")
    assert np.all(np.diff(out.ravel()[order].astype(int)) >= 0)


def test_preprocess_equalises_then_resizes():
    out = preprocess(IMAGES / "00000550_000.png", 256)
    assert out.shape == (256, 256) and out.dtype == np.uint8
    assert out.min() <= 5 and out.max() >= 250  # equalised: the full range is used
    plain = preprocess(IMAGES / "00000550_000.png", 256, hist_eq=False)
    assert not np.array_equal(out, plain)


def test_crops_train_and_eval():
    img = np.random.default_rng(0).integers(0, 256, (256, 256), dtype=np.uint8)
    ev = CropNormalize(224, train=False)(img)
    assert ev.shape == (1, 224, 224)
    expect = (img[16:240, 16:240].astype(np.float32) / 255 - 0.5) / 0.225
    np.testing.assert_allclose(ev[0].numpy(), expect, atol=1e-6)
    three = CropNormalize(224, train=False, in_chans=3)(img)
    assert three.shape == (3, 224, 224) and torch.equal(three[0], three[2])
    tr = CropNormalize(224, train=True)
    rows, cols = np.mgrid[0:256, 0:256].astype(np.uint8)  # pixel value = its row / its column
    norm = (img.astype(np.float32) / 255 - 0.5) / 0.225
    to_level = lambda x: np.round((x * 0.225 + 0.5) * 255).astype(int)  # noqa: E731
    flipped, positions = 0, set()
    for seed in range(40):  # the same seed draws the same crop and flip for the three images
        torch.manual_seed(seed)
        crop = tr(img)[0].numpy()
        torch.manual_seed(seed)
        r = to_level(tr(rows)[0].numpy())
        torch.manual_seed(seed)
        c = to_level(tr(cols)[0].numpy())
        assert crop.shape == (224, 224)
        top, left, flip = r[0, 0], c[0].min(), c[0, 0] > c[0, -1]
        assert 0 <= top <= 32 and 0 <= left <= 32
        window = norm[top:top + 224, left:left + 224]
        np.testing.assert_allclose(crop, window[:, ::-1] if flip else window, atol=1e-5)
        flipped += int(flip)
        positions.add((top, left))
    assert 5 < flipped < 35 and len(positions) > 20


# --- cache, workers, batches ---------------------------------------------------------------------------

def _synthetic(tmp_path, **kw):
    make_cxr14_like(tmp_path / "cxr", n_images=kw.pop("n_images", 40), size=kw.pop("size", 32), seed=0, **kw)
    return tmp_path / "cxr"


def test_cache_is_shared_by_workers_and_survives_epochs(tmp_path):
    root = _synthetic(tmp_path, full_size=False)
    cfg = cfg_for(root, image_size=32, crop_size=24)
    ds = dataset_2d(cfg, "all", train=False)
    first = [ds[i]["image"] for i in range(len(ds))]  # fills rows in this process
    ds2 = dataset_2d(cfg, "all", train=False)
    loader = DataLoader(ds2, batch_size=8, num_workers=2)
    batches = list(loader)  # epoch 1: workers fill the shared rows
    assert ds2.cache.n_done() == len(ds2)
    shutil.rmtree(root / "images_001")
    shutil.rmtree(root / "images_002")  # nothing left to decode
    again = torch.cat([b["image"] for b in loader])  # epoch 2, fresh workers: all from the cache
    assert torch.equal(again, torch.cat([b["image"] for b in batches]))
    assert torch.equal(again, torch.stack(first))
    b = batches[0]
    assert b["image"].shape == (8, 1, 24, 24) and b["label"].shape == (8, 14) and len(b["id"]) == 8


def test_disk_cache_is_reused_by_a_later_run(tmp_path):
    root = _synthetic(tmp_path, full_size=False)
    cfg = cfg_for(root, image_size=32, crop_size=24, cache="disk")
    ds = dataset_2d(cfg, "test", cache_dir=str(tmp_path / "cache"))
    for i in range(len(ds)):
        ds[i]
    later = dataset_2d(cfg, "test", cache_dir=str(tmp_path / "cache"))
    assert later.cache.path == ds.cache.path and later.cache.n_done() == len(later)
    other = dataset_2d(cfg_for(root, image_size=40, crop_size=24, cache="disk"), "test",
                             cache_dir=str(tmp_path / "cache"))
    assert other.cache.path != ds.cache.path and other.cache.n_done() == 0  # other settings: other file


def test_loaders_for_training_code(tmp_path):
    root = _synthetic(tmp_path, full_size=False)
    cfg = cfg_for(root, image_size=32, crop_size=24, in_chans=3, num_workers=0)
    assert build(cfg).labels.names == list(cxr.CXR14_LABELS)
    assert build(cfg_for(root, labels=["Mass"])).labels.names == ["Mass"]
    n_train = len(dataset_2d(cfg, "train"))
    crops = {s: dataset_2d(cfg, s, train=s == "train").transform.train for s in ("train", "val", "test", "all")}
    assert crops == {"train": True, "val": False, "test": False, "all": False}  # random crops only to train
    from selfmedmae.runtime.distributed import Dist
    from selfmedmae.train.engine import make_loader

    train = make_loader(build(cfg).dataset("train", train=True), 4, Dist(), seed=1, workers=0)
    batches = list(train)
    assert len(batches) == n_train // 4  # the partial batch is dropped
    assert batches[0]["image"].shape == (4, 3, 24, 24) and batches[0]["label"].shape == (4, 14)
    assert sorted(i for b in batches for i in b["id"]) != [i for b in batches for i in b["id"]]  # shuffled
    shares = [build(cfg).dataset("test", rank=r, world_size=2).ids for r in (0, 1)]  # evaluation: no repeats
    test_ids = dataset_2d(cfg, "test").ids
    assert sorted(shares[0] + shares[1]) == sorted(test_ids) and abs(len(shares[0]) - len(shares[1])) <= 1


# --- synthetic generator -------------------------------------------------------------------------------

def test_synthetic_cxr14_is_in_the_release_format(tmp_path):
    root = _synthetic(tmp_path, n_images=45, trailing_comma=True)
    lines = (root / "Data_Entry_2017_v2020.csv").read_text().splitlines()
    assert lines[0] == HEADER + "," and len(lines) == 46 and all(l.endswith(",") for l in lines)
    names = sorted(p.name for p in root.glob("images_00[12]/images/*.png"))
    assert len(names) == 45 and all(len(n) == 16 and n[8] == "_" for n in names)
    assert {p.parent.parent.name for p in root.glob("images_*/images/*.png")} == {"images_001", "images_002"}
    modes = {(im.mode, im.size) for im in (Image.open(p) for p in root.glob("images_*/images/*.png"))}
    assert modes == {("L", (32, 32)), ("L", (1024, 1024)), ("RGBA", (32, 32))}
    sc = cxr.scan(cfg_for(root))
    assert not sc.report.problems
    tv = {r.group for r in sc.splits["train_val"]}
    assert not tv & {r.group for r in sc.splits["test"]}
    for split in ("train_val", "test"):
        y = np.stack([r.label for r in sc.splits[split]])
        assert (y.sum(0) >= 1).all() and (y.sum(0) < len(y)).all(), split  # positives and negatives
    assert len(sc.splits["all"]) > len({r.group for r in sc.splits["all"]})  # some follow-ups
    rgba = next(p for p in root.glob("images_*/images/*.png") if Image.open(p).mode == "RGBA")
    a = np.asarray(Image.open(rgba))
    assert (a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all() and (a[..., 3] == 255).all()
    # the same seed writes the same data
    make_cxr14_like(tmp_path / "again", n_images=45, size=32, seed=0, trailing_comma=True)
    assert (tmp_path / "again" / "Data_Entry_2017_v2020.csv").read_text() == "\n".join(lines) + "\n"


def test_synthetic_main(tmp_path, capsys):
    from selfmedmae.data.synthetic_2d import main

    assert main([str(tmp_path / "s"), "--n", "32", "--size", "16", "--seed", "3", "--no-full-size"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert len(list((tmp_path / "s").glob("images_*/images/*.png"))) == 32
    with pytest.raises(ValueError):
        make_cxr14_like(tmp_path / "tiny", n_images=20)


# --- the user's CSV -----------------------------------------------------------------------------------

def _user_csv(tmp_path, with_split=True, patients=True):
    folder = tmp_path / "mine"
    (folder / "imgs").mkdir(parents=True)
    rows = []
    for i in range(24):
        name = f"imgs/{i:02d}.png"
        shutil.copy(IMAGES / sorted(p.name for p in IMAGES.iterdir() if p.stat().st_size < 200_000)[i],
                    folder / name)
        row = {"path": name, "effusion": i % 2, "mass": int(i % 3 == 0), "patient": f"p{i // 2}"}
        if with_split:
            row["split"] = ("train", "train", "val", "test")[i % 4]
        rows.append(row)
    with open(folder / "labels.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return folder


def csv_cfg(folder, **kw):
    base = dict(format="csv", root=str(folder), csv="labels.csv", spatial_dims=2, image_column="path",
                class_columns=["effusion", "mass"], image_size=64, crop_size=48)
    base.update(kw)
    return OmegaConf.structured(DataConfig(**base))


def test_user_csv_with_split_column(tmp_path):
    folder = _user_csv(tmp_path)
    cfg = csv_cfg(folder, in_chans=3)
    ds = dataset_2d(cfg, "train")
    assert len(ds) == 12 and len(dataset_2d(cfg, "val")) == 6 and len(dataset_2d(cfg, "test")) == 6
    item = ds[1]
    assert item["image"].shape == (3, 48, 48) and item["id"] == "imgs/01.png"
    assert item["label"].tolist() == [1.0, 0.0]
    assert ds[0]["label"].tolist() == [0.0, 1.0]
    rep = csv_2d.check(cfg)
    assert rep.ok and any("train 12, val 6, test 6" in s for s in rep.summary)


def test_user_csv_seeded_split_keeps_groups_together(tmp_path):
    folder = _user_csv(tmp_path, with_split=False)
    cfg = csv_cfg(folder, group_column="patient", val_fraction=0.25, test_fraction=0.25)
    sc = csv_2d.scan(cfg)
    assert not sc.report.problems
    sizes = [len(sc.splits[k]) for k in ("train", "val", "test")]
    assert sizes == [12, 6, 6]  # 12 patients of 2 images: 3 to test, 3 to val
    groups = [{r.group for r in sc.splits[k]} for k in ("train", "val", "test")]
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])


def test_user_csv_without_class_columns_is_unlabelled(tmp_path):
    folder = _user_csv(tmp_path, with_split=False)
    (folder / "plain.csv").write_text("path\n" + "".join(f"imgs/{i:02d}.png\n" for i in range(24)))
    ds = dataset_2d(csv_cfg(folder, csv="plain.csv", class_columns=None), "all", train=True)
    assert len(ds) == 24 and not ds.labelled
    item = ds[0]
    assert set(item) == {"image", "id"} and item["image"].shape == (1, 48, 48)
