"""What the paper's experiments cost: FLOPs of one training step of each shipped config's model, counted
with ``torch.utils.flop_counter`` on the real model (ViT-B/16, real crop sizes), the CPU time of one
crop's forward + backward on this machine (measured), and GPU-hours EXTRAPOLATED from the FLOPs.

    PYTHONPATH=src OMP_NUM_THREADS=2 python benchmarks/reproduce_cost.py [--time btcv/pretrain,...] [--out FILE]

GPU-hours = FLOPs per step x steps per epoch x epochs / sustained throughput, where the throughput is an
assumption (``--peak-tflops`` x ``--mfu``), not a measurement: see docs/experiments.md for the choice.
Validation during fine-tuning and the test evaluation are not counted.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from selfmedmae.config import load_config
from selfmedmae.models.factory import build_model, model_args

REPO = Path(__file__).resolve().parents[1]
# training items after the validation carve-out (data.val_fraction 0.2, data.test_fraction 0.2 for BraTS):
# BTCV 18 TransUNet train cases -> 14; MSD BraTS 484 labelled -> 290; ChestX-ray14 train_val_list 86,524
# images, 20 % of the patients to validation -> about 69,200 images (patient groups make it approximate)
TRAIN_ITEMS = {"btcv": 14, "brats": 290, "cxr14": 69_200}
EXPERIMENTS = [(d, s) for d in ("btcv", "brats", "cxr14") for s in ("pretrain", "finetune_mae")]


def build(dataset: str, stage: str):
    cfg = load_config(REPO / "configs" / dataset / f"{stage}.yaml", ["init=scratch"] if stage != "pretrain" else [])
    if cfg.data.spatial_dims == 2:
        size, n_out = [int(cfg.data.crop_size)] * 2, len(cfg.data.labels)
        kind = "mae" if stage == "pretrain" else "classifier"
    else:
        size = [int(s) for s in cfg.data.roi_size]
        n_out = 3 if dataset == "brats" else 14
        kind = "mae" if stage == "pretrain" else "unetr"
    model = build_model(kind, model_args(kind, cfg.model, size, cfg.data.in_chans, n_out))
    crops = int(cfg.data.num_samples) if cfg.data.spatial_dims == 3 else 1
    return cfg, kind, model, [1, int(cfg.data.in_chans), *size], crops


def step(model, kind: str, shape: list[int], device: str = "cpu") -> None:
    x = torch.randn(shape, device=device)
    if kind == "mae":
        loss = model(x)[0]
    else:
        loss = model(x).float().square().mean()
    loss.backward()


def measure(dataset: str, stage: str, time_it: bool) -> dict:
    # FLOPs from shapes alone: the model on the meta device computes nothing, so counting is instant
    with torch.device("meta"):
        cfg, kind, meta_model, shape, crops = build(dataset, stage)
    meta_model.train()
    # the math attention kernel: the fused kernels' FLOPs would not all be counted
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        step(meta_model, kind, shape, "meta")
    flops_crop = counter.get_total_flops()
    seconds = None
    if time_it:
        cfg, kind, model, shape, crops = build(dataset, stage)
        model.train()
        model.zero_grad(set_to_none=True)
        step(model, kind, shape)  # warm-up
        t = time.perf_counter()
        step(model, kind, shape)
        seconds = time.perf_counter() - t
    t_cfg = cfg.train
    steps_per_epoch = TRAIN_ITEMS[dataset] // int(t_cfg.batch_size)
    items_per_step = int(t_cfg.batch_size) * crops
    return {"dataset": dataset, "stage": stage, "model": kind, "input": shape[1:], "crops_per_item": crops,
            "batch_size": int(t_cfg.batch_size), "epochs": int(t_cfg.epochs), "steps_per_epoch": steps_per_epoch,
            "params_M": sum(p.numel() for p in meta_model.parameters()) / 1e6,
            "gflop_per_crop_fwd_bwd": flops_crop / 1e9,
            "tflop_per_step": flops_crop * items_per_step / 1e12,
            "cpu_seconds_per_crop_fwd_bwd": seconds}


def machine() -> dict:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model_line = next((ln.split(":", 1)[1].strip() for ln in flags.splitlines() if ln.startswith("model name")), "?")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout
    return {"cpu": model_line, "threads": torch.get_num_threads(), "amx": "amx_bf16" in flags,
            "avx512_bf16": "avx512_bf16" in flags, "avx2": "avx2" in flags, "torch": torch.__version__,
            "python": platform.python_version(), "commit": commit.strip(), "loadavg_1m_at_start": os.getloadavg()[0]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--time", default="all", help="experiments to time on the CPU: all, none, or a list such as "
                                                  "btcv/pretrain,cxr14/finetune_mae (FLOPs are always counted)")
    p.add_argument("--peak-tflops", type=float, default=312.0, help="GPU dense bf16 peak (A100: 312)")
    p.add_argument("--mfu", type=float, default=0.30, help="assumed fraction of the peak sustained")
    p.add_argument("--out", default=None, help="write the JSON here")
    args = p.parse_args()
    sustained = args.peak_tflops * args.mfu
    rows = []
    for dataset, stage in EXPERIMENTS:
        r = measure(dataset, stage, args.time == "all" or f"{dataset}/{stage}" in args.time.split(","))
        total_tflop = r["tflop_per_step"] * r["steps_per_epoch"] * r["epochs"]
        r["gpu_hours_extrapolated"] = total_tflop / sustained / 3600
        rows.append(r)
        print(json.dumps(r), flush=True)
    result = {"machine": {**machine(), "loadavg_1m_at_end": os.getloadavg()[0]}, "assumed_sustained_tflops": sustained, "peak_tflops": args.peak_tflops,
              "mfu": args.mfu, "rows": rows}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
