"""The training recipe: AdamW parameter groups (no weight decay on norms, biases, tokens and position tables),
layer-wise lr decay scales, the linear scaling rule and the warm-up + cosine schedule
(docs/official-code.md §2.1). Expected values are written out by hand, not computed with the
code under test."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from selfmedmae.models.factory import build_model
from selfmedmae.runtime.distributed import Dist
from selfmedmae.train.engine import plan
from selfmedmae.train.optim import build_optimizer, param_groups
from selfmedmae.train.schedule import apply_lr, lr_at, scaled_lr

DEPTH = 4
ENCODER = dict(img_size=[32, 32, 32], patch_size=8, in_chans=1, embed_dim=48, depth=DEPTH, num_heads=4)
MODELS = {
    "mae": dict(decoder_embed_dim=32, decoder_depth=2, decoder_num_heads=4),
    "unetr": dict(num_classes=3),  # patch 8 -> 3 up-sampling stages
    "classifier": dict(num_classes=5),
}
WD = 0.05
LD = 0.75
# layer_decay ** (depth + 1 - layer id) for depth 4, written out: patch embed / cls / pos (id 0) -> 0.75^5,
# block i (id i + 1) -> 0.75^(4 - i), everything after the blocks (final norm, heads, decoders) -> 1
SCALE_EMBED = 0.2373046875  # 0.75 ** 5
SCALE_BLOCK = {0: 0.31640625, 1: 0.421875, 2: 0.5625, 3: 0.75}
NO_DECAY_TOKENS = {"cls_token", "pos_embed", "mask_token", "decoder_pos_embed"}
NORMS = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d,
         nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)
WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
            nn.ConvTranspose3d)


@pytest.fixture(scope="module", params=sorted(MODELS))
def model(request):
    torch.manual_seed(0)
    m = build_model(request.param, dict(encoder=dict(ENCODER), **MODELS[request.param]))
    m.kind = request.param
    return m


def expected_decay(model: nn.Module) -> dict[str, bool]:
    """Name -> whether it is decayed, by the module that owns each parameter (not by the code under test)."""
    out = {}
    for mod_name, module in model.named_modules():
        for p_name, param in module.named_parameters(recurse=False):
            name = f"{mod_name}.{p_name}" if mod_name else p_name
            if not param.requires_grad:
                continue
            if isinstance(module, NORMS) or p_name == "bias" or p_name in NO_DECAY_TOKENS:
                out[name] = False
            elif isinstance(module, WEIGHTED) and p_name == "weight":
                out[name] = True
            else:
                raise AssertionError(f"{name} ({type(module).__name__}) is not covered by the test's rules")
    return out


def expected_scale(name: str) -> float:
    if name in ("encoder.cls_token", "encoder.pos_embed") or name.startswith("encoder.patch_embed."):
        return SCALE_EMBED
    if name.startswith("encoder.blocks."):
        return SCALE_BLOCK[int(name.split(".")[2])]
    return 1.0  # encoder.norm, head, the UNETR decoder, the MAE decoder and its mask token


def by_name(groups: list[dict]) -> dict[str, dict]:
    out = {}
    for group in groups:
        assert len(group["params"]) == len(group["param_names"])
        for name in group["param_names"]:
            assert name not in out, f"{name} is in two groups"
            out[name] = group
    return out


# --------------------------------------------------------------------------------------------------------
# (a) weight decay
# --------------------------------------------------------------------------------------------------------

def test_every_trainable_parameter_is_in_exactly_one_group(model):
    groups = param_groups(model, WD, LD)
    ids = [id(p) for g in groups for p in g["params"]]
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(ids) == len(set(ids)) == len(trainable)
    assert set(ids) == {id(p) for p in trainable}
    named = dict(model.named_parameters())
    for group in groups:  # names and tensors agree
        assert all(named[n] is p for n, p in zip(group["param_names"], group["params"]))


def test_weight_decay_groups(model):
    groups = by_name(param_groups(model, WD, LD))
    expected = expected_decay(model)
    assert set(groups) == set(expected)
    for name, decays in expected.items():
        assert groups[name]["weight_decay"] == (WD if decays else 0.0), name
    # the named exceptions are present where the model has them, and are not decayed
    tokens = {"mae": ["mask_token", "encoder.cls_token"], "unetr": ["encoder.cls_token", "encoder.pos_embed"],
              "classifier": ["encoder.cls_token", "encoder.pos_embed"]}[model.kind]
    for name in tokens + ["encoder.norm.weight", "encoder.norm.bias", "encoder.blocks.0.norm1.weight",
                          "encoder.blocks.0.attn.qkv.bias", "encoder.patch_embed.proj.bias"]:
        assert groups[name]["weight_decay"] == 0.0, name
    for name in ["encoder.patch_embed.proj.weight", "encoder.blocks.0.attn.qkv.weight",
                 "encoder.blocks.3.mlp.fc2.weight"]:
        assert groups[name]["weight_decay"] == WD, name
    assert sum(expected.values()) > 0 and sum(not d for d in expected.values()) > 0


def test_frozen_parameters_are_left_out(model):
    model.encoder.patch_embed.proj.weight.requires_grad_(False)
    try:
        names = set(by_name(param_groups(model, WD, LD)))
    finally:
        model.encoder.patch_embed.proj.weight.requires_grad_(True)
    assert "encoder.patch_embed.proj.weight" not in names and "encoder.patch_embed.proj.bias" in names


# --------------------------------------------------------------------------------------------------------
# (b) layer-wise lr decay
# --------------------------------------------------------------------------------------------------------

def test_layer_decay_scales(model):
    groups = by_name(param_groups(model, WD, LD))
    for name, group in groups.items():
        assert group["lr_scale"] == pytest.approx(expected_scale(name), rel=1e-12), name
    assert groups["encoder.patch_embed.proj.weight"]["lr_scale"] == pytest.approx(0.75 ** (DEPTH + 1))
    assert groups["encoder.blocks.0.mlp.fc1.weight"]["lr_scale"] == pytest.approx(0.75 ** DEPTH)
    assert groups["encoder.blocks.3.mlp.fc1.weight"]["lr_scale"] == pytest.approx(0.75)
    assert groups["encoder.norm.weight"]["lr_scale"] == 1.0
    head = {"mae": "decoder_pred.weight", "unetr": "decoder.out.conv.conv.weight", "classifier": "head.weight"}
    assert groups[head[model.kind]]["lr_scale"] == 1.0


def test_no_layer_decay_means_one_scale(model):
    assert {g["lr_scale"] for g in param_groups(model, WD, 1.0)} == {1.0}


def test_apply_lr_multiplies_by_lr_scale(model):
    opt = build_optimizer(model, lr=1.0, weight_decay=WD, betas=(0.9, 0.95), layer_decay=LD)
    assert all(g["betas"] == (0.9, 0.95) for g in opt.param_groups)
    apply_lr(opt, 2e-3)
    for group in opt.param_groups:
        assert group["lr"] == pytest.approx(2e-3 * expected_scale(group["param_names"][0]), rel=1e-12)
    plain = torch.optim.SGD([nn.Parameter(torch.zeros(2))], lr=0.5)  # a group without lr_scale
    apply_lr(plain, 0.25)
    assert plain.param_groups[0]["lr"] == 0.25


def test_adamw_step_applies_decay_and_scales_as_grouped(model):
    """With zero gradients an AdamW step only decays: p <- p * (1 - lr * scale * wd), or leaves p alone."""
    snapshot = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = build_optimizer(model, lr=1.0, weight_decay=WD, betas=(0.9, 0.95), layer_decay=LD)
    apply_lr(opt, 0.1)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    try:
        opt.step()
        decays = expected_decay(model)
        for name, param in model.named_parameters():
            factor = 1 - 0.1 * expected_scale(name) * WD if decays[name] else 1.0
            torch.testing.assert_close(param.detach(), snapshot[name] * factor, rtol=1e-6, atol=0, msg=name)
    finally:
        with torch.no_grad():
            for name, param in model.named_parameters():
                param.copy_(snapshot[name])
                param.grad = None


# --------------------------------------------------------------------------------------------------------
# (c) lr: linear scaling rule, warm-up and cosine
# --------------------------------------------------------------------------------------------------------

def test_linear_scaling_rule():
    assert scaled_lr(1.5e-4, 256) == pytest.approx(1.5e-4, rel=1e-15)
    assert scaled_lr(6.4e-3, 6) == pytest.approx(1.5e-4, rel=1e-12)  # the paper's 3D pre-training lr
    assert scaled_lr(3.44e-2, 6) == pytest.approx(8.0625e-4, rel=1e-12)  # BTCV fine-tuning
    assert scaled_lr(1.72e-2, 6) == pytest.approx(4.03125e-4, rel=1e-12)  # BraTS fine-tuning
    assert scaled_lr(1e-3, 512) == pytest.approx(2 * scaled_lr(1e-3, 256), rel=1e-15)
    assert scaled_lr(1.5e-4, 256, lr=1e-3) == 1e-3  # an absolute lr overrides the rule
    assert scaled_lr(1.5e-4, 256, lr=0.0) == 0.0


def test_lr_counts_the_global_batch_not_the_micro_batch():
    class T:
        batch_size, accum_iter = 256, 4
    p = plan(T, n_items=1000, ctx=Dist(world_size=2))
    assert (p.micro_batch, p.accum_iter, p.steps_per_epoch) == (32, 4, 3)
    assert p.micro_batch * p.accum_iter * 2 == T.batch_size  # the effective batch the lr rule uses


PEAK, MIN, EPOCHS, WARMUP = 1e-3, 1e-5, 10, 2


def test_schedule_warmup():
    assert lr_at(0.0, PEAK, EPOCHS, WARMUP, MIN) == 0.0  # starts at exactly 0 (not at min_lr)
    assert lr_at(1.0, PEAK, EPOCHS, WARMUP, MIN) == pytest.approx(PEAK / 2, rel=1e-15)
    assert lr_at(0.5, PEAK, EPOCHS, WARMUP, MIN) == pytest.approx(PEAK / 4, rel=1e-15)
    assert lr_at(WARMUP, PEAK, EPOCHS, WARMUP, MIN) == PEAK  # the peak, exactly, at the end of warm-up


def test_schedule_cosine():
    # half-way through the cosine: the mean of peak and min_lr; a quarter: (1 + cos(pi/4)) / 2 of the span
    assert lr_at(6.0, PEAK, EPOCHS, WARMUP, MIN) == pytest.approx(MIN + (PEAK - MIN) / 2, rel=1e-12)
    quarter = MIN + (PEAK - MIN) * 0.5 * (1 + math.sqrt(0.5))
    assert lr_at(4.0, PEAK, EPOCHS, WARMUP, MIN) == pytest.approx(quarter, rel=1e-12)
    assert abs(lr_at(EPOCHS, PEAK, EPOCHS, WARMUP, MIN) - MIN) < 1e-12  # the end of the schedule
    assert abs(lr_at(EPOCHS, PEAK, EPOCHS, WARMUP) - 0.0) < 1e-12  # no min_lr: 0 (the official schedule)


def test_schedule_per_iteration_as_the_loop_sets_it():
    """The loop sets lr_at(epoch + step / steps_per_epoch) before each step (§2.1)."""
    steps = 7
    lrs = [lr_at(e + s / steps, PEAK, EPOCHS, WARMUP, MIN) for e in range(EPOCHS) for s in range(steps)]
    assert lrs[0] == 0.0
    assert lrs[WARMUP * steps] == PEAK and max(lrs) == PEAK
    warm, cos = lrs[:WARMUP * steps + 1], lrs[WARMUP * steps:]
    assert all(b > a for a, b in zip(warm, warm[1:])) and all(b < a for a, b in zip(cos, cos[1:]))
    # the last step runs at epoch EPOCHS - 1/steps: a sliver above min_lr, by the closed form
    delta = 1 / (steps * (EPOCHS - WARMUP))
    last = MIN + (PEAK - MIN) * 0.5 * (1 - math.cos(math.pi * delta))
    assert lrs[-1] == pytest.approx(last, rel=1e-9)
    assert MIN < lrs[-1] < MIN + (PEAK - MIN) * (math.pi * delta) ** 2 / 4 * 1.001


def test_last_step_of_the_paper_btcv_pretraining_is_min_lr():
    # 10000 epochs, 100 warm-up, 3 steps per epoch (18 volumes / 6), lr 1.5e-4, no min_lr (§2.1, §3.1, §4)
    last = lr_at(10000 - 1 / 3, 1.5e-4, 10000, 100)
    assert 0.0 < last < 1e-12
