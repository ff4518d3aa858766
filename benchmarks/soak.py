"""Soak test of the resume promise (not in the default suite): kill -9 a small pre-training and a small
fine-tuning at random moments, re-run the same command line with ``run.resume=auto`` each time, and compare
the final weights and optimiser state with an uninterrupted run, bit for bit.

    OMP_NUM_THREADS=1 python benchmarks/soak.py [--kills 10] [--seed 0] [--stages pretrain finetune]
    make soak

Tiny models on a synthetic MSD task, ``train.save_every_steps=1`` (a checkpoint after every step). Each
kill moment is random: after k = 0, 1 or 2 new checkpoints of the running process (drawn uniformly), plus
a uniform fraction of one step's time (measured on the reference run). k = 0 kills land in the start-up,
before the process has written anything or while it writes config and splits; the others inside steps,
saves and validations. Progress per start is bounded (at most about three steps), so ten kills fit in one
run. Writes ``soak.json`` in the work folder and prints a summary; exit 1 when any stage ends with
different weights.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from selfmedmae.data.synthetic import make_msd  # noqa: E402

CONFIG = """stage: {stage}
task: segmentation
data:
  format: msd
  root: {root}
  spacing: null
  intensity: percentile
  crop_foreground: false
  roi_size: [16, 16, 16]
  num_samples: 2
  num_workers: 0
  cache: memory
  val_fraction: 0.2
  test_fraction: 0.0
model:
  preset: vit_nano
  patch_size: 8
  decoder_embed_dim: 32
  decoder_depth: 1
  decoder_num_heads: 4
  feature_size: 4
  drop_path_rate: {drop_path}
train:
  epochs: {epochs}
  warmup_epochs: 1
  batch_size: 1
  lr: 0.001
  log_every: 1
  save_every: 100
  save_every_steps: 1
  vis_every: 100
run:
  precision: fp32
