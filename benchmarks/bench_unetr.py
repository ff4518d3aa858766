"""UNETR sliding-window inference: ours against MONAI's ``UNETR`` with the same weights.

Method. Our UNETR (ViT-B/16, 96^3, feature size 16, 14 BTCV classes; ``configs/btcv/finetune_mae.yaml``
sizes) is built with random weights and copied into MONAI's ``UNETR`` with the same sizes (qkv bias on,
instance norm, residual blocks); the key map is :data:`KEY_MAP`. MONAI's ViT in ``UNETR`` has no class
token and ours (as the official UNETR3D) has one, so whole-model outputs differ by design; the check is
therefore made in two halves that together cover every weight: (1) our encoder blocks on the patch
tokens without the class token against MONAI's ViT (final tokens and the three taps), (2) our decoder on
MONAI's encoder features against MONAI's output. Then a BTCV-sized volume (192 x 192 x 128 after
resampling) goes through MONAI's ``sliding_window_inference`` (96^3 windows, overlap 0.5, constant
blending, ``eval.sw_batch_size`` windows a batch) with each model: ours through
:func:`selfmedmae.inference.forward.sliding_window_logits`, the path ``evaluate``, ``predict`` and validation
use. The two models alternate (ours, MONAI, ours, MONAI, ... ``passes`` times each) and each row reports its
best pass, so that neither gains from running second on warm caches or loses to another job's burst; a
first run in a fixed order (ours first, one pass) had put ours at 0.82x, an A/B of single 4-window forwards
at 0.95-1.05x.
"""
from __future__ import annotations

import torch

from benchlib import PeakMemory, REPO, fmt_bytes, timer
from selfmedmae.config import load_config
from selfmedmae.inference.forward import sliding_window_logits
from selfmedmae.models.factory import build_model, model_args

KEY_MAP = [("encoder.patch_embed.proj.", "vit.patch_embedding.patch_embeddings."),
           ("encoder.norm.", "vit.norm."), ("encoder.blocks.", "vit.blocks."), (".attn.proj.", ".attn.out_proj."),
           (".mlp.fc1.", ".mlp.linear1."), (".mlp.fc2.", ".mlp.linear2."), ("decoder.", "")]


def to_monai_state(ours: dict) -> dict:
    out = {}
    for key, value in ours.items():
        if key == "encoder.cls_token":
            continue  # MONAI's UNETR has no class token
        if key == "encoder.pos_embed":
            out["vit.patch_embedding.position_embeddings"] = value[:, 1:]
            continue
        for a, b in KEY_MAP:
            key = key.replace(a, b)
        out[key] = value
    return out


def build_pair(quick: bool):
    from monai.networks.nets import UNETR as MonaiUNETR

    # quick: toy sizes, still 12 blocks (MONAI taps 3, 6, 9) and several windows over the volume
    overrides = ["model.preset=vit_nano", "model.depth=12", "data.roi_size=[32,32,32]"] if quick else []
    cfg = load_config(REPO / "configs" / "btcv" / "finetune_mae.yaml", overrides)
    roi = [int(s) for s in cfg.data.roi_size]
    args = model_args("unetr", cfg.model, roi, int(cfg.data.in_chans), num_classes=14)
    ours = build_model("unetr", args).eval()
    enc = args["encoder"]
    monai = MonaiUNETR(in_channels=enc["in_chans"], out_channels=14, img_size=roi, feature_size=args["feature_size"],
                       hidden_size=enc["embed_dim"], mlp_dim=int(enc["embed_dim"] * enc["mlp_ratio"]),
                       num_heads=enc["num_heads"], proj_type="conv", norm_name="instance", res_block=True,
                       qkv_bias=enc["qkv_bias"]).eval()
    if enc["depth"] != 12 or ours.skip_blocks != [3, 6, 9]:
        raise SystemExit("MONAI's UNETR taps blocks 3, 6, 9 of 12: the comparison needs a 12-block encoder")
    missing, unexpected = monai.load_state_dict(to_monai_state(ours.state_dict()), strict=False)
    if unexpected or [k for k in missing if "norm_cross_attn" not in k]:
        raise SystemExit(f"weight map incomplete: missing {missing}, unexpected {unexpected}")
    return ours, monai, cfg, roi


@torch.no_grad()
def check_same_weights(ours, monai, roi) -> float:
    """Max abs difference over the two halves described in the module docstring."""
    torch.manual_seed(1)
    x = torch.rand(1, 1, *roi)
    enc = ours.encoder
    tokens = enc.patch_embed(x) + enc.pos_embed[:, 1:]  # [1, L, D], no class token
    final, taps = enc.forward_blocks(tokens, ours.skip_blocks)
    m_final, hidden = monai.vit(x)
    diffs = [(final - m_final).abs().max()] + [(t - hidden[b]).abs().max() for t, b in zip(taps, ours.skip_blocks)]
    grid = [s // p for s, p in zip(roi, enc.patch_size)]

    def to_map(t):  # [B, L, D] -> [B, D, *grid]
        return t.transpose(1, 2).reshape(t.shape[0], t.shape[2], *grid)

    ours_out = ours.decoder(x, to_map(m_final), [to_map(hidden[b]) for b in ours.skip_blocks])
    diffs.append((ours_out - monai(x)).abs().max())
    return float(max(diffs))


def run(quick: bool, device: torch.device, size: list[int], passes: int = 2) -> tuple[list[list], dict]:
    ours, monai, cfg, roi = build_pair(quick)
    diff = check_same_weights(ours, monai, roi)
    ours, monai = ours.to(device), monai.to(device)
    torch.manual_seed(0)
    volume = torch.rand(1, 1, *size)
    sw, overlap = int(cfg.eval.sw_batch_size), float(cfg.eval.overlap)
    outputs, rows = {}, []
    models = {"ours": ours, "MONAI": monai}
    times: dict = {label: [] for label in models}
    peaks: dict = {label: 0 for label in models}
    for model in models.values():
        with torch.no_grad():
            model(torch.rand(1, 1, *roi, device=device))  # warm-up: one window
    for _ in range(passes):
        for label, model in models.items():
            with PeakMemory(device) as mem, timer(device, times[label]):
                outputs[label] = sliding_window_logits(model, volume, roi, sw, overlap, device)
            peaks[label] = max(peaks[label], mem.peak)
    for label in models:
        rows.append([label, "x".join(map(str, size)), "x".join(map(str, roi)), overlap, sw, "fp32",
                     f"{min(times[label]):.1f}", fmt_bytes(peaks[label])])
    out_diff = float((outputs["ours"] - outputs["MONAI"]).abs().max())
    speed = float(rows[1][6]) / float(rows[0][6])
    rows[0].append(f"{speed:.2f}x")
    rows[1].append("")
    return rows, {"weights_diff": diff, "output_diff": out_diff}


HEADER = ["model", "volume", "window", "overlap", "sw batch", "precision", "seconds", "peak memory", "vs MONAI"]
