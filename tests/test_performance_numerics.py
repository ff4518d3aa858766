"""The speed-ups keep the numbers: fused AdamW, the one-pass norm-pix target, the inference path, and
bf16 autocast losses within bf16 tolerance of float32 (the timings themselves live in benchmarks/)."""
from __future__ import annotations

import copy

import pytest
import torch

from selfmedmae.inference.forward import sliding_window_logits
from selfmedmae.models.factory import build_model
from selfmedmae.models.mae import normalize_patches
from selfmedmae.train.optim import build_optimizer, impl_kwargs

NANO = dict(embed_dim=48, depth=2, num_heads=4)


def tiny_mae(dims: int):
    img = [32] * dims
    return build_model("mae", {"encoder": dict(img_size=img, patch_size=8, in_chans=1, **NANO),
                               "decoder_embed_dim": 32, "decoder_depth": 1, "decoder_num_heads": 4,
                               "mask_ratio": 0.75, "norm_pix_loss": True})


@pytest.mark.parametrize("unbiased", [False, True])
def test_norm_pix_target_equals_the_textbook_formula(unbiased):
    torch.manual_seed(0)
    p = torch.randn(3, 20, 512) * 5 + 2
    mean = p.mean(dim=-1, keepdim=True)
    var = p.var(dim=-1, keepdim=True, unbiased=unbiased)
    expected = (p - mean) / (var + 1e-6) ** 0.5
    torch.testing.assert_close(normalize_patches(p, unbiased), expected, rtol=1e-5, atol=1e-5)


def test_build_optimizer_is_fused_on_cpu_and_matches_the_loop():
    torch.manual_seed(0)
    model = tiny_mae(3)
    loop_model = copy.deepcopy(model)
    fused = build_optimizer(model, 1e-3, 0.05, (0.9, 0.95))
    loop = build_optimizer(loop_model, 1e-3, 0.05, (0.9, 0.95), impl="loop")
    assert all(g["fused"] for g in fused.param_groups) and not any(g["fused"] for g in loop.param_groups)
    # the same random gradients on both (real backward passes would give noise-level gradients, e.g. on
    # the key bias, that Adam's normalisation turns into full-size steps of either sign)
    for step in range(3):
        gen = torch.Generator().manual_seed(step)
        for m in (model, loop_model):
            gen.manual_seed(step)
            for p in m.parameters():
                p.grad = torch.randn(p.shape, generator=gen)
        fused.step()
        loop.step()
    for (name, a), (_, b) in zip(model.named_parameters(), loop_model.named_parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_impl_kwargs_falls_back_off_the_fused_devices():
    assert impl_kwargs([torch.zeros(2, requires_grad=True)]) == {"fused": True}
    assert impl_kwargs([torch.zeros(2, device="meta")]) == {}
    assert impl_kwargs([torch.zeros(2)], "loop") == {"foreach": False}
    with pytest.raises(ValueError, match="AdamW implementation"):
        impl_kwargs([], "fastest")


@pytest.mark.parametrize("dims", [2, 3])
def test_bf16_autocast_loss_within_bf16_tolerance_of_fp32(dims):
    torch.manual_seed(0)
    model = tiny_mae(dims)
    x = torch.rand(2, 1, *[32] * dims)
    noise = torch.rand(2, 4 ** dims)
    with torch.no_grad():
        fp32 = model(x, noise)[0]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16, pred, _ = model(x, noise)
    assert pred.dtype == torch.bfloat16 and bf16.dtype == torch.float32  # the loss is taken in float32
    # bf16 keeps 8 significant bits (eps 2^-8 = 0.4 %); a few layers of rounding stay within a few eps
    assert abs(float(bf16) - float(fp32)) <= 3e-2 * abs(float(fp32)), (float(bf16), float(fp32))
    assert float(bf16) != float(fp32)  # autocast really ran in bf16


def test_sliding_window_logits_equals_one_forward_when_the_window_is_the_volume():
    torch.manual_seed(0)
    model = build_model("unetr", {"encoder": dict(img_size=[32] * 3, patch_size=16, in_chans=1, embed_dim=48,
                                                  depth=3, num_heads=4), "num_classes": 3,
                                  "feature_size": 8}).eval()
    image = torch.rand(1, 32, 32, 32)
    out = sliding_window_logits(model, image, [32, 32, 32], 2, 0.5, torch.device("cpu"))
    with torch.no_grad():
        expected = model(image[None])
    assert out.shape == (1, 3, 32, 32, 32) and out.dtype == torch.float32
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
