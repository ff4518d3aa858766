"""``make demo``: the whole method on the real data shipped in ``data/``, sized for a 2-core CPU.

For each sample (MSD hippocampus MRI, 3D segmentation; ChestX-ray14 radiographs, 2D multi-label
classification) it runs the commands a user runs: ``check-data``, ``pretrain`` (MAE), ``finetune`` from
the MAE *and* from scratch (the same config and budget, only ``init`` differs), ``evaluate`` of both on
the held-out test split, and for the volumes ``predict`` on one scan. It then prints MAE vs scratch
(per-class Dice / per-label AUC and their mean, mean ± std over seeds) with a verdict computed from the
numbers, and writes the same into ``runs/<sample>/report.md``. A second ``make demo`` reuses finished
runs and resumes interrupted ones.

    python -m selfmedmae.experiments.demo [hippocampus] [cxr14] [--seeds N]

Run folders: ``runs/<sample>/pretrain``, ``finetune`` (MAE) and ``finetune_scratch`` for seed 0, and
``finetune_seed<k>`` / ``finetune_scratch_seed<k>`` for the further seeds (``run.seed=k``).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

from selfmedmae.experiments.compare import compare, markdown
from selfmedmae.errors import UserError
from selfmedmae.runtime.cores import usable_cores
from selfmedmae.experiments.stages import check_data, evaluate, predict, train

DEMOS = {
    "hippocampus": dict(data="configs/_data/hippocampus.yaml", pre="configs/hippocampus/pretrain.yaml",
                        fine="configs/hippocampus/finetune.yaml", runs="runs/hippocampus",
                        fine_scratch="configs/hippocampus/finetune_scratch.yaml",
                        predict="data/Task04_Hippocampus/imagesTr/hippocampus_017.nii.gz"),
    "hippocampus-long": dict(data="configs/_data/hippocampus.yaml", pre="configs/hippocampus_long/pretrain.yaml",
                             fine="configs/hippocampus_long/finetune.yaml", runs="runs/hippocampus_long",
                             fine_scratch="configs/hippocampus_long/finetune_scratch.yaml",
                             predict="data/Task04_Hippocampus/imagesTr/hippocampus_017.nii.gz"),
    "cxr14": dict(data="configs/_data/cxr14_sample.yaml", pre="configs/cxr14_sample/pretrain.yaml",
                  fine="configs/cxr14_sample/finetune.yaml", runs="runs/cxr14_sample",
                  fine_scratch="configs/cxr14_sample/finetune_scratch.yaml", predict=None),
}


QUICK = ("hippocampus", "cxr14")  # what `make demo` runs; hippocampus-long is `make demo-long`


def fine_config(d: dict, init: str) -> tuple[str, list[str]]:
    """The fine-tuning config of ``init`` and the overrides it needs: a sample may ship its own tuned config
    for scratch (``fine_scratch``, chosen by ``selfmedmae tune`` on the validation split); without one,
    scratch runs the MAE's config with ``init=scratch``."""
    if init == "scratch":
        return (d["fine_scratch"], []) if d.get("fine_scratch") else (d["fine"], ["init=scratch"])
    return d["fine"], []


def run_dir(runs: str, init: str, seed: int) -> str:
    name = "finetune" if init == "mae" else "finetune_scratch"
    return f"{runs}/{name}" + (f"_seed{seed}" if seed else "")


def _newer(folder: Path, than: Path) -> bool:
    """Whether ``folder`` holds files written after ``than`` (a prediction of this very checkpoint)."""
    files = [p for p in folder.rglob("*") if p.is_file()] if folder.is_dir() else []
    return bool(files) and min(p.stat().st_mtime for p in files) >= than.stat().st_mtime


def machine() -> str:
    """One line: CPU model, the flags that decide bf16 vs fp32, threads, and the precision ``auto`` picks."""
    import torch

    from selfmedmae.runtime.autoprec import cpu_flags, cpu_model, probe_enabled
    from selfmedmae.runtime.device import resolve_precision

    model = cpu_model()
    wanted = [f for f in cpu_flags() if f in ("amx_bf16", "avx512_bf16", "avx512f", "avx2")] or \
        ["none of amx/avx512/avx2"]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    auto = resolve_precision("auto", device)
    if device.type == "cpu" and auto == "bf16" and probe_enabled():  # native bf16: each stage measures its model
        auto = "fp32 or bf16, whichever is faster for each stage's model (measured once, cached)"
    return (f"{model}; flags: {' '.join(wanted)}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
            f"run.precision=auto -> {auto} on {device.type}")


def _timed(times: list, title: str, seconds) -> None:
    if seconds is not None:
        times.append((title, seconds))


