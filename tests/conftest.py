"""Shared test helpers: where ../shared is (CI lays it beside the clone, read-only), tiny model args."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

# `run.precision=auto` takes the flags rule in the tests (no timing, no cache in the home folder): what a run
# computes must not depend on how busy the machine is. tests/test_auto_precision.py turns the measurement on.
os.environ.setdefault("SELFMEDMAE_PRECISION_PROBE", "0")

# Under pytest-xdist (`make test` runs one worker per core) each worker and the processes it starts get one
# thread, so that the workers share the cores instead of oversubscribing them.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or skip the test with the reason when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: the parity fixtures and samples live in ../shared beside the repo")
    return path


def tiny_encoder(dims: int = 3, in_chans: int = 1, size: int = 32, patch: int = 8, **kw) -> dict:
    return dict(img_size=[size] * dims, patch_size=patch, in_chans=in_chans, embed_dim=48, depth=2,
                num_heads=4, **kw)


@pytest.fixture(params=["fp32", "bf16"])
def precision(request) -> str:
    """Both precisions, whatever `run.precision=auto` picks on this machine: bf16 is emulated but correct on
    CPUs without native bf16, so the tests that compare inference outputs prove both everywhere."""
    return request.param
