"""Mixup and CutMix in the Loader: torchvision's pairing and boxes, soft targets, seeded per global batch."""

from __future__ import annotations

import pytest
import torch

from resnetlab.data import AugmentConfig, ImageSet, Loader, MixConfig
from resnetlab.data.mixing import draw_mix, mix_batch
from resnetlab.errors import UserError

MEAN, STD = (0.5,), (0.25,)
K = 5


def _data(n: int = 64) -> ImageSet:
    images = torch.randint(0, 256, (n, 1, 10, 10), dtype=torch.uint8, generator=torch.Generator().manual_seed(n))
    return ImageSet(images, torch.arange(n) % K, [str(k) for k in range(K)])


def _plain(data: ImageSet, index: torch.Tensor) -> torch.Tensor:
    return (data.images[index].float() / 255 - MEAN[0]) / STD[0]


def _batches(data: ImageSet, mix: MixConfig | None, seed: int = 0, batch: int = 16, **kwargs) -> list:
    """(x, y, the stored indices of the batch) of one epoch; the indices come from an unmixed twin loader."""
    twin = Loader(data, batch, mean=MEAN, std=STD, seed=seed, **kwargs)
    mixed = Loader(data, batch, mean=MEAN, std=STD, seed=seed, mix=mix, **kwargs)
    order = [y for _, y in Loader(ImageSet(data.images, torch.arange(len(data)), [str(i) for i in range(len(data))]),
                                  batch, mean=MEAN, std=STD, seed=seed, **kwargs)]
    return [(x, y, index) for (x, y), (_, _), index in zip(mixed, twin, order, strict=True)]


def test_mixup_blends_each_sample_with_its_predecessor():
    data = _data()
    lams = []
    for x, y, index in _batches(data, MixConfig(mixup_alpha=0.4)):
        partner = index.roll(1)  # torchvision's pairing: batch.roll(1)
        differ = (data.labels[index] != data.labels[partner]).nonzero()[0, 0]  # a pair of two classes:
        lam = float(y[differ, data.labels[index[differ]]])  # its own label has lam
        assert y.shape == (16, K) and torch.allclose(y.sum(1), torch.ones(16))
        expected = lam * _plain(data, index) + (1 - lam) * _plain(data, partner)
        torch.testing.assert_close(x, expected, rtol=0, atol=1e-5)
        onehot = torch.nn.functional.one_hot(data.labels[index], K).float()
        other = torch.nn.functional.one_hot(data.labels[partner], K).float()
        torch.testing.assert_close(y, lam * onehot + (1 - lam) * other)
        lams.append(lam)
    assert len(set(lams)) == len(lams)  # a lam per batch


def test_cutmix_pastes_a_box_and_its_share_is_the_target():
    data = _data()
    for x, y, index in _batches(data, MixConfig(cutmix_alpha=1.0)):
        own, partner = _plain(data, index), _plain(data, index.roll(1))
        close = (x - partner).abs() < 1e-5
        from_partner = (close & ((x - own).abs() > 1e-3)).any(0)[0]  # (H, W): the pasted box
        rows, cols = from_partner.any(1).nonzero(), from_partner.any(0).nonzero()
        if len(rows):
            box = torch.zeros_like(from_partner)
            box[rows.min():rows.max() + 1, cols.min():cols.max() + 1] = True
            torch.testing.assert_close(x, torch.where(box, partner, own), rtol=0, atol=1e-5)
            lam = 1 - box.float().mean().item()
        else:
            lam = 1.0
        onehot = torch.nn.functional.one_hot(data.labels[index], K).float()
        other = torch.nn.functional.one_hot(data.labels[index.roll(1)], K).float()
        torch.testing.assert_close(y, lam * onehot + (1 - lam) * other)


def test_mix_prob_and_switch_prob():
    data = _data()

    def draws(**kw) -> list[str]:
        return [draw_mix(MixConfig(**kw), 10, 10, seed).mode for seed in range(400)]

    assert set(draws(mixup_alpha=0.2, prob=0.0)) == {"none"}
    modes = draws(mixup_alpha=0.2, cutmix_alpha=1.0, prob=0.5)
    assert modes.count("none") == pytest.approx(200, abs=40)
    assert modes.count("cutmix") == pytest.approx(100, abs=30) and modes.count("mixup") == pytest.approx(100, abs=30)
    assert set(draws(mixup_alpha=0.2, cutmix_alpha=1.0, switch_prob=1.0)) == {"cutmix"}
    assert set(draws(mixup_alpha=0.2, cutmix_alpha=1.0, switch_prob=0.0)) == {"mixup"}
    # With mix_prob 0 the targets are one-hot class probabilities and the images are not touched.
    for x, y, index in _batches(data, MixConfig(mixup_alpha=0.2, prob=0.0)):
        assert torch.equal(y, torch.nn.functional.one_hot(data.labels[index], K).float())
        torch.testing.assert_close(x, _plain(data, index), rtol=0, atol=1e-6)


