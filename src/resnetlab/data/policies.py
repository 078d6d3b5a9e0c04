"""RandAugment, TrivialAugmentWide and AutoAugment (CIFAR-10 policy) on whole uint8 batches, per-sample parameters.

The policies are torchvision's (`torchvision.transforms.v2.RandAugment`, `TrivialAugmentWide`, `AutoAugment`
with `AutoAugmentPolicy.CIFAR10`; Cubuk et al. 2019, arXiv 1909.13719; Müller & Hutter 2021, arXiv 2103.10158;
Cubuk et al. 2018, arXiv 1805.09501): the same operations, magnitude tables, signs and probabilities, nearest
interpolation and a zero fill. What differs is how they run: torchvision draws and applies them one image at a
time in DataLoader workers; here every sample's operations and magnitudes are drawn up front for the global batch
on a CPU generator (`draw_policy`), and `apply_policy` then groups the samples by operation and transforms each
group at once on the batch's device. Operations without a parameter (AutoContrast, Equalize, Invert) are
torchvision's v2 kernels applied to the group; the five geometric ones share one `grid_sample` with a matrix per
sample; the colour ones are torchvision's formulas with a factor per sample, rounded as its kernels round, so
every image comes out as torchvision's tensor kernels make it (tests/data/test_policies.py checks this pixel for
pixel on the CPU).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torchvision.transforms.v2 import functional as TF

from resnetlab.errors import UserError

POLICIES = ("randaugment", "trivialaugment", "autoaugment")
OPS = ("Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color", "Contrast",
       "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize", "Invert")
_OP = {name: k for k, name in enumerate(OPS)}
_GEOMETRIC = frozenset(_OP[n] for n in ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"))
SKIP = -1  # an op slot that does nothing (AutoAugment's probability said no)
RANDAUGMENT_BINS = 31  # torchvision's num_magnitude_bins for RandAugment and TrivialAugmentWide
AUTOAUGMENT_BINS = 10  # AutoAugment's magnitude indices 0..9
# Columns of the uniform draw per sample and op slot.
_CHOICE, _BIN, _SIGN, _APPLY = range(4)

# name -> (magnitudes(num_bins, height, width) as a list, or None for parameter-free ops; signed)
Space = dict[str, tuple[Callable[[int, int, int], list[float] | None], bool]]


def _linspace(end: float) -> Callable[[int, int, int], list[float]]:
    return lambda bins, h, w: torch.linspace(0.0, end, bins).tolist()  # float32 values, as torchvision's tables


def _posterize_bits(levels: int) -> Callable[[int, int, int], list[float]]:
    return lambda bins, h, w: (8 - (torch.arange(bins) / ((bins - 1) / levels))).round().int().tolist()


_NONE: tuple[Callable[[int, int, int], None], bool] = (lambda bins, h, w: None, False)
_SOLARIZE = (lambda bins, h, w: torch.linspace(1.0, 0.0, bins).tolist(), False)
# RandAugment's and AutoAugment's magnitudes (torchvision.transforms.v2._auto_augment).
_STANDARD: Space = {
    "ShearX": (_linspace(0.3), True), "ShearY": (_linspace(0.3), True),
    "TranslateX": (lambda bins, h, w: torch.linspace(0.0, 150.0 / 331.0 * w, bins).tolist(), True),
    "TranslateY": (lambda bins, h, w: torch.linspace(0.0, 150.0 / 331.0 * h, bins).tolist(), True),
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


def _table(space: Space, bins: int, h: int, w: int) -> torch.Tensor:
    """(len(space), bins) float64: each op's magnitude per bin (0 for parameter-free ops)."""
    rows = [space[name][0](bins, h, w) or [0.0] * bins for name in space]
    return torch.tensor(rows, dtype=torch.float64)


def _signed(space: Space, choice: torch.Tensor, magnitude: torch.Tensor, u_sign: torch.Tensor) -> torch.Tensor:
    """torchvision negates a signed op's magnitude when rand() <= 0.5."""
    signed = torch.tensor([space[name][1] for name in space])[choice]
    return torch.where(signed & (u_sign <= 0.5), -magnitude, magnitude)


