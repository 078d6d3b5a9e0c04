"""Mixup (Zhang et al. 2018, arXiv 1710.09412) and CutMix (Yun et al. 2019, arXiv 1905.04899) on whole batches.

As torchvision's classification references (`RandomMixup` / `RandomCutmix`, now `v2.MixUp` / `v2.CutMix` chosen
by `v2.RandomChoice`) and timm's `Mixup` in its per-batch mode: a batch is mixed with probability `prob`; when
both are on, CutMix is chosen with probability `switch_prob`, else Mixup. One coefficient lam ~ Beta(alpha, alpha)
per batch; every sample is mixed with its predecessor in the global batch (torchvision's `roll(1)`; the first
with the last). Mixup blends the images, lam x image + (1 - lam) x partner; CutMix pastes the partner's pixels
into a box of area about (1 - lam) centered uniformly and clipped at the border, and lam becomes the share of the
image that stays. Targets become class probabilities (B, K): lam on the sample's label, 1 - lam on the partner's.

The draws come from a generator seeded per (seed, epoch, batch), so they are the same on any world size and after
a resume; each process mixes its own slice, computing the one partner before its slice itself (`Loader`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from resnetlab.errors import UserError


@dataclass(frozen=True)
class MixConfig:
    """Batch mixing settings (off unless an alpha is positive).

    Attributes:
        mixup_alpha: Beta(alpha, alpha) for Mixup's lam; 0 = no Mixup (torchvision's recipes use 0.2).
        cutmix_alpha: Beta(alpha, alpha) for CutMix's lam; 0 = no CutMix (torchvision's recipes use 1.0).
        prob: probability that a batch is mixed at all (timm's mixup_prob).
        switch_prob: with both on, probability of CutMix rather than Mixup (timm's switch_prob; torchvision 0.5).
    """

    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    prob: float = 1.0
    switch_prob: float = 0.5

    def __post_init__(self) -> None:
        for key in ("mixup_alpha", "cutmix_alpha"):
            if not getattr(self, key) >= 0:
                raise UserError(f"data.{key} must be >= 0 (0 = off); got {getattr(self, key)}")
        for key, name in (("prob", "data.mix_prob"), ("switch_prob", "data.mix_switch_prob")):
            if not 0 <= getattr(self, key) <= 1:
                raise UserError(f"{name} is a probability and must be in [0, 1]; got {getattr(self, key)}")

    @property
    def enabled(self) -> bool:
        """Whether the loader mixes (and so yields class probabilities as targets)."""
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0


@dataclass(frozen=True)
class MixDraw:
    """One batch's mixing: mode "none" | "mixup" | "cutmix", lam (the sample's own share), the CutMix box."""

    mode: str
    lam: float
    box: tuple[int, int, int, int] = (0, 0, 0, 0)  # y1, y2, x1, x2


def draw_mix(config: MixConfig, height: int, width: int, seed: int) -> MixDraw:
    """The batch's mixing from a NumPy generator seeded with `seed` (torch has no seeded Beta sampler).

    Four uniforms first (mix or not, which one, the box center), then lam: each value is the same whichever
    options are on.
    """
    rng = np.random.default_rng(seed)
    u_mix, u_switch, u_y, u_x = rng.random(4)
    if not config.enabled or u_mix >= config.prob:
        return MixDraw("none", 1.0)
    cutmix = config.cutmix_alpha > 0 and (config.mixup_alpha <= 0 or u_switch < config.switch_prob)
    alpha = config.cutmix_alpha if cutmix else config.mixup_alpha
    lam = float(rng.beta(alpha, alpha))
    if not cutmix:
        return MixDraw("mixup", lam)
    # torchvision's RandomCutmix: a box of half-sides r * W, r * H around a uniform center, clipped.
    cy, cx = int(u_y * height), int(u_x * width)
    r = 0.5 * math.sqrt(1.0 - lam)
    half_h, half_w = int(r * height), int(r * width)
    y1, y2 = max(cy - half_h, 0), min(cy + half_h, height)
    x1, x2 = max(cx - half_w, 0), min(cx + half_w, width)
    lam = 1.0 - (y2 - y1) * (x2 - x1) / (height * width)
    return MixDraw("cutmix", lam, (y1, y2, x1, x2))


def mix_batch(x: torch.Tensor, y: torch.Tensor, draw: MixDraw, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix a batch whose row 0 is the partner of row 1 (and row i - 1 of row i); returns rows 1.. mixed.

    Args:
        x: float (n + 1, C, H, W): the partner of the first sample, then the n samples.
        y: int64 (n + 1,) labels.
        draw: from `draw_mix`.
        num_classes: K.

    Returns:
        x float (n, C, H, W) and targets float (n, K): lam on the own label, 1 - lam on the partner's.
    """
    onehot = torch.nn.functional.one_hot(y, num_classes).to(x.dtype)  # (n + 1, K)
    own, partner = x[1:], x[:-1]
    if draw.mode == "none":
        return own, onehot[1:]
    target = onehot[1:].mul(draw.lam).add_(onehot[:-1].mul(1.0 - draw.lam))
    if draw.mode == "mixup":
        return own.mul(draw.lam).add_(partner.mul(1.0 - draw.lam)), target
    y1, y2, x1, x2 = draw.box
    mixed = own.clone()
    mixed[:, :, y1:y2, x1:x2] = partner[:, :, y1:y2, x1:x2]
    return mixed, target
