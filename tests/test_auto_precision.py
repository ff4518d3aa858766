"""`run.precision=auto` by measurement (issue 18): the decision rule with a fake clock, the cache (hits, a
corrupt file, its key), the CPU without native bf16 that is never timed, the printed line, and the choice
kept in last.pt / best.pt that `evaluate` follows. No test asserts a real timing."""
from __future__ import annotations

import json

import pytest
import torch

from selfmedmae.cli import main
from selfmedmae.inference.forward import load_run
from selfmedmae.models.factory import build_model
from selfmedmae.runtime import autoprec, device
from selfmedmae.runtime.autoprec import Choice, auto_choice, cache_key, choose, measure, model_choice
from train_helpers import state, tiny_config, tiny_task

CPU = torch.device("cpu")


class FakeClock:
    """A clock that moves only when a fake step runs: fp32 steps take 1 s, bf16 steps ``ratio`` s."""

    def __init__(self, ratio: float):
        self.t, self.ratio, self.calls = 0.0, ratio, {"fp32": 0, "bf16": 0}

    def __call__(self) -> float:
        return self.t

    def step(self, name: str) -> None:
        self.calls[name] += 1
        self.t += 1.0 if name == "fp32" else self.ratio


@pytest.fixture
def probing(monkeypatch, tmp_path):
    """The measurement on (conftest turns it off), a CPU with native bf16, the cache under tmp_path."""
    monkeypatch.delenv(autoprec.ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: True)
    return tmp_path / "xdg" / "selfmedmae" / "precision.json"


@pytest.mark.parametrize("ratio, expected", [(0.8, "bf16"), (0.98, "fp32"), (1.3, "fp32")],
                         ids=["bf16-20%-faster", "bf16-2%-faster", "bf16-slower"])
def test_bf16_is_picked_only_when_it_is_faster_by_the_margin(ratio, expected):
    clock = FakeClock(ratio)
    times = measure(clock.step, clock, warmup=2, repeats=3, budget_s=1e9)
    assert times == {"fp32": pytest.approx(1.0), "bf16": pytest.approx(ratio)}
    assert clock.calls == {"fp32": 5, "bf16": 5}  # 2 warm-up + 3 timed rounds, interleaved
    assert choose(times) == expected


def test_a_slow_model_stops_at_the_budget_with_one_warm_up_and_one_timed_round():
    clock = FakeClock(0.5)
    slow = lambda name: (clock.step(name), setattr(clock, "t", clock.t + 9.0))  # noqa: E731: 10 s per fp32 step
    times = measure(slow, clock, warmup=2, repeats=3, budget_s=5.0)
    assert clock.calls == {"fp32": 2, "bf16": 2}
    assert times == {"fp32": pytest.approx(10.0), "bf16": pytest.approx(9.5)} and choose(times) == "bf16"


def test_the_cache_answers_the_second_time_without_measuring(probing):
    clock = FakeClock(1.5)
    first = auto_choice(CPU, "model-a", clock.step, clock=clock, budget_s=100)
    n = dict(clock.calls)
    second = auto_choice(CPU, "model-a", clock.step, clock=clock, budget_s=100)
    assert clock.calls == n and sum(n.values()) == 10  # the second answer came from the file
    assert first.name == second.name == "fp32" and not first.cached and second.cached
    assert second.measured == first.measured == {"fp32": 1.0, "bf16": 1.5}
    entries = json.loads(probing.read_text())["entries"]
    assert entries["model-a"]["choice"] == "fp32"
    auto_choice(CPU, "model-b", clock.step, clock=clock, budget_s=100)  # another key: measured again, both kept
    assert sum(clock.calls.values()) == 20 and set(json.loads(probing.read_text())["entries"]) == {"model-a", "model-b"}


@pytest.mark.parametrize("text", ["{not json", '["a list"]', "\xff\xfe"])
def test_a_corrupt_cache_is_ignored_with_one_warning_and_rewritten(probing, text):
    probing.parent.mkdir(parents=True)
    probing.write_bytes(text.encode("latin-1"))
    warnings: list = []
    clock = FakeClock(0.5)
    choice = auto_choice(CPU, "k", clock.step, clock=clock, warn=warnings.append)
    assert choice.name == "bf16" and not choice.cached
    assert len(warnings) == 1 and "ignoring the precision cache" in warnings[0] and "\n" not in warnings[0]
    assert json.loads(probing.read_text())["entries"]["k"]["measured"] == {"fp32": 1.0, "bf16": 0.5}


