"""Random erasing: torchvision's rectangles, per sample, zeros or seeded noise, the same on any world size."""

from __future__ import annotations

import pytest
import torch

from resnetlab.data import AugmentConfig, ImageSet, Loader
from resnetlab.data.erasing import HEIGHT, LEFT, TOP, WIDTH, counter_normal, draw_erasing, erase_
from resnetlab.errors import UserError

MEAN, STD = (0.5,), (0.25,)


def test_rectangles_have_torchvisions_area_and_aspect_ratio():
    n, h, w = 20_000, 32, 28
    params = draw_erasing(0.25, n, h, w, torch.Generator().manual_seed(0))
    erased = params[:, HEIGHT] > 0
    assert erased.float().mean().item() == pytest.approx(0.25, abs=0.01)
    p = params[erased].double()
    area = p[:, HEIGHT] * p[:, WIDTH] / (h * w)
    assert area.min() > 0.01 and area.max() < 0.37  # 2-33% of the image, up to the rounding of the sides
    ratio = p[:, HEIGHT] / p[:, WIDTH]
    assert ratio.min() > 0.2 and ratio.max() < 4.5 and 0.8 < ratio.log().mean().exp() < 1.25  # 0.3-3.3, log-uniform
    assert (p[:, TOP] >= 0).all() and (p[:, TOP] + p[:, HEIGHT] <= h).all()
    assert (p[:, LEFT] >= 0).all() and (p[:, LEFT] + p[:, WIDTH] <= w).all()
    assert len({tuple(r) for r in params[erased, :4].tolist()}) > 0.9 * erased.sum()  # each sample its own


def _rectangle(params: torch.Tensor, h: int, w: int) -> torch.Tensor:
    mask = torch.zeros(h, w, dtype=torch.bool)
    mask[params[TOP]:params[TOP] + params[HEIGHT], params[LEFT]:params[LEFT] + params[WIDTH]] = True
    return mask


@pytest.mark.parametrize("value", ["zero", "random"])
def test_erase_touches_exactly_the_rectangle(value):
    x = torch.randn(64, 3, 16, 12) + 10  # far from the fill values
    params = draw_erasing(0.5, 64, 16, 12, torch.Generator().manual_seed(1))
    out = erase_(x.clone().contiguous(memory_format=torch.channels_last), params, value, seed=7)
    for i in range(64):
        mask = _rectangle(params[i], 16, 12).expand(3, 16, 12)
        assert torch.equal(out[i][~mask], x[i][~mask])
        if value == "zero":
            assert (out[i][mask] == 0).all()
        else:
            assert (out[i][mask].abs() < 6).all()
    fill = out[x != out]
    if value == "random":  # standard normal noise, different in every pixel
        assert abs(fill.mean().item()) < 0.1 and fill.std().item() == pytest.approx(1.0, abs=0.1)
        assert len(fill.unique()) > 0.9 * len(fill)


def test_noise_depends_on_the_seed_and_counter_only():
    counters = torch.arange(1000, 3000)
    a = counter_normal(counters, 5)
    assert torch.equal(a, counter_normal(counters, 5))
    assert torch.equal(a[500:], counter_normal(counters[500:], 5))  # any split of the counters
    other = counter_normal(counters, 6)
    assert not torch.isclose(a, other).any() or torch.isclose(a, other).float().mean() < 0.01


def test_loader_erases_per_sample_and_seeded():
    images = torch.full((48, 1, 12, 12), 200, dtype=torch.uint8)
    data = ImageSet(images, torch.arange(48), [str(i) for i in range(48)])

    def batches(seed: int, **augment) -> list[torch.Tensor]:
        return [x for x, _ in Loader(data, 16, augment=AugmentConfig(**augment), mean=MEAN, std=STD, seed=seed)]

    plain = torch.cat(batches(0))
    erased = torch.cat(batches(0, random_erasing=0.5))
    assert torch.equal(torch.cat(batches(0, random_erasing=0.5)), erased)
    assert not torch.equal(torch.cat(batches(1, random_erasing=0.5)), erased)
    touched = (erased != plain).flatten(1).any(1)
    assert 0.25 < touched.float().mean() < 0.75
    assert (erased[erased != plain] == 0).all()  # zero = the mean after normalization
    noisy = torch.cat(batches(0, random_erasing=0.5, random_erasing_value="random"))
    assert torch.equal(noisy != plain, erased != plain)  # the same rectangles, now filled with noise
    assert len(noisy[noisy != plain].unique()) > 100


def test_bad_erasing_settings_are_user_errors():
    with pytest.raises(UserError, match="random erasing is a probability"):
        AugmentConfig(random_erasing=1.5)
    with pytest.raises(UserError, match="random erasing fills with one of zero, random"):
        AugmentConfig(random_erasing=0.5, random_erasing_value="mean")