def run_demo(name: str, seeds: int, times: list[tuple[str, float]]) -> str:
    """Every stage of one sample; returns the comparison section (also written to report.md)."""
    from selfmedmae.config import load_config

    d = DEMOS[name]
    pre_cfg = load_config(d["pre"])
    _timed(times, f"{name}: check the data", check_data(d["data"], f"{name}: check the data"))
    title = f"{name}: MAE self pre-training"
    # The first from-scratch fine-tuning needs no MAE: it runs beside the pre-training, each on one core.
    # Small models use two cores poorly, so the pair finishes sooner than one after the other.
    beside = _start_beside(name, d) if usable_cores() >= 2 else None
    with _threads(1 if beside else None):
        _timed(times, title, train("pretrain", d["pre"], [], pre_cfg.run.dir, int(pre_cfg.train.epochs), title))
    if beside is not None:
        _timed(times, beside.title + " (beside the pre-training)", beside.wait())
    metrics: dict[str, list[dict]] = {"mae": [], "scratch": []}
    for seed in range(seeds):
        for init in ("mae", "scratch"):
            config, sets = fine_config(d, init)
            sets = sets + ([f"run.seed={seed}"] if seed else [])
            where = run_dir(d["runs"], init, seed)
            title = f"{name}: fine-tuning from {'the MAE' if init == 'mae' else 'scratch'} (seed {seed})"
            epochs = int(load_config(config, sets).train.epochs)
            _timed(times, title, train("finetune", config, sets, where, epochs, title))
            t0 = time.perf_counter()
            metrics[init].append(evaluate(where, "test", f"{name}: {init} (seed {seed}) on the test split",
                                          figures=3 if seed == 0 else 0))
            times.append((f"{name}: evaluation of {init} (seed {seed})", time.perf_counter() - t0))
    best = f"{run_dir(d['runs'], 'mae', 0)}/checkpoints/best.pt"
    out = Path(d["runs"]) / "predict"
    if d["predict"] and not _newer(out, Path(best)):
        _timed(times, f"{name}: prediction on a scan",
               predict(best, [d["predict"]], out, f"{name}: prediction on a scan", figures=True,
                       overwrite=out.is_dir() and any(out.iterdir())))  # the results of an older best.pt
    return report(name, d, compare(metrics["mae"], metrics["scratch"]), seeds)


@contextlib.contextmanager
def _threads(n: Optional[int]):
    """torch's intra-op threads set to ``n`` inside the block (unchanged for None)."""
    import torch

    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class _Beside:
    """A stage run in a child process (one thread), its output in a log file beside the run folders."""

    def __init__(self, title: str, code: str, log: Path):
        self.title, self.log, self.t0 = title, log, time.perf_counter()
        log.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        with open(log, "w") as fh:
            self.proc = subprocess.Popen([sys.executable, "-c", code], stdout=fh, stderr=subprocess.STDOUT, env=env)
        print(f"\n=== {title}: started beside the next stage, one core; its output goes to {log}", flush=True)

    def wait(self) -> float:
        code = self.proc.wait()
        tail = self.log.read_text(errors="replace").strip().splitlines()[-3:]
        print(f"=== {self.title}: " + (" / ".join(tail) if tail else "no output"), flush=True)
        if code != 0:
            raise UserError(f"stopped: '{self.title}' exited with code {code}; its log: {self.log}")
        return time.perf_counter() - self.t0


def _start_beside(name: str, d: dict) -> _Beside:
    from selfmedmae.config import load_config

    where = run_dir(d["runs"], "scratch", 0)
    config, sets = fine_config(d, "scratch")
    epochs = int(load_config(config, sets).train.epochs)
    title = f"{name}: fine-tuning from scratch (seed 0)"
    code = ("import sys; from selfmedmae.errors import UserError; from selfmedmae.experiments.stages import train\n"
            f"try: train('finetune', {config!r}, {sets!r}, {where!r}, {epochs}, {title!r})\n"
            "except UserError as e: print(f'selfmedmae: error: {e}', file=sys.stderr); sys.exit(e.exit_code)\n")
    return _Beside(title, code, Path(f"{where}.log"))


def report(name: str, d: dict, comparison, seeds: int) -> str:
    """Print MAE vs scratch and write ``runs/<sample>/report.md``."""
    runs = [run_dir(d["runs"], i, s) for s in range(seeds) for i in ("mae", "scratch")]
    scratch, sets = fine_config(d, "scratch")
    how = f"`{scratch}`" + (f" with `{' '.join(sets)}`" if sets else "")
    note = (f"Fine-tuning configs: MAE `{d['fine']}`, scratch {how}; pre-training `{d['pre']}`; "
            f"runs: {', '.join(f'`{r}`' for r in runs)}. Reproduce: `python -m selfmedmae.experiments.demo {name} "
            f"--seeds {seeds}`.")
    text = markdown(comparison, f"{name}: MAE vs scratch on the test split", note)
    path = Path(d["runs"]) / "report.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# Demo report: {name}\n\n{text}")
    print(f"\n{text}\nwrote {path}", flush=True)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m selfmedmae.experiments.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", metavar="SAMPLE",
                        help=f"{' | '.join(DEMOS)} (default: {' '.join(QUICK)})")
    parser.add_argument("--seeds", type=int, default=1, help="fine-tuning seeds per init (default 1)")
    args = parser.parse_args(argv if argv is not None else sys.argv[1:])
    names = args.names or list(QUICK)
    unknown = [n for n in names if n not in DEMOS]
    if unknown or args.seeds < 1:
        print(f"unknown demo {unknown[0]!r}; choose from {', '.join(DEMOS)}" if unknown else
              f"--seeds: {args.seeds} must be at least 1", file=sys.stderr)
        return 2
    times: list[tuple[str, float]] = []
    sections = []
    t_start = time.perf_counter()
    print(f"machine: {machine()}", flush=True)
    try:
        for name in names:
            sections.append(run_demo(name, args.seeds, times))
    except UserError as exc:
        print(f"demo {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"\n=== demo done in {(time.perf_counter() - t_start) / 60:.1f} min; wall times on this machine "
          f"({machine()}):")
    for title, seconds in times:
        print(f"  {seconds / 60:6.1f} min  {title}")
    print("\n".join(sections))
    print("Runs, checkpoints, figures and reports are under runs/.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
