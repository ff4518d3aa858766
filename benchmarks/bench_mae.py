"""MAE pre-training step (forward + backward + AdamW): ours against MONAI's ``MaskedAutoEncoderViT``.

Method. Both models are built from the same shipped config (``configs/btcv/pretrain.yaml`` for the 3D
ViT-B/16 at 96^3, ``configs/cxr14/pretrain.yaml`` for the 2D ViT-B/16 at 224^2,
``configs/hippocampus/pretrain.yaml`` for the demo), with the same sizes (width, depth, heads, MLP ratio,
qkv bias, decoder width / depth / heads, patch, input) and the same loss: MONAI's model returns
predictions and its mask, and the masked norm-pix MSE is added outside with our own code
(:func:`selfmedmae.models.mae.normalize_patches`, the config's variance rule). Random inputs; the mask
ratio is passed to both forwards. One process, both models side by side, steps interleaved (ours, MONAI,
ours, MONAI, ...) after one warm-up step each, so that other jobs on a shared machine slow both alike;
the best measured step is reported.

A step is ``zero_grad``, forward + backward (timed), then the AdamW update (timed apart). Every step
also times a second AdamW implementation on the same gradients (the update is applied twice; timing
only), so one run gives: ours with the AdamW that ``build_optimizer`` now picks (``fused=True``), ours
with the per-tensor loop it used before (commit 82b3508), MONAI with ``torch.optim.AdamW`` defaults
(what a MONAI user writes; on a CPU that is the same loop) and MONAI with ``fused=True``. "MONAI best" is
the faster of the two MONAI rows.

Precisions: ``fp32``, ``bf16`` (autocast) and ``fp16`` (autocast with a ``GradScaler``, as training's
``run.precision=fp16``: the loss is scaled and the row's AdamW steps through the scaler; the second AdamW,
timing only, steps on the gradients as the scaler left them). An update the scaler skips (inf gradients,
while its scale settles in the first steps) is counted and named in the AdamW column, since it times no
update. A model that fails under a precision (MONAI's MaskedAutoEncoderViT under bf16 autocast, say) gets
a "did not run" row with the error.

FLOPs of a step are counted by ``torch.utils.flop_counter.FlopCounterMode`` during the warm-up step
(with the math attention backend, whose matmuls it can count); the FLOP floor is our step's FLOPs at the
matmul peak measured in the same run for the precision used (the bf16 peak for fp16). MFU (model FLOPs
utilisation) is a row's counted FLOPs per second over the best matmul peak of the run in any precision
(bf16 on a GPU): the share of the hardware's fastest matmul rate that the step reaches.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from benchlib import PeakMemory, REPO, best, fmt_bytes, timer
from selfmedmae.config import load_config
from selfmedmae.models.factory import build_model, model_args
from selfmedmae.models.mae import normalize_patches
from selfmedmae.models.patchify import patchify
from selfmedmae.train.optim import build_optimizer


@dataclass
class Case:
    name: str  # e.g. "3D ViT-B/16 96^3"
    config: str  # shipped config, relative to the repo
    batch: int  # crops per step
    mask_ratio: float
    overrides: list = field(default_factory=list)

    @property
    def key(self) -> str:
        """Short id for ``--cases``: ``3d_b8_m0.75``, ``2d_b16_m0.75``, ``demo``."""
        return "demo" if self.name.startswith("demo") else f"{self.name[:2].lower()}_b{self.batch}_m{self.mask_ratio}"


def cases(quick: bool) -> list[Case]:
    if quick:  # the same code paths at toy sizes, for a smoke run
        small = ["model.preset=vit_nano", "model.decoder_embed_dim=48", "model.decoder_depth=1",
                 "model.decoder_num_heads=4"]
        return [Case("3D ViT-nano/16 96^3 (quick)", "configs/btcv/pretrain.yaml", 2, 0.75, small),
                Case("2D ViT-nano/16 224^2 (quick)", "configs/cxr14/pretrain.yaml", 4, 0.75, small),
                Case("demo (hippocampus)", "configs/hippocampus/pretrain.yaml", 16, 0.75)]
    vit3d, vit2d = "configs/btcv/pretrain.yaml", "configs/cxr14/pretrain.yaml"
    return [Case("3D ViT-B/16 96^3", vit3d, 2, 0.75), Case("3D ViT-B/16 96^3", vit3d, 8, 0.75),
            Case("3D ViT-B/16 96^3", vit3d, 2, 0.125), Case("3D ViT-B/16 96^3", vit3d, 8, 0.125),
            Case("2D ViT-B/16 224^2", vit2d, 16, 0.75),
            Case("demo (hippocampus)", "configs/hippocampus/pretrain.yaml", 16, 0.75)]


def case_from_key(key: str, quick: bool) -> Case:
    """A case named by its key, also at a batch or mask ratio the list lacks: ``3d_b32_m0.75`` is the first
    3D case of :func:`cases` (its config and overrides) at batch 32, mask ratio 0.75."""
    for case in cases(quick):
        if case.key == key:
            return case
    dims, _, rest = key.partition("_b")
    batch, _, ratio = rest.partition("_m")
    base = next((c for c in cases(quick) if c.key.startswith(dims + "_")), None)
    try:
        return Case(base.name, base.config, int(batch), float(ratio), list(base.overrides))  # type: ignore[union-attr]
    except (AttributeError, ValueError):
        raise SystemExit(f"--cases {key!r}: expected 3d_b<batch>_m<ratio>, 2d_b<batch>_m<ratio> or demo") from None


def build_pair(case: Case):
    """(our MAE, MONAI's MaskedAutoEncoderViT, input shape, norm_pix_unbiased) at the config's sizes."""
    from monai.networks.nets import MaskedAutoEncoderViT

    cfg = load_config(REPO / case.config, case.overrides)
    img = [int(cfg.data.crop_size)] * 2 if cfg.data.spatial_dims == 2 else [int(s) for s in cfg.data.roi_size]
    args = model_args("mae", cfg.model, img, int(cfg.data.in_chans))
    ours = build_model("mae", args)
    enc = args["encoder"]
    mlp = float(enc["mlp_ratio"])
    monai = MaskedAutoEncoderViT(
        in_channels=enc["in_chans"], img_size=img, patch_size=enc["patch_size"], hidden_size=enc["embed_dim"],
        mlp_dim=int(enc["embed_dim"] * mlp), num_layers=enc["depth"], num_heads=enc["num_heads"],
        masking_ratio=case.mask_ratio, decoder_hidden_size=args["decoder_embed_dim"],
        decoder_mlp_dim=int(args["decoder_embed_dim"] * mlp), decoder_num_layers=args["decoder_depth"],
        decoder_num_heads=args["decoder_num_heads"], qkv_bias=enc["qkv_bias"], spatial_dims=len(img))
    shape = (case.batch, enc["in_chans"], *img)
    return ours, monai, shape, bool(args["norm_pix_unbiased"]), enc["patch_size"], cfg


def monai_loss(model, x: torch.Tensor, ratio: float, patch: int, unbiased: bool) -> torch.Tensor:
    """MONAI's predictions with our masked norm-pix loss (the same lines as ``MAE.forward_loss``)."""
    pred, mask = model(x, masking_ratio=ratio)  # [B, L, P], [B, L] 1 = masked
    target = normalize_patches(patchify(x, [patch] * (x.ndim - 2)).float(), unbiased)
    per_patch = ((pred.float() - target) ** 2).mean(dim=-1)
    return (per_patch * mask).sum() / mask.sum()


@dataclass
class Runner:
    """One model with its loss, its AdamW (the one used) and a second AdamW timed on the same gradients."""

    label: str
    model: torch.nn.Module
    loss: Callable[[torch.Tensor], torch.Tensor]
    optimizers: dict  # name -> optimizer; the first is the one the row's step uses
    fb: list = field(default_factory=list)
    opt: dict = field(default_factory=dict)
    flops: int = 0
    peak: int = 0
    error: Optional[str] = None
    skipped: int = 0  # fp16: measured updates the GradScaler skipped

    def _update(self, name: str, device: torch.device) -> float:
        t: list = []
        with timer(device, t):
            self.optimizers[name].step()
        return t[0]

    def step(self, x: torch.Tensor, autocast, device, record: bool = True, count_flops: bool = False,
             scaler: Optional[torch.amp.GradScaler] = None) -> None:
        if self.error:
            return
        self.model.zero_grad(set_to_none=True)
        fb: list = []
        try:
            counter = FlopCounterMode(display=False) if count_flops else contextlib.nullcontext()
            math = sdpa_kernel([SDPBackend.MATH]) if count_flops else contextlib.nullcontext()
            names = list(self.optimizers)
            times: dict = {}
            with PeakMemory(device) as mem:  # the real step: forward, backward, one update
                with timer(device, fb), counter, math:
                    with autocast():
                        loss = self.loss(x)
                    (scaler.scale(loss) if scaler else loss).backward()
                if scaler:  # fp16: the update through the scaler (skipped on inf / nan gradients), as training
                    t: list = []
                    scale = scaler.get_scale()
                    with timer(device, t):
                        scaler.step(self.optimizers[names[0]])
                        scaler.update()
                    times[names[0]] = t[0]
                    self.skipped += int(record and scaler.get_scale() < scale)
                else:
                    times[names[0]] = self._update(names[0], device)
            for name in names[1:]:  # the other AdamW on the same gradients, timing only
                times[name] = self._update(name, device)
        except RuntimeError as exc:  # e.g. a dtype mismatch under autocast
            self.error = str(exc).splitlines()[0][:120]
            return
        if count_flops:
            self.flops = counter.get_total_flops()  # type: ignore[union-attr]
        if not torch.isfinite(loss):
            self.error = f"loss {float(loss)}"
        if record:
            self.fb += fb
            for name, t in times.items():
                self.opt.setdefault(name, []).append(t)
            self.peak = max(self.peak, mem.peak)


def make_runners(case: Case, device: torch.device):
    ours, monai, shape, unbiased, patch, cfg = build_pair(case)
    ours, monai = ours.to(device), monai.to(device)
    t = cfg.train
    lr = 1.5e-4
    ours_opts = {"fused": build_optimizer(ours, lr, t.weight_decay, t.betas),  # what training uses now
                 "loop": build_optimizer(ours, lr, t.weight_decay, t.betas, impl="loop")}
    monai_opts = {"default": torch.optim.AdamW(monai.parameters(), lr, betas=tuple(t.betas),
                                               weight_decay=t.weight_decay),
                  "fused": torch.optim.AdamW(monai.parameters(), lr, betas=tuple(t.betas),
                                             weight_decay=t.weight_decay, fused=True)}
    ratio = case.mask_ratio
    runners = [Runner("ours", ours, lambda x: ours(x, mask_ratio=ratio)[0], ours_opts),
               Runner("MONAI", monai, lambda x: monai_loss(monai, x, ratio, patch, unbiased), monai_opts)]
    return runners, shape


def run_case(case: Case, precision: str, device: torch.device, steps: int, peaks: dict) -> list[dict]:
    """Rows for one case at one precision: ours (fused / loop AdamW), MONAI (default / fused AdamW)."""
    torch.manual_seed(0)
    runners, shape = make_runners(case, device)
    x = torch.randn(shape, device=device)
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else contextlib.nullcontext
    # one scaler per model, as each training run has its own
    scalers = {r.label: torch.amp.GradScaler(device.type) if precision == "fp16" else None for r in runners}
    for r in runners:  # warm-up, FLOPs counted
        r.step(x, autocast, device, record=False, count_flops=True, scaler=scalers[r.label])
    for _ in range(steps):
        for r in runners:
            r.step(x, autocast, device, scaler=scalers[r.label])
    rows = []
    floor_peak = peaks["bf16" if dtype else "fp32"]
    best_peak = max(peaks.values())
    ours_flops = runners[0].flops
    for r in runners:
        for opt_name in r.optimizers:
            row = {"case": case.name, "batch": case.batch, "mask": case.mask_ratio, "precision": precision,
                   "model": r.label, "adamw": {"fused": "fused", "loop": "for-loop (before)",
                                                "default": "torch default"}[opt_name] if r.label == "ours"
                   else {"default": "torch default", "fused": "fused"}[opt_name]}
            if r.skipped and opt_name == next(iter(r.optimizers)):
                row["adamw"] += f" ({r.skipped} of {steps} updates skipped by the GradScaler)"
            if r.error or not r.fb:
                row["error"] = r.error or "no step measured"
                rows.append(row)
                continue
            fb, opt = best(r.fb), best(r.opt[opt_name])
            step = fb + opt
            row.update(fb=fb, opt=opt, step=step, flops=r.flops, peak=r.peak,
                       achieved=r.flops / step, floor=ours_flops / floor_peak, mfu=r.flops / step / best_peak)
            rows.append(row)
        del r.model
    return rows


def attention_micro(device: torch.device, reps: int = 3, quick: bool = False) -> list[list]:
    """Attention forward + backward of one block, flash vs math backend, at the sequence lengths of the
    3D batch-8 and 2D steps (encoder: visible tokens + class token; decoder: all tokens + class token)."""
    shapes = [("3D b8 m0.75 encoder", 8, 12, 55, 64), ("3D b8 m0.75 decoder", 8, 12, 217, 32),
              ("3D b8 m0.125 encoder", 8, 12, 190, 64), ("2D b16 encoder", 16, 12, 50, 64),
              ("2D b16 decoder", 16, 8, 197, 32)]
    rows = []
    for name, B, H, N, d in shapes:
        B = 1 if quick else B
        q, k, v = (torch.randn(B, H, N, d, device=device, requires_grad=True) for _ in range(3))
        g = torch.randn(B, H, N, d, device=device)
        ms = {}
        for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.MATH):
            def once():
                with sdpa_kernel([backend]):
                    torch.nn.functional.scaled_dot_product_attention(q, k, v).backward(g)
            once()
            t: list = []
            for _ in range(reps):
                with timer(device, t):
                    once()
            ms[backend] = best(t) * 1e3
        f, m = ms[SDPBackend.FLASH_ATTENTION], ms[SDPBackend.MATH]
        rows.append([name + (" (quick: batch 1)" if quick else ""), f"[{B}, {H}, {N}, {d}]", f"{f:.1f}", f"{m:.1f}", "flash" if f <= m else "math"])
    return rows