def _global_ops(space: Space, choice: torch.Tensor) -> torch.Tensor:
    return torch.tensor([_OP[name] for name in space])[choice]


def draw_policy(config: PolicyConfig, n: int, height: int, width: int, generator: torch.Generator) -> PolicyDraws:
    """Every sample's operations and magnitudes for a batch of n images, from one float64 `torch.rand` draw.

    Each (sample, slot) gets four uniforms: which op (or sub-policy), which magnitude bin, the sign, and whether
    the op applies, so a sample's draws do not depend on the others'.
    """
    u = torch.rand((n, config.slots, 4), generator=generator, dtype=torch.float64)
    if config.name == "autoaugment":
        return _draw_autoaugment(u, height, width)
    space = RANDAUGMENT_SPACE if config.name == "randaugment" else TRIVIALAUGMENT_SPACE
    choice = (u[..., _CHOICE] * len(space)).long()  # (N, S)
    if config.name == "randaugment":
        bins = torch.full_like(choice, config.magnitude)
    else:  # TrivialAugmentWide: a magnitude bin per sample
        bins = (u[..., _BIN] * RANDAUGMENT_BINS).long()
    table = _table(space, RANDAUGMENT_BINS, height, width)
    magnitude = _signed(space, choice, table[choice, bins], u[..., _SIGN])
    return PolicyDraws(_global_ops(space, choice), magnitude)


def _draw_autoaugment(u: torch.Tensor, height: int, width: int) -> PolicyDraws:
    """AutoAugment: a sub-policy per sample (slot 0's choice), then each of its two ops with its probability."""
    space = AUTOAUGMENT_SPACE
    table = _table(space, AUTOAUGMENT_BINS, height, width)
    names = list(space)
    sub = (u[:, 0, _CHOICE] * len(CIFAR10_POLICY)).long()  # (N,)
    ops, magnitudes = [], []
    for slot in range(2):
        entries = [CIFAR10_POLICY[k][slot] for k in range(len(CIFAR10_POLICY))]
        choice = torch.tensor([names.index(name) for name, _, _ in entries])[sub]
        bins = torch.tensor([m if m is not None else 0 for _, _, m in entries])[sub]
        prob = torch.tensor([p for _, p, _ in entries], dtype=torch.float64)[sub]
        magnitude = _signed(space, choice, table[choice, bins], u[:, slot, _SIGN])
        applies = u[:, slot, _APPLY] <= prob
        ops.append(torch.where(applies, _global_ops(space, choice), SKIP))
        magnitudes.append(torch.where(applies, magnitude, 0.0))
    return PolicyDraws(torch.stack(ops, 1), torch.stack(magnitudes, 1))


# --------------------------------------------------------------------------------------------- applying


def apply_policy(images: torch.Tensor, draws: PolicyDraws) -> torch.Tensor:
    """Apply the drawn ops to a uint8 (N, C, H, W) batch, slot by slot, each op to its group of samples at once.

    `draws` stay on the CPU (grouping needs no device sync); only indices and magnitudes travel to the device.
    """
    images = images.clone()
    device = images.device
    for slot in range(draws.ops.shape[1]):
        ops, magnitudes = draws.ops[:, slot], draws.magnitudes[:, slot]
        present = set(torch.unique(ops).tolist()) - {SKIP, _OP["Identity"]}
        if present & _GEOMETRIC:
            rows = torch.isin(ops, torch.tensor(sorted(_GEOMETRIC))).nonzero().squeeze(1)
            group = rows.to(device, non_blocking=True)
            theta = _inverse_affine(ops[rows], magnitudes[rows], images.shape[-2], images.shape[-1])
            images.index_copy_(0, group, affine(images.index_select(0, group), theta.to(device, non_blocking=True)))
        for op in sorted(present - _GEOMETRIC):
            rows = (ops == op).nonzero().squeeze(1)
            group = rows.to(device, non_blocking=True)
            out = _COLOR_OPS[OPS[op]](images.index_select(0, group), magnitudes[rows])
            images.index_copy_(0, group, out)
    return images


