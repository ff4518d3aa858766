"""``make demo``: the whole method on the real data shipped in ``data/``, sized for a 2-core CPU.

For each sample (MSD hippocampus MRI, 3D segmentation; ChestX-ray14 radiographs, 2D multi-label
classification) it runs the commands a user runs: ``check-data``, ``pretrain`` (MAE), ``finetune``
(from the MAE), ``evaluate`` on the held-out test split, and for the volumes ``predict`` on one scan.
Everything lands under ``runs/``. A second ``make demo`` resumes from what is there.

    python -m selfmedmae.demo [hippocampus] [cxr14]
"""
from __future__ import annotations

import sys
import time

from selfmedmae.cli import main as cli

DEMOS = {
    "hippocampus": dict(data="configs/_data/hippocampus.yaml", pre="configs/hippocampus/pretrain.yaml",
                        fine="configs/hippocampus/finetune.yaml", runs="runs/hippocampus",
                        predict="data/Task04_Hippocampus/imagesTr/hippocampus_017.nii.gz"),
    "cxr14": dict(data="configs/_data/cxr14_sample.yaml", pre="configs/cxr14_sample/pretrain.yaml",
                  fine="configs/cxr14_sample/finetune.yaml", runs="runs/cxr14_sample", predict=None),
}


def _step(title: str, argv: list[str], times: list[tuple[str, float]]) -> None:
    print(f"\n=== {title}: selfmedmae {' '.join(argv)}", flush=True)
    t0 = time.perf_counter()
    code = cli(argv)
    times.append((title, time.perf_counter() - t0))
    if code != 0:
        raise SystemExit(f"demo stopped: '{title}' exited with code {code}")


def _resume(run_dir: str) -> list[str]:
    # auto: continue this demo's own run when it has a checkpoint, start it when the folder holds nothing
    return ["run.resume=auto"]


def run_demo(name: str, times: list[tuple[str, float]]) -> None:
    d = DEMOS[name]
    pre_dir, fine_dir = f"{d['runs']}/pretrain", f"{d['runs']}/finetune"
    _step(f"{name}: check the data", ["check-data", d["data"]], times)
    _step(f"{name}: MAE self pre-training", ["pretrain", d["pre"], *_resume(pre_dir)], times)
    _step(f"{name}: fine-tuning from the MAE", ["finetune", d["fine"], *_resume(fine_dir)], times)
    best = f"{fine_dir}/checkpoints/best.pt"
    # --overwrite: a second `make demo` replaces the demo's own earlier results (never the inputs)
    _step(f"{name}: evaluation on the test split", ["evaluate", best, "eval.split=test", "--overwrite"], times)
    if d["predict"]:
        _step(f"{name}: prediction on a scan", ["predict", best, d["predict"], "--out",
                                                f"{d['runs']}/predict", "--figures", "--overwrite"], times)


def main(argv: list[str] | None = None) -> int:
    names = list(argv if argv is not None else sys.argv[1:]) or list(DEMOS)
    unknown = [n for n in names if n not in DEMOS]
    if unknown:
        print(f"unknown demo {unknown[0]!r}; choose from {', '.join(DEMOS)}", file=sys.stderr)
        return 2
    times: list[tuple[str, float]] = []
    for name in names:
        run_demo(name, times)
    print("\n=== demo done; wall times on this machine:")
    for title, seconds in times:
        print(f"  {seconds / 60:6.1f} min  {title}")
    print("Runs, checkpoints, figures and reports are under runs/.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
