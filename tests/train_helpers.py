"""Tiny training runs for the tests: a synthetic MSD task and configs that train in seconds."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from selfmedmae.data.synthetic import make_msd

REPO = Path(__file__).resolve().parents[1]


def tiny_task(root: Path, n: int = 10) -> Path:
    return make_msd(root / "task", n=n, size=(20, 20, 20), seed=0, n_test=0)


def tiny_config(path: Path, data_root: Path, stage: str = "pretrain", **extra: str) -> Path:
    lines = [
        f"stage: {stage}", "task: segmentation",
        "data:", "  format: msd", f"  root: {data_root}", "  spacing: null", "  intensity: percentile",
        "  crop_foreground: false", "  roi_size: [16, 16, 16]", "  num_samples: 2", "  num_workers: 0",
        "  cache: memory", "  val_fraction: 0.2", "  test_fraction: 0.0",
        "model:", "  preset: vit_nano", "  patch_size: 8", "  decoder_embed_dim: 32", "  decoder_depth: 1",
        "  decoder_num_heads: 4", "  feature_size: 4",
        "train:", "  epochs: 5", "  warmup_epochs: 1", "  batch_size: 2", "  lr: 0.001", "  log_every: 1",
        "  save_every: 100", "  vis_every: 100",
        "run:", "  precision: fp32",
    ]
    if stage == "finetune":
        lines += ["model_extra_placeholder"]
    text = "\n".join(lines).replace("model_extra_placeholder", "")
    path.write_text(text + "\n")
    return path


def cli(*args: str, env: dict | None = None) -> subprocess.Popen:
    """The console command in a fresh process (as a user would run it)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "selfmedmae", *args], cwd=REPO, env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def state(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)


def records(run_dir: Path, kind: str) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("kind") == kind]
