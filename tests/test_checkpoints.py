"""Native checkpoints, imports and transfers: safe loading, clear mismatches, inflation, interpolation."""
from __future__ import annotations

import pathlib

import pytest
import torch

from conftest import tiny_encoder
from selfmedmae import load_model
from selfmedmae.cli import main
from selfmedmae.errors import UserError
from selfmedmae.models.checkpoint import atomic_save, native, save_model
from selfmedmae.models.factory import build_model
from selfmedmae.models.transfer import inflate_2d_into_3d, transfer_from_native
from selfmedmae.models.vit import ViT

MAE_ARGS = dict(encoder=tiny_encoder(2, pos_embed="sincos"), decoder_embed_dim=32, decoder_depth=1,
                decoder_num_heads=4)


def test_native_round_trip(tmp_path):
    model = build_model("mae", MAE_ARGS)
    path = save_model(tmp_path / "m.pt", "mae", MAE_ARGS, model)
    loaded = load_model(path)
    x, noise = torch.randn(1, 1, 32, 32), torch.rand(1, 16)
    with torch.no_grad():
        assert torch.equal(loaded(x, noise=noise)[0], model.eval()(x, noise=noise)[0])
    assert not loaded.training


def test_foreign_file_is_refused_with_its_name(tmp_path):
    path = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, path)
    with pytest.raises(UserError, match="foreign.pt: not a native selfmedmae checkpoint"):
        load_model(path)


class _Evil:
    """Unpickling this would run code: writes a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_pickled_code_is_never_loaded(tmp_path):
    path, marker = tmp_path / "evil.pt", tmp_path / "code-ran"
    torch.save({"format": "selfmedmae", "obj": _Evil(str(marker))}, path)
    with pytest.raises(UserError, match="evil.pt: cannot be read as a checkpoint: it holds Python objects"):
        load_model(path)
    assert not marker.exists()


def test_mismatch_names_keys_and_shapes(tmp_path):
    model = build_model("mae", MAE_ARGS)
    sd = model.state_dict()
    sd["encoder.cls_token"] = torch.zeros(1, 1, 7)
    del sd["mask_token"]
    sd["extra.weight"] = torch.zeros(2)
    atomic_save(native("mae", MAE_ARGS, sd), tmp_path / "bad.pt")
    with pytest.raises(UserError) as err:
        load_model(tmp_path / "bad.pt")
    msg = str(err.value)
    assert "bad.pt" in msg and "missing key mask_token (1, 1, 32)" in msg
    assert "unexpected key extra.weight (2,)" in msg
    assert "shape of encoder.cls_token: checkpoint (1, 1, 7), model (1, 1, 48)" in msg


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "last.pt"
    atomic_save({"a": torch.ones(1)}, path)
    with pytest.raises(Exception):
        atomic_save({"a": lambda: 0}, path)  # lambdas cannot be pickled: the write fails midway
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(1))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left behind


def test_convert_without_num_heads_exits_2_naming_the_file(tmp_path, capsys):
    src = tmp_path / "official.pt"
    model = build_model("vit", dict(encoder=tiny_encoder(2)))
    torch.save({k.replace("encoder.", ""): v for k, v in model.state_dict().items()}, src)
    assert main(["convert", str(src), str(tmp_path / "out.pt"), "--from", "vit2d"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "official.pt" in err[0] and "num_heads=N" in err[0]
    assert not (tmp_path / "out.pt").exists()


def test_convert_of_a_missing_file_exits_2(tmp_path, capsys):
    assert main(["convert", str(tmp_path / "nope.pt"), str(tmp_path / "o.pt"), "--from", "mae2d",
                 "num_heads=4"]) == 2
    assert "nope.pt: checkpoint file not found" in capsys.readouterr().err


def test_mae_to_classifier_transfer_interpolates_positions():
    mae = build_model("mae", MAE_ARGS)  # 32x32 images, 4x4 grid
    cls = build_model("classifier", dict(encoder=tiny_encoder(2, size=48), num_classes=3))  # 6x6 grid
    report = transfer_from_native(cls, native("mae", MAE_ARGS, mae.state_dict()), "mae.pt")
    assert "pos_embed" in report.loaded
    assert torch.equal(cls.encoder.blocks[0].attn.qkv.weight, mae.encoder.blocks[0].attn.qkv.weight)
    assert cls.encoder.pos_embed.shape == (1, 37, 48) and cls.encoder.pos_embed.requires_grad


def test_transfer_refuses_other_channels():
    mae = build_model("mae", MAE_ARGS)
    unetr = build_model("unetr", dict(encoder=tiny_encoder(2, in_chans=3), num_classes=2))
    with pytest.raises(UserError, match="patch_embed.proj.weight has shape"):
        transfer_from_native(unetr, native("mae", MAE_ARGS, mae.state_dict()), "mae.pt")


def test_inflated_2d_kernel_gives_the_2d_response_on_depth_constant_volumes():
    torch.manual_seed(0)
    vit2d = ViT(img_size=[32, 32], patch_size=8, in_chans=3, embed_dim=48, depth=2, num_heads=4)
    vit3d = ViT(img_size=[32, 32, 16], patch_size=8, in_chans=1, embed_dim=48, depth=2, num_heads=4)
    report = inflate_2d_into_3d(vit3d, vit2d.state_dict(), "imagenet.pt")
    assert any("pos_embed" in s for s in report.skipped)
    image = torch.randn(1, 1, 32, 32)
    volume = image.unsqueeze(-1).expand(-1, -1, -1, -1, 16)  # constant along depth
    out3d = vit3d.patch_embed(volume).reshape(1, 4, 4, 2, 48)[:, :, :, 0]
    out2d = vit2d.patch_embed(image.expand(-1, 3, -1, -1)).reshape(1, 4, 4, 48)  # grey as RGB
    torch.testing.assert_close(out3d, out2d, rtol=1e-4, atol=1e-5)
    assert torch.equal(vit3d.blocks[1].mlp.fc2.weight, vit2d.blocks[1].mlp.fc2.weight)