def target_micro(device: torch.device, reps: int = 5, quick: bool = False) -> list[str]:
    """The norm-pix target before (mean, var, subtract, divide) and now (var_mean, rsqrt) on [8, 216, 4096]."""
    p = torch.randn(1 if quick else 8, 216, 4096, device=device)

    def before():
        mean = p.mean(dim=-1, keepdim=True)
        var = p.var(dim=-1, keepdim=True, unbiased=False)
        return (p - mean) / (var + 1e-6) ** 0.5

    out = {}
    for name, fn in (("before", before), ("now", lambda: normalize_patches(p, False))):
        fn()
        t: list = []
        for _ in range(reps):
            with timer(device, t):
                fn()
        out[name] = best(t) * 1e3
    diff = (before() - normalize_patches(p, False)).abs().max().item()
    return [f"{out['before']:.1f} ms", f"{out['now']:.1f} ms", f"{diff:.1e}"]


def fmt_rows(rows: list[dict]) -> list[list]:
    """Table cells; speed-up = MONAI best step / this step (for our rows)."""
    out = []
    monai_best: dict = {}
    for r in rows:
        if r["model"] == "MONAI" and "step" in r:
            key = (r["case"], r["batch"], r["mask"], r["precision"])
            monai_best[key] = min(monai_best.get(key, float("inf")), r["step"])
    for r in rows:
        head = [r["case"], r["batch"], r["mask"], r["precision"], r["model"], r["adamw"]]
        if "error" in r:
            out.append(head + [f"did not run: {r['error']}"] + [""] * (len(HEADER) - 7))
            continue
        mb = monai_best.get((r["case"], r["batch"], r["mask"], r["precision"]))
        speed = f"{mb / r['step']:.2f}x" if mb and r["model"] == "ours" else ""
        out.append(head + [f"{r['fb']:.2f}", f"{r['opt']:.2f}", f"{r['step']:.2f}", speed,
                           f"{r['flops'] / 1e9:.0f}", f"{r['achieved'] / 1e9:.1f}", f"{r['floor']:.2f}",
                           f"{r['step'] / r['floor']:.1f}x", f"{100 * r['mfu']:.1f} %", fmt_bytes(r["peak"])])
    return out


