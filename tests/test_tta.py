"""eval.tta: mirrored test-time augmentation in sliding_window_logits, the one path of validation, evaluate
and predict."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from selfmedmae.config import ConfigError, load_config
from selfmedmae.preflight import validate
from selfmedmae.data.formats import Labels
from selfmedmae.tasks import segmentation
from selfmedmae.inference.forward import LoadedRun, mirror_axes, mirrored_logits, segment_logits, sliding_window_logits
from selfmedmae.runtime.device import precision
from selfmedmae.runtime.distributed import Dist

ROI = [4, 6, 5]
CPU = torch.device("cpu")
DEMO = Path(__file__).resolve().parents[1] / "configs" / "hippocampus" / "finetune.yaml"


class Ramps(nn.Module):
    """Logits k = image x w_k, with fixed weights w_k [*ROI] that no flip leaves alone (known output)."""

    def __init__(self):
        super().__init__()
        n = torch.arange(1.0, 1.0 + 4 * 6 * 5).reshape(ROI)
        self.register_buffer("w", torch.stack([n, n.pow(2).remainder(7.0) - n / 10]))  # [2, *ROI]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, 1, *ROI] -> [B, 2, *ROI]
        return x * self.w[None]


def by_hand(image: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Mean over the 8 flips f of f(model(f(x))) = x * f(w) (every flip is its own inverse)."""
    flips = [()] + [tuple(2 + a for a in axes) for axes in mirror_axes(3)]
    mean_w = sum(w[None].flip(list(dims)) if dims else w[None] for dims in flips) / 8  # [1, 2, *ROI]
    return image * mean_w


@pytest.fixture()
def image() -> torch.Tensor:
    return torch.rand(1, 1, *ROI, generator=torch.Generator().manual_seed(0)) + 0.5  # [1, 1, *ROI]


def test_the_mirror_combinations_are_nnunets_seven():
    assert mirror_axes(3) == [(0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)]
    assert mirror_axes(2) == [(0,), (1,), (0, 1)]


def test_tta_is_the_mean_over_the_flips_computed_by_hand(image):
    model = Ramps()
    plain = sliding_window_logits(model, image[0], ROI, 1, 0.5, CPU)
    mirrored = sliding_window_logits(model, image[0], ROI, 1, 0.5, CPU, tta=True)
    assert torch.allclose(plain, model(image))  # tta off: the network's logits as before
    assert torch.allclose(mirrored, by_hand(image, model.w), rtol=1e-6)
    assert not torch.allclose(mirrored, plain, rtol=1e-2)


def test_a_flip_equivariant_network_is_unchanged_by_tta():
    conv = nn.Conv3d(1, 3, 1)  # a 1x1x1 convolution commutes with every flip
    x = torch.randn(2, 1, 6, 8, 4)
    with torch.no_grad():
        assert torch.allclose(mirrored_logits(conv, x), conv(x), atol=1e-6)


def loaded(cfg, model) -> LoadedRun:
    return LoadedRun(Path("run/checkpoints/best.pt"), cfg, model, "unetr", CPU, precision("fp32", CPU),
                     {"num_classes": 2, "encoder": {"in_chans": 1}}, Labels(["bg", "a"], False))


def test_evaluate_and_predict_read_eval_tta(image):
    model = Ramps()
    off = load_config(DEMO, [f"data.roi_size={ROI}"])
    on = load_config(DEMO, [f"data.roi_size={ROI}", "eval.tta=true"])
    assert off.eval.tta is False
    assert torch.allclose(segment_logits(loaded(off, model), image[0]), model(image))
    assert torch.allclose(segment_logits(loaded(on, model), image[0]), by_hand(image, model.w), rtol=1e-6)


class Seen(Exception):
    pass


@pytest.mark.parametrize("tta", [False, True])
def test_validation_passes_eval_tta(monkeypatch, image, tta):
    def spy(*args, **kwargs):
        raise Seen(kwargs.get("tta"))

    monkeypatch.setattr(segmentation, "sliding_window_logits", spy)
    cfg = load_config(DEMO, [f"eval.tta={str(tta).lower()}"])
    item = {"image": image[0], "label": torch.zeros(1, *ROI, dtype=torch.int64), "id": "a"}
    with pytest.raises(Seen) as seen:
        segmentation.validate(Ramps(), [item], Labels(["bg", "a"], False), cfg, precision("fp32", CPU), Dist())
    assert seen.value.args == (tta,)


def test_tta_is_refused_for_classification():
    cfg = load_config(None, ["task=classification", "data.format=cxr14", "data.spatial_dims=2", "eval.tta=true"])
    with pytest.raises(ConfigError, match=r"^eval\.tta: "):
        validate(cfg, "evaluate")
