"""The configuration reference, generated from the config schema: ``docs/config-reference.md``.

Every key of :class:`selfmedmae.config.Config` (found by walking its dataclasses) must have an entry in
:data:`ENTRIES` (what it does, and the paper's value where the paper or its official code fixes one), and
every entry must name a key; ``tests/test_docs.py`` fails otherwise, and also when the committed page differs
from :func:`render`. Regenerate the page with ``python -m selfmedmae.config.reference --write``.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from pathlib import Path
from typing import Any, Iterator, Optional

from selfmedmae.config import Config
from selfmedmae.config.sections import PRESET_DECODERS

PAGE = Path("docs") / "config-reference.md"

def _preset_decoders() -> str:
    """``vit_nano 48 / 2 / 4, ...``: the MAE decoder of each preset, presets with one decoder named together."""
    by_decoder: dict = {}
    for name, d in PRESET_DECODERS.items():
        sizes = f"{d['decoder_embed_dim']} / {d['decoder_depth']} / {d['decoder_num_heads']}"
        by_decoder.setdefault(sizes, []).append(f"`{name}`")
    return ", ".join(f"{' '.join(names) if len(names) == 1 else ', '.join(names[:-1]) + ' and ' + names[-1]} "
                     f"{sizes}" for sizes, names in by_decoder.items())


# key -> (what it does, the paper's value or None). "Paper" means the paper or its official code
# (docs/official-code.md); where they differ the text says which.
ENTRIES: dict[str, tuple[str, Optional[str]]] = {
    # --- top level -----------------------------------------------------------------------------------
    "stage": ("Which stage the config is for: `pretrain` (MAE) or `finetune`. The command decides what runs; "
              "this key records it in the saved config.", None),
    "task": ("`segmentation` (3D volumes, UNETR) or `classification` (2D images, ViT + linear head, "
             "multi-label with one sigmoid per class).", None),
    "init": ("Where fine-tuning starts: `scratch`, `mae:PATH` (a native MAE checkpoint, e.g. "
             "`runs/x/checkpoints/last.pt` or `encoder.pt`), `native:PATH`, `official:PATH` (an official "
             "SelfMedMAE `.pth.tar`), `imagenet:PATH` (a local timm-style ViT state dict). Only the encoder is "
             "loaded; see docs/checkpoints.md.", "mae (self pre-trained encoder)"),
    # --- model ----------------------------------------------------------------------------------------
    "model.preset": ("ViT size: `vit_nano`, `vit_micro`, `vit_tiny`, `vit_small`, `vit_base`, `vit_large`, "
                     "`vit_huge` (widths, depths and heads: `PRESETS` in `selfmedmae/config/sections.py`; the "
                     "MAE decoder of each: `model.decoder_embed_dim`).", "vit_base"),
    "model.embed_dim": ("Token width; `null` takes the preset's.", "768"),
    "model.depth": ("Number of transformer blocks; `null` takes the preset's.", "12"),
    "model.num_heads": ("Attention heads; `null` takes the preset's.", "12"),
    "model.patch_size": ("Patch side in pixels / voxels (square or cubic). Crops must be a multiple of it; "
                         "the segmentation decoders (UNETR, Primus) need a power of two (16: 4 up-sampling "
                         "stages, 8: 3).", "16"),
    "model.mlp_ratio": ("Hidden width of each block's MLP, as a multiple of `embed_dim`.", "4"),
    "model.qkv_bias": ("Bias on the fused query/key/value projection.", "true"),
    "model.drop_path_rate": ("Stochastic depth, rising linearly over the blocks to this value.",
                             "0 (pre-training), 0.1 (fine-tuning)"),
    "model.mask_ratio": ("Fraction of patches hidden from the encoder in MAE pre-training.",
                         "0.75 (the official scripts pass 0.125, docs/official-code.md §6.3)"),
    "model.decoder_embed_dim": ("Width of the MAE decoder; `null` takes the preset's decoder (width / blocks / "
                                f"heads): {_preset_decoders()}. The saved config.yaml holds the values used.",
                                "384 (3D), 256 (2D configs)"),
    "model.decoder_depth": ("Blocks of the MAE decoder; `null` takes the preset's (see "
                            "`model.decoder_embed_dim`).", "8"),
    "model.decoder_num_heads": ("Heads of the MAE decoder (they must divide its width); `null` takes the "
                                "preset's (see `model.decoder_embed_dim`).", "12 (3D), 8 (2D configs)"),
    "model.norm_pix_loss": ("MAE target: each patch normalised by its own mean and variance (else raw "
                            "pixels).", "true"),
    "model.norm_pix_unbiased": ("Variance of that normalisation: `false` biased, as the official 3D patch "
                                "norm; `true` unbiased, as the original 2D MAE.", "false (3D)"),
    "model.global_pool": ("Classifier input: `false` the class token; `true` the mean of the patch tokens "
                          "through `fc_norm`.", "false (class token)"),
    "model.decoder": ("3D segmentation decoder on the ViT: `unetr` (UNETR, skip connections from "
                      "`skip_blocks`) or `primus` (Primus-style, Wald et al. 2025: the final tokens on their "
                      "grid, log2(`patch_size`) stages of 2x transposed convolution + LayerNorm over channels + "
                      "GELU, widths halving from `embed_dim` but not below `feature_size`, then a 1x1x1 "
                      "convolution; no skip connections). Checkpoints record it; older ones load as UNETR.",
                      "unetr"),
    "model.feature_size": ("UNETR decoder width (channels of its finest stage); Primus: the narrowest width "
                           "its stages halve down to.", "16"),
    "model.channels_last": ("Segmentation only: run the decoder's convolutions in channels-last memory. Measured on "
                            "a 2-core AVX2 CPU: 1.35x faster training steps for the demo's small decoder "
                            "(feature_size 8, 32^3 crops), 1.35x slower for a 96^3 window of the paper's "
                            "(feature_size 16); measure before turning it on elsewhere.", None),
    "model.skip_blocks": ("UNETR skip connections: 0-based indices of the encoder blocks it taps; `null` "
                          "spaces them evenly (`[3, 6, 9]` for depth 12 and patch 16).",
                          "[3, 6, 9] (blocks 4, 7, 10 counted from 1)"),
    "model.deep_supervision": ("UNETR, training only: 1x1 heads on the decoder stages at 1/2, 1/4, ... of "
                               "the crop's resolution, each scored against the label downsampled by nearest "
                               "neighbour, with nnU-Net v2's weights (halving per stage, summing to 1; the "
                               "coarsest decoder stage, which nnU-Net weights 0, gets no head: patch 16 "
                               "supervises 1/2 and 1/4, patch 8 1/2). Inference uses the full-resolution "
                               "output only.", None),
    # --- data: what and where -------------------------------------------------------------------------
    "data.format": ("Dataset layout: `msd` (a `dataset.json`), `btcv`, `brats`, `csv` (your own CSV, 2D or "
                    "3D), `cxr14` (ChestX-ray14 release). See docs/own-data-3d.md and docs/own-data-2d.md.",
                    None),
    "data.root": ("The dataset folder. Relative to the folder the command runs in; data files "
                  "(`data.csv`, `data.dataset_json`, `data.split_file`) are relative to it.", None),
    "data.spatial_dims": ("`2` for images, `3` for volumes.", None),
    "data.in_chans": ("Image channels; checked against the files (BraTS: 4).", "1 (BTCV), 4 (BraTS)"),
    "data.dataset_json": ("MSD-style datalist, relative to `data.root`; its image and label paths are "
                          "relative to its own folder.", None),
    "data.csv": ("Your CSV (`format: csv`), relative to `data.root`; its paths are relative to the CSV's own "
                 "folder. For `cxr14`: the `Data_Entry` CSV (`null` finds it).", None),
    "data.image_column": ("CSV column holding the image path.", None),
    "data.label_column": ("3D CSV: column holding the label-map path (an empty cell: unlabelled case, "
                          "pre-training only).", None),
    "data.class_columns": ("2D CSV: the 0/1 columns that are the classes, in output order; `null` takes "
                           "`data.labels` when they are all columns, else every column holding only 0/1 "
                           "values (not the image, group or split columns).", None),
    "data.group_column": ("2D CSV: a column such as a patient id; the seeded split keeps each group in one "
                          "split.", None),
    "data.labels": ("Class names. 3D: background first, one per label value (`null`: from `dataset.json` "
                    "or the format's own list; a 3D CSV needs them). `cxr14`: the findings to predict.",
                    "the 14 ChestX-ray14 findings; the 13 BTCV organs"),
    "data.extra_unlabelled": ("Pre-training only: a folder, a glob, a `*.json` or a `*.csv` of extra "
                              "unlabelled images added to the training split (random crops).", None),
    "data.pretrain_on": ("`train`: pre-training sees the labelled train split plus every unlabelled image "
                         "(CSV rows without a label, a `dataset.json`'s `test` / `unlabelled` lists, "
                         "`data.extra_unlabelled`); `all`: also the validation and test images.", None),
    "data.label_fraction": ("Fine-tuning only: keep this seeded fraction (0, 1] of the labelled train cases "
                            "(nested: the 10 % subset lies inside the 25 % one for the same `label_seed`); "
                            "validation and test are unchanged. Recorded in `splits.json`.", None),
    "data.max_labelled": ("Fine-tuning only: at most this many labelled train cases (after "
                          "`label_fraction`); `null`: no limit.", None),
    "data.label_seed": ("Which subset `label_fraction` / `max_labelled` keep.", None),
    # --- data: splits ---------------------------------------------------------------------------------
    "data.split_file": ("JSON `{\"train\": [...], \"val\": [...], \"test\": [...]}` of case ids or image "
                        "paths, relative to `data.root`; cases it does not name are unused.", None),
    "data.btcv_split": ("BTCV's published split: `transunet` (18 train / 12 test) or `unetr` (24 / 6). "
                        "Validation is carved out of its train list.", "transunet"),
    "data.val_fraction": ("Share of the labelled training cases kept for validation (model selection), "
                          "seeded.", None),
    "data.test_fraction": ("Share of the labelled cases held out as the test split when the format has no "
                           "test list of its own, seeded.", None),
    "data.split_seed": ("Seed of the split; the same seed gives the same split on every machine.", None),
    # --- data: 3D preprocessing -----------------------------------------------------------------------
    "data.orientation": ("Axis codes every volume is reoriented to.", "RAS"),
    "data.spacing": ("Voxel size in mm to resample to (image bilinear, label nearest); `null` keeps the "
                     "file's grid.", "[1.5, 1.5, 2.0] (BTCV), [1, 1, 1] (BraTS)"),
    "data.intensity": ("Intensity scaling: `ct` (window `a_min`..`a_max` to 0..1, clipped), `nonzero` "
                       "(z-score per channel over non-zero voxels), `percentile` (clip to `percentiles`, then "
                       "0..1), `none`.", "ct (BTCV), nonzero (BraTS)"),
    "data.a_min": ("`ct`: lower end of the window (HU).", "-175"),
    "data.a_max": ("`ct`: upper end of the window (HU).", "250"),
    "data.percentiles": ("`percentile`: the clip range, in percent of each volume's intensities.", None),
    "data.crop_foreground": ("Crop each volume to its non-zero bounding box before cropping patches.",
                             "true (BTCV)"),
    "data.roi_size": ("Training crop and sliding-window size (voxels); a multiple of `model.patch_size`.",
                      "[96, 96, 96] (BTCV), [128, 128, 128] (BraTS)"),
    "data.num_samples": ("Random crops per volume and step (a step sees `batch_size x num_samples` crops).",
                         "4 (BraTS fine-tuning: 1)"),
    "data.pos_neg": ("Weights of label-guided crop centres: foreground, background.", "[1, 1]"),
    "data.augment": ("Fine-tuning's augmentations: `paper` (flips along each axis with `flip_prob`, a "
                     "90-degree rotation with `rot90_prob`, intensity scale and shift with `intensity_prob`) or "
                     "`nnunet` (nnU-Net v2's defaults: rotation +-30 degrees and scaling 0.7..1.4 with p 0.2 "
                     "each, taking context from the volume rather than padding; Gaussian noise, blur, "
                     "brightness, contrast, low resolution, gamma and inverted gamma; mirroring along each axis "
                     "with p 0.5; the three `*_prob` keys are then unused). Pre-training is unchanged. The "
                     "mapping to MONAI is in `selfmedmae/data/nnunet_3d.py`.", "paper"),
    "data.flip_prob": ("Probability of a flip along each axis.", "0.2"),
    "data.rot90_prob": ("Fine-tuning: probability of a 90-degree rotation in the first two axes.", "0.2"),
    "data.intensity_prob": ("Fine-tuning: probability of each random intensity scale and shift (+-0.1).",
                            "0.1"),
    "data.brats_et_label": ("BraTS: the MSD label that is the enhancing tumour; `2` reproduces the official "
                            "code's channel (docs/official-code.md §6.7).", "3 (MSD's map)"),
    "data.organ_subset": ("BTCV: label values of the organs reported as a subset (and used for model "
                          "selection); `null` = the paper's 8 organs.", "8 organs"),
    # --- data: 2D preprocessing -----------------------------------------------------------------------
    "data.image_size": ("2D: images are resized to this side after histogram equalisation.", "256"),
    "data.crop_size": ("2D: random crop for training, centre crop for evaluation; the model's input.", "224"),
    "data.hist_eq": ("2D: histogram equalisation before resizing.", "true"),
    "data.mean": ("2D: normalisation mean.", "0.5"),
    "data.std": ("2D: normalisation standard deviation.", "0.225"),
    # --- data: loading --------------------------------------------------------------------------------
    "data.cache": ("Decode and resample each volume once: `memory`, `disk` (under `cache_dir`), `none`.",
                   None),
    "data.cache_dir": ("Disk cache folder; `null` = `<run.dir>/cache`.", None),
    "data.num_workers": ("Data-loading worker processes; 0 loads in the training process, which is the faster "
                         "on two cores (benchmarks/RESULTS.md, \"Pre-training steps\").", None),
    "data.cache_rate": ("Memory cache: fraction of the training volumes held in memory.",
                        "1.0 (BraTS fine-tuning script: 0.5)"),
    # --- train ----------------------------------------------------------------------------------------
    "train.epochs": ("Length of the run in epochs (passes over the training split).",
                     "pre-training 10000 BTCV / 500 BraTS / 800 CXR14; fine-tuning 5000 / 300 / 100"),
    "train.warmup_epochs": ("Linear lr warm-up from 0, then a cosine decay to `min_lr`.",
                            "100 / 10 / 40 pre-training, 50 / 10 / 5 fine-tuning (BTCV / BraTS / CXR14)"),
    "train.batch_size": ("Global batch in images or volumes (not crops), over all processes and "
                         "accumulation steps.", "6 (3D), 256 (CXR14)"),
    "train.save_every_steps": ("Also write `last.pt` every N optimiser steps inside an epoch (0: off), so a "
                               "stopped run resumes mid-epoch, bit-exactly (long epochs, pre-emptible "
                               "clusters).", None),
    "train.accum_iter": ("Gradient accumulation: micro-batches per optimiser step (the batch is split "
                          "into them).", "1"),
    "train.base_lr": ("lr = base_lr x batch_size / 256 (the linear scaling rule).",
                      "1.5e-4 pre-training"),
    "train.lr": ("Absolute peak lr; overrides the `base_lr` rule when set.",
                 "8e-4 BTCV, 4e-4 BraTS, 1e-3 CXR14 fine-tuning (effective)"),
    "train.min_lr": ("Floor of the cosine decay.", "0"),
    "train.weight_decay": ("AdamW weight decay (not on biases, norms, tokens and position embeddings).",
                           "0.05"),
    "train.betas": ("AdamW betas.", "[0.9, 0.95]; CXR14 fine-tuning [0.9, 0.999]"),
    "train.layer_decay": ("Layer-wise lr decay: block i gets `layer_decay^(depth - i)` of the lr; 1 = off.",
                          "0.75 fine-tuning, 1 pre-training"),
    "train.clip_grad": ("Clip the gradient norm to this value; `null` = no clipping.", "null"),
    "train.save_every": ("Epochs between kept checkpoints `epoch_NNNN.pt` (`last.pt` is written every "
                         "epoch).", None),
    "train.vis_every": ("Pre-training: epochs between reconstruction figures (PNG and TensorBoard).", None),
    "train.eval_every": ("Fine-tuning: epochs between validations (and `best.pt` updates).",
                         "100 BTCV, 10 BraTS, 1 CXR14"),
    "train.log_every": ("Steps between `metrics.jsonl` lines, and between progress lines when the output "
                        "is not a terminal.", None),
    # --- eval -----------------------------------------------------------------------------------------
    "eval.split": ("Split `selfmedmae evaluate` scores: `val`, `test` or `all`.", None),
    "eval.overlap": ("Sliding-window overlap (3D inference).", "0.5"),
    "eval.sw_batch_size": ("Windows per forward pass in sliding-window inference.", "4"),
    "eval.tta": ("3D: test-time augmentation by mirroring, as nnU-Net v2: each sliding window's logits are "
                 "the mean of the network's logits on the window and on its mirror images along every "
                 "combination of the three axes, each flipped back (8 forward passes instead of 1). Used by "
                 "validation during training, `evaluate` and `predict`; an override such as `eval.tta=true` "
                 "on `evaluate` applies it to a model trained without.", None),
    "eval.hd_percentile": ("Percentile of the Hausdorff distance reported (mm).", "95"),
    # --- run ------------------------------------------------------------------------------------------
    "run.dir": ("Run folder: config.yaml, splits.json, metrics.jsonl, tensorboard/, checkpoints/, figures/. "
                "A folder holding a run is never overwritten.", None),
    "run.seed": ("Seed of initialisation, augmentation and masking.", None),
    "run.device": ("`auto` (the GPU when there is one), `cpu`, `cuda`, `cuda:N`.", None),
    "run.precision": ("`auto`, `bf16`, `fp16` (GPU, with a loss scaler) or `fp32`. `auto`: on a GPU bf16 "
                      "where it has it, else fp16; on a CPU without native bf16 (no AMX / AVX512-BF16) fp32; "
                      "on a CPU with native bf16 the faster of fp32 and bf16 for this model, input size and "
                      "batch, measured once (a few warm-up and timed forward + backward steps) and cached in "
                      "`${XDG_CACHE_HOME:-~/.cache}/selfmedmae/precision.json`; bf16 only when it is at "
                      "least 5 % faster. The choice and its reason are printed in one line and kept in "
                      "`last.pt` / `best.pt`, which `evaluate` and `predict` follow on the same kind of "
                      "machine (else they measure their own forward pass).", "fp16 autocast (official code)"),
    "run.precision_probe": ("`false`: `run.precision=auto` on a CPU with native bf16 takes bf16 without "
                            "measuring (the flags rule), for runs that must not depend on a timing; the "
                            "environment variable `SELFMEDMAE_PRECISION_PROBE=0` does the same. No effect "
                            "on an explicit precision, on GPUs or on CPUs without native bf16.", None),
    "run.resume": ("`true`: continue from `<run.dir>/checkpoints/last.pt` (model, optimiser, schedule, "
                   "random state); `auto`: continue when the folder holds this run's checkpoint, start "
                   "afresh when it holds none (re-queued cluster jobs); `false`: a folder holding a run "
                   "is refused.", None),
}


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return " | ".join(_type_name(a) for a in rest) + " | null"
    if origin in (list, typing.List):
        return f"list[{_type_name(args[0])}]" if args else "list"
    return getattr(tp, "__name__", str(tp))


def schema_keys(cls: type = Config, prefix: str = "") -> Iterator[tuple[str, str, Any]]:
    """(dotted key, type, default) of every leaf of the config schema, in declaration order."""
    hints = typing.get_type_hints(cls)
    instance = cls()
    for f in dataclasses.fields(cls):
        value = getattr(instance, f.name)
        if "default" in f.metadata:  # a default that depends on the machine: its rule, not this machine's value
            value = f.metadata["default"]
        if dataclasses.is_dataclass(value):
            yield from schema_keys(type(value), f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", _type_name(hints[f.name]), value


def _literal(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return value if value else '""'
    return str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


SECTIONS = [("", "Top level"), ("model.", "`model`: the ViT, the MAE decoder, the fine-tuning heads"),
            ("data.", "`data`: where the data is, its format, splits and preprocessing"),
            ("train.", "`train`: the optimisation recipe"), ("eval.", "`eval`: evaluation and inference"),
            ("run.", "`run`: the run folder, seed, device and precision")]


def render() -> str:
    """The Markdown page, from the schema and :data:`ENTRIES`."""
    keys = list(schema_keys())
    lines = [
        "# Configuration reference",
        "",
        "<!-- generated by `python -m selfmedmae.config.reference --write`; do not edit by hand -->",
        "",
        "Every key of the run config, with its type, its default (the value when no file or override sets it),",
        "the paper's value where the paper or its official code fixes one (see [official-code.md](official-code.md)),",
        "and what it does. A config file lists only what differs from these defaults; `_base_:` names files",
        "merged first (paths relative to the file); `key=value` on the command line overrides both.",
        "`selfmedmae config CONFIG [key=value ...]` prints the resolved config with the source of each value.",
        "",
        "Paths: `data.root` is relative to the folder the command runs in; data files (`data.csv`,",
        "`data.dataset_json`, `data.split_file`) are relative to `data.root`; image and label paths inside a",
        "data file are relative to the folder of that data file; absolute paths are used as they are.",
        "",
    ]
    for prefix, title in SECTIONS:
        rows = [k for k in keys if (k[0].startswith(prefix) if prefix else "." not in k[0])]
        lines += [f"## {title}", "", "| key | type | default | paper | what it does |", "| --- | --- | --- | --- | --- |"]
        for key, type_name, default in rows:
            what, paper = ENTRIES.get(key, ("(undocumented)", None))
            lines.append(f"| `{key}` | {_cell(type_name)} | `{_cell(_literal(default))}` | "
                         f"{_cell(paper or '')} | {_cell(what)} |")
        lines.append("")
    return "\n".join(lines)


def reference_problems(entries: Optional[dict] = None) -> list[str]:
    """Keys of the schema without an entry, and entries that name no key (empty when in step)."""
    entries = ENTRIES if entries is None else entries
    keys = [k for k, _, _ in schema_keys()]
    return ([f"{k}: config key without an entry in selfmedmae.config.reference.ENTRIES" for k in keys
             if k not in entries]
            + [f"{k}: entry in selfmedmae.config.reference.ENTRIES names no config key" for k in entries
               if k not in keys])


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m selfmedmae.config.reference",
                                     description="Print, write or check docs/config-reference.md.")
    parser.add_argument("--write", action="store_true", help=f"write {PAGE} (run from the repository root)")
    parser.add_argument("--check", action="store_true", help=f"exit 1 when {PAGE} is not up to date")
    args = parser.parse_args(argv)
    problems = reference_problems()
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    text = render()
    if args.write:
        PAGE.parent.mkdir(parents=True, exist_ok=True)
        PAGE.write_text(text)
        print(f"wrote {PAGE}")
    elif args.check:
        if not PAGE.is_file() or PAGE.read_text() != text:
            print(f"{PAGE} is out of date: python -m selfmedmae.config.reference --write", file=sys.stderr)
            return 1
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
