"""A run folder belongs to one run: a lock while a process writes it, refusal of a folder that already holds a
run, and the ``run.resume`` decision (``false`` | ``true`` | ``auto``) with its config comparison.

* **Lock.** ``<run.dir>/.lock`` holds ``pid host``; a heartbeat thread touches it every
  :data:`HEARTBEAT_S` seconds. A second process is refused (exit 2) while the lock is live. A lock is stale,
  and taken over with a note, when its process is gone (same host), or when it has not been touched for
  :data:`STALE_S` seconds (another host: a job killed on a pre-empted node).
* **Ownership.** A folder holding any of :data:`RUN_FILES` holds a run: refused unless ``run.resume`` says
  to continue it. Nothing in it is changed by a refusal.
* **Resume.** ``true``: continue from ``checkpoints/last.pt`` (refused if absent). ``auto``: continue when
  ``last.pt`` exists, start fresh when the folder holds nothing or only the files of this same run killed
  before its first checkpoint (same settings). Either way the settings that change the result
  (everything except :data:`selfmedmae.config.identity.NEUTRAL_KEYS`) must equal the saved ones, or the resume is refused before anything
  is written.
"""
from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, Optional

import torch
import yaml

from selfmedmae.config.identity import run_differences
from selfmedmae.errors import UserError
from selfmedmae.models.checkpoint import read_native
from selfmedmae.train.state import require_checkpoint

LOCK = ".lock"
HEARTBEAT_S = 30.0
STALE_S = 300.0
RUN_FILES = ("config.yaml", "splits.json", "metrics.jsonl", "checkpoints", "tensorboard", "figures")


def _data_folders(data: Any) -> set[Path]:
    """The folders holding the dataset's listed files (images, labels, unlabelled extras)."""
    folders = set()
    for split, stage in (("all", "finetune"), ("pretrain", "pretrain")):
        try:
            items = data.items(split, stage)
        except (UserError, OSError, ValueError, KeyError):  # the data check reports bad data afterwards
            continue
        for item in items:
            for key in ("image", "label"):
                values = item.get(key) if isinstance(item, dict) else None
                for value in values if isinstance(values, (list, tuple)) else [values]:
                    if isinstance(value, (str, os.PathLike)):
                        folders.add(Path(value).resolve().parent)
    return folders


def refuse_data_folders(run_dir: Path, data: Any) -> None:
    """A run folder is never a folder of the dataset's files, nor inside one (below ``data.root`` itself,
    which may hold ``runs/``): config, events and checkpoints would land among the images or label maps."""
    here = run_dir.resolve()
    root = Path(str(data.cfg.root)).resolve() if getattr(data.cfg, "root", None) else None
    for folder in sorted(_data_folders(data)):
        if here == folder or (folder != root and folder in here.parents):
            raise UserError(f"run.dir {run_dir}: is {'' if here == folder else 'inside '}{folder}, a folder of "
                            f"the dataset's files (data.root {data.cfg.root}); a run writes its config, events "
                            f"and checkpoints there. Choose a run.dir outside the data folders (nothing was written)")


def held_files(run_dir: Path) -> list[str]:
    """The run files in ``run_dir`` (an empty ``checkpoints/`` does not count)."""
    found = []
    for name in RUN_FILES:
        p = run_dir / name
        if p.is_file() or (p.is_dir() and any(p.iterdir())):
            found.append(name)
    return found


