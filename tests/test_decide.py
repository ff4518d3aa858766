"""The one rule from logits to probabilities and decisions (selfmedmae.inference.decide), where bf16 makes it matter:
logits that tie once rounded to bf16, and probabilities carried back with a background fill."""
from __future__ import annotations

import torch

from selfmedmae.inference.decide import decide, fill_background, probabilities
from selfmedmae.metrics.dice import onehot_from_logits


def _tied_bf16_logits() -> torch.Tensor:
    """[1, 3, 4, 4, 4] logits as bf16 gives them: many voxels where two classes tie exactly."""
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(1, 3, 4, 4, 4, generator=g) * 0.05).to(torch.bfloat16).float()
    logits[:, 1] = torch.where(torch.rand(1, 4, 4, 4, generator=g) < 0.5, logits[:, 0], logits[:, 1])
    return logits


def test_label_map_is_the_argmax_of_the_probabilities_it_is_written_beside():
    logits = _tied_bf16_logits()
    p = probabilities(logits, multilabel=False)
    assert p.dtype == torch.float32 and (p[:, 0] == p[:, 1]).sum() > 10  # ties survive the softmax
    labels = decide(p, multilabel=False)
    assert torch.equal(labels, p.argmax(1))
    assert torch.equal(onehot_from_logits(logits, False).argmax(1), labels)  # Dice scores the same decision


def test_regions_are_sigmoid_above_one_half_for_every_caller():
    logits = torch.tensor([[-1e-9, 0.0, 1e-9, 2.0]]).view(1, 4, 1)
    masks = decide(probabilities(logits, multilabel=True), multilabel=True)
    assert masks[0, :, 0].tolist() == [False, False, False, True]  # sigmoid(1e-9) is 0.5 in float32
    assert torch.equal(onehot_from_logits(logits, True).bool(), masks)


def test_background_fill_leaves_whole_voxels_exactly_as_they_were():
    p = probabilities(_tied_bf16_logits(), multilabel=False)[0]  # [3, 4, 4, 4]
    carried = torch.cat([p, torch.zeros(3, 4, 4, 2)], dim=-1)  # two slices outside the crop: no mass
    carried[:, :, :, 3] *= 0.5  # a border slice with half its mass
    before = carried.clone()
    filled = fill_background(carried)
    assert torch.equal(filled[:, :, :, :3], before[:, :, :, :3])  # inside: untouched, ties and all
    assert torch.equal(filled[:, :, :, 4:].argmax(0), torch.zeros(4, 4, 2, dtype=torch.long))
    assert torch.allclose(filled[0, :, :, 4:], torch.ones(4, 4, 2))
    torch.testing.assert_close(filled.sum(0), torch.ones(4, 4, 6))
