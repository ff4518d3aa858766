"""What ``run.precision=auto`` picks, against fp32 and bf16 measured beside it (issue 18), in one run:

- the demo's MAE pre-training step (``configs/hippocampus/pretrain.yaml``: vit_micro, 32^3, batch 8 x 2 crops),
- the demo's UNETR fine-tuning step (``configs/hippocampus/finetune.yaml``: batch 4 x 1 crop),
- the 3D ViT-B/16 MAE step at 96^3, batch 8 (``configs/btcv/pretrain.yaml``).

Each case is the step ``auto`` itself times (:func:`selfmedmae.runtime.autoprec.training_step`: forward +
backward of the model on a random batch of the run's input size, no optimiser): first ``--steps`` timed
rounds of fp32 and bf16 interleaved after one warm-up (best of each), then ``auto`` as a run would resolve
it, with a fresh cache (its own, shorter, measurement, and its pick). ``agrees``: whether ``auto``'s pick is
the faster of the two columns (or within the 5 % margin of it). The machine line names the CPU flags that
decide (amx_bf16, avx512_bf16, avx2). ``--quick``: the same code at toy sizes (a smoke run; its numbers mean
nothing). Prints a Markdown table; nothing is written.

    OMP_NUM_THREADS=... python benchmarks/bench_auto_precision.py [--quick] [--steps 3] [--cases demo_pre demo_fine vitb_b8]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402

from selfmedmae.config import load_config  # noqa: E402
from selfmedmae.models.factory import build_model, model_args  # noqa: E402
from selfmedmae.runtime import autoprec  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
QUICK = ["model.preset=vit_nano", "model.decoder_embed_dim=32", "model.decoder_depth=1",
         "model.decoder_num_heads=4", "model.feature_size=4", "data.roi_size=[32,32,32]"]
# name: (config, kind, volumes per step, crops per volume)
CASES = {"demo_pre": ("configs/hippocampus/pretrain.yaml", "mae", 8, 2),
         "demo_fine": ("configs/hippocampus/finetune.yaml", "unetr", 4, 1),
         "vitb_b8": ("configs/btcv/pretrain.yaml", "mae", 8, 1)}
TITLES = {"demo_pre": "demo MAE pre-training step", "demo_fine": "demo UNETR fine-tuning step",
          "vitb_b8": "3D ViT-B/16 MAE 96^3, batch 8"}


def build(name: str, quick: bool):
    config, kind, volumes, crops = CASES[name]
    cfg = load_config(REPO / config, QUICK if quick else [])
    img = [int(s) for s in cfg.data.roi_size]
    args = model_args(kind, cfg.model, img, int(cfg.data.in_chans), None if kind == "mae" else 3)
    batch = (2 if quick else volumes) * crops
    return build_model(kind, args), kind, args, [batch, int(cfg.data.in_chans), *img]


def run_case(name: str, quick: bool, steps: int, device: torch.device) -> list:
    torch.manual_seed(0)
    model, kind, args, shape = build(name, quick)
    model.to(device).train()
    step = autoprec.training_step(model, shape, device)
    times = autoprec.measure(step, warmup=1, repeats=steps, budget_s=float("inf"))
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        choice = autoprec.model_choice(model, kind, args, shape, device, path=Path(tmp) / "precision.json")
        probe_s = time.perf_counter() - start
    faster = autoprec.choose(times)
    title = TITLES[name] + (" (quick)" if quick else "")
    agrees = "yes" if choice.name == faster or choice.device_type == "cuda" else "no"
    measured = (f"fp32 {choice.measured['fp32']:.3f}, bf16 {choice.measured['bf16']:.3f}"
                if choice.measured else "not measured")
    return [title, f"{shape}", f"{times['fp32']:.3f}", f"{times['bf16']:.3f}",
            f"{times['fp32'] / times['bf16']:.2f}x", choice.name, measured, f"{probe_s:.1f}", agrees]


HEADER = ["case", "input [batch, C, *S]", "fp32 s/step", "bf16 s/step", "bf16 speed-up", "auto picks",
          "auto's own measurement (s/step)", "auto's probe (s)", "agrees"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="toy sizes: a smoke run")
    parser.add_argument("--steps", type=int, default=3, help="timed rounds per case after one warm-up")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    os.environ.pop(autoprec.ENV, None)  # this benchmark is about the measurement: never skip it
    where = autoprec.machine()
    print(f"machine: {where['cpu']}; flags: {' '.join(where['flags']) or 'none of ' + ' '.join(autoprec.FLAGS)}; "
          f"native bf16: {'yes' if autoprec._device.cpu_has_native_bf16() else 'no'}; torch {where['torch']}, "
          f"{where['threads']} threads; device {device}", flush=True)
    rows = [run_case(name, args.quick, args.steps, device) for name in args.cases]
    print("| " + " | ".join(HEADER) + " |")
    print("|" + " --- |" * len(HEADER))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
