"""The fine-tuned network as ONNX, checked against torch before it is kept.

``model.onnx`` takes ``image`` [batch, C, *size] (``size`` the training crop, the sliding window of
segmentation) and gives ``logits`` [batch, K, *size] (UNETR) or [batch, K] (ViT classifier); the batch axis is
dynamic. After exporting, onnxruntime runs it on a seeded random input of two samples and the result is
compared with torch's: a largest absolute difference over :data:`TOLERANCE` removes the file and stops the
command, so no ONNX model that computes something else is ever left behind.
"""
from __future__ import annotations

import copy
import inspect
from pathlib import Path

import numpy as np
import torch
from torch import nn

from selfmedmae.errors import ConfigError
from selfmedmae.extras import need
from selfmedmae.models.pointwise import MATMUL_CONV, MATMUL_UPSAMPLE

TOLERANCE = 1e-4
OPSET = 17


def sample_input(model_args: dict, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """A seeded random input of the network's size: [batch, C, *size] float32."""
    enc = model_args["encoder"]
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, int(enc["in_chans"]), *[int(s) for s in enc["img_size"]], generator=gen)


def plain_convolutions(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose matmul-run convolutions (:mod:`selfmedmae.models.pointwise`) are the plain
    ``nn.ConvNd`` / ``nn.ConvTranspose3d`` again (same weights): ONNX has Conv / ConvTranspose operators, and the
    tracer records only the layout branch the sample took through the matmul versions."""
    plain = {matmul: base for base, matmul in {**MATMUL_CONV, **MATMUL_UPSAMPLE}.items()}
    model = copy.deepcopy(model)
    for module in model.modules():
        if type(module) in plain:
            module.__class__ = plain[type(module)]
    return model


def export_onnx(model: nn.Module, sample: torch.Tensor, path: Path) -> None:
    """Write ``model`` (eval mode) as ONNX with a dynamic batch axis."""
    need("onnx", "export")
    model = plain_convolutions(model).eval()
    # the TorchScript exporter: the dynamo one (torch's default since 2.9) needs onnxscript, one more dependency
    legacy = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    with torch.no_grad():
        torch.onnx.export(model, (sample[:1],), str(path), opset_version=OPSET, input_names=["image"],
                          output_names=["logits"], dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
                          **legacy)


def onnx_difference(path: Path, model: nn.Module, sample: torch.Tensor) -> float:
    """Largest absolute difference between onnxruntime's and torch's outputs on ``sample``."""
    ort = need("onnxruntime", "export")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(["logits"], {"image": sample.numpy()})
    with torch.no_grad():
        want = model.eval()(sample).float().numpy()
    if got.shape != want.shape:
        return float("inf")
    return float(np.max(np.abs(got - want)))


def write_checked_onnx(model: nn.Module, model_args: dict, path: Path) -> float:
    """Export, compare in onnxruntime, keep the file only if it agrees within :data:`TOLERANCE`; the difference."""
    sample = sample_input(model_args)
    try:
        export_onnx(model, sample, path)
        diff = onnx_difference(path, model, sample)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    if not diff <= TOLERANCE:  # NaN fails too
        path.unlink(missing_ok=True)
        raise ConfigError(f"{path}: onnxruntime and torch differ by up to {diff:.3g} (over {TOLERANCE:g}) on a "
                          f"sample input; the ONNX file was not kept")
    return diff