def test_the_cache_key_follows_the_machine_the_model_its_size_and_the_batch():
    args = {"encoder": {"embed_dim": 48, "depth": 2, "img_size": [16, 16, 16]}}
    bigger = {"encoder": {**args["encoder"], "embed_dim": 96}}
    key = cache_key("mae", args, [4, 1, 16, 16, 16])
    assert key == cache_key("mae", args, [4, 1, 16, 16, 16])
    assert key != cache_key("mae", bigger, [4, 1, 16, 16, 16])
    assert key != cache_key("mae", args, [8, 1, 16, 16, 16])
    assert key != cache_key("unetr", args, [4, 1, 16, 16, 16])
    assert key != cache_key("mae", args, [4, 1, 16, 16, 16], mode="infer")
    fields = json.loads(key)["machine"]
    assert set(fields) == {"cpu", "flags", "torch", "threads"} and fields["torch"] == torch.__version__
    assert key != cache_key("mae", args, [4, 1, 16, 16, 16], where={**fields, "threads": fields["threads"] + 1})


def test_a_cpu_without_native_bf16_stays_fp32_without_measuring(monkeypatch, tmp_path):
    monkeypatch.delenv(autoprec.ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: False)

    def never(name):
        raise AssertionError("measured on a CPU without native bf16")

    choice = auto_choice(CPU, "k", never)
    assert choice.name == "fp32" and choice.measured is None and not (tmp_path / "selfmedmae").exists()
    assert choice.line().startswith("run.precision=auto -> fp32 on cpu (no native bf16")


def test_the_probe_switch_gives_the_flags_rule_untimed(probing, monkeypatch):
    def never(name):
        raise AssertionError("measured with the probe off")

    assert auto_choice(CPU, "k", never, probe=False).name == "bf16"
    monkeypatch.setenv(autoprec.ENV, "0")
    choice = auto_choice(CPU, "k", never)
    assert choice.name == "bf16" and "not measured" in choice.line() and not probing.exists()


def test_the_printed_line_says_what_was_chosen_and_why():
    c = Choice("fp32", "cpu", "", {"fp32": 0.041, "bf16": 0.230}, cached=True)
    assert c.line() == "run.precision=auto -> fp32 on cpu (measured: fp32 0.041 s/step, bf16 0.230 s/step; cached)"
    c = Choice("bf16", "cpu", "", {"fp32": 3.72, "bf16": 2.29})
    assert c.line() == "run.precision=auto -> bf16 on cpu (measured: fp32 3.720 s/step, bf16 2.290 s/step)"


def test_the_real_measurement_of_a_tiny_model_leaves_it_as_it_was(probing):
    enc = dict(img_size=[16, 16, 16], patch_size=8, in_chans=1, embed_dim=32, depth=1, num_heads=4)
    args = {"encoder": enc, "decoder_embed_dim": 32, "decoder_depth": 1, "decoder_num_heads": 4}
    torch.manual_seed(0)
    model = build_model("mae", args)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    choice = model_choice(model, "mae", args, [2, 1, 16, 16, 16], CPU)
    assert choice.name in ("fp32", "bf16") and set(choice.measured) == {"fp32", "bf16"}
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng) and all(p.grad is None for p in model.parameters())
    assert model.training
    again = model_choice(model, "mae", args, [2, 1, 16, 16, 16], CPU)
    assert again.cached and again.name == choice.name


def test_finetune_records_the_choice_in_its_checkpoints_and_evaluate_follows_it(probing, tmp_path, monkeypatch,
                                                                                 capsys):
    calls: list = []

    def fp32_faster(step, clock=None, **kw):  # bf16 slower: the flags rule (bf16) would pick the other one
        calls.append(step)
        return {"fp32": 0.01, "bf16": 0.05}

    monkeypatch.setattr(autoprec, "measure", fp32_faster)
    root = tiny_task(tmp_path)
    cfg = tiny_config(tmp_path / "fine.yaml", root, stage="finetune")
    run_dir = tmp_path / "run"
    assert main(["finetune", str(cfg), f"run.dir={run_dir}", "run.precision=auto", "train.epochs=1",
                 "init=scratch"]) == 0
    out = capsys.readouterr().out
    assert "run.precision=auto -> fp32 on cpu (measured: fp32 0.010 s/step, bf16 0.050 s/step" in out
    assert len(calls) == 1
    best = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)
    for ckpt in (best, state(run_dir)):
        assert ckpt["precision"]["name"] == "fp32" and ckpt["precision"]["machine"] == autoprec.machine()
        assert ckpt["config"]["run"]["precision"] == "auto"  # the setting stays: resume compares it
    run = load_run(run_dir / "checkpoints" / "best.pt")
    assert run.precision == "fp32" and len(calls) == 1  # followed the record, measured nothing
    assert "the training run's choice" in capsys.readouterr().out
    assert load_run(run_dir / "checkpoints" / "best.pt", ["run.precision=bf16"]).precision == "bf16"
    # another kind of machine: evaluate measures its own forward pass (once; then the cache answers)
    other = {**best, "precision": {**best["precision"], "machine": {**best["precision"]["machine"], "cpu": "other"}}}
    torch.save(other, tmp_path / "other.pt")
    assert load_run(tmp_path / "other.pt").precision == "fp32" and len(calls) == 2
    assert load_run(tmp_path / "other.pt").precision == "fp32" and len(calls) == 2
    assert any('"mode": "infer"' in k for k in json.loads(probing.read_text())["entries"])
