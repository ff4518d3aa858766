"""The shipped configs: every YAML under configs/ loads, none holds an absolute path, the paper configs hold
the paper's hyper-parameters (a table written from docs/official-code.md, compared against the loaded
configs and the model arguments the stages build from them), and bad keys / types are rejected by name."""
from __future__ import annotations

import math
from functools import lru_cache
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Optional

import pytest
from omegaconf import OmegaConf

from selfmedmae.config import ConfigError, load_config
from selfmedmae.models.factory import model_args
from selfmedmae.models.unetr import default_skip_blocks
from selfmedmae.data import input_size as _input_size
from selfmedmae.train.schedule import scaled_lr

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"

ALL_YAML = sorted(CONFIGS.rglob("*.yaml"))
FRAGMENTS = sorted((CONFIGS / "_data").glob("*.yaml"))
EXPERIMENTS = [p for p in ALL_YAML if "_data" not in p.relative_to(CONFIGS).parts]
INIT_KINDS = ("mae", "imagenet", "official", "native")


def input_size(cfg):
    return _input_size(cfg.data)


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


@lru_cache(maxsize=None)
def _load(path: Path):
    """Each shipped config is loaded once per session (the tests only read it)."""
    return load_config(path)


# --------------------------------------------------------------------------------------------------------
# (a) every YAML loads, no absolute paths
# --------------------------------------------------------------------------------------------------------

def test_configs_found():
    assert len(FRAGMENTS) >= 5 and len(EXPERIMENTS) >= 12, [rel(p) for p in ALL_YAML]


@pytest.mark.parametrize("path", ALL_YAML, ids=rel)
def test_every_config_loads(path):
    cfg = load_config(path)  # uncached: this is the test of loading
    assert cfg.stage in ("pretrain", "finetune") and cfg.task in ("segmentation", "classification")


@pytest.mark.parametrize("path", FRAGMENTS, ids=rel)
def test_data_fragments_hold_only_the_data_section(path):
    raw = OmegaConf.load(path)
    assert set(raw.keys()) <= {"_base_", "data"}, f"{rel(path)} sets {sorted(raw.keys())}"