"""


def command(stage: str, cfg: Path, run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "selfmedmae", stage, str(cfg), f"run.dir={run_dir}", "run.resume=auto"]


def start(stage: str, cfg: Path, run_dir: Path, log) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    return subprocess.Popen(command(stage, cfg, run_dir), cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


def reference(stage: str, cfg: Path, run_dir: Path, log) -> tuple[float, float]:
    """Run uninterrupted; (seconds to the first checkpoint, seconds after it)."""
    t0 = time.perf_counter()
    proc = start(stage, cfg, run_dir, log)
    last, first = run_dir / "checkpoints" / "last.pt", None
    while proc.poll() is None:
        if first is None and last.exists():
            first = time.perf_counter() - t0
        time.sleep(0.02)
    if proc.returncode != 0:
        raise SystemExit(f"reference {stage} run failed (exit {proc.returncode}); see {log.name}")
    total = time.perf_counter() - t0
    first = first or total
    return first, total - first


def compare(a_dir: Path, b_dir: Path) -> dict:
    a = torch.load(a_dir / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(b_dir / "checkpoints" / "last.pt", weights_only=True)
    weights = a["state_dict"].keys() == b["state_dict"].keys() and all(
        torch.equal(v, b["state_dict"][k]) for k, v in a["state_dict"].items())
    opt = all(torch.equal(s[n], b["optimizer"]["state"][k][n]) for k, s in a["optimizer"]["state"].items()
              for n in s if torch.is_tensor(s[n]))
    return {"weights_bit_identical": bool(weights), "optimizer_bit_identical": bool(opt),
            "step": [int(a["step"]), int(b["step"])]}


def soak(stage: str, work: Path, task: Path, kills: int, rng: random.Random, epochs: int) -> dict:
    cfg = work / f"{stage}.yaml"
    cfg.write_text(CONFIG.format(stage=stage, root=task, epochs=epochs, drop_path=0.1 if stage == "finetune" else 0.0))
    log = open(work / f"{stage}.log", "w")
    ref_dir, soak_dir = work / f"{stage}_reference", work / f"{stage}_soak"
    startup, training = reference(stage, cfg, ref_dir, log)
    print(f"{stage}: reference run {startup:.1f} s to its first checkpoint, {training:.1f} s after it", flush=True)
    record = {"kills": 0, "kills_before_first_checkpoint": 0, "starts": 0, "resumed_starts": 0,
              "fresh_restarts": 0, "finished_before_kill": 0, "kill_moments": []}
    steps = torch.load(ref_dir / "checkpoints" / "last.pt", weights_only=True)["step"]
    step_time = training / max(int(steps) - 1, 1)
    last = soak_dir / "checkpoints" / "last.pt"
    while record["kills"] < kills:
        wait_saves, extra = rng.choice([0, 1, 2]), rng.uniform(0.0, step_time)
        delay = f"{wait_saves} checkpoint(s) + {extra:.1f} s"
        log.flush()
        before = (work / f"{stage}.log").stat().st_size
        stamp = last.stat().st_mtime_ns if last.exists() else None
        proc = start(stage, cfg, soak_dir, log)
        record["starts"] += 1
        seen = 0
        while proc.poll() is None and seen < wait_saves:
            now = last.stat().st_mtime_ns if last.exists() else None
            if now != stamp:
                seen, stamp = seen + 1, now
            time.sleep(0.005)
        t0 = time.perf_counter()
        while proc.poll() is None and time.perf_counter() - t0 < extra:
            time.sleep(0.005)
        if proc.poll() is not None:  # it finished (or failed) before the moment came
            if proc.returncode != 0:
                raise SystemExit(f"{stage}: a soak start failed with exit {proc.returncode}; see {log.name}")
            record["finished_before_kill"] += 1
            break
        had = (soak_dir / "checkpoints" / "last.pt").exists()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        record["kills"] += 1
        record["kills_before_first_checkpoint"] += int(not had)
        record["kill_moments"].append(delay)
        log.flush()
        with open(work / f"{stage}.log") as fh:
            fh.seek(before)
            text = fh.read()
        record["resumed_starts"] += int("resuming from" in text)
        record["fresh_restarts"] += int("starting it from the beginning" in text)
        if "resuming from" in text:
            what = "it had resumed"
        elif "starting it from the beginning" in text:
            what = "it had started afresh (run.resume=auto)"
        elif had and "training:" not in text:
            what = "killed in its start-up, before it said whether it resumes"
        else:
            what = "the first start"
        record.setdefault("killed_in_startup", 0)
        record["killed_in_startup"] += int(what.startswith("killed in"))
        print(f"{stage}: kill {record['kills']}/{kills} after {delay} ({what})", flush=True)
    if record["finished_before_kill"] == 0:  # the last start runs to the end
        before = (work / f"{stage}.log").stat().st_size
        proc = start(stage, cfg, soak_dir, log)
        record["starts"] += 1
        proc.wait()
        if proc.returncode != 0:
            raise SystemExit(f"{stage}: the final resume failed with exit {proc.returncode}; see {log.name}")
        log.flush()
        with open(work / f"{stage}.log") as fh:
            fh.seek(before)
            record["resumed_starts"] += int("resuming from" in fh.read())
    log.close()
    record.update(compare(ref_dir, soak_dir))
    return record


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--stages", nargs="+", default=["pretrain", "finetune"], choices=["pretrain", "finetune"])
    parser.add_argument("--work", default=None, help="work folder (default: a new temporary folder)")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="selfmedmae-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    task = make_msd(work / "task", n=6, size=(20, 20, 20), seed=0, n_test=0)
    rng = random.Random(args.seed)
    results = {"seed": args.seed, "kills_asked": args.kills, "epochs": args.epochs,
               "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "stages": {}}
    for stage in args.stages:
        results["stages"][stage] = soak(stage, work, task, args.kills, rng, args.epochs)
        print(f"{stage}: {json.dumps(results['stages'][stage])}", flush=True)
    (work / "soak.json").write_text(json.dumps(results, indent=2))
    ok = all(r["weights_bit_identical"] and r["optimizer_bit_identical"] for r in results["stages"].values())
    print(f"soak {'passed' if ok else 'FAILED'}: results in {work / 'soak.json'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
