"""Invariants of the model family, 2D and 3D: shapes, masking, loss, gradients, bf16, presets, counts."""
from __future__ import annotations

import math

import pytest
import torch

from conftest import tiny_encoder
from selfmedmae.models.factory import build_model
from selfmedmae.models.masking import random_masking
from selfmedmae.models.patchify import patchify, unpatchify
from selfmedmae.models.pos_embed import resize_pos_embed, sincos_pos_embed
from selfmedmae.models.presets import PRESETS
from selfmedmae.models.unetr import default_skip_blocks

MAE_HEAD = dict(decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=4)


def tiny(kind: str, dims: int, in_chans: int = 1, **enc) -> torch.nn.Module:
    encoder = tiny_encoder(dims, in_chans, pos_embed="sincos" if kind == "mae" else "learnable", **enc)
    extra = {"mae": MAE_HEAD, "classifier": dict(num_classes=3), "unetr": dict(num_classes=3, feature_size=8),
             "vit": {}}[kind]
    return build_model(kind, dict(encoder=encoder, **extra))


@pytest.mark.parametrize("shape, patch", [((2, 3, 16, 24), (8, 4)), ((2, 4, 16, 8, 24), (4, 8, 8))])
def test_patchify_round_trip_and_channel_last_order(shape, patch):
    x = torch.randn(shape)
    p = patchify(x, patch)
    grid = [s // q for s, q in zip(shape[2:], patch)]
    assert p.shape == (shape[0], math.prod(grid), shape[1] * math.prod(patch))
    assert torch.equal(unpatchify(p, patch, grid, shape[1]), x)
    # first patch vector = the first patch's voxels, channel fastest
    first = x[(0, slice(None)) + tuple(slice(0, q) for q in patch)]  # [C, *patch]
    assert torch.equal(p[0, 0], first.movedim(0, -1).reshape(-1))


@pytest.mark.parametrize("dims", [2, 3])
def test_patch_embed_on_patches_equals_conv_on_image(dims):
    vit = tiny("vit", dims, in_chans=2)
    x = torch.randn(2, 2, *vit.img_size)
    conv = vit.patch_embed(x)
    lin = vit.patch_embed.embed_patches(patchify(x, vit.patch_size))
    torch.testing.assert_close(lin, conv, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("ratio", [0.0, 0.125, 0.75, 0.9])
def test_masking_counts_and_inverse_permutation(ratio):
    B, L = 3, 64
    m = random_masking(B, L, ratio, noise=torch.rand(B, L))
    keep = int(L * (1 - ratio))
    assert m.ids_keep.shape == (B, keep)
    assert torch.all(m.mask.sum(1) == L - keep)
    # kept tokens are exactly those the mask marks visible
    for b in range(B):
        assert set(m.ids_keep[b].tolist()) == set(torch.nonzero(m.mask[b] == 0).flatten().tolist())
    shuffle = torch.argsort(torch.argsort(m.ids_restore, dim=1), dim=1)
    assert torch.equal(shuffle, m.ids_restore)


def test_same_noise_same_mask_and_loss():
    mae = tiny("mae", 3).eval()
    x, noise = torch.randn(2, 1, 32, 32, 32), torch.rand(2, 64)
    a, b = mae(x, noise=noise), mae(x, noise=noise)
    assert torch.equal(a[2], b[2]) and torch.equal(a[0], b[0])


@pytest.mark.parametrize("dims", [2, 3])
def test_loss_counts_masked_patches_only(dims):
    mae = tiny("mae", dims).eval()
    x = torch.randn(2, 1, *mae.encoder.img_size)
    noise = torch.rand(2, mae.encoder.num_patches)
    loss, pred, mask = mae(x, noise=noise)
    target = mae.target(mae.patchify(x))
    perfect_visible = torch.where(mask.bool().unsqueeze(-1), pred, target)  # visible patches exact
    assert torch.allclose(mae.forward_loss(mae.patchify(x), perfect_visible, mask), loss)
    perfect_masked = torch.where(mask.bool().unsqueeze(-1), target, pred)
    assert mae.forward_loss(mae.patchify(x), perfect_masked, mask).item() == 0.0


@pytest.mark.parametrize("unbiased", [False, True])
def test_norm_pix_target_variance_convention(unbiased):
    mae = tiny("mae", 2)
    mae.norm_pix_unbiased = unbiased
    p = torch.randn(1, 4, 64)
    t = mae.target(p)
    expected = (p - p.mean(-1, keepdim=True)) / (p.var(-1, keepdim=True, unbiased=unbiased) + 1e-6).sqrt()
    torch.testing.assert_close(t, expected)


KINDS = [("mae", 2), ("mae", 3), ("classifier", 2), ("classifier", 3), ("unetr", 3), ("unetr", 2)]


@pytest.mark.parametrize("kind, dims", KINDS)
@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_forward_backward_every_parameter_gets_a_gradient(kind, dims, bf16):
    torch.manual_seed(0)
    model = tiny(kind, dims, in_chans=2, drop_path_rate=0.1 if kind != "mae" else 0.0).train()
    x = torch.randn(2, 2, *model.encoder.img_size)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = model(x)
        loss = out[0] if kind == "mae" else out.float().square().mean()
    assert torch.isfinite(loss)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert missing == []
    if kind == "unetr":
        assert out.shape == (2, 3, *model.encoder.img_size)
    if kind == "classifier":
        assert out.shape == (2, 3)


def test_classifier_global_pool_has_fc_norm_and_no_encoder_norm():
    gap = build_model("classifier", dict(encoder=tiny_encoder(2), num_classes=5, global_pool=True))
    keys = set(gap.state_dict())
    assert "fc_norm.weight" in keys and not any(k.startswith("encoder.norm.") for k in keys)


@pytest.mark.parametrize("patch, skips", [(16, [3, 6, 9]), (8, [4, 8]), (4, [6])])
def test_unetr_taps_and_patch_sizes(patch, skips):
    assert default_skip_blocks(12, int(math.log2(patch))) == skips
    model = build_model("unetr", dict(encoder=tiny_encoder(3, size=32, patch=patch), num_classes=4,
                                      feature_size=4))
    out = model(torch.randn(1, 1, 32, 32, 32))
    assert out.shape == (1, 4, 32, 32, 32)


def test_unetr_rejects_non_power_of_two_patch():
    with pytest.raises(ValueError, match="power-of-two"):
        build_model("unetr", dict(encoder=tiny_encoder(3, size=36, patch=12), num_classes=2))


def test_vit_accepts_another_input_size_by_interpolating_positions():
    vit = tiny("vit", 2)
    assert vit(torch.randn(1, 1, 48, 32)).shape == (1, 1 + 6 * 4, 48)


def test_sincos_table_matches_official_layout():
    grid, D = (2, 3, 4), 12
    table = sincos_pos_embed(D, grid)  # [24, 12], parts of 2: sin h, cos h, sin w, cos w, sin d, cos d
    omega = 1.0 / 10000 ** (torch.arange(2) / 2)
    h, w, d = 1, 2, 3
    row = table[h * 12 + w * 4 + d]
    expected = torch.cat([torch.sin(h * omega), torch.cos(h * omega), torch.sin(w * omega),
                          torch.cos(w * omega), torch.sin(d * omega), torch.cos(d * omega)])
    torch.testing.assert_close(row, expected.float())


def test_resize_pos_embed_keeps_class_row_and_identity():
    table = torch.randn(1, 1 + 4 * 4, 8)
    assert torch.equal(resize_pos_embed(table, (4, 4), (4, 4)), table)
    out = resize_pos_embed(table, (4, 4), (6, 2))
    assert out.shape == (1, 13, 8) and torch.equal(out[:, :1], table[:, :1])


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_build_as_3d_mae(name):
    with torch.device("meta"):  # no memory, no init cost: checks the sizes fit together
        mae = build_model("mae", dict(encoder=dict(img_size=[96] * 3, patch_size=16, in_chans=1,
                                                   pos_embed="sincos", **PRESETS[name])))
    assert mae.encoder.embed_dim == PRESETS[name]["embed_dim"]


def test_parameter_counts_match_the_official_models():
    vit_b = dict(img_size=[96] * 3, patch_size=16, in_chans=1, embed_dim=768, depth=12, num_heads=12)
    with torch.device("meta"):
        mae = build_model("mae", dict(encoder=dict(vit_b, pos_embed="sincos"), decoder_embed_dim=384,
                                      decoder_depth=8, decoder_num_heads=12))
        unetr = build_model("unetr", dict(encoder=vit_b, num_classes=14))
        cls = build_model("classifier", dict(encoder=dict(vit_b, img_size=[224, 224], in_chans=3), num_classes=14))

    def count(m):
        return sum(p.numel() for p in m.parameters() if p.requires_grad)

    assert count(mae) == 104_272_384  # official MAE3D, BTCV sizes (sin-cos tables are fixed buffers)
    assert count(cls) == 85_809_422  # official 2D ViT-B/16 with a 14-way head
    # official UNETR3D: 92,819,374, of which 6,144 are never-used 1x1 'conv3' weights we do not build
    assert count(unetr) == 92_819_374 - 6_144
