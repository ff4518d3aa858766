"""Where a command computes and in which precision: the one home of ``run.device`` and ``run.precision``.

``run.device``: ``auto`` (the GPU when there is one), ``cpu``, ``cuda`` or ``cuda:N``. Under torchrun each
process takes the GPU of its ``LOCAL_RANK``.

``run.precision``: ``fp32``, ``bf16`` (autocast), ``fp16`` (autocast with a gradient scaler, GPUs only) or
``auto``: bf16 on GPUs that have it (else fp16); float32 on CPUs without native bf16 (AMX or AVX512-BF16),
where bf16 is emulated and runs slower than float32; on CPUs with native bf16 the faster of the two for the
model at hand, measured once and cached (:mod:`selfmedmae.runtime.autoprec`; a tiny model can be several
times slower in bf16 even there). :func:`resolve_precision` here is the rule without a model (the flags
rule, also what ``run.precision_probe=false`` gives). ``evaluate`` and ``predict`` resolve the run's own
setting on the machine they run on (following the training run's measured choice on the same kind of
machine), so that they compute what validation computed there.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from selfmedmae.errors import ConfigError

DEVICES = "auto, cpu, cuda, cuda:N"
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
FP16_NEEDS_GPU = "run.precision: fp16 needs a GPU; use bf16 or fp32 on the CPU"


@dataclass
class Precision:
    dtype: Optional[torch.dtype]  # None: float32
    device_type: str
    scaler: Optional[torch.amp.GradScaler]
    name: str = "fp32"  # fp32 | bf16 | fp16, as resolved
    record: Optional[dict] = None  # how `auto` chose (runtime.autoprec.Choice.record), kept in checkpoints

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)


def device_for(name: str, local_rank: int = 0, key: str = "run.device") -> torch.device:
    """The device ``run.device`` names on this machine; a ConfigError naming ``key`` when it has no such device."""
    name = str(name)
    cuda = torch.cuda.is_available()
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if cuda else torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not cuda:
            raise ConfigError(f"{key}: {name!r} asked for, but this machine has no usable GPU "
                              f"(use run.device=cpu or auto)")
        index = name.partition(":")[2]
        if not index:
            return torch.device(f"cuda:{local_rank}")
        if not index.isdigit() or int(index) >= torch.cuda.device_count():
            raise ConfigError(f"{key}: {name!r}: this machine has GPUs cuda:0..cuda:{torch.cuda.device_count() - 1}")
        return torch.device(name)
    raise ConfigError(f"{key}: {name!r} is not a device ({DEVICES})")


def cpu_has_native_bf16() -> bool:
    """AMX or AVX512-BF16: without them bf16 is emulated on the CPU and runs slower than float32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(name: str, device: torch.device) -> str:
    """``auto`` without a model (the flags rule): bf16 on GPUs that have it (else fp16), bf16 on CPUs with
    native bf16, else fp32. With a model, training and inference measure instead (``runtime.autoprec``)."""
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def check_precision(name: str, device: torch.device) -> None:
    """fp16 (with its gradient scaler) runs on GPUs only."""
    if name not in PRECISIONS:
        raise ConfigError(f"run.precision: {name!r} is not one of {', '.join(PRECISIONS)}")
    if name == "fp16" and device.type != "cuda":
        raise ConfigError(FP16_NEEDS_GPU)


def precision(name: str, device: torch.device) -> Precision:
    """The autocast (and for fp16 the gradient scaler) of ``run.precision`` on ``device``."""
    check_precision(name, device)
    name = resolve_precision(name, device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[name]
    scaler = torch.amp.GradScaler("cuda") if name == "fp16" else None
    return Precision(dtype, device.type, scaler, name)


def inference_precision(name: str, device: torch.device, asked: bool) -> Precision:
    """The precision of a saved run's ``run.precision`` for inference on ``device``: a run trained in fp16 on
    a GPU is evaluated as ``auto`` on a CPU, unless fp16 is ``asked`` for again on the command line."""
    if name == "fp16" and device.type != "cuda" and not asked:
        name = "auto"
    return precision(name, device)
