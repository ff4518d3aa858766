"""model.decoder: primus, a Primus-style light decoder on the same ViT as UNETR (the unetr kind's decoder field)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import tiny_encoder
from selfmedmae.config import ConfigError, load_config
from selfmedmae.preflight import validate
from selfmedmae.models.checkpoint import atomic_save, load_model, native
from selfmedmae.models.factory import build_model, model_args
from selfmedmae.models.initialise import initialise
from selfmedmae.models.pointwise import MatmulConv3d, MatmulConvTranspose3d
from selfmedmae.models.primus import ChannelLayerNorm, PrimusSegmenter, stage_widths
from selfmedmae.models.unetr import UNETR
from selfmedmae.train.optim import param_groups

DEMO = Path(__file__).resolve().parents[1] / "configs" / "hippocampus" / "finetune.yaml"


def primus(patch: int = 8, classes: int = 2, feature_size: int = 8, **kw) -> PrimusSegmenter:
    args = dict(encoder=tiny_encoder(3, patch=patch, size=2 * patch), num_classes=classes, decoder="primus",
                feature_size=feature_size, **kw)
    return build_model("unetr", args)


@pytest.mark.parametrize("patch, shape", [(8, (40, 56, 40)), (8, (32, 32, 32)), (16, (48, 32, 64)),
                                          (16, (16, 16, 16))])
def test_output_is_full_resolution_for_odd_token_grids(patch, shape):
    model = primus(patch)
    out = model(torch.randn(2, 1, *shape))
    assert out.shape == (2, 2, *shape)


def test_stages_halve_the_width_down_to_feature_size():
    assert stage_widths(768, 4, 16) == [384, 192, 96, 48]
    assert stage_widths(96, 3, 8) == [48, 24, 12]
    assert stage_widths(48, 3, 16) == [24, 16, 16]
    model = primus(8, feature_size=16)  # embed_dim 48, patch 8: three stages
    ups = [m for m in model.decoder.modules() if isinstance(m, MatmulConvTranspose3d)]
    assert [(m.in_channels, m.out_channels, m.kernel_size, m.stride) for m in ups] == [
        (48, 24, (2, 2, 2), (2, 2, 2)), (24, 16, (2, 2, 2), (2, 2, 2)), (16, 16, (2, 2, 2), (2, 2, 2))]
    assert isinstance(model.decoder.out, MatmulConv3d) and model.decoder.out.out_channels == 2
    assert sum(isinstance(m, ChannelLayerNorm) for m in model.decoder.modules()) == 3


def test_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    model = primus(8)
    model(torch.randn(2, 1, 16, 24, 16)).square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and bool(torch.isfinite(p.grad).all()), name
        assert bool(p.grad.abs().sum() > 0), name


def test_no_skip_connections_only_the_final_normed_tokens_reach_the_decoder():
    torch.manual_seed(0)
    model = primus(8).eval()
    x = torch.randn(1, 1, 16, 16, 16)
    seen = {}
    model.decoder.register_forward_pre_hook(lambda m, args: seen.setdefault("map", args[0]))
    out = model(x)
    tokens = model.encoder(x)  # [1, 1 + 8, D] after the encoder's norm
    assert torch.equal(seen["map"], tokens[:, 1:].transpose(1, 2).reshape(1, 48, 2, 2, 2))
    assert torch.equal(out, model.decoder(seen["map"]))


def test_channel_layer_norm_is_layernorm_over_channels_in_any_layout():
    norm = ChannelLayerNorm(6)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2)
        norm.bias.uniform_(-1, 1)
    x = torch.randn(2, 6, 3, 4, 5)
    want = torch.nn.functional.layer_norm(x.movedim(1, -1), (6,), norm.weight, norm.bias, 1e-6).movedim(-1, 1)
    assert torch.allclose(norm(x), want, atol=1e-5)
    assert torch.allclose(norm(x.contiguous(memory_format=torch.channels_last_3d)), want, atol=1e-5)


def test_bf16_autocast_keeps_the_norm_in_float32():
    norm = ChannelLayerNorm(8)
    torch.manual_seed(0)
    x = (torch.randn(1, 8, 4, 4, 4) * 3 + 300).to(torch.bfloat16)  # a large offset: bf16 statistics lose it
    want = norm(x.float())
    got = norm(x)
    assert got.dtype == torch.bfloat16
    assert torch.allclose(got.float(), want, atol=0.05)
    naive = (x - x.mean(1, keepdim=True)) / (x.var(1, keepdim=True, unbiased=False) + 1e-6).sqrt()
    assert not torch.allclose(naive.float(), want, atol=0.05)  # the check above could fail


def test_channels_last_computes_the_same():
    torch.manual_seed(0)
    plain = primus(8)
    fast = primus(8, channels_last=True)
    fast.load_state_dict(plain.state_dict())
    x = torch.randn(1, 1, 24, 16, 16)
    assert torch.allclose(plain(x), fast(x), atol=1e-5)


def test_model_args_record_the_decoder_and_old_checkpoints_build_unetr():
    cfg = load_config(DEMO, ["model.decoder=primus"])
    args = model_args("unetr", cfg.model, [32, 32, 32], 1, 3)
    assert args["decoder"] == "primus" and isinstance(build_model("unetr", args), PrimusSegmenter)
    default = model_args("unetr", load_config(DEMO).model, [32, 32, 32], 1, 3)
    assert default["decoder"] == "unetr"
    old = {k: v for k, v in default.items() if k != "decoder"}  # written before model.decoder existed
    assert isinstance(build_model("unetr", old), UNETR)
    with pytest.raises(ValueError, match="decoder"):
        build_model("unetr", {**default, "decoder": "segformer"})


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = primus(8).eval()
    args = dict(encoder=tiny_encoder(3, patch=8, size=16), num_classes=2, decoder="primus", feature_size=8)
    path = atomic_save(native("unetr", args, model.state_dict()), tmp_path / "best.pt")
    again = load_model(path)
    x = torch.randn(1, 1, 16, 16, 16)
    assert isinstance(again, PrimusSegmenter) and torch.equal(again(x), model(x))


def test_mae_weights_load_into_the_encoder_and_layer_decay_groups_it(tmp_path):
    mae_args = dict(encoder=tiny_encoder(3, patch=8, size=16), decoder_embed_dim=32, decoder_depth=1,
                    decoder_num_heads=4)
    mae = build_model("mae", mae_args)
    path = atomic_save(native("mae", mae_args, mae.state_dict()), tmp_path / "mae.pt")
    model = primus(8)
    initialise(model, f"mae:{path}")
    assert torch.equal(model.encoder.blocks[1].attn.qkv.weight, mae.encoder.blocks[1].attn.qkv.weight)
    groups = param_groups(model, 0.05, layer_decay=0.5)
    scale = {name: g["lr_scale"] for g in groups for name in g["param_names"]}
    depth = model.encoder.depth
    assert scale["encoder.blocks.0.attn.qkv.weight"] == 0.5 ** depth
    assert all(scale[n] == 1.0 for n in scale if n.startswith("decoder."))


@pytest.mark.parametrize("overrides, key", [
    (["model.decoder=segformer"], "model.decoder"),
    (["model.decoder=primus", "model.skip_blocks=[1,2]"], "model.skip_blocks"),
    (["model.decoder=primus", "model.patch_size=12", "data.roi_size=[36,36,36]"], "model.patch_size"),
])
def test_bad_decoder_settings_are_one_line_naming_the_key(overrides, key):
    cfg = load_config(DEMO, overrides)
    with pytest.raises(ConfigError) as err:
        validate(cfg, "check-data")
    text = str(err.value)
    assert text.startswith(f"{key}: ") and "\n" not in text


def test_the_demo_config_passes_with_the_primus_decoder():
    validate(load_config(DEMO, ["model.decoder=primus"]), "check-data")
