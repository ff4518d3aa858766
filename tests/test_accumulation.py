"""Gradient accumulation (``train.accum_iter``): a global batch of 2b cut into two micro-batches of b gives
the weights of one batch of 2b (up to float reassociation), and a run with accumulation that crashes
mid-way resumes to exactly the weights of an uninterrupted one."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import selfmedmae.train.finetune as finetune
import selfmedmae.train.pretrain as pretrain
import selfmedmae.train.trainer as trainer
from selfmedmae.config import load_config
from train_helpers import state, tiny_config, tiny_task

pytestmark = pytest.mark.slow
STAGES = {"pretrain": pretrain, "finetune": finetune}
# drop path off: its random draws depend on how a batch is cut, so the two runs would differ by design
COMMON = ["train.epochs=2", "train.batch_size=4", "model.drop_path_rate=0.0", "train.layer_decay=0.75",
          "run.device=cpu"]


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> Path:
    return tiny_task(tmp_path_factory.mktemp("data"), n=10)


def train(stage: str, task: Path, run_dir: Path, *extra: str) -> dict:
    cfg = load_config(tiny_config(run_dir.parent / f"{run_dir.name}.yaml", task, stage=stage),
                      [*COMMON, f"run.dir={run_dir}", *extra])
    assert STAGES[stage].run(cfg) == 0
    return state(run_dir)


@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_accum_iter_2_with_batch_b_equals_batch_2b(stage, task, tmp_path, monkeypatch):
    micro_batches = []
    real_plan = trainer.plan

    def spy(*args, **kwargs):
        micro_batches.append(real_plan(*args, **kwargs))
        return micro_batches[-1]

    monkeypatch.setattr(trainer, "plan", spy)
    whole = train(stage, task, tmp_path / "whole", "train.accum_iter=1")
    cut = train(stage, task, tmp_path / "cut", "train.accum_iter=2")
    assert [(p.micro_batch, p.accum_iter) for p in micro_batches] == [(4, 1), (2, 2)]
    assert whole["step"] == cut["step"] == 2 * (8 // 4)  # 8 training cases, global batch 4
    for key, a in whole["state_dict"].items():
        b = cut["state_dict"][key]
        if key.endswith("attn.qkv.bias"):  # see test_training: the key bias's gradient is exactly zero,
            third = a.shape[0] // 3        # so Adam turns float noise there into steps of up to lr
            assert (a[third:2 * third] - b[third:2 * third]).abs().max() <= 1e-3 * 3 * 2
            a, b = torch.cat([a[:third], a[2 * third:]]), torch.cat([b[:third], b[2 * third:]])
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6, msg=key)


def test_accumulation_resumes_bit_exactly(task, tmp_path, monkeypatch):
    full = train("pretrain", task, tmp_path / "full", "train.accum_iter=2")
    real, calls = trainer.train_one_epoch, []

    def dies_in_epoch_1(*args, **kwargs):  # args[4]: the epoch; its first time only
        calls.append(args[4])
        if args[4] == 1 and calls.count(1) == 1:
            raise RuntimeError("injected failure")
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, "train_one_epoch", dies_in_epoch_1)
    with pytest.raises(RuntimeError, match="injected failure"):
        train("pretrain", task, tmp_path / "broken", "train.accum_iter=2")
    assert state(tmp_path / "broken")["epoch"] == 1  # last.pt of the first epoch, then the crash
    resumed = train("pretrain", task, tmp_path / "broken", "train.accum_iter=2", "run.resume=true")
    assert resumed["step"] == full["step"]
    for key, value in full["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key
