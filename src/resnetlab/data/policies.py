"""RandAugment, TrivialAugmentWide and AutoAugment (CIFAR-10 policy) on whole uint8 batches, per-sample parameters.

The policies are torchvision's (`torchvision.transforms.v2.RandAugment`, `TrivialAugmentWide`, `AutoAugment`
with `AutoAugmentPolicy.CIFAR10`; Cubuk et al. 2019, arXiv 1909.13719; Müller & Hutter 2021, arXiv 2103.10158;
Cubuk et al. 2018, arXiv 1805.09501): the same operations, magnitude tables, signs and probabilities, nearest
interpolation and a zero fill. What differs is how they run: torchvision draws and applies them one image at a
time in DataLoader workers; here every sample's operations and magnitudes are drawn up front for the global batch
on a CPU generator (`draw_policy`), and `apply_policy` then groups the samples by kind of operation and transforms
each group at once on the batch's device, in the Loader's channels-last layout.

torchvision's v2 kernels take one parameter for a whole batch, so they fit a group only where every sample shares
it; with a magnitude per sample they would run once per distinct value (up to 62 per op for TrivialAugmentWide).
Instead each kernel's arithmetic is applied with per-sample parameters, in the order and precision torchvision's
CPU kernels use (a fused multiply-add is reproduced in float64): the geometric ops as one gather of pixels through
per-sample matrices, the seven pointwise ops (Brightness, Contrast, Posterize, Solarize, AutoContrast, Equalize,
Invert) as one gather through per-sample 256-entry tables, Color and Sharpness by their formulas. Every image comes
out as torchvision's v2 tensor kernels make it, pixel for pixel (tests/data/test_policies.py checks this on the CPU).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from resnetlab.errors import UserError

POLICIES = ("randaugment", "trivialaugment", "autoaugment")
OPS = ("Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color", "Contrast",
       "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize", "Invert")
_OP = {name: k for k, name in enumerate(OPS)}
SKIP = -1  # an op slot that does nothing (AutoAugment's probability said no)
RANDAUGMENT_BINS = 31  # torchvision's num_magnitude_bins for RandAugment and TrivialAugmentWide
AUTOAUGMENT_BINS = 10  # AutoAugment's magnitude indices 0..9
# Columns of the uniform draw per sample and op slot.
_CHOICE, _BIN, _SIGN, _APPLY = range(4)

# name -> (magnitudes(num_bins, height, width) as a list, or None for parameter-free ops; signed). The tables are
# float32 values whatever torch's default dtype (torchvision's, under its float32 default): they are cached, so a
# table made under another default would change the magnitudes of every later run in the process.
F32 = torch.float32
Space = dict[str, tuple[Callable[[int, int, int], list[float] | None], bool]]


def _linspace(end: float) -> Callable[[int, int, int], list[float]]:
    return lambda bins, h, w: torch.linspace(0.0, end, bins, dtype=F32).tolist()


def _posterize_bits(levels: int) -> Callable[[int, int, int], list[float]]:
    return lambda bins, h, w: (8 - (torch.arange(bins, dtype=F32) / ((bins - 1) / levels))).round().int().tolist()


_NONE: tuple[Callable[[int, int, int], None], bool] = (lambda bins, h, w: None, False)
_SOLARIZE = (lambda bins, h, w: torch.linspace(1.0, 0.0, bins, dtype=F32).tolist(), False)
# RandAugment's and AutoAugment's magnitudes (torchvision.transforms.v2._auto_augment).
_STANDARD: Space = {
    "ShearX": (_linspace(0.3), True), "ShearY": (_linspace(0.3), True),
    "TranslateX": (lambda bins, h, w: torch.linspace(0.0, 150.0 / 331.0 * w, bins, dtype=F32).tolist(), True),
    "TranslateY": (lambda bins, h, w: torch.linspace(0.0, 150.0 / 331.0 * h, bins, dtype=F32).tolist(), True),
    "Rotate": (_linspace(30.0), True), "Brightness": (_linspace(0.9), True), "Color": (_linspace(0.9), True),
    "Contrast": (_linspace(0.9), True), "Sharpness": (_linspace(0.9), True), "Posterize": (_posterize_bits(4), False),
    "Solarize": _SOLARIZE, "AutoContrast": _NONE, "Equalize": _NONE,
}
RANDAUGMENT_SPACE: Space = {"Identity": _NONE, **_STANDARD}
AUTOAUGMENT_SPACE: Space = {**_STANDARD, "Invert": _NONE}
TRIVIALAUGMENT_SPACE: Space = {
    "Identity": _NONE, "ShearX": (_linspace(0.99), True), "ShearY": (_linspace(0.99), True),
    "TranslateX": (_linspace(32.0), True), "TranslateY": (_linspace(32.0), True), "Rotate": (_linspace(135.0), True),
    "Brightness": (_linspace(0.99), True), "Color": (_linspace(0.99), True), "Contrast": (_linspace(0.99), True),
    "Sharpness": (_linspace(0.99), True), "Posterize": (_posterize_bits(6), False), "Solarize": _SOLARIZE,
    "AutoContrast": _NONE, "Equalize": _NONE,
}
# AutoAugmentPolicy.CIFAR10: 25 sub-policies of two (op, probability, magnitude index) each (Cubuk et al. 2018).
CIFAR10_POLICY: tuple[tuple[tuple[str, float, int | None], tuple[str, float, int | None]], ...] = (
    (("Invert", 0.1, None), ("Contrast", 0.2, 6)), (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
    (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)), (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.5, None), ("Equalize", 0.9, None)), (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
    (("Color", 0.4, 3), ("Brightness", 0.6, 7)), (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
    (("Equalize", 0.6, None), ("Equalize", 0.5, None)), (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
    (("Color", 0.7, 7), ("TranslateX", 0.5, 8)), (("Equalize", 0.3, None), ("AutoContrast", 0.4, None)),
    (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)), (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
    (("Solarize", 0.5, 2), ("Invert", 0.0, None)), (("Equalize", 0.2, None), ("AutoContrast", 0.6, None)),
    (("Equalize", 0.2, None), ("Equalize", 0.6, None)), (("Color", 0.9, 9), ("Equalize", 0.6, None)),
    (("AutoContrast", 0.8, None), ("Solarize", 0.2, 8)), (("Brightness", 0.1, 3), ("Color", 0.7, 0)),
    (("Solarize", 0.4, 5), ("AutoContrast", 0.9, None)), (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.9, None), ("Solarize", 0.8, 3)), (("Equalize", 0.8, None), ("Invert", 0.1, None)),
    (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, None)),
)


@dataclass(frozen=True)
class PolicyConfig:
    """Which automatic augmentation policy to apply.

    Attributes:
        name: randaugment, trivialaugment (TrivialAugmentWide) or autoaugment (the CIFAR-10 policy).
        num_ops: RandAugment: operations applied one after the other to each image (torchvision's 2).
        magnitude: RandAugment: the magnitude bin, 0..30 (torchvision's 9 of 31 bins).
    """

    name: str
    num_ops: int = 2
    magnitude: int = 9

    def __post_init__(self) -> None:
        if self.name not in POLICIES:
            raise UserError(f"unknown augmentation policy {self.name!r}; choose one of {', '.join(POLICIES)}")
        if self.num_ops < 0:
            raise UserError(f"data.randaugment_ops must be >= 0; got {self.num_ops}")
        if not 0 <= self.magnitude < RANDAUGMENT_BINS:
            raise UserError(f"data.randaugment_magnitude must be in 0..{RANDAUGMENT_BINS - 1}; got {self.magnitude}")

    @property
    def slots(self) -> int:
        """Operations drawn per image (some may be skipped)."""
        return {"randaugment": self.num_ops, "trivialaugment": 1, "autoaugment": 2}[self.name]


@dataclass
class PolicyDraws:
    """A batch's operations (int64 (N, S), indices into OPS or SKIP) and signed magnitudes (float64 (N, S))."""

    ops: torch.Tensor
    magnitudes: torch.Tensor

    def rows(self, index: torch.Tensor) -> PolicyDraws:
        """The draws of these samples (CPU int64 indices)."""
        return PolicyDraws(self.ops.index_select(0, index), self.magnitudes.index_select(0, index))


# ---------------------------------------------------------------------------------------------- drawing


@dataclass(frozen=True)
class _SpaceTable:
    """An op space as tensors: the global op index, whether it is signed, and its magnitude per bin."""

    ops: torch.Tensor  # (K,) int64
    signed: torch.Tensor  # (K,) bool
    magnitudes: torch.Tensor  # (K, bins) float64 (0 for parameter-free ops)


@functools.lru_cache(maxsize=16)
def _space_table(policy: str, height: int, width: int) -> _SpaceTable:
    """The tables of a policy's op space for images of height x width (built once: they are constants)."""
    space, bins = {"randaugment": (RANDAUGMENT_SPACE, RANDAUGMENT_BINS), "autoaugment": (AUTOAUGMENT_SPACE,
                   AUTOAUGMENT_BINS), "trivialaugment": (TRIVIALAUGMENT_SPACE, RANDAUGMENT_BINS)}[policy]
    rows = [space[name][0](bins, height, width) or [0.0] * bins for name in space]
    return _SpaceTable(torch.tensor([_OP[name] for name in space]), torch.tensor([space[n][1] for n in space]),
                       torch.tensor(rows, dtype=torch.float64))


def _autoaugment_slot(slot: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per sub-policy of CIFAR10_POLICY, its `slot`-th op: index in AUTOAUGMENT_SPACE, magnitude bin, probability."""
    names = list(AUTOAUGMENT_SPACE)
    entries = [pair[slot] for pair in CIFAR10_POLICY]
    return (torch.tensor([names.index(name) for name, _, _ in entries]),
            torch.tensor([m if m is not None else 0 for _, _, m in entries]),
            torch.tensor([p for _, p, _ in entries], dtype=torch.float64))


_AUTOAUGMENT_SLOTS = (_autoaugment_slot(0), _autoaugment_slot(1))


def _signed(table: _SpaceTable, choice: torch.Tensor, bins: torch.Tensor, u_sign: torch.Tensor) -> torch.Tensor:
    """The magnitudes of the chosen ops and bins; torchvision negates a signed one when rand() <= 0.5."""
    magnitude = table.magnitudes[choice, bins]
    return torch.where(table.signed[choice] & (u_sign <= 0.5), -magnitude, magnitude)


def draw_policy(config: PolicyConfig, n: int, height: int, width: int, generator: torch.Generator) -> PolicyDraws:
    """Every sample's operations and magnitudes for a batch of n images, from one float64 `torch.rand` draw.

    Each (sample, slot) gets four uniforms: which op (or sub-policy), which magnitude bin, the sign, and whether
    the op applies, so a sample's draws do not depend on the others'.
    """
    u = torch.rand((n, config.slots, 4), generator=generator, dtype=torch.float64)
    table = _space_table(config.name, height, width)
    if config.name == "autoaugment":
        return _draw_autoaugment(u, table)
    choice = (u[..., _CHOICE] * len(table.ops)).long()  # (N, S)
    if config.name == "randaugment":
        bins = torch.full_like(choice, config.magnitude)
    else:  # TrivialAugmentWide: a magnitude bin per sample
        bins = (u[..., _BIN] * RANDAUGMENT_BINS).long()
    return PolicyDraws(table.ops[choice], _signed(table, choice, bins, u[..., _SIGN]))


def _draw_autoaugment(u: torch.Tensor, table: _SpaceTable) -> PolicyDraws:
    """AutoAugment: a sub-policy per sample (slot 0's choice), then each of its two ops with its probability."""
    sub = (u[:, 0, _CHOICE] * len(CIFAR10_POLICY)).long()  # (N,)
    ops, magnitudes = [], []
    for slot, (choices, bins, probs) in enumerate(_AUTOAUGMENT_SLOTS):
        choice = choices[sub]
        applies = u[:, slot, _APPLY] <= probs[sub]
        ops.append(torch.where(applies, table.ops[choice], SKIP))
        magnitudes.append(torch.where(applies, _signed(table, choice, bins[sub], u[:, slot, _SIGN]), 0.0))
    return PolicyDraws(torch.stack(ops, 1), torch.stack(magnitudes, 1))


# --------------------------------------------------------------------------------------------- applying


def apply_policy(images: torch.Tensor, draws: PolicyDraws) -> torch.Tensor:
    """Apply the drawn ops to a uint8 channels-last (N, H, W, C) batch, slot by slot.

    In each slot the samples are grouped by kind of op (`_GROUPS`) and each group is transformed at once. `draws`
    stay on the CPU (grouping needs no device sync); only indices and per-sample parameters travel to the device.
    """
    for slot in range(draws.ops.shape[1]):
        images = _apply_slot(images, draws.ops[:, slot], draws.magnitudes[:, slot])
    return images


def _apply_slot(images: torch.Tensor, ops: torch.Tensor, magnitudes: torch.Tensor) -> torch.Tensor:
    kind = _GROUP_OF[ops.clamp(min=0)].masked_fill_(ops == SKIP, -1)  # (N,) group index, -1 = unchanged
    if images.shape[-1] == 1:
        kind.masked_fill_(ops == _OP["Color"], -1)  # the saturation of a grey image is itself (torchvision: PIL's)
    if bool((kind == -1).all()):
        return images
    # Sorted by group, the groups are consecutive slices of one gathered batch; a second gather restores the order.
    order = torch.argsort(kind, stable=True)
    counts = torch.bincount(kind + 1, minlength=len(_GROUPS) + 1).tolist()
    parts = list(images.index_select(0, order.to(images.device, non_blocking=True)).split(counts))
    start = counts[0]  # parts[0]: the unchanged samples
    for g, count in enumerate(counts[1:]):
        if count:
            rows = order[start:start + count]
            parts[g + 1] = _GROUPS[g][1](parts[g + 1], ops[rows], magnitudes[rows])
            start += count
    inverse = torch.argsort(order)
    return torch.cat(parts).index_select(0, inverse.to(images.device, non_blocking=True))


def _per_sample(values: torch.Tensor, like: torch.Tensor, dtype: torch.dtype = torch.float32,
                dims: int = 4) -> torch.Tensor:
    """(n,) CPU values -> (n, 1, ...) with `dims` dimensions on `like`'s device, float32 by default (torchvision's
    Python factors are cast so by its kernels)."""
    return values.to(dtype).view(-1, *[1] * (dims - 1)).to(like.device, non_blocking=True)


def _add_scaled(a: torch.Tensor, b: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """float32 a + alpha * b rounded once, as torch's `a.add_(b, alpha=alpha)` (a fused multiply-add) computes it
    with a Python alpha; here alpha is a float64 (n,) per sample, rounded to float32 as the kernel would."""
    alpha = _per_sample(alpha.float().double(), a, torch.float64, a.dim())
    return torch.addcmul(a.double(), b.double(), alpha).float()


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float in [0, 255] -> uint8, truncating as `.to(torch.uint8)` does (through int16: on a CPU torch's direct
    float -> uint8 conversion is unvectorized and 6x slower)."""
    return x.to(torch.int16).to(torch.uint8)


def _full(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(n,) per-sample values as a contiguous tensor shaped like `like` (torch compares broadcast operands slowly)."""
    return _per_sample(values, like, like.dtype).expand_as(like).contiguous()


# ------------------------------------------------------------------------------------------- geometry


def _inverse_affine(ops: torch.Tensor, magnitudes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(n, 2, 3) float32 inverse matrices as torchvision's `_get_inverse_affine_matrix`, one per sample.

    ShearX/Y: `affine(shear=degrees(atan(m)), center=[0, 0])`, i.e. about the top-left corner; TranslateX/Y:
    `affine(translate=int(m))`; Rotate: `rotate(angle=m)` about the image center (its angle is negated). In float64
    NumPy (small arrays: NumPy's per-call cost is a tenth of torch's).
    """
    m, op = magnitudes.numpy(), ops.numpy()
    zero = np.zeros_like(m)
    is_op = {name: op == _OP[name] for name in ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")}
    shear = np.degrees(np.arctan(m))
    rot = np.radians(np.where(is_op["Rotate"], -np.remainder(m, 360.0), zero))
    sx = np.radians(np.where(is_op["ShearX"], shear, zero))
    sy = np.radians(np.where(is_op["ShearY"], shear, zero))
    tx = np.where(is_op["TranslateX"], np.trunc(m), zero)
    ty = np.where(is_op["TranslateY"], np.trunc(m), zero)
    corner = is_op["ShearX"] | is_op["ShearY"]  # center=[0, 0]: the top-left corner, in centered coordinates
    cx, cy = np.where(corner, -0.5 * width, zero), np.where(corner, -0.5 * height, zero)
    a = np.cos(rot - sy) / np.cos(sy)
    b = -(a * np.tan(sx) + np.sin(rot))
    c = np.sin(rot - sy) / np.cos(sy)
    d = np.cos(rot) - c * np.tan(sx)
    m0, m1, m3, m4 = d, -b, -c, a
    m2 = cx - m0 * (cx + tx) - m1 * (cy + ty)
    m5 = cy - m3 * (cx + tx) - m4 * (cy + ty)
    return torch.from_numpy(np.stack([m0, m1, m2, m3, m4, m5], 1).reshape(-1, 2, 3)).float()


def _geometric(images: torch.Tensor, ops: torch.Tensor, magnitudes: torch.Tensor) -> torch.Tensor:
    return affine(images, _inverse_affine(ops, magnitudes, images.shape[1], images.shape[2]))


def affine(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """uint8 (n, H, W, C) through per-sample inverse affine matrices (n, 2, 3): nearest pixel, zeros outside.

    What torchvision's `_affine_grid` + `grid_sample(mode="nearest", align_corners=False)` compute, as one gather:
    the grid point (normalized after applying theta, as torchvision does), unnormalized as grid_sample does,
    ((g + 1) * size - 1) / 2, rounded half to even; a point outside the image reads the zero border of a padded
    copy.
    """
    n, h, w, c = images.shape
    if n == 0:
        return images
    f32 = {"device": images.device, "dtype": torch.float32}  # whatever torch's default dtype, as torchvision's grid
    xs = torch.linspace((1.0 - w) * 0.5, (w - 1.0) * 0.5, steps=w, **f32).expand(h, w).contiguous()  # (H, W)
    ys = torch.linspace((1.0 - h) * 0.5, (h - 1.0) * 0.5, steps=h, **f32).view(h, 1).expand(h, w).contiguous()
    t = theta.to(images.device, non_blocking=True).transpose(1, 2) / torch.tensor([0.5 * w, 0.5 * h], **f32)
    t = t.reshape(n, 6, 1, 1)  # per sample: t00 t01 t10 t11 t20 t21 of the (3, 2) rescaled matrix
    gx = xs * t[:, 0] + ys * t[:, 2] + t[:, 4]  # (n, H, W) normalized source x of every pixel
    gy = xs * t[:, 1] + ys * t[:, 3] + t[:, 5]
    ix = ((gx + 1) * w - 1).div_(2).round_().clamp_(-1, w)  # -1 and w: outside, the zero border
    iy = ((gy + 1) * h - 1).div_(2).round_().clamp_(-1, h)
    pixel = iy.add_(1).mul_(w + 2).add_(ix).add_(1)  # (n, H, W) index in the padded image, exact in float32
    if c > 1:
        pixel = (pixel * c).unsqueeze(-1) + torch.arange(c, **f32)  # (n, H, W, C) element index
    padded = torch.nn.functional.pad(images, (0, 0, 1, 1, 1, 1))  # (n, H + 2, W + 2, C)
    return padded.view(n, -1).gather(1, pixel.view(n, -1).long()).view(n, h, w, c)


# ------------------------------------------------------------------------------------------ colour ops


def _grey(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601-2 luma of float RGB (..., 3), floored, as torchvision's `_rgb_to_grayscale_image(preserve_dtype=
    False)`: (..., 1)."""
    r, g, b = x.unbind(dim=-1)
    return r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).floor_().unsqueeze(-1)


def _blend(images: torch.Tensor, ops: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Brightness and Contrast: torchvision's `_blend(image, other, 1 + m)` with other = 0 (brightness: exactly its
    `image * factor`) or the mean of the image's luma (contrast), per sample."""
    x = images.float()
    other = torch.zeros((len(m), 1, 1, 1), dtype=x.dtype, device=images.device)
    contrast = (ops == _OP["Contrast"]).nonzero().squeeze(1)
    if len(contrast):
        index = contrast.to(images.device, non_blocking=True)
        chosen = x.index_select(0, index)
        grey = _grey(chosen) if images.shape[-1] == 3 else chosen
        other.index_copy_(0, index, grey.mean(dim=(-3, -2, -1), keepdim=True))
    ratio = 1.0 + m
    return _to_uint8(_add_scaled(x.mul_(_per_sample(ratio, x)), other, 1.0 - ratio).clamp_(0, 255))


def _color(images: torch.Tensor, ops: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Saturation of RGB (n, H, W, 3): torchvision's blend with the floored luma, per pixel."""
    x = images.float()
    grey = _grey(x)
    ratio = 1.0 + m
    return _to_uint8(_add_scaled(x.mul_(_per_sample(ratio, x)), grey, 1.0 - ratio).clamp_(0, 255))


def _sharpness(images: torch.Tensor, ops: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Blend with a 3x3 smoothing (1s around a 5, / 13) inside a one-pixel border, as torchvision.

    torchvision convolves in float and rounds; the smoothed value is k / 13 for an integer k, never within 1/26 of
    a half, so float error cannot change its rounding, and floor((k + 6) / 13) (exact in float32) is the same
    number from cheap integer sums.
    """
    n, h, w, c = images.shape
    if h <= 2 or w <= 2:
        return images
    v = images.to(torch.int16)
    rows = v[:, :-2] + v[:, 1:-1] + v[:, 2:]  # (n, H - 2, W, C)
    k = rows[:, :, :-2] + rows[:, :, 1:-1] + rows[:, :, 2:] + 4 * v[:, 1:-1, 1:-1]  # 3x3 sum + 4 x center
    blurred = (k + 6).float().div_(13).floor_()
    out = images.float()
    inner = out[:, 1:-1, 1:-1]
    inner.copy_(_add_scaled(inner, blurred.sub_(inner), 1.0 - (1.0 + m)))
    return _to_uint8(out.clamp_(0, 255))


def _posterize(images: torch.Tensor, ops: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    bits = m.long().clamp(0, 8)
    masks = ((1 << bits) - 1) << (8 - bits)  # keep the top `bits` bits
    return images & _per_sample(masks, images, torch.uint8)


def _solarize(images: torch.Tensor, ops: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Solarize inverts the pixels >= 255 * m (compared in float32, as torchvision), i.e. those >= its ceiling;
    Invert is Solarize at 0."""
    threshold = torch.ceil((255.0 * m).float()).clamp_(0, 255)
    threshold = torch.where(ops == _OP["Invert"], 0.0, threshold)
    flip = images >= _full(threshold, images)
    return images ^ flip.to(torch.uint8).mul_(255)


# -------------------------------------------------------------------------------------- lookup tables


def _lookup(images: torch.Tensor, ops: torch.Tensor, magnitudes: torch.Tensor) -> torch.Tensor:
    """AutoContrast and Equalize map each channel through a table of its own: (n, C, 256), then one gather."""
    n, h, w, c = images.shape
    tables = torch.empty((n, c, 256), dtype=torch.uint8, device=images.device)
    for op, build in ((_OP["AutoContrast"], _autocontrast_table), (_OP["Equalize"], _equalize_table)):
        rows = (ops == op).nonzero().squeeze(1)
        if len(rows):
            index = rows.to(images.device, non_blocking=True)
            tables.index_copy_(0, index, build(images.index_select(0, index)))
    index = images.view(n, -1).long().add_(_channel_offsets(images))  # (n, H * W * C): channel * 256 + value
    return tables.view(n, c * 256).gather(1, index).view(n, h, w, c)


def _channel_offsets(images: torch.Tensor) -> torch.Tensor:
    """(1, H * W * C) int64: 256 x the channel of each element of a flattened (H, W, C) image (a whole operand,
    broadcast over samples only: torch's fast path, unlike a (C,) one broadcast inside every pixel)."""
    _, h, w, c = images.shape
    return (torch.arange(h * w * c, device=images.device) % c * 256).view(1, -1)


def _autocontrast_table(images: torch.Tensor) -> torch.Tensor:
    """torchvision's `autocontrast_image`: each channel stretched from its [min, max] to [0, 255]."""
    k, h, w, c = images.shape
    low, high = torch.aminmax(images.view(k, h * w, c), dim=1)  # (k, C), on uint8 (exact, and 5x faster)
    minimum, maximum = low.float().unsqueeze(-1), high.float().unsqueeze(-1)  # (k, C, 1)
    flat = maximum == minimum
    inv_scale = maximum.sub_(minimum).mul_(1.0 / 255)
    minimum[flat] = 0.0
    inv_scale[flat] = 1.0
    values = torch.arange(256, dtype=torch.float32, device=images.device)
    return _to_uint8((values - minimum).div_(inv_scale).clamp_(0, 255))


def _equalize_table(images: torch.Tensor) -> torch.Tensor:
    """torchvision's `equalize_image` (PIL's scheme): each channel's table from its histogram, in integers."""
    k, h, w, c = images.shape
    samples = torch.arange(0, k * c * 256, c * 256, device=images.device).view(k, 1)
    bins = images.view(k, -1).long().add_(_channel_offsets(images)).add_(samples)  # (sample * C + channel) * 256 + v
    hist = torch.bincount(bins.view(-1), minlength=k * c * 256).view(k, c, 256)
    cum = hist.cumsum(dim=-1)
    last = cum.argmax(dim=-1, keepdim=True)  # the first index of the maximum: the last non-empty bin
    step = (h * w - hist.gather(-1, last)).div(255, rounding_mode="floor")  # (k, C, 1)
    table = (cum[..., :-1] + step // 2).div_(step.clamp(min=1), rounding_mode="floor").clamp_(0, 255)
    table = torch.cat([torch.zeros_like(step), table], dim=-1).to(torch.uint8)
    values = torch.arange(256, dtype=torch.uint8, device=images.device)
    return torch.where(step != 0, table, values)  # a channel with a single value is left as it is


# Groups of ops applied together, and the group of each op (-1: Identity changes nothing).
_GROUPS: list[tuple[tuple[str, ...], Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]]] = [
    (("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"), _geometric),
    (("Brightness", "Contrast"), _blend),
    (("Color",), _color),
    (("Sharpness",), _sharpness),
    (("Posterize",), _posterize),
    (("Solarize", "Invert"), _solarize),
    (("AutoContrast", "Equalize"), _lookup),
]
_GROUP_OF = torch.tensor([next((g for g, (names, _) in enumerate(_GROUPS) if name in names), -1) for name in OPS])
