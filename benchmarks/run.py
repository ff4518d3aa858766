"""The whole performance benchmark in one command: ``make bench`` (or ``python benchmarks/run.py``).

Sections: matmul peaks (fp32, bf16), the MAE pre-training step against MONAI (``bench_mae.py``), the
attention backends and the norm-pix target in isolation, UNETR sliding-window inference against MONAI
(``bench_unetr.py``), the cache fill of BTCV-sized volumes (``bench_cache.py``), and on a CPU the demo's
pre-training steps per second against the data path before ``fast_crops.py`` (``bench_pretrain_steps.py``).
Prints each table and appends them, with the machine (CPU model and flags, threads), torch version, commit and date, to
``benchmarks/RESULTS.md`` (``--no-write`` to skip). ``--quick`` runs the same code at toy sizes.

Precision: each case runs in float32 and in bf16 autocast. On a CPU without native bf16 (no AMX, no
AVX512-BF16) bf16 is emulated: the run measures its matmul peak (about 70x below fp32 on an AVX2 EPYC)
and runs bf16 only for the demo-sized case, where it costs seconds; ``--bf16 all`` runs every case in
bf16 anyway (a ViT-B step then takes minutes), ``--bf16 none`` never. ``--precisions`` names the MAE
step's precisions outright instead (``fp16`` is autocast with a GradScaler, for GPUs), each for every case.

On a GPU (``--device cuda``, the default where there is one): ``--peak-size 8192`` measures the matmul peaks
at the size where a GPU reaches its rate, ``--cases 3d_b32_m0.75`` names a batch or mask ratio the list
lacks, ``--unetr-size`` the volume, and ``--results FILE`` appends the tables elsewhere than RESULTS.md
(``benchmarks/gpu_check.sh`` uses all four).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402

import bench_cache  # noqa: E402
import bench_mae  # noqa: E402
import bench_pretrain_steps  # noqa: E402
import bench_unetr  # noqa: E402
from benchlib import REPO, commit, load_avg, machine, matmul_peak, now, table  # noqa: E402
from selfmedmae.runtime.device import cpu_has_native_bf16  # noqa: E402


def log(*lines: str) -> None:
    print("\n".join(lines), flush=True)


def bf16_cases(args, device: torch.device, cases: list) -> list:
    if args.bf16 == "none":
        return []
    native = device.type == "cuda" or cpu_has_native_bf16()
    if args.bf16 == "all" or native:
        return cases
    return [c for c in cases if c.name.startswith("demo")]


def section_mae(args, device, peaks, out: list) -> float | None:
    """Returns the crops per second our fastest fp32 3D step at the largest batch consumes."""
    if args.cases:
        cases = [bench_mae.case_from_key(key, args.quick) for key in args.cases]
    else:
        cases = bench_mae.cases(args.quick)
    if args.precisions:
        plan = [(precision, cases) for precision in args.precisions]
    else:
        plan = [("fp32", cases), ("bf16", bf16_cases(args, device, cases))]
    rows = []
    for precision, chosen in plan:
        for case in chosen:
            # the peak again before each case: on a shared machine the best measurement is the closest
            # to what the hardware can do, and the step may have run in a quieter moment than the start
            for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
                peaks[name] = max(peaks[name], matmul_peak(dtype, device, args.peak_size))
            start = time.perf_counter()
            got = bench_mae.run_case(case, precision, device, args.steps, peaks)
            rows += got
            log(f"  {case.name} batch {case.batch} mask {case.mask_ratio} {precision}: "
                f"{time.perf_counter() - start:.0f} s, load {load_avg()}, fp32 peak so far "
                f"{peaks['fp32'] / 1e9:.1f} GFLOP/s",
                *table(bench_mae.HEADER, bench_mae.fmt_rows(got))[2:])
    skipped = [] if args.precisions else [c for c in cases if c not in bf16_cases(args, device, cases)]
    out += ["### MAE pre-training step (forward + backward + AdamW), ours vs MONAI MaskedAutoEncoderViT", "",
            f"Method: `benchmarks/bench_mae.py` docstring. Warm-up 1 step, then best of {args.steps} "
            "interleaved steps. `vs MONAI best`: MONAI's faster row (default or fused AdamW) / our step. "
            "FLOP floor: the FLOPs of our step (counted; MONAI's count is higher, it embeds every patch) at the "
            "best matmul peak measured so far in the run for the precision; "
            "`step / floor` = 1.0x would be matmul-peak speed. MFU: the row's counted FLOPs per second over the "
            "best matmul peak of the run in any precision.", ""]
    if skipped:
        out += [f"bf16 not run for: {', '.join(sorted({f'{c.name} b{c.batch} m{c.mask_ratio}' for c in skipped}))}: "
                f"this CPU has no native bf16 (bf16 matmul {peaks['bf16'] / 1e9:.1f} GFLOP/s against fp32 "
                f"{peaks['fp32'] / 1e9:.1f} GFLOP/s), so fp32 is the best precision here (`--bf16 all` forces it).",
                ""]
    out += table(bench_mae.HEADER, bench_mae.fmt_rows(rows)) + [""]
    out += ["Each model at its fastest precision and AdamW that ran:", ""]
    out += table(bench_mae.FASTEST_HEADER, bench_mae.fastest_rows(rows)) + [""]
    ours3d = [r for r in rows if r["model"] == "ours" and r["case"].startswith("3D") and "step" in r
              and r["precision"] == "fp32" and r["adamw"] == "fused"]
    if not ours3d:
        return None
    top = max(r["batch"] for r in ours3d)
    return max(r["batch"] / r["step"] for r in ours3d if r["batch"] == top)


def section_micro(args, device, out: list) -> None:
    attn = bench_mae.attention_micro(device, quick=args.quick)
    target = bench_mae.target_micro(device, quick=args.quick)
    out += ["### Attention backend and norm-pix target, in isolation", "",
            "One attention layer, forward + backward, best of 3 (ms); the step uses torch's default "
            "`scaled_dot_product_attention` choice (flash on CPU in float32).", ""]
    out += table(["where", "q/k/v shape", "flash (ms)", "math (ms)", "faster"], attn) + [""]
    out += table(["norm-pix target [8, 216, 4096]", "before (mean, var, sub, div)", "now (var_mean, rsqrt)",
                  "max abs diff"], [["time"] + target]) + [""]


def section_unetr(args, device, out: list) -> None:
    size = args.unetr_size or ([64, 64, 48] if args.quick else [192, 192, 128])
    rows, info = bench_unetr.run(args.quick, device, size, args.unetr_passes)
    log(*table(bench_unetr.HEADER, rows))
    out += ["### UNETR sliding-window inference, ours vs MONAI UNETR (same weights)", "",
            "Method: `benchmarks/bench_unetr.py` docstring; a one-window warm-up each, then "
            f"{args.unetr_passes} passes over the volume per model, alternating; best pass. "
            f"Same weights: max abs difference {info['weights_diff']:.1e} (encoder without the class token, "
            "and decoder on MONAI's features). Whole-volume logits differ by design (our encoder has the "
            f"class token of the official UNETR3D, MONAI's has none): max abs difference {info['output_diff']:.2f}. "
            "fp32 only on a CPU without native bf16 (conv3d in emulated bf16 is about 12x slower).", ""]
    out += table(bench_unetr.HEADER, rows) + [""]


def section_cache(args, out: list, step_rate: float | None) -> None:
    size = [128, 128, 40] if args.quick else [512, 512, 150]
    rows, info = bench_cache.run(args.volumes, size, args.crop_reps)
    log(*table(bench_cache.HEADER, rows))
    feed = (f" Our fastest 3D MAE step of the largest batch above consumes {step_rate:.1f} crops/s."
            if step_rate else "")
    out += ["### Cache fill per BTCV-sized volume, and crops per second", "",
            f"Method: `benchmarks/bench_cache.py` docstring. Fill, ours against MONAI's stock steps: "
            f"{info['fill_speedup']:.2f}x faster; cached labels and crop centres equal, cached images within "
            f"{info['image_max_abs_diff']:.1e} (HU window scaled to [0, 1]). Mean crops/s for one worker: "
            f"{info['crops_per_s']:.1f}.{feed}", ""]
    out += table(bench_cache.HEADER, rows) + [""]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="toy sizes: a smoke run of every section")
    parser.add_argument("--steps", type=int, default=2, help="measured steps per case (after 1 warm-up)")
    parser.add_argument("--cases", nargs="+", help="MAE cases to run (default: all), e.g. 3d_b8_m0.75 "
                        "3d_b2_m0.125 2d_b16_m0.75 demo; other batches and ratios too (3d_b32_m0.75)")
    parser.add_argument("--precisions", nargs="+", choices=("fp32", "bf16", "fp16"),
                        help="MAE step precisions, each for every case (default: fp32, and bf16 as --bf16 says)")
    parser.add_argument("--unetr-passes", type=int, default=2, help="passes per model over the UNETR volume")
    parser.add_argument("--unetr-size", type=int, nargs=3, help="volume for UNETR inference (default 192 192 128)")
    parser.add_argument("--bf16", choices=("auto", "all", "none"), default="auto")
    parser.add_argument("--sections", nargs="+", default=["mae", "micro", "unetr", "cache", "pretrain"],
                        choices=["mae", "micro", "unetr", "cache", "pretrain"])
    parser.add_argument("--volumes", type=int, default=1, help="BTCV-sized volumes to cache")
    parser.add_argument("--crop-reps", type=int, default=10)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice, one per core)")
    parser.add_argument("--peak-size", type=int, default=2048,
                        help="largest n of the n x n x n matmul peaks (default 2048; 8192 on a GPU)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "RESULTS.md",
                        help="markdown file the tables are appended to (default benchmarks/RESULTS.md)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    log(f"machine: {machine()}", f"commit {commit()}, {now()}, load {load_avg()}")
    peaks = {"fp32": matmul_peak(torch.float32, device, args.peak_size),
             "bf16": matmul_peak(torch.bfloat16, device, args.peak_size)}
    log(f"matmul peak: fp32 {peaks['fp32'] / 1e9:.1f} GFLOP/s, bf16 {peaks['bf16'] / 1e9:.1f} GFLOP/s")
    out = [f"## Performance run {now()}{' (--quick)' if args.quick else ''}", "",
           f"- Machine: {machine()}.", f"- Commit: {commit()}; command: `python benchmarks/run.py "
           f"{' '.join(argv if argv is not None else sys.argv[1:])}`.".replace(" `.", "`."),
           f"- Matmul peak measured in this run: fp32 {peaks['fp32'] / 1e9:.1f} GFLOP/s, "
           f"bf16 {peaks['bf16'] / 1e9:.1f} GFLOP/s (best square matmul).",
           f"- Load average at the start: {load_avg()} (other jobs share the cores: times are best-of-N).", ""]
    step_rate = None
    try:  # whatever finished is written, even when a later section fails
        if "mae" in args.sections:
            step_rate = section_mae(args, device, peaks, out)
        if "micro" in args.sections:
            section_micro(args, device, out)
        if "unetr" in args.sections:
            section_unetr(args, device, out)
        if "cache" in args.sections:
            section_cache(args, out, step_rate)
        if "pretrain" in args.sections and args.device == "cpu":
            lines = bench_pretrain_steps.measure(epochs=2 if args.quick else 20, reps=2 if args.quick else 10)
            out += ["#" + line if line.startswith("## ") else line for line in lines]
    finally:
        out += [f"Matmul peak, best over the run (used for the FLOP floors): fp32 {peaks['fp32'] / 1e9:.1f} "
                f"GFLOP/s, bf16 {peaks['bf16'] / 1e9:.1f} GFLOP/s.",
                f"Whole run: {time.perf_counter() - start:.0f} s, load average at the end {load_avg()}.", ""]
        log("", *out)
        if not args.no_write:
            path = args.results
            text = path.read_text() if path.is_file() else "# Benchmark results\n"
            path.write_text(text.rstrip("\n") + "\n\n" + "\n".join(out))
            log(f"appended to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
