"""``run.precision=auto`` decided by measurement: the faster of fp32 and bf16 for the model and machine at hand.

Why: native bf16 on a CPU (AMX, AVX512-BF16) does not make every model faster. A tiny model spends its step
in small kernels where bf16 autocast adds casts and slower paths, a ViT-B spends it in large matmuls where
bf16 wins, so the CPU flags alone cannot decide (issue 18). The rule, :func:`auto_choice`:

- CUDA: bf16 where the GPU supports it, else fp16 with a loss scaler (not measured).
- A CPU without native bf16 (AVX2 or older): fp32, not measured (bf16 is emulated there).
- A CPU with native bf16: a one-time micro-benchmark of the model's own step (:func:`measure`: warm-up
  steps, then timed ones, fp32 and bf16 interleaved, best time of each; bounded by a time budget, after
  which it takes what it has), and :func:`choose`: bf16 only when it is at least :data:`MARGIN` faster than
  fp32, so ``auto`` is never slower than fp32 by more than the noise of the measurement.
  The result is cached per machine and model (:func:`cache_key`) in
  ``${XDG_CACHE_HOME:-~/.cache}/selfmedmae/precision.json``; a cache that cannot be read is ignored with a
  one-line warning.
- The measurement is off with ``run.precision_probe=false`` or the environment variable
  ``SELFMEDMAE_PRECISION_PROBE=0`` (CI determinism): then a CPU with native bf16 gets bf16, the flags rule of
  :func:`selfmedmae.runtime.device.resolve_precision`.

:class:`Choice` carries the one printed line and the record kept in checkpoints, so that ``evaluate`` and
``predict`` follow a training run's choice on the same kind of machine (:func:`machine`).
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
from torch import nn

from selfmedmae.runtime import device as _device

MARGIN = 0.05  # bf16 must be at least this much faster than fp32 to be picked
WARMUP, REPEATS, BUDGET_S = 2, 3, 5.0  # steps of each precision; seconds after which the timing stops
FLAGS = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx2")  # the CPU flags that decide bf16's speed
ENV = "SELFMEDMAE_PRECISION_PROBE"
CACHE_VERSION = 1

Step = Callable[[str], None]  # one step of the model in the named precision (fp32 | bf16)
Warn = Callable[[str], None]


@dataclass
class Choice:
    """What ``auto`` resolved to on this machine, and why."""

    name: str  # fp32 | bf16 | fp16
    device_type: str
    why: str  # the reason, for the printed line
    measured: Optional[dict] = None  # {"fp32": s, "bf16": s} per step, when measured (now or from the cache)
    cached: bool = False
    machine: dict = field(default_factory=dict)

    def line(self, key: str = "run.precision") -> str:
        """``run.precision=auto -> fp32 on cpu (measured: fp32 0.041 s/step, bf16 0.230 s/step; cached)``."""
        if self.measured:
            why = (f"measured: fp32 {self.measured['fp32']:.3f} s/step, bf16 {self.measured['bf16']:.3f} s/step"
                   + ("; cached" if self.cached else ""))
            if self.why:
                why += f"; {self.why}"
        else:
            why = self.why
        return f"{key}=auto -> {self.name} on {self.device_type} ({why})"

    def record(self) -> dict:
        """Plain types only: kept in checkpoints, which are read with ``weights_only=True``."""
        return {"asked": "auto", "name": self.name, "device_type": self.device_type, "why": self.line(),
                "measured": dict(self.measured) if self.measured else None, "machine": dict(self.machine)}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The flags of :data:`FLAGS` this CPU has."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    have: set = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            have |= set(line.split(":", 1)[1].split())
    return [f for f in FLAGS if f in have]


def machine() -> dict:
    """What makes two machines the same kind for the speed of fp32 against bf16."""
    return {"cpu": cpu_model(), "flags": cpu_flags(), "torch": str(torch.__version__),
            "threads": int(torch.get_num_threads())}


def cache_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "selfmedmae" / "precision.json"


def cache_key(kind: str, model_args: Any, shape: Sequence[int], mode: str = "train",
              where: Optional[dict] = None) -> str:
    """One string per machine (CPU model, bf16 flags, torch, threads), model (kind and every argument, so
    its sizes), input shape [batch, C, *spatial] and mode (train: forward + backward; infer: forward)."""
    return json.dumps({"machine": where if where is not None else machine(), "kind": kind, "args": model_args,
                       "shape": [int(s) for s in shape], "mode": mode}, sort_keys=True, default=str)


def read_cache(path: Path, warn: Warn = print) -> dict:
    """The cache's entries; {} when there is none, and {} with a one-line warning when it cannot be read."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or not isinstance(data.get("entries"), dict):
            raise ValueError("not a selfmedmae precision cache")
        return data["entries"]
    except (OSError, ValueError) as exc:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        warn(f"warning: ignoring the precision cache {path} ({type(exc).__name__}: {str(exc)[:80]}); measuring again")
        return {}


