"""What both stages do before and after their loop: the config check, the data (built once:
:func:`selfmedmae.data.build`, checked, its splits recorded), the run folder (lock, ownership, resume
decision: :mod:`selfmedmae.train.run_dir`), seeds, resume, what a stop or a failed start leaves behind,
and the closing summary line."""
from __future__ import annotations

import math
import os
import shutil
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from omegaconf import DictConfig
from torch import nn

from selfmedmae.config import save_config, to_dict
from selfmedmae.preflight import batch_problem, validate
from selfmedmae.data.facade import Data, build
from selfmedmae.errors import FailedAfterStart, Stopped, Terminated, UserError, raise_on_sigterm
from selfmedmae.runtime.autoprec import Choice, machine, model_choice, precision_of
from selfmedmae.runtime.device import Precision, precision
from selfmedmae.runtime.distributed import Dist, barrier, broadcast_flag, digests_across, setup
from selfmedmae.train.engine import DivergedError
from selfmedmae.runtime.log import MetricsLog
from selfmedmae.train.rng import seed_everything
from selfmedmae.train.run_dir import RunLock, decide_resume, held_files, refuse_data_folders
from selfmedmae.train.state import resume_training_state

WRITTEN_AT_START = ("config.yaml", "splits.json", "metrics.jsonl", "tensorboard", "checkpoints", "figures")
# what a start may create in run.dir before its first step (the disk cache when data.cache_dir is unset)
MADE_BEFORE_FIRST_STEP = WRITTEN_AT_START + ("cache",)


@dataclass
class Run:
    cfg: DictConfig
    ctx: Dist
    dir: Path
    prec: Precision
    data: Data
    lock: Optional[RunLock] = None
    created: list = field(default_factory=list)  # folders this start made, deepest first
    existing: Optional[set] = None  # names in run.dir before this start wrote: its ownership record
    fresh: bool = False  # decided to start afresh (not a resume): a failed start removes what it wrote
    started: bool = False  # the first optimiser step is under way: files stay, whatever happens
    prev_sigterm: Any = None  # the SIGTERM handler before this run (restored at its end)
    progress: Any = None  # the progress bar of its loop: closed at the end, so a message starts on its own line

    @property
    def checkpoints(self) -> Path:
        return self.dir / "checkpoints"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.pt"


def start(cfg: DictConfig, command: str) -> Run:
    """Config check, distributed setup, the run folder claimed (lock, ownership, resume decision), the data
    check, config and splits saved. Nothing is written before every check has passed; a refusal changes
    nothing in the folder. ``cfg.run.resume`` leaves as a plain bool (``auto`` decided here)."""
    validate(cfg, command)
    ctx = setup(cfg.run.device)
    run = Run(cfg, ctx, Path(cfg.run.dir), precision(cfg.run.precision, ctx.device), build(cfg.data, cfg.run.dir))
    failed: Optional[UserError] = None
    resume = False
    if ctx.is_main:
        try:
            resume = _claim(run)
        except UserError as exc:
            failed = exc
        except BaseException:
            _undo_start(run)
            raise
        if failed is not None:
            _undo_start(run)
    if broadcast_flag(failed is not None, ctx):
        raise failed or UserError("the start failed on rank 0")
    resume = broadcast_flag(resume, ctx)
    cfg.run.resume = resume
    run.fresh = ctx.is_main and not resume
    barrier(ctx)
    run.prev_sigterm = raise_on_sigterm()  # a scheduler's stop ends a run like Ctrl-C, with a message
    seed_everything(cfg.run.seed)
    return run


def _claim(run: Run) -> bool:
    """Rank 0: lock the folder, decide fresh or resume, check the data, then write config and splits."""
    cfg, run_dir = run.cfg, run.dir
    refuse_data_folders(run_dir, run.data)
    run.created = [p for p in [run_dir, *run_dir.parents] if not p.exists()]
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = RunLock(run_dir)
        note = lock.acquire()
        run.lock = lock
    except OSError as exc:
        raise UserError(f"run.dir {run_dir}: cannot write there ({exc.strerror or exc}); choose a writable "
                        f"folder (nothing was started)") from None
    if note:
        print(note)
    had = held_files(run_dir)
    resume = decide_resume(run_dir, cfg.run.resume, to_dict(cfg))
    run.data.check_or_raise(str(cfg.stage))
    problem = batch_problem(cfg, run.data)
    if problem:
        raise UserError(problem)
    run.fresh = not resume  # from here on this start writes; a fresh one that fails removes what it wrote
    if not resume and had:  # run.resume=auto: the same run, killed before its first checkpoint: start over
        _remove_run_files(run_dir, WRITTEN_AT_START)
        print(f"run.resume=auto: {run_dir} held no checkpoint of this run; starting it from the beginning")
    elif resume:
        print(f"resuming from {run.last}")
    run.existing = {p.name for p in run_dir.iterdir()}  # an undo removes only what this start adds
    run.checkpoints.mkdir(parents=True, exist_ok=True)
    for tmp in run.checkpoints.glob(".*.tmp"):  # half-written saves of a killed process (we hold the lock)
        tmp.unlink(missing_ok=True)
    _save_config_atomic(cfg, run_dir / "config.yaml")
    run.data.write_splits(str(cfg.stage))
    return resume


