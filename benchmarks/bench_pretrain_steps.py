"""Benchmark: the demo's pre-training steps per second, today's data path against a baseline commit's, in one run.

Method: ``selfmedmae pretrain configs/hippocampus/pretrain.yaml`` (vit_micro, 32^3 crops, 8 volumes x 2 crops
a step, the real hippocampus sample) for ``--epochs`` epochs, end to end through the command, once with
this checkout's code and once with ``--baseline``'s (a temporary git worktree of that commit, its own config
file), each in ``fp32`` and in ``auto`` (the precision the command picks on this machine; printed). Steps/s:
the training loop's own rate at its last step (the run's ``metrics.jsonl``: samples/s over batch size, from
the first step to the last, checkpoints and figures included; the cache fill before it is not). Beside it, in
the same run: the model's own step (forward, backward, fused AdamW on random crops of the same shape, best
of ``--reps`` after a warm-up) in each precision, and the data path alone (crops/s of the training loader in
the training process, for this checkout and the baseline). The runs go one after another: nothing else may
run on the machine meanwhile (the load average is printed with each row).

Baseline: by default the commit before ``src/selfmedmae/data/fast_crops.py`` was added (the data path before
the plain-torch crops). Run: ``python benchmarks/bench_pretrain_steps.py [--write]``; ``--write`` appends the
table to benchmarks/RESULTS.md under "Pre-training steps".
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from benchlib import REPO, commit, load_avg, machine, now, table  # noqa: E402
from selfmedmae.config import load_config  # noqa: E402

CONFIG = "configs/hippocampus/pretrain.yaml"
HEADING = "## Pre-training steps"

DATA_ONLY = """
import sys, time
from monai.data import list_data_collate
from selfmedmae.config import load_config
from selfmedmae.data import build
from selfmedmae.runtime.distributed import Dist
from selfmedmae.train.engine import make_loader
cfg = load_config(sys.argv[1], ["data.num_workers=0"])
dataset = build(cfg.data, sys.argv[2]).dataset("pretrain", train=True)
loader = make_loader(dataset, int(cfg.train.batch_size), Dist(), 0, 0, list_data_collate)
crops, start = 0, time.perf_counter()
for epoch in range(int(sys.argv[3])):
    loader.sampler.set_epoch(epoch); loader.dataset.set_epoch(epoch)
    for batch in loader:
        crops += batch["image"].shape[0]
print(crops / (time.perf_counter() - start))
"""

MODEL_ONLY = """
import sys, time, torch
from selfmedmae.config import load_config
from selfmedmae.models.factory import build_model, model_args
from selfmedmae.train.optim import build_optimizer
cfg = load_config(sys.argv[1], [])
model = build_model("mae", model_args("mae", cfg.model, list(cfg.data.roi_size), 1))
opt = build_optimizer(model, 1e-3, 0.05, (0.9, 0.95))
x = torch.randn(int(cfg.train.batch_size) * int(cfg.data.num_samples), 1, *cfg.data.roi_size)
best = {}
for name in ("fp32", "bf16"):
    times = []
    for i in range(int(sys.argv[2]) + 1):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=name == "bf16"):
            loss, _, _ = model(x)
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
        times.append(time.perf_counter() - start)
    best[name] = min(times[1:])
print(best["fp32"], best["bf16"])
"""


def baseline_commit() -> str:
    added = subprocess.check_output(["git", "log", "--diff-filter=A", "--format=%H", "--",
                                     "src/selfmedmae/data/fast_crops.py"], cwd=REPO, text=True).split()
    if not added:
        raise SystemExit("no commit adds src/selfmedmae/data/fast_crops.py here: name --baseline")
    return subprocess.check_output(["git", "rev-parse", "--short", added[-1] + "~1"], cwd=REPO, text=True).strip()


def python(src: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(src), "SELFMEDMAE_PRECISION_PROBE": "1"}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, text=True, capture_output=True, check=True)


def pretrain(src: Path, config: Path, precision: str, epochs: int, out: Path) -> tuple[float, str]:
    """(steps/s of the loop, the precision the run used)."""
    run_dir = out / f"run_{precision}"
    done = python(src, "-m", "selfmedmae", "pretrain", str(config), f"run.dir={run_dir}", f"train.epochs={epochs}",
                  f"run.precision={precision}", "train.vis_every=100000", "train.save_every=100000")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in records if r["kind"] == "train"][-1]
    batch = int(load_config(config, []).train.batch_size)
    used = precision
    for line in (done.stdout + done.stderr).splitlines():
        if "run.precision=auto -> " in line:
            used = line.split("run.precision=auto -> ", 1)[1].split(" on ")[0]
    return last["samples_per_s"] / batch, used


def measure(baseline: str | None = None, epochs: int = 20, reps: int = 10) -> list[str]:
    """The section's markdown lines (heading, method, table, model step, speed-up); prints rows as they come."""
    base = baseline or baseline_commit()
    head = commit()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(tree), base], cwd=REPO, check=True)
        try:
            sources = {"baseline": (tree / "src", tree / CONFIG), "this checkout": (REPO / "src", REPO / CONFIG)}
            model = python(REPO / "src", "-c", MODEL_ONLY, str(REPO / CONFIG), str(reps)).stdout.split()
            for name, (src, config) in sources.items():
                crops = float(python(src, "-c", DATA_ONLY, str(config), str(Path(tmp) / "cache"), "3").stdout)
                for precision in ("fp32", "auto"):
                    rate, used = pretrain(src, config, precision, epochs, Path(tmp) / name.replace(" ", "_"))
                    rows.append([name, precision, used, f"{rate:.2f}", f"{crops:.0f}", load_avg()])
                    print(*rows[-1], flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO)
    by = {(r[0], r[1]): float(r[3]) for r in rows}
    lines = [f"{HEADING}", "", f"{now()}, commit {head} against baseline {base}; {machine()}.", "",
             "Method: `benchmarks/bench_pretrain_steps.py` docstring (the demo's pre-training, "
             f"{epochs} epochs end to end per row).", ""]
    lines += table(["code", "run.precision", "ran in", "steps/s", "data alone (crops/s)", "load"], rows) + [""]
    lines += [f"Model step alone (16 crops of 32^3, best of {reps}): fp32 {float(model[0]) * 1e3:.0f} ms "
              f"({1 / float(model[0]):.1f} steps/s), bf16 {float(model[1]) * 1e3:.0f} ms "
              f"({1 / float(model[1]):.1f} steps/s).",
              "Speed-up over the baseline: " + ", ".join(
                  f"{p} {by[('this checkout', p)] / by[('baseline', p)]:.2f}x" for p in ("fp32", "auto")) + ".", ""]
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", help="commit to compare with (default: before fast_crops.py)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args(argv)
    print(machine(), flush=True)
    lines = measure(args.baseline, args.epochs, args.reps)
    print("\n".join(lines))
    if args.write:
        results = REPO / "benchmarks" / "RESULTS.md"
        results.write_text(results.read_text().rstrip("\n") + "\n\n" + "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
