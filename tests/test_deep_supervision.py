"""model.deep_supervision: UNETR's auxiliary heads at lower resolutions and nnU-Net's weighted loss, training only."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import tiny_encoder
from selfmedmae.config import ConfigError, load_config
from selfmedmae.preflight import validate
from selfmedmae.models.factory import build_model, model_args
from selfmedmae.data.formats import Labels
from selfmedmae.tasks.segmentation import Segmentation, supervised_loss, supervision_weights

DEMO = Path(__file__).resolve().parents[1] / "configs" / "hippocampus" / "finetune.yaml"


def unetr(patch: int, deep_supervision: bool = True):
    args = dict(encoder=tiny_encoder(3, patch=patch, size=2 * patch), num_classes=3, feature_size=4,
                deep_supervision=deep_supervision)
    return build_model("unetr", args)


@pytest.mark.parametrize("patch, sizes", [(16, [32, 16, 8]), (8, [32, 16])])
def test_training_returns_the_full_and_the_lower_resolutions(patch, sizes):
    torch.manual_seed(0)
    model = unetr(patch).train()
    x = torch.randn(2, 1, 32, 32, 32)
    outs = model(x)
    assert [tuple(o.shape) for o in outs] == [(2, 3, s, s, s) for s in sizes]
    assert torch.allclose(model.eval()(x), outs[0], atol=1e-5)  # inference: the full resolution only


def test_without_the_option_nothing_changes():
    torch.manual_seed(0)
    plain = unetr(16, deep_supervision=False)
    assert not any(".aux." in name for name, _ in plain.named_parameters())
    assert isinstance(plain.train()(torch.randn(1, 1, 32, 32, 32)), torch.Tensor)
    old_args = dict(encoder=tiny_encoder(3, patch=16, size=32), num_classes=3, feature_size=4)  # no field
    assert set(build_model("unetr", old_args).state_dict()) == set(plain.state_dict())


def test_every_parameter_gets_a_gradient_from_the_supervised_loss():
    torch.manual_seed(0)
    model = unetr(16).train()
    label = torch.randint(0, 3, (2, 1, 32, 32, 32))
    Segmentation(Labels(["bg", "a", "b"], False)).loss(model(torch.randn(2, 1, 32, 32, 32)), {"label": label}).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and bool(p.grad.abs().sum() > 0), name


def test_weights_halve_per_stage_and_sum_to_one():
    assert supervision_weights(1) == [1.0]
    assert supervision_weights(3) == pytest.approx([4 / 7, 2 / 7, 1 / 7])


def test_the_loss_is_the_weighted_sum_over_nearest_downsampled_labels():
    label = torch.randint(0, 3, (1, 1, 8, 8, 8))
    outs = [torch.randn(1, 3, 8, 8, 8), torch.randn(1, 3, 4, 4, 4), torch.randn(1, 3, 2, 2, 2)]
    seen = []

    def criterion(out, target):
        seen.append(target)
        return out.mean() + target.float().mean()

    total = supervised_loss(criterion, outs, label)
    assert torch.equal(seen[0], label)
    assert torch.equal(seen[1], label[..., 1::2, 1::2, 1::2]) and seen[1].dtype == label.dtype  # nearest-exact
    assert torch.equal(seen[2], label[..., 2::4, 2::4, 2::4])
    want = sum(w * (o.mean() + t.float().mean()) for w, o, t in zip(supervision_weights(3), outs, seen))
    assert torch.allclose(total, want)


def test_model_args_carry_the_option():
    args = model_args("unetr", load_config(DEMO, ["model.deep_supervision=true"]).model, [32, 32, 32], 1, 3)
    assert args["deep_supervision"] is True and hasattr(build_model("unetr", args).decoder, "aux")
    assert model_args("unetr", load_config(DEMO).model, [32, 32, 32], 1, 3)["deep_supervision"] is False


@pytest.mark.parametrize("overrides", [
    ["model.deep_supervision=true", "model.decoder=primus"],
    ["model.deep_supervision=true", "model.patch_size=4"],
])
def test_unusable_settings_are_one_line_naming_the_key(overrides):
    with pytest.raises(ConfigError, match=r"^model\.deep_supervision: [^\n]+$"):
        validate(load_config(DEMO, overrides), "check-data")


def test_the_demo_config_passes_with_deep_supervision():
    validate(load_config(DEMO, ["model.deep_supervision=true"]), "check-data")
