"""ImageSet, the seeded stratified split, normalization statistics, channel and size conversion."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image

from resnetlab.data import ImageSet, channel_stats, convert_channels, pixel_mean, resize_images, split_train_val
from resnetlab.errors import UserError


def _indexed_set(labels: list[int], classes: int = 3) -> ImageSet:
    """Image i is 1 x 1 x 2 pixels holding i in base 256, so a subset's images tell which indices it holds."""
    index = torch.arange(len(labels))
    images = torch.stack([index // 256, index % 256], 1).to(torch.uint8).view(-1, 1, 1, 2)
    return ImageSet(images, torch.tensor(labels), [f"c{k}" for k in range(classes)])


def _indices(imageset: ImageSet) -> list[int]:
    pixels = imageset.images.view(-1, 2).long()
    return (pixels[:, 0] * 256 + pixels[:, 1]).tolist()


def test_imageset_checks_types_and_subsets_in_order():
    imageset = _indexed_set([0, 1, 2, 0, 1])
    assert len(imageset) == 5 and imageset.channels == 1 and imageset.image_size == (1, 2)
    part = imageset.subset([4, 0, 2])
    assert _indices(part) == [4, 0, 2] and part.labels.tolist() == [1, 0, 2]
    assert part.classes == imageset.classes
    with pytest.raises(ValueError, match="uint8"):
        ImageSet(torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.int64), ["a"])
    with pytest.raises(ValueError, match="int64 tensor of 2 labels"):
        ImageSet(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(3, dtype=torch.int64), ["a"])


# Pinned: the split must be the same on every machine (and a change to it must be deliberate).
GOLDEN_LABELS = [0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 0, 0, 1]


@pytest.mark.parametrize("seed,val_indices", [(0, [9, 10, 11, 12, 15]), (1, [4, 5, 6, 12, 15])])
def test_split_golden_indices(seed, val_indices):
    train, val = split_train_val(_indexed_set(GOLDEN_LABELS), 5, seed)
    assert _indices(val) == val_indices
    assert _indices(train) == sorted(set(range(16)) - set(val_indices))


def test_split_is_stratified_disjoint_and_seeded():
    labels = [k for k in range(10) for _ in range(100)]  # 1,000 images, 100 per class
    imageset = _indexed_set(labels, classes=10)
    train, val = split_train_val(imageset, 100, seed=7)
    assert len(train) == 900 and len(val) == 100
    assert torch.bincount(val.labels, minlength=10).tolist() == [10] * 10
    assert torch.bincount(train.labels, minlength=10).tolist() == [90] * 10
    again_train, again_val = split_train_val(imageset, 100, seed=7)
    assert _indices(val) == _indices(again_val) and _indices(train) == _indices(again_train)
    assert sorted(_indices(train) + _indices(val)) == list(range(1000))
    _, other = split_train_val(imageset, 100, seed=8)
    assert _indices(val) != _indices(other)


def test_split_index_sets_partition_the_data():
    labels = torch.randint(0, 4, (200,), generator=torch.Generator().manual_seed(0)).tolist()
    imageset = _indexed_set(labels, classes=4)
    train, val = split_train_val(imageset, 30, 3)
    assert len(val) == 30 and sorted(_indices(train) + _indices(val)) == list(range(200))
    counts = torch.bincount(imageset.labels, minlength=4)
    val_counts = torch.bincount(val.labels, minlength=4)
    assert (val_counts - counts * 30 / 200).abs().max() < 1  # proportional up to rounding
    assert torch.equal(torch.bincount(train.labels, minlength=4) + val_counts, counts)


def test_split_zero_and_impossible_sizes():
    imageset = _indexed_set(GOLDEN_LABELS)
    train, val = split_train_val(imageset, 0, 0)
    assert train is imageset and val is None
    with pytest.raises(UserError, match="data.val_size=16"):
        split_train_val(imageset, 16, 0)


def test_channel_stats_match_float64_reference():
    images = torch.randint(0, 256, (50, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    mean, std = channel_stats(ImageSet(images, torch.zeros(50, dtype=torch.int64), ["x"]))
    x = images.to(torch.float64) / 255
    assert mean == pytest.approx(x.mean(dim=(0, 2, 3)).tolist(), abs=1e-12)
    assert std == pytest.approx(x.std(dim=(0, 2, 3), unbiased=False).tolist(), abs=1e-12)
    assert all(isinstance(v, float) for v in mean + std)


def test_pixel_mean_is_the_mean_image():
    images = torch.randint(0, 256, (30, 2, 4, 5), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    mean = pixel_mean(ImageSet(images, torch.zeros(30, dtype=torch.int64), ["x"]))
    assert mean.shape == (2, 4, 5) and mean.dtype == torch.float32
    torch.testing.assert_close(mean, (images.double().mean(0) / 255).float())


def test_convert_channels_matches_pil():
    rgb = np.random.default_rng(3).integers(0, 256, (2, 5, 6, 3), dtype=np.uint8)
    images = torch.from_numpy(rgb).permute(0, 3, 1, 2).contiguous()
    grey = convert_channels(images, 1)
    pil_grey = np.stack([np.array(Image.fromarray(a).convert("L")) for a in rgb])
    assert torch.equal(grey[:, 0], torch.from_numpy(pil_grey))
    back = convert_channels(grey, 3)
    assert back.shape == (2, 3, 5, 6) and all(torch.equal(back[:, c], grey[:, 0]) for c in range(3))
    rgba = torch.cat([images, torch.full((2, 1, 5, 6), 7, dtype=torch.uint8)], 1)
    assert torch.equal(convert_channels(rgba, 3), images)


def test_resize_images_is_resize_then_center_crop():
    images = torch.randint(0, 256, (2, 3, 20, 30), dtype=torch.uint8, generator=torch.Generator().manual_seed(4))
    out = resize_images(images, 16)
    assert out.shape == (2, 3, 16, 16) and out.dtype == torch.uint8
    reference = T.Compose([T.Resize(16, antialias=True), T.CenterCrop(16)])(images)
    assert (out.int() - reference.int()).abs().max() <= 1  # same geometry; uint8 rounding may differ by 1
    same_size = images[:, :, :16, :16].contiguous()
    assert resize_images(same_size, 16) is same_size


def test_repr_is_one_line_without_pixels():
    imageset = ImageSet(torch.zeros(1000, 3, 32, 32, dtype=torch.uint8), torch.zeros(1000, dtype=torch.int64),
                        [f"class{i}" for i in range(10)])
    assert repr(imageset) == ("ImageSet(1,000 images of 3x32x32 uint8 on cpu, 10 classes: class0, class1, class2, "
                              "class3, ... (10))")
    assert str(imageset) == repr(imageset)