def _strings(node, where=""):
    """(dotted key, value) for every string leaf of a plain container."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _strings(v, f"{where}.{k}" if where else str(k))
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            yield from _strings(v, f"{where}[{i}]")
    elif isinstance(node, str):
        yield where, node


def _is_absolute(value: str) -> bool:
    kind, sep, rest = value.partition(":")
    if sep and kind in INIT_KINDS:  # init: "mae:<path>" and friends
        value = rest
    return (PurePosixPath(value).is_absolute() or PureWindowsPath(value).is_absolute()
            or bool(PureWindowsPath(value).drive) or value.startswith("~"))


@pytest.mark.parametrize("path", ALL_YAML, ids=rel)
def test_no_absolute_paths(path):
    raw = OmegaConf.to_container(OmegaConf.load(path))
    resolved = OmegaConf.to_container(_load(path), resolve=True)
    for source in (raw, resolved):
        for key, value in _strings(source):
            assert not _is_absolute(value), f"{rel(path)}: {key} = {value!r} is an absolute path"
            assert "oc.env" not in value, f"{rel(path)}: {key} depends on an environment variable"


def test_absolute_path_check_catches_absolute_paths():  # the check above is not vacuous
    assert _is_absolute("/data/BTCV") and _is_absolute("mae:/runs/x/last.pt") and _is_absolute("C:\\data")
    assert _is_absolute("~/data") and not _is_absolute("runs/btcv/pretrain") and not _is_absolute("scratch")


def test_experiment_run_dirs_are_distinct():
    dirs = {}
    for path in EXPERIMENTS:
        d = _load(path).run.dir
        assert d != "runs/default", f"{rel(path)}: set run.dir"
        assert d not in dirs, f"{rel(path)} and {dirs.get(d)} write to the same run.dir {d}"
        dirs[d] = rel(path)


@pytest.mark.parametrize("dataset", ["btcv", "brats", "cxr14"])
def test_mae_finetuning_starts_from_the_pretraining_run(dataset):
    pre = _load(CONFIGS / dataset / "pretrain.yaml")
    ft = _load(CONFIGS / dataset / "finetune_mae.yaml")
    assert ft.init == f"mae:{pre.run.dir}/checkpoints/last.pt"
    # the pre-trained encoder must fit the fine-tuning model: same input, channels and ViT
    assert input_size(ft) == input_size(pre) and ft.data.in_chans == pre.data.in_chans
    for key in ("preset", "embed_dim", "depth", "num_heads", "patch_size"):
        assert ft.model[key] == pre.model[key], key


# --------------------------------------------------------------------------------------------------------
# (b) the paper's hyper-parameters, from docs/official-code.md (sections cited per row)
# --------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Paper:
    eff_lr: float  # scaled_lr(base_lr, batch_size, lr)
    batch: int  # global batch in volumes / images
    epochs: int
    warmup: int
    betas: tuple
    layer_decay: float
    drop_path: float
    size: tuple  # 3D roi (crop) or 2D crop
    in_chans: int
    weight_decay: float = 0.05  # §2.1 / §6: every config
    encoder: tuple = (768, 12, 12, 16)  # ViT-B/16: width, depth, heads, patch (§1.3-§1.5, §6)
    mask_ratio: Optional[float] = None  # pre-training only
    decoder: Optional[tuple] = None  # pre-training only: width, depth, heads
    num_samples: Optional[int] = None  # 3D: crops per volume and step
    overlap: Optional[float] = None  # 3D fine-tuning: sliding-window overlap
    skip_blocks: Optional[tuple] = None  # UNETR taps (0-based blocks)
    extra: dict = field(default_factory=dict)


PAPER = {
    # §4 mae3d_btcv_1gpu + 6 ("Pre-training lr 1.5e-4 = 6.4e-3*6/256"; BTCV 10000 epochs), 6.2 warm-up 100,
    # 1.3 decoder 384/8/12, mask 0.75 (config / paper; the script's 0.125 is documented in the YAML), 3.1 crops
    "btcv/pretrain": Paper(1.5e-4, 6, 10000, 100, (0.9, 0.95), 1.0, 0.0, (96, 96, 96), 1,
                           mask_ratio=0.75, decoder=(384, 8, 12), num_samples=4),
    # §4 unetr_btcv_1gpu + README/script lr 3.44e-2*6/256 = 8.06e-4 (6.1), 50/5000 (6.2), 2.4 layer decay
    # 0.75 and overlap 0.5, 1.5 drop path 0.1, 1.6 taps hs[3], hs[6], hs[9], 3.1 four 96^3 crops per volume
    "btcv/finetune": Paper(3.44e-2 * 6 / 256, 6, 5000, 50, (0.9, 0.95), 0.75, 0.1, (96, 96, 96), 1,
                           num_samples=4, overlap=0.5, skip_blocks=(3, 6, 9)),
    # §4 mae3d_msdbrats_1gpu + script --epochs=500 (6.2: config 1000), warm-up 10, lr as BTCV (6),
    # 3.2 128^3 crops, 4 channels, 4 crops per volume
    "brats/pretrain": Paper(1.5e-4, 6, 500, 10, (0.9, 0.95), 1.0, 0.0, (128, 128, 128), 4,
                            mask_ratio=0.75, decoder=(384, 8, 12), num_samples=4),
    # §4 unetr_msdbrats_1gpu + script --lr=1.72e-2 --batch_size=6 --epochs=300: 4.03e-4 (6.1, 6.2),
    # 3.2 one crop per volume, ET = MSD label 3 (6.7, the paper's region definition)
    "brats/finetune": Paper(1.72e-2 * 6 / 256, 6, 300, 10, (0.9, 0.95), 0.75, 0.1, (128, 128, 128), 4,
                            num_samples=1, overlap=0.5, skip_blocks=(3, 6, 9), extra={"data.brats_et_label": 3}),
    # §4 mae_cxr14: batch 256, lr 1.5e-4, 40/800, decoder 256/8/8 (6.13), mask 0.75, 224 crops (3.3)
    "cxr14/pretrain": Paper(1.5e-4, 256, 800, 40, (0.9, 0.95), 1.0, 0.0, (224, 224), 1,
                            mask_ratio=0.75, decoder=(256, 8, 8)),
    # §4 vit_finetune_cxr14: batch 256, lr 1e-3 (6.1), 5/100, betas (0.9, 0.999) (2.5, 6.11), layer decay
    # 0.75, drop path 0.1, class-token head (1.4)
    "cxr14/finetune": Paper(1e-3, 256, 100, 5, (0.9, 0.999), 0.75, 0.1, (224, 224), 1,
                            extra={"model.global_pool": False, "data.image_size": 256}),
}

# config file -> (row, init, task, overrides of the row for this variant)
SHIPPED = {
    "btcv/pretrain": ("btcv/pretrain", "scratch", "segmentation", {}),
    "btcv/finetune_mae": ("btcv/finetune", "mae:runs/btcv/pretrain/checkpoints/last.pt", "segmentation", {}),
    "btcv/finetune_scratch": ("btcv/finetune", "scratch", "segmentation", {}),
    "btcv/finetune_imagenet": ("btcv/finetune", "imagenet:checkpoints/vit_base_patch16_224_imagenet.pt",
                               "segmentation", {}),
    "brats/pretrain": ("brats/pretrain", "scratch", "segmentation", {}),
    "brats/finetune_mae": ("brats/finetune", "mae:runs/brats/pretrain/checkpoints/last.pt", "segmentation", {}),
    "brats/finetune_scratch": ("brats/finetune", "scratch", "segmentation", {}),
    "brats/finetune_imagenet": ("brats/finetune", "imagenet:checkpoints/vit_base_patch16_224_imagenet.pt",
                                "segmentation", {}),
    "cxr14/pretrain": ("cxr14/pretrain", "scratch", "classification", {}),
    "cxr14/finetune_mae": ("cxr14/finetune", "mae:runs/cxr14/pretrain/checkpoints/last.pt", "classification", {}),
    "cxr14/finetune_scratch": ("cxr14/finetune", "scratch", "classification", {}),
    # the grey image repeated to RGB (§3.3) so that the ImageNet patch kernel loads unchanged
    "cxr14/finetune_imagenet": ("cxr14/finetune", "imagenet:checkpoints/vit_base_patch16_224_imagenet.pt",
                                "classification", {"in_chans": 3}),
}


def _actual(cfg) -> dict:
    """The recipe as the stages will see it: the config plus the model arguments built from it."""
    t, m = cfg.train, cfg.model
    kind = "mae" if cfg.stage == "pretrain" else ("unetr" if cfg.task == "segmentation" else "classifier")
    args = model_args(kind, m, input_size(cfg), cfg.data.in_chans, num_classes=3)
    enc = args["encoder"]
    out = dict(eff_lr=scaled_lr(t.base_lr, t.batch_size, t.lr), batch=t.batch_size, epochs=t.epochs,
               warmup=t.warmup_epochs, betas=tuple(t.betas), layer_decay=t.layer_decay,
               drop_path=enc["drop_path_rate"], size=tuple(input_size(cfg)), in_chans=cfg.data.in_chans,
               weight_decay=t.weight_decay,
               encoder=(enc["embed_dim"], enc["depth"], enc["num_heads"], enc["patch_size"]),
               min_lr=t.min_lr, accum_iter=t.accum_iter, clip_grad=t.clip_grad)
    if kind == "mae":
        out.update(mask_ratio=args["mask_ratio"],
                   decoder=(args["decoder_embed_dim"], args["decoder_depth"], args["decoder_num_heads"]))
    if cfg.data.spatial_dims == 3:
        out["num_samples"] = cfg.data.num_samples
        if kind == "unetr":
            out["overlap"] = cfg.eval.overlap
            stages = round(math.log2(enc["patch_size"]))
            skips = args["skip_blocks"] or default_skip_blocks(enc["depth"], stages)
            out["skip_blocks"] = tuple(skips)
    return out


def test_every_paper_config_is_in_the_table():
    shipped = {rel(p)[len("configs/"):-len(".yaml")] for p in ALL_YAML
               if p.parent.name in ("btcv", "brats", "cxr14")}
    assert shipped == set(SHIPPED)


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_paper_hyperparameters(name):
    row_name, init, task, variant = SHIPPED[name]
    row = PAPER[row_name]
    cfg = _load(CONFIGS / f"{name}.yaml")
    assert cfg.stage == ("pretrain" if name.endswith("pretrain") else "finetune")
    assert cfg.task == task and cfg.init == init
    assert cfg.run.dir == f"runs/{name}"
    got = _actual(cfg)
    expected = {k: getattr(row, k) for k in ("batch", "epochs", "warmup", "betas", "layer_decay", "drop_path",
                                             "size", "in_chans", "weight_decay", "encoder", "mask_ratio",
                                             "decoder", "num_samples", "overlap", "skip_blocks")}
    expected = {k: v for k, v in expected.items() if v is not None}
    expected.update(variant)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value), f"{name}: {key} = {got[key]}, the paper's is {value}"
    assert got["eff_lr"] == pytest.approx(row.eff_lr, rel=1e-12), f"{name}: effective lr {got['eff_lr']}"
    # the official recipe has no minimum lr, no gradient clipping and no accumulation (§2.1)
    assert got["min_lr"] == 0.0 and got["clip_grad"] is None and got["accum_iter"] == 1
    for key, value in row.extra.items():
        assert OmegaConf.select(cfg, key) == value, f"{name}: {key}"


def test_table_effective_lrs_are_the_papers_rounded_values():
    # §6.1: the paper states 1.5e-4 (pre-training), 8e-4 (BTCV), 4e-4 (BraTS), 1e-3 (CXR14)
    for row, paper in [("btcv/pretrain", 1.5e-4), ("brats/pretrain", 1.5e-4), ("cxr14/pretrain", 1.5e-4),
                       ("btcv/finetune", 8e-4), ("brats/finetune", 4e-4), ("cxr14/finetune", 1e-3)]:
        assert PAPER[row].eff_lr == pytest.approx(paper, rel=0.01), row


def test_the_table_catches_the_official_config_files_own_lr():
    # §6.1: configs/unetr_btcv_1gpu.yaml says lr 4.3e-3 (effective 1.0e-4), not the paper's 8e-4
    cfg = load_config(CONFIGS / "btcv" / "finetune_mae.yaml", ["train.base_lr=4.3e-3"])
    assert _actual(cfg)["eff_lr"] != pytest.approx(PAPER["btcv/finetune"].eff_lr, rel=0.01)


def test_script_mask_ratio_is_one_override_away():
    # §6.3: the official scripts pass --mask_ratio=0.125; the shipped configs keep the paper's 0.75
    cfg = load_config(CONFIGS / "btcv" / "pretrain.yaml", ["model.mask_ratio=0.125"])
    assert cfg.model.mask_ratio == 0.125 and cfg.train.epochs == 10000


# --------------------------------------------------------------------------------------------------------
# (c) unknown keys and wrong types are rejected with a message that names the key
# --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, key", [
    ("train:\n  epochs: 10\n  bogus: 1\n", "train.bogus"),
    ("bogus_section: 1\n", "bogus_section"),
    ("model:\n  decoder_width: 256\n", "model.decoder_width"),
    ("data:\n  roi: [96, 96, 96]\n", "data.roi"),
    ("train:\n  epochs: many\n", "train.epochs"),
    ("train:\n  base_lr: fast\n", "train.base_lr"),
    ("train:\n  betas: 0.9\n", "train.betas"),
    ("model:\n  drop_path_rate: [0.1]\n", "model.drop_path_rate"),
    ("data:\n  roi_size: [a, b, c]\n", "data.roi_size"),
    ("run:\n  resume: maybe\n", "run.resume"),
])
def test_bad_keys_and_types_are_rejected_by_name(tmp_path, text, key):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert key in str(err.value) and "bad.yaml" in str(err.value)


@pytest.mark.parametrize("text, key", [
    ("stage: pretraining\n", "stage"),
    ("task: detection\n", "task"),
    ("run:\n  precision: fp8\n", "run.precision"),
])
def test_bad_values_are_rejected_by_name(tmp_path, text, key):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert f"{key}:" in str(err.value)


def test_bad_key_in_a_base_file_is_rejected(tmp_path):
    (tmp_path / "base.yaml").write_text("train:\n  warmup: 5\n")
    (tmp_path / "top.yaml").write_text("_base_: base.yaml\nstage: finetune\n")
    with pytest.raises(ConfigError, match=r"train\.warmup"):
        load_config(tmp_path / "top.yaml")


@pytest.mark.parametrize("override, key", [
    ("train.nope=1", "train.nope"),
    ("nope=1", "nope"),
    ("train.batch_size=abc", "train.batch_size"),
    ("model.mask_ratio=high", "model.mask_ratio"),
    ("run.precision=fp8", "run.precision"),
])
def test_bad_overrides_are_rejected_by_name(override, key):
    with pytest.raises(ConfigError) as err:
        load_config(CONFIGS / "btcv" / "finetune_mae.yaml", [override])
    assert key in str(err.value)


def test_good_override_on_a_shipped_config():
    cfg = load_config(CONFIGS / "cxr14" / "finetune_mae.yaml", ["train.accum_iter=8", "train.epochs=2"])
    assert cfg.train.accum_iter == 8 and cfg.train.epochs == 2 and cfg.train.batch_size == 256
