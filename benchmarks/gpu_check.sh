#!/usr/bin/env bash
# One prepared check of selfmedmae on a CUDA machine, sized to finish within about 8 minutes:
#
#   bash benchmarks/gpu_check.sh             # on the GPU machine (make gpu-check)
#   bash benchmarks/gpu_check.sh --dry-run   # the same sections on the CPU at toy sizes (tests/test_gpu_check.py)
#
# Sections, each in its own process under `timeout` with its own time budget, so that one failure or hang
# does not stop the rest:
#   setup            install the wheels carried in .gpu-wheels/ (benchmarks/gpu_wheels.sh) into a scratch
#                    folder on PYTHONPATH; print nvidia-smi, the driver, torch, CUDA, cuDNN and package versions
#   cuda_tests       the tests marked `cuda` (tests/test_cuda.py); on a GPU a skipped test is a failure
#   mae_bench        benchmarks/run.py, MAE pre-training step, ViT-B/16 3D 96^3, batch 8 and 32, mask 0.75,
#                    ours vs MONAI's MaskedAutoEncoderViT in bf16, fp16 and fp32 (each model's fastest that
#                    runs is listed apart), MFU against the bf16 matmul peak (8192^3) measured in the run,
#                    peak memory
#   torchrun_resume  torchrun --nproc_per_node 1: an all_reduce over NCCL (gloo in the dry run), a few
#                    pre-training steps stopped by SIGTERM, then run.resume=true to the end
#   demo             the hippocampus demo with the CLI and configs/hippocampus/*.yaml: pre-train, fine-tune
#                    from the MAE and from scratch, evaluate both on the test split; times and Dice
#   unetr            benchmarks/run.py, sliding-window UNETR inference of a BTCV-sized 512 x 512 x 150
#                    volume, ours vs MONAI's UNETR with the same weights
#
# Output in $OUT (default ./gpu_check_out): results.md (a PASS / FAIL table, then each section's tables) and
# one <section>.log each; that is 7 files, within the 8 that come back from the device machine. Data and run
# folders go to $GPU_CHECK_WORK (default: a fresh folder under $TMPDIR or /tmp). Exit status 0 when every
# section passed, 1 otherwise.
#
# Settings (environment): PYTHON (default python3), OUT, GPU_CHECK_WORK, GPU_CHECK_SITE (where the wheels are
# installed, default $TMPDIR/gpu_check_site), GPU_WHEELS (default .gpu-wheels), GPU_CHECK_SECTIONS (a subset,
# space-separated), GPU_CHECK_BUDGET_<section> (seconds). The GPU budgets below are the plan for an 8-minute
# run, not measurements; the dry run's are hang guards only, wide enough for a slow shared CPU (its sections
# run at toy sizes on one thread, and a CPU's speed is not what the dry run checks).
set -u

usage() { sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//'; }

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DRY=0
SECTION=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --section) SECTION=${2:?--section needs a name}; shift ;;  # internal: run one section (see run_section)
    -h|--help) usage; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
cd "$REPO" || exit 2

ALL_SECTIONS="setup cuda_tests mae_bench torchrun_resume demo unetr"
declare -A BUDGET=([setup]=30 [cuda_tests]=45 [mae_bench]=90 [torchrun_resume]=45 [demo]=180 [unetr]=90)
if [ "$DRY" = 1 ]; then
  BUDGET=([setup]=150 [cuda_tests]=150 [mae_bench]=150 [torchrun_resume]=150 [demo]=150 [unetr]=150)
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
fi
PY=${PYTHON:-python3}
DEVICE=cuda
[ "$DRY" = 1 ] && DEVICE=cpu

# ---------------------------------------------------------------------------------------------- sections
# Each runs in a child `bash gpu_check.sh --section NAME`, its output in $OUT/NAME.log; what it adds to
# results.md goes to $FRAGMENTS/NAME.md.

