"""One precision policy for training, validation and inference.

``run.precision``: ``fp32``, ``bf16`` (autocast), ``fp16`` (autocast with a gradient scaler, GPUs only) or
``auto``: bf16 on GPUs that have it (else fp16), bf16 on CPUs with native bf16 (AMX or AVX512-BF16), float32
on every other CPU, where bf16 is emulated and runs slower than float32. ``evaluate`` and ``predict`` resolve
the run's own setting on the machine they run on, so that they compute what validation computed there.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from selfmedmae.errors import UserError

NAMES = ("auto", "fp32", "bf16", "fp16")


@dataclass
class Precision:
    dtype: Optional[torch.dtype]  # None: float32
    device_type: str
    scaler: Optional[torch.amp.GradScaler]
    name: str = "fp32"  # fp32 | bf16 | fp16, as resolved

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)


def cpu_has_native_bf16() -> bool:
    """AMX or AVX512-BF16: without them bf16 is emulated on the CPU and runs slower than float32
    (measured here on an AVX2-only EPYC: conv3d 12x, ViT blocks several times slower)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(name: str, device: torch.device) -> str:
    """``auto``: bf16 on GPUs that have it (else fp16), bf16 on CPUs with native bf16, else fp32."""
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def precision(name: str, device: torch.device) -> Precision:
    """The autocast (and for fp16 the gradient scaler) of ``run.precision`` on ``device``."""
    name = resolve_precision(name, device)
    if name == "fp16" and device.type != "cuda":
        raise UserError("run.precision: fp16 needs a GPU; use bf16 on the CPU")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[name]
    scaler = torch.amp.GradScaler("cuda") if name == "fp16" else None
    return Precision(dtype, device.type, scaler, name)
