"""1 x 1 convolutions and kernel = stride transposed convolutions as matmuls: torch's results, torch's keys."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from selfmedmae.models.factory import build_model
from selfmedmae.models.pointwise import MATMUL_CONV, MATMUL_UPSAMPLE, use_matmul_convolutions

LAYOUTS = {2: torch.channels_last, 3: torch.channels_last_3d}


def stack(dims: int) -> nn.Sequential:
    conv, up = (nn.Conv2d, nn.ConvTranspose2d) if dims == 2 else (nn.Conv3d, nn.ConvTranspose3d)
    return nn.Sequential(conv(5, 7, 1), up(7, 3, 2, 2), conv(3, 4, 1, bias=False), up(4, 2, 2, 2, bias=False),
                         conv(2, 2, 3, padding=1),  # not pointwise: left as it is
                         up(2, 2, 3, 2),  # kernel != stride: left as it is
                         conv(2, 2, 1, stride=2))  # strided: left as it is


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).abs().max() / b.abs().max()).detach())


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("channels_last", [False, True])
def test_outputs_and_gradients_are_torchs(dims, channels_last):
    torch.manual_seed(0)
    reference = stack(dims)
    fast = copy.deepcopy(reference)
    assert use_matmul_convolutions(fast) == 4
    assert [type(m).__name__ for m in fast] == [
        f"MatmulConv{dims}d", f"MatmulConvTranspose{dims}d", f"MatmulConv{dims}d", f"MatmulConvTranspose{dims}d",
        f"Conv{dims}d", f"ConvTranspose{dims}d", f"Conv{dims}d"]
    assert list(fast.state_dict()) == list(reference.state_dict())
    x = torch.randn(2, 5, *[6] * dims)
    if channels_last:
        x = x.contiguous(memory_format=LAYOUTS[dims])
    outputs, grads = [], []
    for model in (fast, reference):
        xi = x.clone().requires_grad_()
        y = model(xi)
        outputs.append(y)
        grads.append(torch.autograd.grad(y.square().sum(), [xi, *model.parameters()]))
    assert outputs[0].shape == outputs[1].shape == (2, 2, *[25] * dims)
    assert relative(*outputs) < 1e-6
    assert all(relative(a, b) < 1e-5 for a, b in zip(*grads))
    if channels_last:  # the layout is kept through the swapped layers
        assert fast[:4](x).is_contiguous(memory_format=LAYOUTS[dims])


def test_other_calls_take_torchs_own_forward():
    conv = MATMUL_CONV[nn.Conv3d](4, 2, 1)
    up = MATMUL_UPSAMPLE[nn.ConvTranspose3d](4, 2, 2, 2)
    unbatched = torch.randn(4, 3, 3, 3)
    assert conv(unbatched).shape == (2, 3, 3, 3) and up(unbatched).shape == (2, 6, 6, 6)
    assert up(unbatched[None], output_size=[7, 7, 7]).shape == (1, 2, 7, 7, 7)  # output_size: torch's
    with pytest.raises(RuntimeError, match="channels"):  # torch's own message for a wrong input
        conv(torch.randn(1, 3, 3, 3, 3))


def test_unetr_decoder_runs_its_pointwise_and_upsampling_layers_as_matmuls():
    args = {"encoder": {"img_size": [32, 32, 32], "patch_size": [16, 16, 16], "in_chans": 1,
                        "embed_dim": 48, "depth": 4, "num_heads": 4}, "num_classes": 3, "feature_size": 8}
    model = build_model("unetr", args)
    names = {type(m).__name__ for m in model.decoder.modules()}
    assert {"MatmulConv3d", "MatmulConvTranspose3d"} <= names
    left = [m for m in model.decoder.modules() if type(m) in (nn.Conv3d, nn.ConvTranspose3d)]
    assert left and all(m.kernel_size == (3, 3, 3) for m in left)  # only the 3x3x3 convolutions remain
