"""Running the stages from Python to completion, resumably: what ``make demo`` and ``selfmedmae curve``
share. A finished run is reused, an interrupted one resumed, a fresh one started; a run folder that holds a
run of other settings is refused, never overwritten.

Each stage is called as its command calls it (the same config loading and stage function), and printed as
the command line that would run it.
"""
from __future__ import annotations

import gc
import json
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from omegaconf import OmegaConf

from selfmedmae.config import config_from_dict, load_config, to_dict
from selfmedmae.config.identity import run_differences
from selfmedmae.errors import Stopped, UserError


def resume_overrides(run_dir: str | Path) -> list[str]:
    """``run.resume=auto``: continue the run the folder holds (its settings were checked to be these), or
    start afresh where it holds none, e.g. after a kill before the first checkpoint."""
    return ["run.resume=auto"]


def epochs_done(run_dir: str | Path) -> int:
    """Epochs a run has finished (its last.pt's next epoch), 0 without one."""
    last = Path(run_dir) / "checkpoints" / "last.pt"
    if not last.is_file():
        return 0
    return int(torch.load(last, map_location="cpu", weights_only=True).get("epoch", 0))


def check_same_settings(config: str | Path, overrides: Sequence[str], run_dir: str | Path) -> None:
    """Refuse a run folder whose saved config.yaml differs from the one the stage would run now (so a
    reused result is always the result of these settings)."""
    saved_path = Path(run_dir) / "config.yaml"
    if not saved_path.is_file():
        return
    wanted = to_dict(load_config(config, [*overrides, f"run.dir={run_dir}"]))
    saved = OmegaConf.to_container(OmegaConf.load(saved_path), resolve=True)
    try:  # a config saved before a key existed has that key's default
        saved = to_dict(config_from_dict(saved, source=str(saved_path)))
    except UserError:
        pass  # keys this version does not know: compared as they are, so they show as differences
    diff = [k for k, _, _ in run_differences(saved, wanted)]
    if diff:
        shown = ", ".join(diff[:4]) + (f" and {len(diff) - 4} more" if len(diff) > 4 else "")
        raise UserError(f"{saved_path}: this run folder holds a run with other settings ({shown}); "
                        "move it away or choose another output folder (nothing was changed)")


def command(argv: Sequence[str], title: str, call: Callable[[], int]) -> float:
    """Run one stage (``call``, what the command ``selfmedmae ARGV`` runs); its wall time in seconds. A
    problem stops the whole job with the stage's own message, naming the stage."""
    print(f"\n=== {title}: selfmedmae {' '.join(map(str, argv))}", flush=True)
    t0 = time.perf_counter()
    try:
        code = call()
    except Stopped:
        raise
    except UserError as exc:
        raise UserError(f"stopped at '{title}': {exc}") from None
    finally:
        gc.collect()  # the finished stage's datasets, caches and loader workers go before the next one starts
    if code != 0:
        raise UserError(f"stopped: '{title}' exited with code {code}")
    return time.perf_counter() - t0


def check_data(config: str | Path, title: str) -> float:
    """``selfmedmae check-data CONFIG``: every problem of the data before any stage starts."""
    from selfmedmae.preflight import check_data_command

    return command(["check-data", config], title, lambda: check_data_command(config, []))


def predict(checkpoint: str | Path, inputs: Sequence[str], out: Path, title: str, figures: bool = False,
            overwrite: bool = False) -> float:
    """``selfmedmae predict CHECKPOINT INPUT... --out OUT``."""
    from selfmedmae.eval import predict as predict_stage

    argv = ["predict", checkpoint, *inputs, "--out", out] + (["--figures"] if figures else []) + (
        ["--overwrite"] if overwrite else [])
    return command(argv, title, lambda: predict_stage.run(checkpoint, list(inputs), out, probs=False,
                                                          figures=figures, overrides=[], overwrite=overwrite))


def stage_run(stage: str) -> Callable:
    """The ``run(cfg)`` of a training stage."""
    if stage == "pretrain":
        from selfmedmae.train import pretrain

        return pretrain.run
    from selfmedmae.train import finetune

    return finetune.run


def train(stage: str, config: str | Path, overrides: Sequence[str], run_dir: str | Path, epochs: int,
          title: str) -> Optional[float]:
    """Run ``pretrain`` / ``finetune`` until ``epochs`` are done; None when it already was."""
    check_same_settings(config, overrides, run_dir)
    final = Path(run_dir) / "checkpoints" / ("encoder.pt" if stage == "pretrain" else "best.pt")
    if epochs_done(run_dir) >= epochs and final.is_file():
        print(f"=== {title}: already done ({run_dir})", flush=True)
        return None
    sets = [*overrides, f"run.dir={run_dir}", *resume_overrides(run_dir)]
    return command([stage, config, *sets], title, lambda: stage_run(stage)(load_config(config, sets)))


def evaluate(run_dir: str | Path, split: str, title: str, figures: int = 0) -> dict:
    """The metrics.json of ``<run_dir>/eval_<split>``, evaluating the run's best.pt first when it is missing
    or older than that checkpoint."""
    run_dir = Path(run_dir)
    out, best = run_dir / f"eval_{split}", run_dir / "checkpoints" / "best.pt"
    metrics = out / "metrics.json"
    if not (metrics.is_file() and best.is_file() and metrics.stat().st_mtime >= best.stat().st_mtime):
        again = ["--overwrite"] if out.is_dir() and any(out.iterdir()) else []  # results of an older best.pt
        from selfmedmae.eval import evaluate as evaluate_stage

        sets = [f"eval.split={split}"]
        command(["evaluate", best, *sets, "--out", out, "--figures", figures, *again], title,
                lambda: evaluate_stage.run(best, sets, out=out, figures=figures, overwrite=bool(again)))
    return json.loads(metrics.read_text())