# ------------------------------------------------------------------------------------------------ lock
def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """``<run.dir>/.lock`` for the life of a run; :meth:`release` (idempotent) removes it."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / LOCK
        self.text = f"{os.getpid()} {socket.gethostname()}\n"
        self.stop = threading.Event()
        self.thread: Optional[threading.Thread] = None
        self.held = False

    def acquire(self) -> Optional[str]:
        """Take the lock; returns a note when a stale lock was taken over. Raises UserError when it is live."""
        note = None
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                stale = self._stale()
                if stale is None:
                    continue  # vanished meanwhile: try again
                if not stale[0]:
                    raise UserError(f"{self.path.parent}: run.dir is in use by {stale[1]} (lock file {self.path}); "
                                    f"two runs must not write one folder. If that process is gone, delete "
                                    f"the lock file") from None
                note = f"note: took over the stale lock of {stale[1]} ({stale[2]})"
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(self.text)
            self.held = True
            self.thread = threading.Thread(target=self._beat, daemon=True, name="run-lock")
            self.thread.start()
            return note
        raise UserError(f"{self.path}: cannot take the run lock (another process keeps taking it)")

    def _stale(self) -> Optional[tuple[bool, str, str]]:
        try:
            text = self.path.read_text()
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return None
        parts = text.split()
        pid = int(parts[0]) if parts and parts[0].isdigit() else -1
        host = parts[1] if len(parts) > 1 else "?"
        who = f"process {pid} on {host}"
        if host == socket.gethostname() and pid > 0 and not _alive(pid):
            return True, who, "that process has ended"
        if age > STALE_S:
            return True, who, f"not touched for {age:.0f} s"
        return False, who, ""

    def _beat(self) -> None:
        while not self.stop.wait(HEARTBEAT_S):
            try:
                os.utime(self.path)
            except OSError:
                return

    def release(self) -> None:
        self.stop.set()
        if not self.held:
            return
        self.held = False
        try:
            if self.path.read_text() == self.text:
                self.path.unlink()
        except OSError:
            pass


# --------------------------------------------------------------------------------------------- resume
def differences(saved: dict, now: dict) -> list[str]:
    """``key: saved -> now`` for every setting that changes the result."""
    return [f"{k} {a!r} in the saved run, {b!r} now" for k, a, b in run_differences(saved, now)]


def _saved_config(run_dir: Path) -> tuple[Optional[dict], str]:
    """The config the folder's run used: last.pt's (what the weights were trained with), else config.yaml."""
    last = run_dir / "checkpoints" / "last.pt"
    if last.is_file():
        ckpt = read_native(last)
        if isinstance(ckpt.get("config"), dict):
            return ckpt["config"], str(last)
    path = run_dir / "config.yaml"
    if path.is_file():
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise UserError(f"{path}: the saved config is not valid YAML ({str(exc).splitlines()[0]})") from None
        return (data if isinstance(data, dict) else None), str(path)
    return None, ""


def _checkpoints_beyond_first_epoch(run_dir: Path) -> list[str]:
    """Checkpoints a fresh start would replace. Exempt: a best.pt of epoch 1 (fine-tuning writes it just
    before its first last.pt: a kill between the two leaves it, and the same run writes it again)."""
    found = []
    for p in sorted((run_dir / "checkpoints").glob("*.pt")) if (run_dir / "checkpoints").is_dir() else []:
        if p.name == "best.pt":
            try:
                if int(torch.load(p, map_location="cpu", weights_only=True, mmap=True).get("epoch", 0)) <= 1:
                    continue
            except Exception:
                pass
        found.append(f"checkpoints/{p.name}")
    return found


def decide_resume(run_dir: Path, mode: Any, config: dict) -> bool:
    """True: continue from last.pt; False: a fresh run. Raises UserError, changing nothing, when refused."""
    last = run_dir / "checkpoints" / "last.pt"
    held = held_files(run_dir) if run_dir.is_dir() else []
    if mode is False:
        if held:
            raise UserError(f"{run_dir}: run.dir already holds a run ({', '.join(held)}); continue it with "
                            f"run.resume=true (or auto), or choose another run.dir (nothing was changed)")
        return False
    if mode is True:
        require_checkpoint(last)
    if mode == "auto" and not held:
        return False
    if mode == "auto" and not last.is_file():
        kept = _checkpoints_beyond_first_epoch(run_dir)
        if kept:
            raise UserError(f"{run_dir}: holds {', '.join(kept)} but no checkpoints/last.pt to resume from; "
                            f"run.resume=auto will not start over on top of them (choose another run.dir)")
    saved, source = _saved_config(run_dir)
    if saved is None:
        raise UserError(f"{run_dir}: holds {', '.join(held)} but no saved config of its run; run.resume=auto "
                        f"cannot tell whether it is this run (choose another run.dir)")
    diff = differences(saved, config)
    if diff:
        shown = "; ".join(diff[:4]) + (f"; and {len(diff) - 4} more" if len(diff) > 4 else "")
        raise UserError(f"run.resume: {shown} ({source}); a resumed run keeps the settings it started with, "
                        f"or it is no longer the same run. Use another run.dir for new settings (nothing was changed)")
    return last.is_file()
