"""The Python half of ``benchmarks/gpu_check.sh``: one subcommand per section that needs more than a command line.

    python benchmarks/gpu_check.py env [--need-cuda]
    python benchmarks/gpu_check.py resume DEVICE WORK FRAGMENT     # torchrun: pre-train, stop, resume
    python benchmarks/gpu_check.py collective BACKEND              # under torchrun: one all_reduce
    python benchmarks/gpu_check.py demo DEVICE WORK FRAGMENT [--dry-run]

Each section prints its log to stdout and writes its part of the results table, as markdown, to FRAGMENT;
it exits non-zero when the section failed. WORK is a scratch folder for data and run folders (never $OUT:
only a few files come back from the device machine's $OUT).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

HIPPOCAMPUS = REPO / "data" / "Task04_Hippocampus"

# The tiny pre-training of the torchrun section (the shape of tests/train_helpers.py's config).
TINY_PRETRAIN = """stage: pretrain
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
train:
  epochs: {epochs}
  warmup_epochs: 1
  batch_size: 2
  lr: 0.001
  log_every: 1
  save_every: 100
  save_every_steps: 1
  vis_every: 100
run:
  precision: auto
"""


def log(*lines: str) -> None:
    print("\n".join(lines), flush=True)


def env(need_cuda: bool) -> int:
    """Versions of torch, CUDA, cuDNN, the GPU and the packages the code imports; 1 when CUDA is needed and absent."""
    import platform

    import torch

    log(f"python {platform.python_version()} ({sys.executable})", f"torch {torch.__version__}, "
        f"built with CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
    for name in ("numpy", "scipy", "monai", "nibabel", "omegaconf", "einops", "yaml", "matplotlib", "tensorboard"):
        try:
            module = __import__(name)
            log(f"{name} {getattr(module, '__version__', '?')} ({Path(module.__file__).parent})")
        except ImportError as exc:
            log(f"{name}: not importable ({exc})")
            if name in ("monai", "nibabel", "omegaconf"):
                return 1
    if not torch.cuda.is_available():
        log("CUDA: not available" + (" (this check needs a GPU; --dry-run runs it on the CPU)" if need_cuda else ""))
        return 1 if need_cuda else 0
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        log(f"cuda:{i} {p.name}, {p.total_memory / 2 ** 30:.1f} GiB, compute capability {p.major}.{p.minor}, "
            f"{p.multi_processor_count} SMs")
    from selfmedmae.runtime.device import resolve_precision

    log(f"bf16 supported: {torch.cuda.is_bf16_supported()}; run.precision=auto -> "
        f"{resolve_precision('auto', torch.device('cuda'))}")
    return 0


def collective(backend: str) -> int:
    """Run by torchrun: join the process group with ``backend`` and check one all_reduce (sum of ranks + 1)."""
    import torch
    import torch.distributed as dist

    rank, world, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    device = torch.device(f"cuda:{local}") if backend == "nccl" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend)
    x = torch.full((4,), float(rank + 1), device=device)
    dist.all_reduce(x)
    dist.barrier()
    want = world * (world + 1) / 2
    ok = bool((x == want).all())
    log(f"rank {rank}/{world}: {backend} all_reduce on {device} gave {x.tolist()} (want {want}): "
        f"{'ok' if ok else 'WRONG'}")
    dist.destroy_process_group()
    return 0 if ok else 1


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", *args]


def _steps(run_dir: Path) -> list[int]:
    path = run_dir / "metrics.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
    return [r["step"] for r in records if r.get("kind") == "train"]


def resume(device: str, work: Path, fragment: Path, epochs: int) -> int:
    """torchrun --nproc_per_node 1: an all_reduce in the backend of ``device`` (NCCL on a GPU, gloo on the
    CPU), then a tiny pre-training on synthetic volumes with a checkpoint after every step, stopped by SIGTERM
    to torchrun once the first checkpoint exists, then the same command with ``run.resume=true`` to the end.
    Passes when the resumed run reaches the last epoch and metrics.jsonl repeats no step."""
    import torch

    from selfmedmae.data.synthetic import make_msd

    backend = "nccl" if device.startswith("cuda") else "gloo"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    lines = [f"### torchrun --nproc_per_node 1 on {device}", ""]
    t0 = time.perf_counter()
    code = subprocess.run(_torchrun(str(Path(__file__).resolve()), "collective", backend), env=env).returncode
    lines.append(f"- {backend} process group, one all_reduce: {'ok' if code == 0 else f'FAILED (exit {code})'} "
                 f"({time.perf_counter() - t0:.1f} s). The training below runs one process, where selfmedmae "
                 "creates no process group (it joins one only for WORLD_SIZE > 1).")

    root = make_msd(work / "task", n=10, size=(20, 20, 20), seed=0, n_test=0)
    config = work / "pretrain.yaml"
    config.write_text(TINY_PRETRAIN.format(root=root, epochs=epochs))
    run_dir = work / "run"
    last = run_dir / "checkpoints" / "last.pt"
    cmd = _torchrun("-m", "selfmedmae", "pretrain", str(config), f"run.dir={run_dir}", f"run.device={device}")
    log("$ " + " ".join(cmd))
    t0 = time.perf_counter()
    first = subprocess.Popen(cmd, env=env, cwd=REPO)
    while not last.exists() and first.poll() is None:
        time.sleep(0.02)
    stopped = first.poll() is None
    if stopped:
        first.send_signal(signal.SIGTERM)  # torchrun passes it on to its worker, which stops and says so
    first_code = first.wait()
    stopped_at = torch.load(last, map_location="cpu", weights_only=True) if last.is_file() else {}
    t_first = time.perf_counter() - t0
    stopped = stopped and stopped_at.get("epoch", epochs) < epochs  # SIGTERM did not land after the end
    ok = code == 0 and stopped
    lines.append(f"- pre-training, {epochs} epochs: stopped by SIGTERM after {t_first:.1f} s at epoch "
                 f"{stopped_at.get('epoch')}, step {stopped_at.get('step')} (torchrun exit {first_code})" if stopped
                 else f"- pre-training ended by itself (exit {first_code}) before it could be stopped: FAILED, "
                      "nothing to resume mid-way (raise the epochs)")
    if ok:
        t0 = time.perf_counter()
        log("$ " + " ".join(cmd + ["run.resume=true"]))
        second = subprocess.run(cmd + ["run.resume=true"], env=env, cwd=REPO).returncode
        end = torch.load(last, map_location="cpu", weights_only=True)
        steps = _steps(run_dir)
        unique = steps == sorted(set(steps))
        ok = second == 0 and end["epoch"] == epochs and end["step"] > stopped_at["step"] and unique
        lines.append(f"- resumed with run.resume=true: exit {second}, {time.perf_counter() - t0:.1f} s, ended at epoch "
                     f"{end['epoch']} of {epochs}, step {end['step']}; metrics.jsonl steps "
                     f"{'unique and increasing' if unique else 'REPEATED'}: {'ok' if ok else 'FAILED'}")
    fragment.write_text("\n".join(lines + [""]) + "\n")
    log(*lines)
    return 0 if ok else 1


def hippocampus_subset(dest: Path, n: int) -> Path:
    """The first ``n`` real hippocampus cases as an MSD task of their own (the dry run's data)."""
    import shutil

    meta = json.loads((HIPPOCAMPUS / "dataset.json").read_text())
    training = meta["training"][:n]
    for case in training:
        for key in ("image", "label"):
            target = dest / case[key]
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(HIPPOCAMPUS / case[key], target)
    meta.update(training=training, numTraining=len(training), test=[], numTest=0)
    (dest / "dataset.json").write_text(json.dumps(meta))
    return dest


def demo(device: str, work: Path, fragment: Path, dry_run: bool, workers: int) -> int:
    """The hippocampus demo with the CLI's commands and the shipped configs: pre-train, fine-tune from the MAE
    and from scratch (the same config and budget), evaluate both on the test split; each stage timed."""
    from selfmedmae.cli import main

    root = hippocampus_subset(work / "hippocampus", 10) if dry_run else HIPPOCAMPUS
    common = [f"run.device={device}", f"data.root={root}", f"data.num_workers={workers}"]
    pre_extra, fine_extra = [], []
    if dry_run:  # the same commands at toy sizes: one short epoch each
        pre_extra = ["train.epochs=1", "train.warmup_epochs=0", "train.batch_size=2", "train.vis_every=1"]
        fine_extra = ["train.epochs=1", "train.warmup_epochs=0", "train.batch_size=2", "train.eval_every=1"]
    runs = work / "runs"
    pre = runs / "pretrain"
    stages = [("pretrain (MAE)", ["pretrain", "configs/hippocampus/pretrain.yaml", f"run.dir={pre}", *common, *pre_extra])]
    for init, name in ((f"mae:{pre}/checkpoints/last.pt", "finetune"), ("scratch", "finetune_scratch")):
        stages.append((f"finetune from {'the MAE' if name == 'finetune' else 'scratch'}",
                       ["finetune", "configs/hippocampus/finetune.yaml", f"init={init}", f"run.dir={runs / name}",
                        *common, *fine_extra]))
    for name in ("finetune", "finetune_scratch"):
        stages.append((f"evaluate {name} on the test split",
                       ["evaluate", str(runs / name / "checkpoints" / "best.pt"), "eval.split=test",
                        f"run.device={device}", f"data.num_workers={workers}", "--out", str(runs / f"eval_{name}"),
                        "--figures", "0"]))
    times, failed = [], None
    for title, argv in stages:
        log("", f"=== {title}: selfmedmae {' '.join(argv)}")
        t0 = time.perf_counter()
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse
            code = exc.code if isinstance(exc.code, int) else 2
        except Exception as exc:  # noqa: BLE001 - the section reports any crash and the stages after it stop
            log(f"{type(exc).__name__}: {exc}")
            code = 1
        times.append((title, time.perf_counter() - t0, code))
        gc.collect()
        if code != 0:
            failed = title
            break
    lines = [f"### Hippocampus demo on {device}{' (dry run: 10 cases, one epoch per stage)' if dry_run else ''}", "",
             "| stage | seconds | exit |", "|---|---|---|"]
    lines += [f"| {title} | {seconds:.1f} | {code} |" for title, seconds, code in times]
    lines += [f"| total | {sum(t for _, t, _ in times):.1f} | |", ""]
    if failed is None:
        lines += ["| init | test cases | mean Dice | per class |", "|---|---|---|---|"]
        for name, label in (("finetune", "MAE"), ("finetune_scratch", "scratch")):
            m = json.loads((runs / f"eval_{name}" / "metrics.json").read_text())
            per_class = ", ".join(f"{c} {v['dice']:.3f}" for c, v in m["classes"].items())
            lines.append(f"| {label} | {m['n_cases']} | {m['mean']['dice']:.3f} | {per_class} |")
        lines.append("")
    else:
        lines += [f"Stopped at '{failed}': see the section's log.", ""]
    fragment.write_text("\n".join(lines) + "\n")
    log("", *lines)
    return 0 if failed is None else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("env")
    p.add_argument("--need-cuda", action="store_true")
    p = sub.add_parser("collective")
    p.add_argument("backend", choices=("nccl", "gloo"))
    for name in ("resume", "demo"):
        p = sub.add_parser(name)
        p.add_argument("device")
        p.add_argument("work", type=Path)
        p.add_argument("fragment", type=Path)
    sub.choices["resume"].add_argument("--epochs", type=int, default=4)
    sub.choices["demo"].add_argument("--dry-run", action="store_true")
    sub.choices["demo"].add_argument("--workers", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "env":
        return env(args.need_cuda)
    if args.command == "collective":
        return collective(args.backend)
    args.work.mkdir(parents=True, exist_ok=True)
    if args.command == "resume":
        return resume(args.device, args.work, args.fragment, args.epochs)
    return demo(args.device, args.work, args.fragment, args.dry_run, args.workers)


if __name__ == "__main__":
    sys.exit(main())