def write_cache(path: Path, entries: dict, warn: Warn = print) -> None:
    """Through a temporary file in the same folder and ``os.replace``: a reader never sees half a file. A
    cache that cannot be written costs a warning, never the run."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".precision.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump({"version": CACHE_VERSION, "entries": entries}, f, indent=1, sort_keys=True)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        warn(f"warning: could not write the precision cache {path} ({exc.strerror or exc})")


def probe_enabled(setting: bool = True) -> bool:
    """``run.precision_probe`` unless ``SELFMEDMAE_PRECISION_PROBE`` is 0 / false / no / off."""
    return bool(setting) and os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def measure(step: Step, clock: Callable[[], float] = time.perf_counter, warmup: int = WARMUP,
            repeats: int = REPEATS, budget_s: float = BUDGET_S) -> dict[str, float]:
    """Best seconds per step of fp32 and bf16: ``warmup`` untimed rounds, then ``repeats`` timed ones, each
    round one step of each precision (interleaved, so a busy moment of a shared machine hits both). Past
    ``budget_s`` the warm-up ends early and the timing stops after the round under way: a large model costs
    at least one warm-up and one timed round, a tiny one the full count in well under a second."""
    best = {"fp32": float("inf"), "bf16": float("inf")}
    start, timed, rounds = clock(), 0, 0
    while timed < repeats:
        in_warmup = rounds < warmup
        for name in ("fp32", "bf16"):
            t0 = clock()
            step(name)
            dt = clock() - t0
            if not in_warmup:
                best[name] = min(best[name], dt)
        rounds += 1
        timed += 0 if in_warmup else 1
        if clock() - start > budget_s:
            if timed:
                break
            warmup = rounds  # over budget in the warm-up: the next round is timed, and the last
    return best


def choose(times: dict, margin: float = MARGIN) -> str:
    """bf16 only when it is faster than fp32 by at least ``margin`` (5 %): never the slower one."""
    return "bf16" if times["bf16"] <= times["fp32"] * (1.0 - margin) else "fp32"


def auto_choice(dev: torch.device, key: str, step: Optional[Step], probe: bool = True,
                clock: Callable[[], float] = time.perf_counter, path: Optional[Path] = None,
                warn: Warn = print, budget_s: float = BUDGET_S) -> Choice:
    """``auto`` on ``dev``: the rule of the module docstring. ``key``: :func:`cache_key` of the model;
    ``step``: one step of it in a named precision (see :func:`training_step`), run only when measuring."""
    where = machine()
    if dev.type == "cuda":
        name = _device.resolve_precision("auto", dev)
        why = "this GPU has bf16" if name == "bf16" else "this GPU lacks bf16: fp16 with a loss scaler"
        return Choice(name, "cuda", why, machine=where)
    if not _device.cpu_has_native_bf16():
        return Choice("fp32", "cpu", "no native bf16 on this CPU (no amx_bf16 / avx512_bf16): bf16 would be "
                      "emulated; not measured", machine=where)
    flags = " ".join(f for f in where["flags"] if "bf16" in f)
    if not probe_enabled(probe) or step is None:
        return Choice("bf16", "cpu", f"native bf16 ({flags}); not measured: run.precision_probe=false or "
                      f"{ENV}=0", machine=where)
    path = path or cache_path()
    entries = read_cache(path, warn)
    hit = entries.get(key)
    if isinstance(hit, dict) and _valid_times(hit.get("measured")):
        times, cached = {k: float(hit["measured"][k]) for k in ("fp32", "bf16")}, True
    else:
        times, cached = measure(step, clock, budget_s=budget_s), False
        entries[key] = {"measured": times, "choice": choose(times),
                        "when": time.strftime("%Y-%m-%d %H:%M:%S")}
        write_cache(path, entries, warn)
    name = choose(times)
    why = "" if name == "bf16" else f"bf16 is not {MARGIN:.0%} faster"
    return Choice(name, "cpu", why, times, cached, where)


def _valid_times(t: Any) -> bool:
    return (isinstance(t, dict) and all(isinstance(t.get(k), (int, float)) and 0 < t[k] < float("inf")
                                        for k in ("fp32", "bf16")))


def _autocast(name: str, dev: torch.device) -> contextlib.AbstractContextManager:
    if name == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(dev.type, dtype=torch.bfloat16 if name == "bf16" else torch.float16)


def _tensors(out: Any) -> list:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _tensors(o)]
    if isinstance(out, dict):
        return [t for o in out.values() for t in _tensors(o)]
    return []


def training_step(model: nn.Module, shape: Sequence[int], dev: torch.device, train: bool = True) -> Step:
    """One step of ``model`` on a random batch of ``shape`` ([batch, C, *spatial]) in a named precision:
    forward + backward of the mean of its outputs (``train``), or a forward without autograd (inference).
    The gradients it leaves are dropped after each step; :func:`untouched` keeps the rest as it was."""
    x = torch.randn(*[int(s) for s in shape], generator=torch.Generator().manual_seed(0)).to(dev)

    def step(name: str) -> None:
        if not train:
            with torch.no_grad(), _autocast(name, dev):
                model(x)
            return
        with _autocast(name, dev):
            outs = [t for t in _tensors(model(x)) if t.requires_grad]
        sum(t.float().mean() for t in outs).backward()
        for p in model.parameters():
            p.grad = None

    return step


@contextlib.contextmanager
def untouched(model: nn.Module):
    """The measurement leaves no trace: the random state (dropout, drop path, MAE masking draw from it),
    the buffers (norm statistics), the train / eval mode and the gradients are as they were before."""
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    mode = model.training
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            with torch.no_grad():
                for n, b in model.named_buffers():
                    b.copy_(buffers[n])
            model.train(mode)
            for p in model.parameters():
                p.grad = None


def precision_of(choice: Choice, dev: torch.device) -> "_device.Precision":
    """The autocast of ``choice`` on ``dev``, carrying its record (what checkpoints keep)."""
    prec = _device.precision(choice.name, dev)
    prec.record = choice.record()
    return prec


def model_choice(model: nn.Module, kind: str, model_args: Any, shape: Sequence[int], dev: torch.device,
                 probe: bool = True, train: bool = True, **kw: Any) -> Choice:
    """:func:`auto_choice` for ``model`` itself: its step in training (forward + backward) or inference."""
    mode = "train" if train else "infer"
    key = cache_key(kind, model_args, shape, mode)
    state = {}

    def step(name: str) -> None:  # built on the first call: a cache hit never makes the batch
        if "step" not in state:
            state["step"] = training_step(model, shape, dev, train)
        state["step"](name)

    with untouched(model):
        model.train(train)
        return auto_choice(dev, key, step, probe, **kw)
