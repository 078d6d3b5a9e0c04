"""The Loader: exact pixels, per-sample augmentation, seeded order, DDP sharding and exact resume.

The test sets label image i with i, so every y tells which stored images a batch holds.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from resnetlab.data import AugmentConfig, BatchTransform, ImageSet, Loader, derive_seed, loader
from resnetlab.data.augment import CROP_X, CROP_Y, CUTOUT_X, CUTOUT_Y, FLIP, SHIFT_X, SHIFT_Y
from resnetlab.errors import UserError

MEAN, STD = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)
AUGMENT_STREAM = 2  # loader._AUGMENT_STREAM: the seed of batch b is derive_seed(2, seed, epoch, b)


def indexed_set(n: int = 40, shape=(3, 8, 8), seed: int = 0) -> ImageSet:
    images = torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))
    return ImageSet(images, torch.arange(n), [f"image{i}" for i in range(n)])


def unnormalize(x: torch.Tensor, mean=MEAN, std=STD) -> torch.Tensor:
    """Back to uint8 pixel values (exact: normalization is affine and float32 error is far below 0.5)."""
    c = x.shape[1]
    m, s = torch.tensor(mean).view(1, c, 1, 1), torch.tensor(std).view(1, c, 1, 1)
    return ((x * s + m) * 255).round().to(torch.uint8)


def epoch_batches(loader: Loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.clone(), y.clone()) for x, y in loader]


def test_without_augmentation_the_stored_pixels_come_back_in_order():
    data = indexed_set(10)
    ld = Loader(data, 4, shuffle=False, drop_last=False, mean=MEAN, std=STD)
    batches = epoch_batches(ld)
    assert len(ld) == 3 and [len(y) for _, y in batches] == [4, 4, 2]
    x = torch.cat([b[0] for b in batches])
    assert x.dtype == torch.float32 and x.shape == (10, 3, 8, 8)
    assert torch.equal(torch.cat([b[1] for b in batches]), torch.arange(10))
    assert torch.equal(unnormalize(x), data.images)
    expected = (data.images.float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    torch.testing.assert_close(x, expected, rtol=0, atol=1e-6)


def test_channels_last_is_an_option():
    data = indexed_set(8)
    x, _ = next(iter(Loader(data, 4, mean=MEAN, std=STD, channels_last=True)))
    assert x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    x, _ = next(iter(Loader(data, 4, mean=MEAN, std=STD, channels_last=False)))
    assert x.is_contiguous()


def _find_window(image: torch.Tensor, out: torch.Tensor, pad: int) -> list[tuple[int, int, bool]]:
    """All (y, x, flipped) windows of the zero-padded `image` equal to `out`."""
    padded = F.pad(image, (pad, pad, pad, pad))
    h, w = image.shape[1:]
    return [(y, x, flipped) for y in range(2 * pad + 1) for x in range(2 * pad + 1) for flipped in (False, True)
            if torch.equal(padded[:, y:y + h, x:x + w].flip(-1) if flipped else padded[:, y:y + h, x:x + w], out)]


def test_random_crops_are_within_bounds_and_drawn_per_sample():
    data = indexed_set(64)
    ld = Loader(data, 32, augment=AugmentConfig(crop_padding=2, flip=True), mean=MEAN, std=STD, seed=3)
    found = []
    for x, y in ld:
        for out, i in zip(unnormalize(x), y.tolist(), strict=True):
            windows = _find_window(data.images[i], out, 2)
            assert len(windows) == 1  # a window of the padded image, offsets within [0, 2 * pad]
            found.append(windows[0])
    offsets = {(wy, wx) for wy, wx, _ in found}
    assert len(offsets) >= 15  # 25 possible offsets, 64 samples: every sample draws its own
    flips = sum(flipped for _, _, flipped in found)
    assert 16 <= flips <= 48


def test_flip_flips():
    data = indexed_set(32)
    ld = Loader(data, 32, augment=AugmentConfig(flip=True), mean=MEAN, std=STD, seed=1)
    x, y = next(iter(ld))
    out = unnormalize(x)
    flipped = [torch.equal(out[k], torch.flip(data.images[i], dims=[-1])) for k, i in enumerate(y.tolist())]
    unchanged = [torch.equal(out[k], data.images[i]) for k, i in enumerate(y.tolist())]
    assert all(f != u for f, u in zip(flipped, unchanged, strict=True))  # each sample is one or the other
    assert 0 < sum(flipped) < 32


def _reference(image: torch.Tensor, p: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    """Per-sample reference of the whole augmentation, written the slow obvious way."""
    c, h, w = image.shape
    x = image
    if cfg.crop_padding or cfg.flip:
        padded = F.pad(x, [cfg.crop_padding] * 4)
        x = padded[:, p[CROP_Y]:p[CROP_Y] + h, p[CROP_X]:p[CROP_X] + w]
        x = x.flip(-1) if p[FLIP] else x
    if cfg.translate:
        padded = F.pad(x, [cfg.translate] * 4)
        x = padded[:, p[SHIFT_Y]:p[SHIFT_Y] + h, p[SHIFT_X]:p[SHIFT_X] + w]
    x = (x.float() / 255 - torch.tensor(MEAN).view(c, 1, 1)) / torch.tensor(STD).view(c, 1, 1)
    top, left = int(p[CUTOUT_Y]) - cfg.cutout // 2, int(p[CUTOUT_X]) - cfg.cutout // 2
    x[:, max(0, top):max(0, top + cfg.cutout), max(0, left):max(0, left + cfg.cutout)] = 0
    return x


@pytest.mark.parametrize("mirror_bytes", [loader.MIRROR_MAX_BYTES, 0])
def test_augmentation_matches_the_per_sample_reference(monkeypatch, mirror_bytes):
    """Crop + flip + translate + cutout equal the obvious per-sample code, with a mirrored copy or without."""
    monkeypatch.setattr(loader, "MIRROR_MAX_BYTES", mirror_bytes)
    cfg = AugmentConfig(crop_padding=3, flip=True, translate=2, cutout=4)
    data = indexed_set(24, shape=(3, 10, 9))
    ld = Loader(data, 8, augment=cfg, mean=MEAN, std=STD, seed=5)
    assert (ld._mirrored is not None) == (mirror_bytes > 0)
    ld.set_epoch(2)
    for b, (x, y) in enumerate(ld):
        params = ld.transform.draw(8, derive_seed(AUGMENT_STREAM, 5, 2, b))
        expected = torch.stack([_reference(data.images[i], params[k], cfg) for k, i in enumerate(y.tolist())])
        torch.testing.assert_close(x, expected, rtol=0, atol=1e-5)


def test_same_seed_same_batches_and_new_order_every_epoch():
    data = indexed_set(40)
    cfg = AugmentConfig(crop_padding=2, flip=True)
    first = epoch_batches(Loader(data, 8, augment=cfg, mean=MEAN, std=STD, seed=7))
    again = epoch_batches(Loader(data, 8, augment=cfg, mean=MEAN, std=STD, seed=7))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again, strict=True))
    other_seed = epoch_batches(Loader(data, 8, augment=cfg, mean=MEAN, std=STD, seed=8))
    assert not torch.equal(first[0][1], other_seed[0][1])
    ld = Loader(data, 8, augment=cfg, mean=MEAN, std=STD, seed=7)
    orders = [torch.cat([y for _, y in ld]) for _ in range(3)]
    assert ld.epoch == 3
    assert all(torch.equal(order.sort().values, torch.arange(40)) for order in orders)  # a permutation
    assert not torch.equal(orders[0], orders[1]) and not torch.equal(orders[1], orders[2])


def test_order_ignores_the_global_rng():
    data = indexed_set(40)
    torch.manual_seed(0)
    a = epoch_batches(Loader(data, 8, augment=AugmentConfig(flip=True, crop_padding=1), mean=MEAN, std=STD))
    torch.manual_seed(123)
    b = epoch_batches(Loader(data, 8, augment=AugmentConfig(flip=True, crop_padding=1), mean=MEAN, std=STD))
    assert all(torch.equal(p[0], q[0]) for p, q in zip(a, b, strict=True))


def test_drop_last_and_length():
    data = indexed_set(42)
    assert len(Loader(data, 8, mean=MEAN, std=STD)) == 5
    assert len(Loader(data, 8, drop_last=False, mean=MEAN, std=STD)) == 6
    assert [len(y) for _, y in Loader(data, 8, mean=MEAN, std=STD)] == [8] * 5


@pytest.mark.parametrize("world_size", [2, 4])
def test_ddp_ranks_partition_each_epoch_and_match_one_process(world_size):
    data = indexed_set(40)
    cfg = AugmentConfig(crop_padding=2, flip=True, cutout=3)
    single = Loader(data, 8, augment=cfg, mean=MEAN, std=STD, seed=11)
    ranks = [Loader(data, 8, augment=cfg, mean=MEAN, std=STD, seed=11, rank=r, world_size=world_size)
             for r in range(world_size)]
    for _ in range(2):  # two epochs
        per_rank = [epoch_batches(ld) for ld in ranks]
        whole = epoch_batches(single)
        assert all(len(batches) == len(whole) == 5 for batches in per_rank)
        seen = torch.cat([y for batches in per_rank for _, y in batches])
        assert torch.equal(seen.sort().values, torch.arange(40))  # every sample exactly once per epoch
        for b, (x, y) in enumerate(whole):
            assert all(len(per_rank[r][b][1]) == 8 // world_size for r in range(world_size))
            assert torch.equal(torch.cat([per_rank[r][b][1] for r in range(world_size)]), y)
            assert torch.equal(torch.cat([per_rank[r][b][0] for r in range(world_size)]), x)


def test_ddp_evaluation_keeps_the_last_partial_batch():
    data = indexed_set(11)
    ranks = [Loader(data, 4, shuffle=False, drop_last=False, mean=MEAN, std=STD, rank=r, world_size=2)
             for r in range(2)]
    sizes = [[len(y) for _, y in ld] for ld in ranks]
    assert sizes == [[2, 2, 2], [2, 2, 1]]
    seen = torch.cat([y for ld in ranks for _, y in ld])
    assert torch.equal(seen.sort().values, torch.arange(11))


def test_resume_mid_epoch_yields_exactly_the_remaining_batches():
    data = indexed_set(40)
    cfg = AugmentConfig(crop_padding=2, flip=True, translate=1)
    reference = Loader(data, 8, augment=cfg, mean=MEAN, std=STD, seed=2)
    expected = epoch_batches(reference) + epoch_batches(reference)  # epochs 0 and 1

    interrupted = Loader(data, 8, augment=cfg, mean=MEAN, std=STD, seed=2)
    epoch_batches(interrupted)
    for k, _ in enumerate(interrupted):
        if k == 2:
            break  # three batches of epoch 1 done
    state = interrupted.state_dict()
    assert state == {"epoch": 1, "batch": 3} and all(type(v) is int for v in state.values())

    resumed = Loader(data, 8, augment=cfg, mean=MEAN, std=STD, seed=2)
    resumed.load_state_dict(state)
    rest = epoch_batches(resumed)
    assert len(rest) == 2
    for (x, y), (ex, ey) in zip(rest, expected[5 + 3:], strict=True):
        assert torch.equal(x, ex) and torch.equal(y, ey)
    assert resumed.state_dict() == {"epoch": 2, "batch": 0}


def test_state_after_the_last_batch_points_at_the_next_epoch():
    ld = Loader(indexed_set(16), 8, mean=MEAN, std=STD)
    for k, _ in enumerate(ld):
        if k == 1:
            assert ld.epoch == 0
            assert ld.state_dict() == {"epoch": 1, "batch": 0}  # saved while the last batch is in use
            break
    assert len(list(ld)) == 2 and ld.epoch == 2
    ld.set_epoch(5)
    assert ld.state_dict() == {"epoch": 5, "batch": 0}
    with pytest.raises(UserError, match="same data and data.batch_size"):
        ld.load_state_dict({"epoch": 0, "batch": 3})


def test_per_pixel_mean():
    data = indexed_set(6)
    mean_image = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0))
    ld = Loader(data, 6, shuffle=False, mean=mean_image.tolist(), std=(1.0, 1.0, 1.0))  # nested C x H x W lists
    x, _ = next(iter(ld))
    torch.testing.assert_close(x, data.images.float() / 255 - mean_image, rtol=0, atol=1e-6)
    ld = Loader(data, 6, shuffle=False, mean=mean_image, std=STD)  # a tensor, with one std per channel
    x, _ = next(iter(ld))
    torch.testing.assert_close(x, (data.images.float() / 255 - mean_image) / torch.tensor(STD).view(3, 1, 1),
                               rtol=0, atol=1e-5)


def test_resize_on_the_device():
    data = indexed_set(4, shape=(1, 8, 8))
    ld = Loader(data, 4, shuffle=False, augment=AugmentConfig(resize=20), mean=(0.5,), std=(0.25,))
    x, _ = next(iter(ld))
    assert x.shape == (4, 1, 20, 20)
    plain = (data.images.float() / 255 - 0.5) / 0.25
    torch.testing.assert_close(x, F.interpolate(plain, size=(20, 20), mode="bilinear", align_corners=False),
                               rtol=0, atol=1e-5)


def test_batch_transform_on_streamed_batches_equals_the_loader():
    data = indexed_set(16)
    cfg = AugmentConfig(crop_padding=2, flip=True, cutout=2)
    ld = Loader(data, 8, shuffle=False, augment=cfg, mean=MEAN, std=STD, seed=4)
    transform = BatchTransform(cfg, mean=MEAN, std=STD, image_shape=(3, 8, 8))
    for b, (x, _) in enumerate(ld):
        assert torch.equal(transform(data.images[8 * b:8 * b + 8], seed=4, epoch=0, batch=b), x)


def test_impossible_settings_are_user_errors():
    data = indexed_set(10)
    with pytest.raises(UserError, match="cannot be split evenly over 4 processes"):
        Loader(data, 6, mean=MEAN, std=STD, world_size=4)
    with pytest.raises(UserError, match="larger than the 10 images"):
        Loader(data, 16, mean=MEAN, std=STD)
    with pytest.raises(UserError, match="need 3 channel values"):
        Loader(data, 2, mean=(0.5,) * 2, std=STD)
    with pytest.raises(UserError, match="std must be 3 positive values"):
        Loader(data, 2, mean=MEAN, std=(0.1, 0.0, 0.1))
    with pytest.raises(UserError, match="crop_padding must be >= 0"):
        AugmentConfig(crop_padding=-1)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_batches_equal_cpu_batches():
    data = indexed_set(40)
    cfg = AugmentConfig(crop_padding=2, flip=True, translate=1, cutout=3, resize=12)
    cpu = epoch_batches(Loader(data, 8, augment=cfg, mean=MEAN, std=STD, seed=9))
    gpu = epoch_batches(Loader(data, 8, augment=cfg, mean=MEAN, std=STD, seed=9, device="cuda"))
    for (x, y), (gx, gy) in zip(cpu, gpu, strict=True):
        assert gx.device.type == "cuda" and gx.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(y, gy.cpu())
        torch.testing.assert_close(gx.cpu(), x, rtol=0, atol=1e-5)