def test_lam_follows_the_beta_distribution():
    lams = torch.tensor([draw_mix(MixConfig(mixup_alpha=0.2), 8, 8, seed).lam for seed in range(4000)])
    # Beta(0.2, 0.2): mean 1/2, variance 1 / (4 (2 alpha + 1)) = 0.179, mostly near 0 or 1
    assert lams.mean().item() == pytest.approx(0.5, abs=0.03)
    assert lams.var().item() == pytest.approx(0.25 / 1.4, abs=0.02)
    cut = [draw_mix(MixConfig(cutmix_alpha=1.0), 32, 32, seed) for seed in range(2000)]
    for d in cut[:50]:
        y1, y2, x1, x2 = d.box
        assert d.lam == pytest.approx(1 - (y2 - y1) * (x2 - x1) / 1024)
    # Beta(1, 1) would give a mean of 1/2; boxes clipped at the border and rounded-down sides leave more (torchvision)
    assert 0.6 < torch.tensor([d.lam for d in cut]).mean().item() < 0.8


def test_mixing_is_seeded_per_batch():
    data = _data()
    a = [(x, y) for x, y, _ in _batches(data, MixConfig(mixup_alpha=0.2, cutmix_alpha=1.0), seed=1)]
    b = [(x, y) for x, y, _ in _batches(data, MixConfig(mixup_alpha=0.2, cutmix_alpha=1.0), seed=1)]
    c = [(x, y) for x, y, _ in _batches(data, MixConfig(mixup_alpha=0.2, cutmix_alpha=1.0), seed=2)]
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b, strict=True))
    assert not torch.equal(a[0][1], c[0][1])


@pytest.mark.parametrize(("world_size", "batch", "drop_last"), [(2, 16, True), (4, 16, True), (2, 16, False)])
def test_ranks_mix_their_slices_as_one_process_does(world_size, batch, drop_last):
    """Each rank makes the partner of its first sample itself: slices of the global batch, for any world size,
    also with the last uneven batch (drop_last false: 70 = 4 x 16 + 6 split 3 + 3 or 2 + 2 + 1 + 1)."""
    data = _data(70)
    augment = AugmentConfig(crop_padding=2, flip=True, auto_augment="trivialaugment", random_erasing=0.5,
                            random_erasing_value="random")
    mix = MixConfig(mixup_alpha=0.2, cutmix_alpha=1.0)
    kwargs = {"augment": augment, "mean": MEAN, "std": STD, "seed": 5, "mix": mix, "drop_last": drop_last}
    whole = [(x.clone(), y.clone()) for x, y in Loader(data, batch, **kwargs)]
    ranks = [[(x.clone(), y.clone()) for x, y in Loader(data, batch, rank=r, world_size=world_size, **kwargs)]
             for r in range(world_size)]
    assert all(len(r) == len(whole) for r in ranks)
    for b, (x, y) in enumerate(whole):
        assert torch.equal(torch.cat([r[b][0] for r in ranks]), x)
        assert torch.equal(torch.cat([r[b][1] for r in ranks]), y)


def test_mix_batch_without_mixing_returns_one_hot_rows():
    x = torch.randn(5, 1, 4, 4)
    y = torch.tensor([0, 1, 2, 3, 4])
    out, target = mix_batch(x, y, draw_mix(MixConfig(mixup_alpha=0.2, prob=0.0), 4, 4, 0), K)
    assert torch.equal(out, x[1:]) and torch.equal(target, torch.eye(K)[1:])


def test_bad_mixing_settings_are_user_errors():
    with pytest.raises(UserError, match="data.mixup_alpha must be >= 0"):
        MixConfig(mixup_alpha=-0.2)
    with pytest.raises(UserError, match="data.mix_prob is a probability"):
        MixConfig(cutmix_alpha=1.0, prob=1.2)
    with pytest.raises(UserError, match="data.mix_switch_prob is a probability"):
        MixConfig(cutmix_alpha=1.0, switch_prob=-0.1)