section_setup() {
  local frag="$FRAGMENTS/setup.md" need=() have_wheels=0
  ls "$WHEELS"/*.whl >/dev/null 2>&1 && have_wheels=1
  if [ "$DRY" = 1 ] && "$PY" -c "import monai, nibabel, omegaconf, einops" 2>/dev/null; then
    echo "dry run: monai, nibabel, omegaconf and einops import already; no wheels installed"
  elif [ "$have_wheels" = 1 ]; then
    echo "installing $(ls "$WHEELS"/*.whl | wc -l) wheels from $WHEELS into $SITE"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
      "$WHEELS"/*.whl || return 1
  elif "$PY" -c "import monai, nibabel, omegaconf, einops" 2>/dev/null; then
    echo "no wheels in $WHEELS; the packages import already"
  else
    echo "monai, nibabel, omegaconf or einops is missing and $WHEELS holds no wheels:" \
         "run benchmarks/gpu_wheels.sh where pip can reach PyPI, and carry .gpu-wheels" >&2
    return 1
  fi
  {
    echo "### Machine and versions"; echo; echo '```'
    if command -v nvidia-smi >/dev/null; then
      nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1
    else
      echo "nvidia-smi: not found"
    fi
  } > "$frag"
  command -v nvidia-smi >/dev/null && nvidia-smi
  [ "$DRY" = 1 ] || need=(--need-cuda)
  "$PY" benchmarks/gpu_check.py env "${need[@]}" | tee -a "$frag"
  local rc=${PIPESTATUS[0]}
  printf '```\n\n' >> "$frag"
  return "$rc"
}

section_cuda_tests() {
  local txt="$WORK/cuda_tests.txt"
  "$PY" -m pytest -q -p no:cacheprovider -m cuda -rs tests/test_cuda.py 2>&1 | tee "$txt"
  local rc=${PIPESTATUS[0]}
  local summary
  summary=$(grep -E '(passed|failed|skipped|error|no tests ran)' "$txt" | tail -1)
  printf '### Tests marked cuda (tests/test_cuda.py)\n\n`%s`\n\n' "$summary" > "$FRAGMENTS/cuda_tests.md"
  if [ "$DRY" = 0 ] && grep -q skipped <<<"$summary"; then
    echo "a cuda test was skipped on the GPU machine" >&2
    return 1
  fi
  return "$rc"
}

section_mae_bench() {
  local frag="$FRAGMENTS/mae_bench.md"
  : > "$frag"
  if [ "$DRY" = 1 ]; then  # ViT-nano, one measured step; fp16 too, to run its GradScaler path
    "$PY" benchmarks/run.py --quick --device cpu --threads 1 --sections mae --cases 3d_b2_m0.75 3d_b4_m0.75 \
      --precisions bf16 fp16 fp32 --steps 1 --peak-size 256 --results "$frag"
  else
    "$PY" benchmarks/run.py --device cuda --sections mae --cases 3d_b8_m0.75 3d_b32_m0.75 \
      --precisions bf16 fp16 fp32 --steps 3 --peak-size 8192 --results "$frag"
  fi
}

section_torchrun_resume() {
  local epochs=20
  [ "$DRY" = 1 ] && epochs=4
  "$PY" benchmarks/gpu_check.py resume "$DEVICE" "$WORK/torchrun" "$FRAGMENTS/torchrun_resume.md" --epochs "$epochs"
}

section_demo() {
  if [ "$DRY" = 1 ]; then
    "$PY" benchmarks/gpu_check.py demo cpu "$WORK/demo" "$FRAGMENTS/demo.md" --dry-run --workers 0
  else
    "$PY" benchmarks/gpu_check.py demo cuda "$WORK/demo" "$FRAGMENTS/demo.md" --workers 8
  fi
}

section_unetr() {
  local frag="$FRAGMENTS/unetr.md"
  : > "$frag"
  if [ "$DRY" = 1 ]; then  # ViT-nano with 12 blocks, 32^3 windows over a 64 x 64 x 48 volume
    "$PY" benchmarks/run.py --quick --device cpu --threads 1 --sections unetr --unetr-size 64 64 48 \
      --unetr-passes 1 --peak-size 256 --results "$frag"
  else
    "$PY" benchmarks/run.py --device cuda --sections unetr --unetr-size 512 512 150 --unetr-passes 2 \
      --peak-size 8192 --results "$frag"
  fi
}

if [ -n "$SECTION" ]; then  # the child process of one section
  case " $ALL_SECTIONS " in *" $SECTION "*) ;; *) echo "unknown section '$SECTION'" >&2; exit 2 ;; esac
  echo "=== $SECTION ($([ "$DRY" = 1 ] && echo "dry run, CPU" || echo GPU)), $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  "section_$SECTION"
  exit $?
fi

# ------------------------------------------------------------------------------------------------- main
OUT=${OUT:-./gpu_check_out}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd) || exit 2
WORK=${GPU_CHECK_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")}
mkdir -p "$WORK" && WORK=$(cd "$WORK" && pwd) || exit 2
if [ -n "$(ls -A "$WORK")" ]; then
  echo "gpu_check.sh: $WORK is not empty (run folders are never overwritten); choose an empty GPU_CHECK_WORK" >&2
  exit 2
fi
SITE=${GPU_CHECK_SITE:-${TMPDIR:-/tmp}/gpu_check_site}
WHEELS=${GPU_WHEELS:-$REPO/.gpu-wheels}
FRAGMENTS="$WORK/fragments"
mkdir -p "$FRAGMENTS" "$SITE"
export OUT WORK SITE WHEELS FRAGMENTS PYTHON="$PY" PYTHONUNBUFFERED=1
export PYTHONPATH="$SITE:$REPO/src${PYTHONPATH:+:$PYTHONPATH}"
SECTIONS=${GPU_CHECK_SECTIONS:-$ALL_SECTIONS}
MODE=$([ "$DRY" = 1 ] && echo "dry run on the CPU (toy sizes)" || echo "GPU")
FLAG=$([ "$DRY" = 1 ] && echo "--dry-run" || true)

echo "gpu_check.sh: $MODE; logs and results in $OUT, work folder $WORK"
RESULTS="$OUT/results.md"
ROWS=()
FAILED=()
T_ALL=$(date +%s.%N)
for name in $SECTIONS; do
  budget=${BUDGET[$name]:-60}
  var="GPU_CHECK_BUDGET_$name"
  budget=${!var:-$budget}
  t0=$(date +%s.%N)
  # `timeout` signals the section's whole process group; -k: SIGKILL 10 s after the SIGTERM
  timeout -k 10 "$budget" bash "$0" --section "$name" $FLAG > "$OUT/$name.log" 2>&1
  rc=$?
  seconds=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  if [ "$rc" = 0 ]; then
    result=PASS
  elif [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    result="FAIL (over its ${budget} s budget)"
  else
    result="FAIL (exit $rc)"
  fi
  [ "$rc" = 0 ] || FAILED+=("$name")
  ROWS+=("| $name | $result | $seconds | $budget | $name.log |")
  printf '%-16s %-32s %6s s (budget %s s)\n' "$name" "$result" "$seconds" "$budget"
done
TOTAL=$(awk -v a="$T_ALL" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')

{
  echo "# selfmedmae GPU check"
  echo
  echo "- Mode: $MODE; command: \`bash benchmarks/gpu_check.sh $FLAG\`"
  echo "- Commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- src benchmarks 2>/dev/null || echo ' (uncommitted changes)'), $(date -u '+%Y-%m-%d %H:%M UTC'), total ${TOTAL} s"
  echo
  echo "| section | result | seconds | budget (s) | log |"
  echo "|---|---|---|---|---|"
  printf '%s\n' "${ROWS[@]}"
  echo
  if [ ${#FAILED[@]} = 0 ]; then echo "All sections passed."; else echo "Failed: ${FAILED[*]}."; fi
  echo
  for name in $SECTIONS; do
    [ -s "$FRAGMENTS/$name.md" ] && { cat "$FRAGMENTS/$name.md"; echo; }
  done
} > "$RESULTS"

echo "total ${TOTAL} s; results table: $RESULTS"
if [ ${#FAILED[@]} = 0 ]; then
  echo "gpu_check.sh: all sections PASS"
  exit 0
fi
echo "gpu_check.sh: FAIL: ${FAILED[*]}"
exit 1
