"""Tests that need a CUDA device (marker ``cuda``; ``benchmarks/gpu_check.sh`` runs them on the GPU machine).
Without a GPU each one skips with the reason "needs a CUDA device".

- an MAE forward + backward under bf16 autocast gives a finite loss and a finite gradient for every parameter;
- ``run.precision=auto`` resolves to bf16 on a bf16-capable GPU, else to fp16 with a GradScaler;
- sliding-window inference of a tiny UNETR on the GPU equals CPU float32 within a tolerance;
- ``selfmedmae pretrain ... run.device=cuda`` trains a tiny model on synthetic volumes on the GPU.
"""
from __future__ import annotations

import pytest
import torch

from conftest import tiny_encoder
from selfmedmae.inference.forward import sliding_window_logits
from selfmedmae.models.factory import build_model
from selfmedmae.runtime.device import precision, resolve_precision
from train_helpers import cli, records, state, tiny_config, tiny_task

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
CUDA = torch.device("cuda")


def test_mae_bf16_autocast_forward_backward_gives_finite_loss_and_gradients():
    torch.manual_seed(0)
    mae = build_model("mae", dict(encoder=tiny_encoder(3, size=32, patch=8, pos_embed="sincos"),
                                  decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=4,
                                  mask_ratio=0.75, norm_pix_loss=True)).to(CUDA)
    x = torch.rand(2, 1, 32, 32, 32, device=CUDA)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = mae(x)[0]
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss), loss  # the loss is computed in float32
    trained = [(name, p) for name, p in mae.named_parameters() if p.requires_grad]
    assert trained
    for name, p in trained:
        assert p.grad is not None, f"{name}: no gradient"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient"


def test_auto_precision_is_bf16_where_the_gpu_has_it_else_fp16_with_a_scaler():
    prec = precision("auto", CUDA)
    if torch.cuda.is_bf16_supported():
        assert resolve_precision("auto", CUDA) == "bf16"
        assert prec.name == "bf16" and prec.dtype == torch.bfloat16 and prec.scaler is None
    else:
        assert resolve_precision("auto", CUDA) == "fp16"
        assert prec.name == "fp16" and prec.dtype == torch.float16 and prec.scaler is not None
    with prec.autocast():
        y = torch.ones(8, 8, device=CUDA) @ torch.ones(8, 8, device=CUDA)
    assert y.dtype == prec.dtype


def test_sliding_window_inference_on_the_gpu_equals_cpu_float32():
    torch.manual_seed(0)
    model = build_model("unetr", dict(encoder=tiny_encoder(3, size=32, patch=16), num_classes=3,
                                      feature_size=8)).eval()
    volume = torch.rand(1, 1, 48, 40, 36)  # several overlapping windows, blended
    expected = sliding_window_logits(model, volume, [32, 32, 32], 2, 0.5, torch.device("cpu"))
    got = sliding_window_logits(model.to(CUDA), volume, [32, 32, 32], 2, 0.5, CUDA)
    assert got.device.type == "cpu" and got.dtype == torch.float32  # blended on the CPU, as documented
    assert got.shape == expected.shape == (1, 3, 48, 40, 36)
    # TF32 convolutions (cuDNN's default) keep about 10 bits: a loose tolerance, far below the logits' scale
    torch.testing.assert_close(got, expected, rtol=1e-2, atol=1e-2)


def test_pretrain_through_the_cli_on_cuda(tmp_path):
    cfg = tiny_config(tmp_path / "pretrain.yaml", tiny_task(tmp_path / "data"))
    run_dir = tmp_path / "run"
    proc = cli("pretrain", str(cfg), f"run.dir={run_dir}", "run.device=cuda", "run.precision=auto",
               "train.epochs=2")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    saved = state(run_dir)
    assert saved["epoch"] == 2 and saved["step"] > 0
    # run.device=cuda is refused on a machine without a usable GPU, so a finished run trained there
    assert saved["config"]["run"]["device"] == "cuda"
    losses = torch.tensor([r["loss"] for r in records(run_dir, "train")])
    assert len(losses) and torch.isfinite(losses).all(), losses
    assert "pretrain done" in out