def _inverse_affine(ops: torch.Tensor, magnitudes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(n, 2, 3) float32 inverse matrices as torchvision's `_get_inverse_affine_matrix`, one per sample.

    ShearX/Y: `affine(shear=degrees(atan(m)), center=[0, 0])`, i.e. about the top-left corner; TranslateX/Y:
    `affine(translate=int(m))`; Rotate: `rotate(angle=m)` about the image center (its angle is negated).
    """
    m = magnitudes
    zero = torch.zeros_like(m)
    shear = torch.atan(m) * (180 / math.pi)
    is_op = {name: ops == _OP[name] for name in ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")}
    rot = torch.where(is_op["Rotate"], -torch.remainder(m, 360.0), zero) * (math.pi / 180)
    sx = torch.where(is_op["ShearX"], shear, zero) * (math.pi / 180)
    sy = torch.where(is_op["ShearY"], shear, zero) * (math.pi / 180)
    tx = torch.where(is_op["TranslateX"], m.trunc(), zero)
    ty = torch.where(is_op["TranslateY"], m.trunc(), zero)
    corner = is_op["ShearX"] | is_op["ShearY"]  # center=[0, 0]: the top-left corner, in centered coordinates
    cx, cy = torch.where(corner, -0.5 * width, zero), torch.where(corner, -0.5 * height, zero)
    a = torch.cos(rot - sy) / torch.cos(sy)
    b = -(a * torch.tan(sx) + torch.sin(rot))
    c = torch.sin(rot - sy) / torch.cos(sy)
    d = torch.cos(rot) - c * torch.tan(sx)
    m0, m1, m3, m4 = d, -b, -c, a
    m2 = cx - m0 * (cx + tx) - m1 * (cy + ty)
    m5 = cy - m3 * (cx + tx) - m4 * (cy + ty)
    return torch.stack([m0, m1, m2, m3, m4, m5], 1).view(-1, 2, 3).float()


def affine(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """uint8 (n, C, H, W) through per-sample inverse affine matrices (n, 2, 3): nearest pixel, zeros outside.

    What torchvision's `_affine_grid` + `grid_sample(mode="nearest", align_corners=False)` compute, as a gather of
    uint8 pixels: the grid point (normalized after applying theta, as torchvision does), unnormalized as
    grid_sample does, ((g + 1) * size - 1) / 2, rounded half to even; outside the image reads a zero.
    """
    n, c, h, w = images.shape
    if n == 0:
        return images
    device = images.device
    f32 = {"device": device, "dtype": torch.float32}  # float32 whatever torch's default dtype, as torchvision's grid
    xs = torch.linspace((1.0 - w) * 0.5, (w - 1.0) * 0.5, steps=w, **f32).view(1, 1, w)
    ys = torch.linspace((1.0 - h) * 0.5, (h - 1.0) * 0.5, steps=h, **f32).view(1, h, 1)
    t = (theta.to(device).transpose(1, 2) / torch.tensor([0.5 * w, 0.5 * h], **f32)).view(n, 3, 2, 1, 1)
    gx = xs * t[:, 0, 0] + ys * t[:, 1, 0] + t[:, 2, 0]  # (n, H, W), in [-1, 1] inside the image
    gy = xs * t[:, 0, 1] + ys * t[:, 1, 1] + t[:, 2, 1]
    ix = ((gx + 1) * w - 1).div_(2).round_()
    iy = ((gy + 1) * h - 1).div_(2).round_()
    inside = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
    source = torch.where(inside, iy.long() * w + ix.long(), h * w).view(n, 1, h * w)  # h * w: the zero pixel
    flat = torch.cat([images.reshape(n, c, h * w), images.new_zeros(n, c, 1)], dim=2)
    return flat.gather(2, source.expand(n, c, h * w)).view(n, c, h, w)


# ------------------------------------------------------------------------------------------ colour ops


def _per_sample(values: torch.Tensor, like: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """float64 (n,) -> (n, 1, 1, 1) on `like`'s device, float32 by default (torchvision's Python factors are
    cast so by its kernels)."""
    return values.to(dtype).view(-1, 1, 1, 1).to(like.device, non_blocking=True)


def _add_scaled(a: torch.Tensor, b: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """float32 a + alpha * b rounded once, as torch's `a.add_(b, alpha=alpha)` (a fused multiply-add) computes it
    with a Python alpha; here alpha is a float64 (n,) per sample, rounded to float32 as the kernel would."""
    alpha = _per_sample(alpha.float().double(), a, torch.float64)
    return torch.addcmul(a.double(), b.double(), alpha).float()


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float in [0, 255] -> uint8, truncating as `.to(torch.uint8)` does (through int16: on a CPU torch's direct
    float -> uint8 conversion is unvectorized and 6x slower)."""
    return x.to(torch.int16).to(torch.uint8)


