"""Two nodes on one machine: two ``torchrun --nnodes 2 --node_rank {0,1} --nproc_per_node 1`` agents meet on
127.0.0.1 (gloo, CPU) and run ``selfmedmae reproduce`` through pre-training and fine-tuning (MAE and scratch)
of a tiny model; every checkpoint equals, up to the order of float sums, a one-process run with the same
global batch."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from selfmedmae.cli import main
from selfmedmae.data.synthetic import make_btcv
from selfmedmae.train.schedule import scaled_lr

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
TINY = ["model.preset=vit_nano", "model.patch_size=8", "model.decoder_embed_dim=32", "model.decoder_depth=1",
        "model.decoder_num_heads=4", "model.feature_size=4", "data.roi_size=[16,16,16]", "data.num_samples=1",
        "data.num_workers=0", "data.cache=none", "data.val_fraction=0.34", "train.batch_size=2",
        "train.epochs=2", "train.warmup_epochs=1", "run.precision=fp32", "run.device=cpu",
        "finetune:model.drop_path_rate=0.0"]  # drop path draws per process: not comparable across layouts
STAGES = ("pretrain", "finetune_mae/seed0", "finetune_scratch/seed0")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_close_weights(one: dict, two: dict, max_drift: float) -> None:
    """As tests/test_training.py: equal up to float reassociation; the attention key bias has an exactly
    zero gradient, where Adam turns float noise into steps of up to lr each (``max_drift``: lr x steps)."""
    assert one.keys() == two.keys()
    for key, x in one.items():
        y = two[key]
        if key.endswith("attn.qkv.bias"):
            third = x.shape[0] // 3
            assert (x[third:2 * third] - y[third:2 * third]).abs().max() <= max_drift
            x, y = torch.cat([x[:third], x[2 * third:]]), torch.cat([y[:third], y[2 * third:]])
        torch.testing.assert_close(y, x, rtol=1e-4, atol=1e-6, msg=key)


def test_two_nodes_pretrain_and_finetune_like_one_process(tmp_path):
    root = make_btcv(tmp_path / "btcv", n=6, size=(40, 40, 12), seed=1)
    args = ["btcv", f"data.root={root}", *TINY, "--only", "pretrain,finetune"]
    assert main(["reproduce", *args, "--out", str(tmp_path / "one")]) == 0

    port, out = free_port(), tmp_path / "two"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    nodes = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(rank),
         "--nproc_per_node", "1", "--master_addr", "127.0.0.1", "--master_port", str(port),
         "-m", "selfmedmae", "reproduce", *args, "--out", str(out)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for rank in (0, 1)]
    logs = [node.communicate(timeout=600)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], "\n\n".join(logs)

    for stage in STAGES:
        assert (out / "done" / (stage.replace("/", "__") + ".json")).is_file(), stage
        a = torch.load(tmp_path / "one" / stage / "checkpoints" / "last.pt", weights_only=True)
        b = torch.load(out / stage / "checkpoints" / "last.pt", weights_only=True)
        assert a["step"] == b["step"] > 0 and a["epoch"] == b["epoch"] == 2
        assert b["config"]["train"]["batch_size"] == 2  # the same global batch: 2 nodes x 1 volume
        t = b["config"]["train"]
        assert_close_weights(a["state_dict"], b["state_dict"], scaled_lr(t["base_lr"], 2, t["lr"]) * b["step"])
        end = [r for r in map(json.loads, (out / stage / "metrics.jsonl").read_text().splitlines())
               if r["kind"] == "end"][-1]
        assert len(end["weights_sha256"]) == 2 and len(set(end["weights_sha256"])) == 1  # replicas identical
    assert "evaluate" not in (out / "reproduce.log").read_text()  # --only: no evaluation stage ran
