"""The in-memory Loader: shuffle, shard across DDP ranks, move to the device, augment, normalize, mix.

The whole split is held as uint8 on the target device (moved once). Each batch is picked with one
`index_select`, augmented there in batched tensor ops (augment.py, policies.py), normalized in one fused
multiply-add into a channels-last float tensor, randomly erased (erasing.py) and mixed (mixing.py). Nothing
depends on the global RNG: the epoch's order comes from a generator seeded with (seed, epoch) and each of a
batch's random draws from one seeded with (stream, seed, epoch, batch index) for the GLOBAL batch, of which each
process takes its rows, so a run resumed mid-epoch and a run on any number of processes see the very same samples.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from resnetlab.data.augment import FLIP, AugmentConfig, augment_uint8, cutout_, draw_params
from resnetlab.data.erasing import draw_erasing, erase_
from resnetlab.data.imageset import ImageSet
from resnetlab.data.mixing import MixConfig, draw_mix, mix_batch
from resnetlab.data.policies import PolicyDraws, apply_policy, draw_policy
from resnetlab.errors import UserError

_MASK64 = (1 << 64) - 1
# One random stream per kind of draw: adding a technique never changes the draws of the others.
_ORDER_STREAM, _AUGMENT_STREAM, _FLIP_STREAM, _POLICY_STREAM, _ERASING_STREAM, _MIX_STREAM = 1, 2, 3, 4, 5, 6
# The Loader keeps a left-right mirrored copy of data sets up to this size when flips are on: it turns the
# costliest per-batch step on a CPU (flipping 3-byte pixels) into one more row gather.
MIRROR_MAX_BYTES = 1 << 30


def derive_seed(*parts: int) -> int:
    """A 63-bit seed mixed from integers with SplitMix64 (nearby inputs give unrelated seeds)."""
    h = 0
    for part in parts:
        h = ((h ^ (part & _MASK64)) + 0x9E3779B97F4A7C15) & _MASK64
        h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & _MASK64
        h ^= h >> 31
    return h >> 1


def _as_float64(values: Sequence[float] | torch.Tensor | float) -> torch.Tensor:
    return torch.as_tensor(values, dtype=torch.float64).cpu()


@dataclass
class BatchDraws:
    """A batch's random augmentation parameters, CPU tensors with one row per sample (see `BatchTransform.draws`).

    Attributes:
        crop: (N, 7) int64 crop/flip/translate/cutout parameters (augment.draw_params), or None.
        policy: the policy's ops and magnitudes (policies.draw_policy), or None.
        erasing: (N, 5) int64 rectangles (erasing.draw_erasing), or None.
        noise_seed: the seed of random erasing's noise (the same for every row and process).
    """

    crop: torch.Tensor | None = None
    policy: PolicyDraws | None = None
    erasing: torch.Tensor | None = None
    noise_seed: int = 0

    def rows(self, index: torch.Tensor) -> BatchDraws:
        """The draws of these rows of the global batch (CPU int64 indices)."""
        return BatchDraws(None if self.crop is None else self.crop.index_select(0, index),
                          None if self.policy is None else self.policy.rows(index),
                          None if self.erasing is None else self.erasing.index_select(0, index), self.noise_seed)


class BatchTransform:
    """uint8 batch on the device -> augmented, normalized float batch (what the Loader does to each batch).

    Normalization is x = (pixel / 255 - mean) / std with a per-channel mean, or a per-pixel mean (C x H x W,
    the paper's option, He et al. 2016 Sec. 4.2), precomputed as one scale and one offset per stored value so
    that it is a single fused multiply-add.

    Args:
        augment: the augmentations, or None.
        mean: per-channel mean (C values) or per-pixel mean (C x H x W), in [0, 1] units.
        std: per-channel standard deviation (C values), in [0, 1] units.
        image_shape: (C, H, W) of the stored images.
        device: where the batches are.
        channels_last: return channels_last tensors (faster convolutions on GPUs and recent CPUs).
    """

    def __init__(self, augment: AugmentConfig | None, *, mean: Sequence[float] | torch.Tensor,
                 std: Sequence[float] | torch.Tensor, image_shape: Sequence[int], device: str | torch.device = "cpu",
                 channels_last: bool = True) -> None:
        self.augment = augment
        self.channels, self.height, self.width = (int(s) for s in image_shape)
        self.device = torch.device(device)
        self.channels_last = channels_last
        scale, offset = self._affine(_as_float64(mean), _as_float64(std))
        self.scale = scale.to(self.device)  # (H, W, C) float32
        self.offset = offset.to(self.device)  # (H, W, C) float32
        self._scratch: dict = {}  # padded buffers reused between batches (see augment.shift)

    def _affine(self, mean: torch.Tensor, std: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c, h, w = self.channels, self.height, self.width
        if mean.dim() == 1 and mean.numel() == c:
            mean = mean.view(c, 1, 1).expand(c, h, w)
        if tuple(mean.shape) != (c, h, w):
            raise UserError(f"normalization mean has shape {tuple(mean.shape)}; need {c} channel values or a "
                            f"{c}x{h}x{w} per-pixel mean for these images")
        if std.numel() not in (1, c) or bool((std <= 0).any()):
            raise UserError(f"normalization std must be {c} positive values; got {std.tolist()}")
        std = std.reshape(-1).expand(c).view(c, 1, 1)
        scale = (1 / (255 * std)).expand(c, h, w)
        offset = -mean / std
        return scale.permute(1, 2, 0).float().contiguous(), offset.permute(1, 2, 0).float().contiguous()

    @property
    def output_size(self) -> tuple[int, int]:
        """(H, W) of the batches this transform returns (after `resize`)."""
        size = self.augment.resize if self.augment is not None else None
        return (size, size) if size is not None else (self.height, self.width)

    def draw(self, n: int, seed: int) -> torch.Tensor | None:
        """The (n, 7) crop/flip/translate/cutout parameters of a batch of n from a CPU generator seeded with `seed`."""
        a = self.augment
        if a is None or not (a.crop_padding or a.flip or a.translate or a.cutout):
            return None
        return draw_params(a, n, self.height, self.width, torch.Generator().manual_seed(seed))

    def draws(self, n: int, seed: int, epoch: int, batch: int) -> BatchDraws | None:
        """All random parameters of global batch `batch` of `epoch` (n samples), each kind from its own stream."""
        a = self.augment
        if a is None or not a.random:
            return None
        out = BatchDraws(crop=self.draw(n, derive_seed(_AUGMENT_STREAM, seed, epoch, batch)))
        if a.policy is not None:
            generator = torch.Generator().manual_seed(derive_seed(_POLICY_STREAM, seed, epoch, batch))
            out.policy = draw_policy(a.policy, n, self.height, self.width, generator)
        if a.random_erasing > 0:
            generator = torch.Generator().manual_seed(derive_seed(_ERASING_STREAM, seed, epoch, batch))
            out.erasing = draw_erasing(a.random_erasing, n, *self.output_size, generator)
            out.noise_seed = int(torch.randint(1 << 62, (), generator=generator))
        return out

    def apply(self, images: torch.Tensor, draws: BatchDraws | None,
              mirrored: torch.Tensor | None = None) -> torch.Tensor:
        """uint8 (N, H, W, C) on the device + its rows of `draws` (CPU) -> float (N, C, H', W').

        Order: crop and flip (and translate), the policy on uint8 pixels, normalization, cutout, resize, random
        erasing. `mirrored` may hold `images.flip(2)` already (it saves the flip).
        """
        crop = None if draws is None or draws.crop is None else draws.crop.to(images.device, non_blocking=True)
        if crop is not None:
            images = augment_uint8(images, crop, self.augment, mirrored, self._scratch)
        if draws is not None and draws.policy is not None:
            images = apply_policy(images, draws.policy)
        x = images.to(torch.get_default_dtype())  # (N, H, W, C), float32 unless torch.set_default_dtype says otherwise
        # In place with out=: the output then sets the loop order. Without it, the broadcast (H, W, C) operand
        # makes TensorIterator loop over N innermost, 15x slower on a CPU.
        torch.addcmul(self.offset, x, self.scale, out=x)
        if crop is not None and self.augment.cutout:
            cutout_(x, crop, self.augment.cutout)
        x = x.permute(0, 3, 1, 2)  # (N, C, H, W) view with channels_last strides
        if self.output_size != (self.height, self.width):
            x = resize_batch(x, self.output_size, self.augment.resize_mode if self.augment else "bilinear")
        if draws is not None and draws.erasing is not None:
            erase_(x, draws.erasing, self.augment.random_erasing_value, draws.noise_seed)
        return x if self.channels_last else x.contiguous()

    def __call__(self, images: torch.Tensor, *, seed: int, epoch: int, batch: int) -> torch.Tensor:
        """Transform a uint8 (N, C, H, W) batch (e.g. from `stream_imagefolder`) seeded by (seed, epoch, batch)."""
        draws = self.draws(len(images), seed, epoch, batch)
        nhwc = images.permute(0, 2, 3, 1).contiguous()
        return self.apply(nhwc, draws)


def resize_batch(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """A float (N, C, H, W) batch resized to `size`: bilinear (antialiased when it shrinks) or nearest (the pixel
    at floor(i * H / H'), as `nn.Upsample(size)`). Normalizing first changes nothing for nearest (it only picks
    pixels) and nothing for bilinear with a per-channel mean (an affine map per channel commutes with it)."""
    if mode == "nearest":
        return F.interpolate(x, size=size, mode="nearest")
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False,
                         antialias=size[0] < min(x.shape[-2:]))


class Loader:
    """Batches of an in-memory ImageSet: shuffled, sharded, augmented and normalized on the device.

    Iterating yields (x, y): x float (B, C, H, W) in torch's default dtype (float32) normalized (channels_last
    when asked), y int64 (B,), both on `device`; with mixing on, y is float (B, K) class probabilities instead.
    `batch_size` is the global batch: with `world_size` > 1 each rank takes its contiguous slice of every global
    batch, so each sample is seen exactly once per epoch across the ranks, and the augmented (and mixed) samples
    are the same for any world size. Iteration continues from the saved position (`state_dict`); after the last
    batch of an epoch the next iteration starts the next epoch.

    Args:
        imageset: the split.
        batch_size: global batch size (a multiple of world_size).
        shuffle: a new permutation every epoch (else the stored order).
        drop_last: drop the incomplete last batch (training) or keep it (evaluation).
        augment: batched augmentation, or None.
        mean: per-channel mean (C values), or a per-pixel mean (C x H x W), in [0, 1] units.
        std: per-channel standard deviation (C values), in [0, 1] units.
        device: where the images are kept and the batches are produced.
        seed: the run's seed; the order and the augmentation derive from it.
        rank, world_size: this process's share of each batch in DDP.
        channels_last: return channels_last tensors.
        mix: Mixup/CutMix (mixing.py), or None.
    """

    def __init__(self, imageset: ImageSet, batch_size: int, *, shuffle: bool = True, drop_last: bool = True,
                 augment: AugmentConfig | None = None, mean: Sequence[float] | torch.Tensor,
                 std: Sequence[float] | torch.Tensor, device: str | torch.device = "cpu", seed: int = 0,
                 rank: int = 0, world_size: int = 1, channels_last: bool = True,
                 mix: MixConfig | None = None) -> None:
        _check_batching(len(imageset), batch_size, drop_last, rank, world_size)
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.device = torch.device(device)
        self.classes = list(imageset.classes)
        self.mix = mix if mix is not None and mix.enabled else None
        # Held channels-last (N, H, W, C) so that an image row is one contiguous run of bytes (see augment.py).
        self._images = imageset.images.permute(0, 2, 3, 1).contiguous().to(self.device)
        self._labels = imageset.labels.to(self.device)
        mirror = augment is not None and augment.flip and self._images.nbytes <= MIRROR_MAX_BYTES
        self._mirrored = self._images.flip(2) if mirror else None
        # flip=alternate: each image's flip in epoch 0 (a seeded coin), inverted in every later epoch
        self._first_flip = (torch.randint(0, 2, (len(imageset),), generator=torch.Generator().manual_seed(
            derive_seed(_FLIP_STREAM, seed))) if augment is not None and augment.flip == "alternate"
            else None)
        self.transform = BatchTransform(augment, mean=mean, std=std, image_shape=imageset.images.shape[1:],
                                        device=self.device, channels_last=channels_last)
        self._epoch = 0
        self._batch = 0  # index of the next batch of the current epoch

    def __len__(self) -> int:
        n = len(self._labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @property
    def epoch(self) -> int:
        """The epoch being iterated (or the next one, once an epoch is complete)."""
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Start `epoch` from its first batch at the next iteration."""
        self._epoch, self._batch = int(epoch), 0

    def state_dict(self) -> dict[str, int]:
        """The position of the next batch: {"epoch", "batch"} (plain ints)."""
        if self._batch >= len(self):
            return {"epoch": self._epoch + 1, "batch": 0}
        return {"epoch": self._epoch, "batch": self._batch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a position saved by `state_dict` (the same data and batch size are assumed)."""
        epoch, batch = int(state["epoch"]), int(state["batch"])
        if epoch < 0 or not 0 <= batch <= len(self):
            raise UserError(f"loader position epoch {epoch}, batch {batch} does not fit this loader's {len(self)} "
                            "batches per epoch; resume with the same data and data.batch_size")
        self._epoch, self._batch = epoch, batch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self._batch >= len(self):
            self._epoch, self._batch = self._epoch + 1, 0
        epoch = self._epoch
        order = self._order(epoch)
        flips = None if self._first_flip is None else (self._first_flip.index_select(0, order) + epoch) % 2
        order = order.to(self.device)
        for b in range(self._batch, len(self)):
            x, y = self._make_batch(order, flips, epoch, b)
            self._batch = b + 1
            yield x, y
        self._epoch, self._batch = epoch + 1, 0

    def _order(self, epoch: int) -> torch.Tensor:
        """The epoch's sample order, on the CPU."""
        n = len(self._labels)
        if not self.shuffle:
            return torch.arange(n)
        generator = torch.Generator().manual_seed(derive_seed(_ORDER_STREAM, self.seed, epoch))
        return torch.randperm(n, generator=generator)

    def _make_batch(self, order: torch.Tensor, flips: torch.Tensor | None, epoch: int,
                    b: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Global batch `b` of the epoch's `order` (on the device): this rank's rows, augmented, maybe mixed.
        `flips` (CPU, in `order`'s order) are the alternating flip's choices for the epoch, or None."""
        start = b * self.batch_size
        n_global = min(self.batch_size, len(order) - start)
        lo, hi = rank_slice(n_global, self.rank, self.world_size)
        rows = torch.arange(lo, hi)  # this rank's rows of the global batch
        index = order[start + lo:start + hi]
        if self.mix is not None and hi > lo:
            # Sample i is mixed with sample i - 1 of the global batch: this rank also makes the one before its slice.
            partner = (lo - 1) % n_global
            rows = torch.cat([torch.tensor([partner]), rows])
            index = torch.cat([order[start + partner:start + partner + 1], index])
        draws = self.transform.draws(n_global, self.seed, epoch, b)
        if flips is not None:  # alternating flip: a seeded first flip per image, then the other way each epoch
            draws.crop[:, FLIP] = flips[start:start + n_global]
        mirrored = None if self._mirrored is None else self._mirrored.index_select(0, index)
        x = self.transform.apply(self._images.index_select(0, index), None if draws is None else draws.rows(rows),
                                 mirrored)
        y = self._labels.index_select(0, index)
        if self.mix is None:
            return x, y
        if hi == lo:  # nothing on this rank
            return x, y.new_zeros((0, len(self.classes)), dtype=x.dtype)
        draw = draw_mix(self.mix, *self.transform.output_size, derive_seed(_MIX_STREAM, self.seed, epoch, b))
        return mix_batch(x, y, draw, len(self.classes))


def rank_slice(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """[lo, hi) of a batch of n that `rank` takes: contiguous, sizes differing by at most one."""
    base, extra = divmod(n, world_size)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


def _check_batching(n: int, batch_size: int, drop_last: bool, rank: int, world_size: int) -> None:
    if batch_size < 1:
        raise UserError(f"batch size must be at least 1; got {batch_size}")
    if not 0 <= rank < world_size:
        raise UserError(f"rank {rank} is outside world size {world_size}; check the torchrun environment")
    if batch_size % world_size:
        raise UserError(f"global batch size {batch_size} cannot be split evenly over {world_size} processes; "
                        f"use a multiple of {world_size}")
    if drop_last and n < batch_size:
        raise UserError(f"batch size {batch_size} is larger than the {n} images, so an epoch has no full batch; "
                        "lower data.batch_size")
