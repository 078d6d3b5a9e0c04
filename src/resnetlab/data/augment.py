"""Batched per-sample augmentation of uint8 image batches, on whatever device the batch is on.

Batches here are channels-last uint8 (N, H, W, C): one pixel is C adjacent bytes and one image row is W * C
adjacent bytes, so a random crop is a gather of whole rows (one `index_select`), not of single values. Every
sample draws its own parameters; all draws for a batch happen up front on a CPU generator (`draw_params`), so
the result is the same on any device and any number of processes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from resnetlab.data.erasing import ERASING_VALUES
from resnetlab.data.policies import PolicyConfig
from resnetlab.errors import UserError

RESIZE_MODES = ("bilinear", "nearest")

# Columns of the (N, 7) int64 parameter tensor drawn for a batch.
CROP_Y, CROP_X, FLIP, SHIFT_Y, SHIFT_X, CUTOUT_Y, CUTOUT_X = range(7)


@dataclass(frozen=True)
class AugmentConfig:
    """Which batched augmentations to apply (all off by default).

    Attributes:
        crop_padding: zero-pad by this many pixels on each side, then crop a random window of the original
            size (4 for CIFAR, He et al. 2016 Sec. 4.2); 0 = off.
        flip: random horizontal flip with probability 1/2 (He et al. 2016; off for digits); "alternate" flips each
            image in every other epoch, starting from a seeded coin per image (Jordan 2024, arXiv 2404.00498:
            the derandomized flip shows every image both ways in any two consecutive epochs).
        translate: after the crop, shift by up to this many pixels in each direction, zero-filled; 0 = off.
        cutout: side of a square, centered anywhere in the image and clipped at its border, set to zero after
            normalization, i.e. to the mean (DeVries & Taylor 2017, arXiv 1708.04552); 0 = off.
        resize: resize each batch to resize x resize pixels on the device (`resize_mode`) after the crop, the policy,
            normalization and cutout, e.g. to feed 28-px images to an ImageNet-style net; None = off.
        auto_augment: randaugment, trivialaugment or autoaugment (CIFAR-10 policy) after the crop and flip, on
            uint8 pixels (policies.py); None = off.
        randaugment_ops, randaugment_magnitude: RandAugment's number of ops and magnitude bin (0..30).
        random_erasing: probability of erasing a random rectangle per image, at the end (erasing.py); 0 = off.
        random_erasing_value: what fills it: zero (the mean) or random (normal noise per pixel).
        resize_mode: bilinear (antialiased when shrinking) or nearest (as `nn.Upsample`'s default).
    """

    crop_padding: int = 0
    flip: bool | str = False
    translate: int = 0
    cutout: int = 0
    resize: int | None = None
    auto_augment: str | None = None
    randaugment_ops: int = 2
    randaugment_magnitude: int = 9
    random_erasing: float = 0.0
    random_erasing_value: str = "zero"
    resize_mode: str = "bilinear"

    def __post_init__(self) -> None:
        for key in ("crop_padding", "translate", "cutout"):
            if getattr(self, key) < 0:
                raise UserError(f"augmentation {key} must be >= 0 pixels; got {getattr(self, key)}")
        if self.flip not in (True, False, "alternate"):
            raise UserError(f"augmentation flip must be true, false or alternate; got {self.flip!r}")
        if self.resize is not None and self.resize < 1:
            raise UserError(f"augmentation resize must be a positive size in pixels or None; got {self.resize}")
        if self.resize_mode not in RESIZE_MODES:
            raise UserError(f"resize mode must be one of {', '.join(RESIZE_MODES)}; got {self.resize_mode!r}")
        if not 0 <= self.random_erasing <= 1:
            raise UserError(f"random erasing is a probability and must be in [0, 1]; got {self.random_erasing}")
        if self.random_erasing_value not in ERASING_VALUES:
            raise UserError(f"random erasing fills with one of {', '.join(ERASING_VALUES)}; "
                            f"got {self.random_erasing_value!r}")
        self.policy  # noqa: B018 (validates the policy's settings)

    @property
    def random(self) -> bool:
        """Whether any augmentation draws random numbers."""
        return bool(self.crop_padding or self.flip or self.translate or self.cutout) or self.policy is not None \
            or self.random_erasing > 0

    @property
    def policy(self) -> PolicyConfig | None:
        """The automatic augmentation policy, or None."""
        if self.auto_augment is None:
            return None
        return PolicyConfig(self.auto_augment, self.randaugment_ops, self.randaugment_magnitude)


def draw_params(config: AugmentConfig, n: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """Per-sample parameters for a batch of `n` images, as an (n, 7) int64 CPU tensor.

    Columns: crop offsets (y, x) in [0, 2 * crop_padding], flip (0/1), translation offsets (y, x) in
    [0, 2 * translate], cutout center (y, x) in [0, H) x [0, W); disabled augmentations get zeros. All of
    them come from one float64 `torch.rand` draw (floor(u * k) is uniform on 0..k-1 up to 2**-53), so a
    column's values do not depend on which other augmentations are on.
    """
    highs = torch.tensor([2 * config.crop_padding + 1, 2 * config.crop_padding + 1, 2 if config.flip else 1,
                          2 * config.translate + 1, 2 * config.translate + 1,
                          height if config.cutout else 1, width if config.cutout else 1], dtype=torch.float64)
    return (torch.rand((n, len(highs)), generator=generator, dtype=torch.float64) * highs).long()


def shift(images: torch.Tensor, offsets: torch.Tensor, pad: int, flip: torch.Tensor | None = None,
          mirrored: torch.Tensor | None = None, scratch: dict | None = None) -> torch.Tensor:
    """Zero-pad each image by `pad` and cut out the window at `offsets`, mirrored where `flip` is set.

    This is torchvision's RandomCrop(size, padding=pad) followed by RandomHorizontalFlip, for a whole batch at
    once: the padded batch (and, for flips, its mirror image) is viewed as overlapping rows of W pixels, one
    starting at every pixel, and the N * H output rows are picked with one `index_select`. Mirroring the
    padded image and moving the window to 2 * pad - x equals mirroring the crop.

    Args:
        images: uint8 (N, H, W, C), contiguous.
        offsets: int64 (N, 2): the window's top-left corner (y, x) in the padded image, each in [0, 2 * pad].
        pad: zero padding on every side, in pixels.
        flip: bool/int (N,): mirror these samples left-right; None = none.
        mirrored: `images.flip(2)` if the caller has it already (the Loader keeps a mirrored copy of small
            data sets: flipping is the most expensive step on a CPU).
        scratch: a dict the caller keeps between batches, to reuse the padded buffer: only its interior is
            ever written, so its zero border is made once.

    Returns:
        uint8 (N, H, W, C).
    """
    n, h, w, c = images.shape
    if n == 0 or (pad == 0 and flip is None):
        return images
    hp, wp = h + 2 * pad, w + 2 * pad
    shape = (n if flip is None else 2 * n, hp, wp, c)  # (N or 2N, Hp, Wp, C)
    padded = None if scratch is None else scratch.get((shape, images.device))
    if padded is None:
        padded = images.new_zeros(shape)
        if scratch is not None:
            scratch[(shape, images.device)] = padded
    padded[:n, pad:pad + h, pad:pad + w] = images
    y, x = offsets[:, 0], offsets[:, 1]
    source = torch.arange(n, device=images.device)
    if flip is not None:
        padded[n:, pad:pad + h, pad:pad + w] = images.flip(2) if mirrored is None else mirrored
        source = source + n * flip
        x = x + flip * (2 * pad - 2 * x)  # 2 * pad - x where flipped
    first_pixel = (source * hp + y) * wp + x  # (N,) pixel index of each window's top-left corner
    rows = (first_pixel[:, None] + torch.arange(0, h * wp, wp, device=images.device)).view(-1)  # (N * H,)
    flat = padded.view(-1)
    windows = flat.as_strided((flat.numel() // c - w + 1, w * c), (c, 1))  # row k = W pixels from pixel k
    return windows.index_select(0, rows).view(n, h, w, c)


def augment_uint8(images: torch.Tensor, params: torch.Tensor, config: AugmentConfig,
                  mirrored: torch.Tensor | None = None, scratch: dict | None = None) -> torch.Tensor:
    """Crop (with flip) then translate a uint8 (N, H, W, C) batch with the parameters of `draw_params`.

    `mirrored` is `images.flip(2)` when the caller has it; `scratch` keeps buffers between calls (see `shift`).
    """
    flip = params[:, FLIP] if config.flip else None
    if config.crop_padding or flip is not None:
        images = shift(images, params[:, CROP_Y:CROP_X + 1], config.crop_padding, flip, mirrored, scratch)
    if config.translate:
        images = shift(images, params[:, SHIFT_Y:SHIFT_X + 1], config.translate, scratch=scratch)
    return images


def cutout_(x: torch.Tensor, params: torch.Tensor, size: int) -> torch.Tensor:
    """Zero a size x size square per sample of a float (N, H, W, C) batch, in place; centers from `params`."""
    n, h, w, _ = x.shape
    top = params[:, CUTOUT_Y] - size // 2
    left = params[:, CUTOUT_X] - size // 2
    ys = torch.arange(h, device=x.device)
    xs = torch.arange(w, device=x.device)
    in_rows = (ys >= top[:, None]) & (ys < top[:, None] + size)  # (N, H)
    in_cols = (xs >= left[:, None]) & (xs < left[:, None] + size)  # (N, W)
    return x.masked_fill_((in_rows[:, :, None] & in_cols[:, None, :])[..., None], 0.0)