def _save_config_atomic(cfg: DictConfig, path: Path) -> None:
    """config.yaml through a temporary file: a kill mid-write never leaves half a config (auto compares it)."""
    tmp = path.with_name(f".{path.name}.tmp")
    save_config(cfg, tmp)
    os.replace(tmp, path)


def _remove_run_files(run_dir: Path, names) -> None:
    for name in names:
        p = run_dir / name
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        elif p.exists():
            p.unlink()


def _undo_start(run: Run) -> None:
    """A fresh run that failed before training: remove what its start wrote (run files and folders that were
    not in run.dir before it: :attr:`Run.existing`), the lock and the folders it made."""
    if run.fresh and run.lock is not None and run.existing is not None and run.dir.is_dir():
        _remove_run_files(run.dir, [n for n in MADE_BEFORE_FIRST_STEP if n not in run.existing])
    release(run)
    for folder in run.created:
        try:
            folder.rmdir()
        except OSError:
            break


def release(run: Run) -> None:
    """The run's end, however it ends: the lock goes, SIGTERM gets its earlier handler back."""
    if run.lock is not None:
        run.lock.release()
        run.lock = None
    if run.prev_sigterm is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, run.prev_sigterm)
        run.prev_sigterm = None


def _checkpoint_text(run: Run) -> Optional[str]:
    if not run.last.is_file():
        return None
    try:
        ckpt = torch.load(run.last, map_location="cpu", weights_only=True, mmap=True)
        return f"{run.last} (epoch {ckpt.get('epoch')}, step {ckpt.get('step')})"
    except Exception:
        return str(run.last)


def stopped(run: Run, exc: BaseException) -> BaseException:
    """What a stage raises instead of ``exc``: a failed start is undone; a stop or divergence says what is kept."""
    if run.progress is not None:
        run.progress.close()
    if run.ctx.is_main and not run.started:
        _undo_start(run)
    if isinstance(exc, (KeyboardInterrupt, Terminated)):
        how, code = ("stopped by SIGTERM", 143) if isinstance(exc, Terminated) else ("interrupted", 130)
        kept = _checkpoint_text(run) if run.started else None
        if kept:
            text = (f"{how}; the last checkpoint is {kept}: run the same command with run.resume=true "
                    f"(or run.resume=auto) to continue")
        elif run.started:
            text = f"{how} before the first checkpoint; run.resume=auto (or the same command) starts it again"
        else:
            text = f"{how} before training started; nothing was kept in {run.dir}"
        return Stopped(text, code)
    if isinstance(exc, DivergedError):
        kept = _checkpoint_text(run)
        tail = (f"the last good checkpoint {kept} is kept" if kept
                else "no checkpoint had been written yet")
        return DivergedError(f"{exc}; {tail} (lower the lr, or set train.clip_grad)")
    if run.started and type(exc) is UserError:  # e.g. a full disk at a checkpoint: not "nothing started"
        kept = _checkpoint_text(run)
        return FailedAfterStart(f"{exc}; training had started: "
                                + (f"the last checkpoint is {kept}" if kept else "no checkpoint was written yet"))
    return exc


def maybe_resume(run: Run, model: nn.Module, optimizer: torch.optim.Optimizer, kind: str) -> dict:
    """Restore from last.pt when run.resume is set; the start position otherwise."""
    if not run.cfg.run.resume:
        return {"epoch": 0, "step": 0, "step_in_epoch": 0}
    return resume_training_state(run.last, model, optimizer, run.prec.scaler, kind)


def auto_precision(run: Run, kind: str, model_args: dict, model: nn.Module, shape: list,
                   recorded: Optional[dict] = None) -> Precision:
    """``run.precision=auto`` decided for this model: a resumed run keeps the choice its ``last.pt`` recorded
    on the same kind of machine; otherwise rank 0 measures (or reads the cache, ``runtime.autoprec``) and
    every rank takes its answer. Printed in one line by rank 0."""
    ctx = run.ctx
    if recorded and recorded.get("machine") == machine() and recorded.get("device_type") == ctx.device.type:
        choice = Choice(str(recorded["name"]), ctx.device.type, "the choice recorded in last.pt, on this "
                        "kind of machine", machine=machine())
    elif ctx.is_main:
        choice = model_choice(model, kind, model_args, shape, ctx.device, bool(run.cfg.run.precision_probe))
    else:
        choice = None
    bf16 = broadcast_flag(ctx.is_main and choice is not None and choice.name == "bf16", ctx)
    if choice is None and ctx.device.type == "cuda":  # the other ranks: the GPU rule needs no timing
        choice = model_choice(model, kind, model_args, shape, ctx.device, probe=False)
    elif choice is None:  # the other ranks on CPUs: rank 0's answer (auto there is fp32 or bf16)
        choice = Choice("bf16" if bf16 else "fp32", ctx.device.type, "rank 0's choice", machine=machine())
    if ctx.is_main:
        print(choice.line())
    return precision_of(choice, ctx.device)


def check_replicas(run: Run, model: nn.Module, log: MetricsLog, step: int) -> None:
    """Log every rank's weights digest; replicas that drifted apart are an error, not a result."""
    digests = digests_across(model, run.ctx)
    log.write({"kind": "end", "step": step, "epoch": run.cfg.train.epochs - 1, "weights_sha256": digests})
    if len(set(digests)) > 1:
        raise RuntimeError(f"the {run.ctx.world_size} replicas ended with different weights: {digests}")


def loss_text(loss: float) -> str:
    return f"final loss {loss:.4f}" if math.isfinite(loss) else "already complete"