def fastest_rows(rows: list[dict]) -> list[list]:
    """Per case, batch, mask and model: the fastest row that ran, i.e. the model at its best precision and
    AdamW; and the models that ran in no precision at all."""
    best_of: dict = {}
    for r in rows:
        key = (r["case"], r["batch"], r["mask"], r["model"])
        if "step" in r and (best_of.get(key) is None or r["step"] < best_of[key]["step"]):
            best_of[key] = r
        best_of.setdefault(key, None)
    out = []
    for (case, batch, mask, model), r in best_of.items():
        if r is None:
            out.append([case, batch, mask, model, "ran in no precision", "", "", "", ""])
            continue
        out.append([case, batch, mask, model, r["precision"], r["adamw"], f"{r['step']:.3f}",
                    f"{100 * r['mfu']:.1f} %", fmt_bytes(r["peak"])])
    return out


HEADER = ["case", "batch", "mask", "precision", "model", "AdamW", "fwd+bwd (s)", "AdamW (s)", "step (s)",
          "vs MONAI best", "GFLOP/step", "GFLOP/s", "FLOP floor (s)", "step / floor", "MFU", "peak memory"]
FASTEST_HEADER = ["case", "batch", "mask", "model", "best precision", "AdamW", "step (s)", "MFU", "peak memory"]
