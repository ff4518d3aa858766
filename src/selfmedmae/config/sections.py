"""The sections of the run config: data, model, training, evaluation and run. The paper's recipe is the
default; shipped configs set the rest. Each field says which formats or stages read it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from selfmedmae.runtime.cores import default_workers


@dataclass
class DataConfig:
    # --- what and where ------------------------------------------------------------------------------
    format: str = "msd"  # msd | btcv | brats | cxr14 | csv
    root: str = "data"  # the dataset folder (relative paths resolve from the current directory)
    spatial_dims: int = 3  # 2: images (classification), 3: volumes
    in_chans: int = 1  # checked against the files
    dataset_json: str = "dataset.json"  # msd / btcv / brats: datalist file, relative to root
    csv: Optional[str] = None  # csv format: the CSV file (relative to root); cxr14: Data_Entry csv (None = find it)
    image_column: str = "image"  # csv format
    label_column: Optional[str] = "label"  # csv 3D: label-map path column
    class_columns: Optional[List[str]] = None  # csv 2D: one 0/1 column per class
    group_column: Optional[str] = None  # csv 2D: e.g. a patient id column; the seeded split keeps its groups together
    labels: Optional[List[str]] = None  # class names; None = from dataset.json / the format's own list
    extra_unlabelled: Optional[str] = None  # pretrain: more unlabelled images: a folder, a glob, a *.json or *.csv

    # --- which images each stage sees (selection.py) ---------------------------------------------------
    pretrain_on: str = "train"  # train: labelled train split + every unlabelled image | all: + val and test
    label_fraction: float = 1.0  # finetune: seeded fraction (0, 1] of the labelled train cases, nested
    max_labelled: Optional[int] = None  # finetune: at most this many labelled train cases (after the fraction)
    label_seed: int = 0  # which subset label_fraction / max_labelled keep

    # --- splits ----------------------------------------------------------------------------------------
    split_file: Optional[str] = None  # JSON {"train": [...], "val": [...], "test": [...]} of case ids / paths
    btcv_split: str = "transunet"  # btcv: transunet (18/12, the paper's) | unetr (24/6)
    val_fraction: float = 0.2  # seeded division of the labelled cases (msd / csv 3D / cxr14 val)
    test_fraction: float = 0.2
    split_seed: int = 0

    # --- 3D preprocessing ------------------------------------------------------------------------------
    orientation: str = "RAS"
    spacing: Optional[List[float]] = field(default_factory=lambda: [1.5, 1.5, 2.0])  # None: keep the file's
    intensity: str = "ct"  # ct (window a_min..a_max -> 0..1) | nonzero (channel-wise z-score) | percentile
    a_min: float = -175.0
    a_max: float = 250.0
    percentiles: List[float] = field(default_factory=lambda: [0.5, 99.5])  # percentile: clip range, then 0..1
    crop_foreground: bool = True
    roi_size: List[int] = field(default_factory=lambda: [96, 96, 96])
    num_samples: int = 4  # random crops per volume and step
    pos_neg: List[float] = field(default_factory=lambda: [1.0, 1.0])  # label-guided crop centres
    augment: str = "paper"  # fine-tuning's augmentations: paper (flips, rot90, intensity) | nnunet (nnU-Net v2's)
    flip_prob: float = 0.2
    rot90_prob: float = 0.2
    intensity_prob: float = 0.1
    brats_et_label: int = 3  # brats: ET = label 3 (MSD's own map); 2 reproduces the official code
    organ_subset: Optional[List[int]] = None  # btcv: the paper's 8 organs, for reporting

    # --- 2D preprocessing ------------------------------------------------------------------------------
    image_size: int = 256  # resize (after histogram equalisation)
    crop_size: int = 224  # random crop for training, centre crop for evaluation
    hist_eq: bool = True
    mean: float = 0.5  # "MED" normalisation of the official code
    std: float = 0.225

    # --- loading ---------------------------------------------------------------------------------------
    cache: str = "memory"  # memory | disk | none: decode and resample each volume once
    cache_dir: Optional[str] = None  # disk cache; None = <run.dir>/cache
    num_workers: int = field(default_factory=default_workers,  # from the cores (runtime.cores)
                             metadata={"default": "0 on 1-2 cores, else cores / 2, at most 4"})
    cache_rate: float = 1.0  # memory cache: fraction of the training volumes held (the rest load each time)


# The model sizes of each ``model.preset``: the ViT encoder, and the MAE decoder pre-training puts on it. The
# ViT-B/L/H presets keep the paper's decoder (384 wide, 8 blocks, 12 heads, the official 3D code's); the small
# presets get a decoder of their own width (and a few blocks), so a first run on a CPU stays small.
PRESETS: Dict[str, Dict[str, int]] = {
    "vit_nano": dict(embed_dim=48, depth=2, num_heads=4),  # tests and smoke runs
    "vit_micro": dict(embed_dim=96, depth=4, num_heads=4),  # CPU demos
    "vit_tiny": dict(embed_dim=192, depth=12, num_heads=3),
    "vit_small": dict(embed_dim=384, depth=12, num_heads=6),
    "vit_base": dict(embed_dim=768, depth=12, num_heads=12),
    "vit_large": dict(embed_dim=1024, depth=24, num_heads=16),
    "vit_huge": dict(embed_dim=1280, depth=32, num_heads=16),
}
PAPER_DECODER = dict(decoder_embed_dim=384, decoder_depth=8, decoder_num_heads=12)
PRESET_DECODERS: Dict[str, Dict[str, int]] = {
    "vit_nano": dict(decoder_embed_dim=48, decoder_depth=2, decoder_num_heads=4),
    "vit_micro": dict(decoder_embed_dim=96, decoder_depth=2, decoder_num_heads=4),
    "vit_tiny": dict(decoder_embed_dim=192, decoder_depth=4, decoder_num_heads=3),
    "vit_small": dict(decoder_embed_dim=384, decoder_depth=4, decoder_num_heads=6),
    "vit_base": PAPER_DECODER, "vit_large": PAPER_DECODER, "vit_huge": PAPER_DECODER,
}


@dataclass
class ModelConfig:
    preset: str = "vit_base"  # a key of PRESETS
    embed_dim: Optional[int] = None  # None: the preset's value
    depth: Optional[int] = None
    num_heads: Optional[int] = None
    patch_size: int = 16
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_path_rate: float = 0.0  # fine-tuning uses 0.1
    # masked autoencoder (pre-training)
    mask_ratio: float = 0.75  # fraction of patches hidden from the encoder
    decoder_embed_dim: Optional[int] = None  # None: the preset's (PRESET_DECODERS), filled in when the config is built
    decoder_depth: Optional[int] = None
    decoder_num_heads: Optional[int] = None
    norm_pix_loss: bool = True
    norm_pix_unbiased: bool = False  # False: LayerNorm-style biased variance (official 3D); True: original MAE
    # fine-tuning heads
    global_pool: bool = False  # classifier: False = class token, True = mean of patch tokens + fc_norm
    decoder: str = "unetr"  # 3D segmentation decoder: unetr | primus (light up-sampling, no skips; models/primus.py)
    feature_size: int = 16  # UNETR decoder width; Primus: the narrowest stage
    skip_blocks: Optional[List[int]] = None  # UNETR taps, 0-based block indices; None = evenly spaced
    deep_supervision: bool = False  # UNETR: auxiliary losses at 1/2, 1/4, ... resolution in training (nnU-Net's)
    channels_last: bool = False  # decoder convolutions in channels-last memory (faster for small decoders on a CPU)


@dataclass
class TrainConfig:
    epochs: int = 800
    warmup_epochs: int = 40
    batch_size: int = 6  # global batch per optimiser step, in images / volumes (the lr rule counts these)
    # gradient accumulation (the original MAE's accum_iter): micro-steps per optimiser step. Each process
    # runs micro-batches of batch_size / (accum_iter x processes), so the global batch, and the lr the
    # rule gives, stay the paper's whatever the number of GPUs
    accum_iter: int = 1
    base_lr: Optional[float] = 1.5e-4  # lr = base_lr * effective batch / 256
    lr: Optional[float] = None  # absolute lr; overrides the base_lr rule when set
    min_lr: float = 0.0
    weight_decay: float = 0.05
    betas: List[float] = field(default_factory=lambda: [0.9, 0.95])
    layer_decay: float = 1.0  # fine-tuning: 0.75
    clip_grad: Optional[float] = None
    save_every: int = 50  # epochs between periodic checkpoints (last.pt is written every epoch)
    save_every_steps: int = 0  # also write last.pt every N optimiser steps inside an epoch (0: off); resumes mid-epoch
    vis_every: int = 20  # pre-training: epochs between reconstruction figures
    eval_every: int = 1  # fine-tuning: epochs between validations
    log_every: int = 10  # steps between metrics.jsonl lines


@dataclass
class EvalConfig:
    split: str = "val"  # val | test | all
    overlap: float = 0.5  # sliding-window overlap (paper: 0.5)
    sw_batch_size: int = 4
    tta: bool = False  # 3D: mean of the logits over the window's mirror images (8 passes), as nnU-Net v2
    hd_percentile: float = 95.0


@dataclass
class RunConfig:
    dir: str = "runs/default"  # everything the run writes goes under this folder
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (the faster of bf16 and fp32 on this machine) | bf16 | fp16 (GPU) | fp32
    precision_probe: bool = True  # auto on a CPU with native bf16: measure fp32 vs bf16 (false: bf16, untimed)
    # false | true (continue from <dir>/checkpoints/last.pt) | auto (resume if this run has a checkpoint, else
    # start fresh: re-queued cluster jobs). Any: OmegaConf has no bool-or-string type; config.validate checks it
    resume: Any = False
