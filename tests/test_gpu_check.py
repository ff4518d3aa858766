"""``bash benchmarks/gpu_check.sh --dry-run``: the GPU check's every section on the CPU at toy sizes, so that the
script keeps working between the runs on a GPU machine."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
SECTIONS = ["setup", "cuda_tests", "mae_bench", "torchrun_resume", "demo", "unetr"]


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash and timeout")
def test_gpu_check_dry_run_passes_every_section(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    env = {**os.environ, "OUT": str(out), "GPU_CHECK_WORK": str(work), "PYTHON": sys.executable,
           "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path)}
    env.pop("GPU_CHECK_SECTIONS", None)
    proc = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--dry-run"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=6 * 150 + 60)  # the dry run's hang guards
    logs = {p.name: p.read_text()[-3000:] for p in out.glob("*.log")} if out.is_dir() else {}
    assert proc.returncode == 0, proc.stdout + proc.stderr + "\n".join(f"--- {k}\n{v}" for k, v in logs.items())
    assert "all sections PASS" in proc.stdout

    results = (out / "results.md").read_text()
    rows = dict(re.findall(r"^\| (\w+) \| ([^|]+?) \|", results, flags=re.M))
    assert [name for name in rows if name in SECTIONS] == SECTIONS
    assert all(rows[name] == "PASS" for name in SECTIONS), rows
    assert "All sections passed." in results
    for name in SECTIONS:
        assert (out / f"{name}.log").is_file(), name
    assert len(list(out.iterdir())) <= 8  # what comes back from the device machine's $OUT

    # each section's own part of the table, with content
    assert "4 skipped" in results  # the cuda tests skip on the CPU
    assert "| 3D ViT-nano/16 96^3 (quick) | 4 | 0.75 | fp16 | ours | fused |" in results  # a batch from --cases
    assert "Each model at its fastest precision" in results and "MFU" in results
    assert "gloo process group, one all_reduce: ok" in results
    assert re.search(r"resumed with run\.resume=true: exit 0, .* ended at epoch 4 of 4", results)
    assert re.search(r"\| MAE \| 2 \| [01]\.\d{3} \| Anterior", results)  # the demo's test Dice
    assert re.search(r"\| ours \| 64x64x48 \| 32x32x32 \|", results)  # UNETR inference, ours and MONAI
    assert re.search(r"\| MONAI \| 64x64x48 \| 32x32x32 \|", results)
