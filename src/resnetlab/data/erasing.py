"""Random erasing (Zhong et al. 2017, arXiv 1708.04896) on a normalized batch, one rectangle per sample.

As torchvision's `v2.RandomErasing(p, scale=(0.02, 0.33), ratio=(0.3, 3.3), value=0 | "random")` (and timm's
`RandomErasing`): with probability p an image gets one rectangle of 2-33% of its area and aspect ratio 0.3-3.3
(log-uniform), placed uniformly, set to zero (the mean, after normalization) or to standard normal noise per
pixel. Up to ten (area, ratio) tries per image; an image whose ten rectangles all fall out of it stays whole.
All tries are drawn up front for the global batch on a CPU generator (`draw_erasing`); the noise is a counter-based
hash of (batch seed, sample, pixel) computed on the batch's device, so it too is the same for any world size and
after a resume, without drawing noise for samples another process holds.
"""

from __future__ import annotations

import math

import torch

ERASING_VALUES = ("zero", "random")
SCALE = (0.02, 0.33)  # erased area as a fraction of the image (torchvision's and timm's defaults)
RATIO = (0.3, 3.3)  # aspect ratio h / w, drawn log-uniformly
TRIES = 10
# Columns of the (N, 5) int64 parameters: the rectangle (height 0 = not erased) and the sample's row in the
# global batch (the noise's counter).
TOP, LEFT, HEIGHT, WIDTH, ROW = range(5)
_M32 = 0xFFFFFFFF


def draw_erasing(p: float, n: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """(n, 5) int64 rectangles for a batch of n images of height x width (see the column names above).

    One float64 `torch.rand` draw of 1 + 4 x TRIES uniforms per sample: whether to erase, then per try the area,
    the log-ratio and the top-left corner; the first try that fits is used (torchvision's loop, vectorized).
    """
    u = torch.rand((n, 1 + 4 * TRIES), generator=generator, dtype=torch.float64)
    tries = u[:, 1:].view(n, TRIES, 4)
    area = height * width * (SCALE[0] + (SCALE[1] - SCALE[0]) * tries[..., 0])
    log_lo, log_hi = math.log(RATIO[0]), math.log(RATIO[1])
    ratio = torch.exp(log_lo + (log_hi - log_lo) * tries[..., 1])
    h = torch.sqrt(area * ratio).round().long()
    w = torch.sqrt(area / ratio).round().long()
    fits = (h < height) & (w < width) & (h > 0) & (w > 0)  # (N, TRIES)
    first = fits.long().argmax(dim=1, keepdim=True)  # the first try that fits (0 when none does)
    h, w = h.gather(1, first).squeeze(1), w.gather(1, first).squeeze(1)
    top = (tries[..., 2].gather(1, first).squeeze(1) * (height - h + 1)).long()
    left = (tries[..., 3].gather(1, first).squeeze(1) * (width - w + 1)).long()
    erase = (u[:, 0] < p) & fits.any(dim=1)
    h, w = torch.where(erase, h, 0), torch.where(erase, w, 0)
    return torch.stack([top, left, h, w, torch.arange(n)], dim=1)


def erase_(x: torch.Tensor, params: torch.Tensor, value: str = "zero", seed: int = 0) -> torch.Tensor:
    """Erase each sample's rectangle of a float (N, C, H, W) batch in place.

    Args:
        x: the normalized batch, on any device, in channels-last memory (as the Loader makes it).
        params: its rows of `draw_erasing`, on the CPU (which samples to touch is decided there, without a sync).
        value: "zero" (the mean after normalization) or "random" (standard normal noise per pixel).
        seed: the batch's noise seed (the same on every process).

    The rectangles are a float mask of the channels-last rows (`_rectangles`), applied with one multiply (zero) or
    one multiply-add with the noise of the erased samples (random).
    """
    n, c, h, w = x.shape
    erased = (params[:, HEIGHT] > 0).nonzero().squeeze(1)
    if len(erased) == 0:
        return x
    nhwc = x.permute(0, 2, 3, 1)
    rows = nhwc.reshape(n, h, w * c)  # a view when x is channels-last
    target = rows
    if value == "random":  # noise for the erased samples only
        index = erased.to(x.device, non_blocking=True)
        params = params.index_select(0, erased)
        target = rows.index_select(0, index)
    mask = _rectangles(params.to(x.device, non_blocking=True), h, w, c, x.dtype)  # (n or n_erased, H, W * C)
    if value == "zero":
        target.mul_(mask.neg_().add_(1))
    else:
        element = torch.arange(h * w * c, device=x.device).view(1, h, w * c)  # the channels-last element index
        noise = counter_normal(params[:, ROW].to(x.device).view(-1, 1, 1) * (c * h * w) + element, seed)
        rows.index_copy_(0, index, torch.addcmul(target * (1 - mask), noise.to(x.dtype), mask))
    if not nhwc.is_contiguous():  # rows was a copy
        x.copy_(rows.view(n, h, w, c).permute(0, 3, 1, 2))
    return x


def _rectangles(params: torch.Tensor, h: int, w: int, c: int, dtype: torch.dtype) -> torch.Tensor:
    """(n, H, W * C) float mask of channels-last rows: 1 in each sample's rectangle, 0 elsewhere.

    The product of a row mask and a column mask, each from clamped differences (whole-tensor arithmetic: torch's
    fast path on a CPU, where comparisons of broadcast operands are slow).
    """
    f = {"device": params.device, "dtype": dtype}
    ys = torch.arange(h, **f)
    xs = torch.arange(w, **f).repeat_interleave(c)  # the column of each element of a channels-last row
    top, height = params[:, TOP, None].to(dtype), params[:, HEIGHT, None].to(dtype)
    left, width = params[:, LEFT, None].to(dtype), params[:, WIDTH, None].to(dtype)
    # 1 where 0 <= y - top <= height - 1 (exact: small integers in floating point), else 0
    in_rows = (ys - top).clamp_(-1, 0).add_(1).mul_((top + height - 1 - ys).clamp_(-1, 0).add_(1))  # (n, H)
    in_cols = (xs - left).clamp_(-1, 0).add_(1).mul_((left + width - 1 - xs).clamp_(-1, 0).add_(1))  # (n, W * C)
    return in_rows[:, :, None] * in_cols[:, None, :]


def _hash32(v: torch.Tensor) -> torch.Tensor:
    """A bijective 32-bit integer mix of int64 tensors holding values below 2**32."""
    v = ((v >> 16) ^ v) * 0x45D9F3B & _M32
    v = ((v >> 16) ^ v) * 0x45D9F3B & _M32
    return (v >> 16) ^ v


def counter_normal(counter: torch.Tensor, seed: int) -> torch.Tensor:
    """Standard normal float32 values, one per int64 counter (< 2**32), that depend only on (seed, counter).

    A 32-bit integer hash of the counter, xor the seed, hashed again (multiply-xorshift rounds; no product
    overflows 63 bits) gives 24 uniform bits, mapped through the inverse normal CDF: the same numbers for any split
    of the counters between processes, and on any device up to the last bit of erfinv.
    """
    v = _hash32(_hash32(counter & _M32) ^ (seed & _M32)) ^ ((seed >> 32) & _M32)
    centered = ((v >> 8) * 2 - ((1 << 24) - 1)).float() / (1 << 24)  # 2u - 1 for u = (k + 0.5) / 2**24, exact
    return torch.erfinv(centered).mul_(math.sqrt(2.0))