def _blend(x: torch.Tensor, other: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """torchvision's `_blend` with a ratio per sample: x * ratio + (1 - ratio) * other, clamped, uint8.

    x is the float32 copy of the uint8 images (what torchvision's `image.mul(ratio)` converts them to).
    """
    return _to_uint8(_add_scaled(x.mul_(_per_sample(ratio, x)), other, 1.0 - ratio).clamp_(0, 255))


def _grey(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601-2 luma of float RGB, floored, as torchvision's `_rgb_to_grayscale_image(preserve_dtype=False)`."""
    r, g, b = x.unbind(dim=-3)
    return r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).unsqueeze(-3).floor_()


def _brightness(images: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return _to_uint8(images.float().mul_(_per_sample(1.0 + m, images)).clamp_(0, 255))


def _color(images: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    if images.shape[-3] == 1:  # saturation of a grey image: unchanged (torchvision matches PIL)
        return images
    x = images.float()
    return _blend(x, _grey(x), 1.0 + m)


def _contrast(images: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    x = images.float()
    grey = _grey(x) if images.shape[-3] == 3 else x
    return _blend(x, grey.mean(dim=(-3, -2, -1), keepdim=True), 1.0 + m)


def _sharpness(images: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Blend with a 3x3 smoothing (1s around a 5, / 13) inside a one-pixel border, as torchvision.

    torchvision convolves in float and rounds; the smoothed value is k / 13 for an integer k, never within 1/26 of
    a half, so float error cannot change its rounding, and floor((k + 6) / 13) (exact in float32) is the same
    number from cheap integer sums.
    """
    n, c, h, w = images.shape
    if h <= 2 or w <= 2:
        return images
    v = images.to(torch.int16)
    rows = v[..., :-2, :] + v[..., 1:-1, :] + v[..., 2:, :]  # (n, C, H - 2, W)
    k = rows[..., :-2] + rows[..., 1:-1] + rows[..., 2:] + 4 * v[..., 1:-1, 1:-1]  # 3x3 sum + 4 x center
    blurred = (k + 6).float().div_(13).floor_()
    out = images.float()
    inner = out[..., 1:-1, 1:-1]
    inner.copy_(_add_scaled(inner, blurred.sub_(inner), 1.0 - (1.0 + m)))
    return _to_uint8(out.clamp_(0, 255))


def _posterize(images: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    bits = m.long().clamp(0, 8)
    masks = ((1 << bits) - 1) << (8 - bits)  # keep the top `bits` bits
    return images & masks.to(torch.uint8).view(-1, 1, 1, 1).to(images.device, non_blocking=True)


def _solarize(images: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Invert the pixels >= 255 * m (compared in float32, as torchvision): those >= its ceiling, in uint8."""
    threshold = torch.ceil((255.0 * m).float()).clamp_(0, 255).to(torch.uint8)
    # Full-size operands: a broadcast comparison takes torch's slow path on a CPU.
    invert = images >= _per_sample(threshold, images, torch.uint8).expand_as(images).contiguous()
    return images ^ invert.to(torch.uint8).mul_(255)


_COLOR_OPS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "Brightness": _brightness, "Color": _color, "Contrast": _contrast, "Sharpness": _sharpness,
    "Posterize": _posterize, "Solarize": _solarize,
    "AutoContrast": lambda images, m: TF.autocontrast(images),
    "Equalize": lambda images, m: TF.equalize(images),
    "Invert": lambda images, m: TF.invert(images),
}
