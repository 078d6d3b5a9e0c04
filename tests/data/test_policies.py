"""RandAugment, TrivialAugmentWide and AutoAugment on batches: torchvision's images, per-sample draws, seeded."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.transforms.v2 import AutoAugment, AutoAugmentPolicy, InterpolationMode, RandAugment, TrivialAugmentWide
from torchvision.transforms.v2 import functional as TF

from resnetlab.data import AugmentConfig, ImageSet, Loader, MixConfig, policies
from resnetlab.data.policies import (
    CIFAR10_POLICY,
    OPS,
    POLICIES,
    SKIP,
    PolicyConfig,
    apply_policy,
    draw_policy,
)
from resnetlab.errors import UserError

NEAREST = InterpolationMode.NEAREST


def _torchvision_op(image: torch.Tensor, name: str, m: float) -> torch.Tensor:
    """What torchvision's `_AutoAugmentBase._apply_image_or_video_transform` does to a uint8 tensor image."""
    affine = {"angle": 0.0, "scale": 1.0, "interpolation": NEAREST, "fill": None}
    ops = {
        "Identity": lambda: image,
        "ShearX": lambda: TF.affine(image, translate=[0, 0], shear=[math.degrees(math.atan(m)), 0.0], center=[0, 0],
                                    **affine),
        "ShearY": lambda: TF.affine(image, translate=[0, 0], shear=[0.0, math.degrees(math.atan(m))], center=[0, 0],
                                    **affine),
        "TranslateX": lambda: TF.affine(image, translate=[int(m), 0], shear=[0.0, 0.0], **affine),
        "TranslateY": lambda: TF.affine(image, translate=[0, int(m)], shear=[0.0, 0.0], **affine),
        "Rotate": lambda: TF.rotate(image, angle=m, interpolation=NEAREST, fill=None),
        "Brightness": lambda: TF.adjust_brightness(image, 1.0 + m),
        "Color": lambda: TF.adjust_saturation(image, 1.0 + m),
        "Contrast": lambda: TF.adjust_contrast(image, 1.0 + m),
        "Sharpness": lambda: TF.adjust_sharpness(image, 1.0 + m),
        "Posterize": lambda: TF.posterize(image, int(m)),
        "Solarize": lambda: TF.solarize(image, 255.0 * m),
        "AutoContrast": lambda: TF.autocontrast(image),
        "Equalize": lambda: TF.equalize(image),
        "Invert": lambda: TF.invert(image),
    }
    return ops[name]()


def _images(n: int, channels: int, size: tuple[int, int] = (28, 28), seed: int = 0) -> torch.Tensor:
    """Random uint8 images, a quarter of them low-contrast (so autocontrast and equalize have work to do)."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, channels, *size), dtype=torch.uint8, generator=generator)
    images[: n // 4] = images[: n // 4] // 64 * 30 + 40
    return images


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("policy", POLICIES)
def test_each_image_is_what_torchvisions_kernels_make_of_it(policy, channels):
    """The batched ops replayed one image at a time through torchvision's v2 kernels give the same pixels."""
    images = _images(256, channels, (28, 26) if channels == 3 else (28, 28))
    draws = draw_policy(PolicyConfig(policy), len(images), *images.shape[-2:], torch.Generator().manual_seed(1))
    out = apply_policy(images.permute(0, 2, 3, 1).contiguous(), draws).permute(0, 3, 1, 2)  # the Loader's layout
    used = set()
    for i in range(len(images)):
        expected = images[i]
        for op, m in zip(draws.ops[i].tolist(), draws.magnitudes[i].tolist(), strict=True):
            if op != SKIP:
                expected = _torchvision_op(expected, OPS[op], m)
                used.add(OPS[op])
        assert torch.equal(out[i], expected), (i, [OPS[o] if o != SKIP else "-" for o in draws.ops[i].tolist()])
    assert len(used) >= 13  # nearly every op of the space ran (14 or 15 of them)


def _space_of(policy: str) -> set[str]:
    transform = {"randaugment": RandAugment(), "trivialaugment": TrivialAugmentWide(),
                 "autoaugment": AutoAugment(AutoAugmentPolicy.CIFAR10)}[policy]
    return set(transform._AUGMENTATION_SPACE)


@pytest.mark.parametrize("policy", POLICIES)
def test_draws_follow_torchvisions_policy(policy):
    n = 20_000
    draws = draw_policy(PolicyConfig(policy), n, 32, 32, torch.Generator().manual_seed(0))
    ops = draws.ops[draws.ops != SKIP]
    names = {OPS[k] for k in ops.unique().tolist()}
    if policy == "autoaugment":
        assert names == {name for pair in CIFAR10_POLICY for name, p, _ in pair if p > 0}
        # Sub-policy 0 is (Invert 0.1, Contrast 0.2 at magnitude 6): its share of applied Inverts is 0.1 x 1/25.
        invert = (draws.ops[:, 0] == OPS.index("Invert")).float().mean().item()
        assert invert == pytest.approx(0.1 / 25, abs=0.002)
    else:
        assert names == _space_of(policy)
        counts = torch.bincount(ops, minlength=len(OPS)).float()
        share = counts[counts > 0] / counts.sum()
        assert share.min() > 0.8 / len(names) and share.max() < 1.2 / len(names)  # uniform over the space
    rotate = draws.magnitudes[draws.ops == OPS.index("Rotate")]
    assert 0.4 < (rotate < 0).float().mean() < 0.6  # signed ops: either sign, half the time
    if policy == "randaugment":  # magnitude bin 9 of 31: 9 degrees, 0.27 brightness
        assert torch.allclose(rotate.abs(), torch.tensor(9.0, dtype=torch.float64))
    if policy == "trivialaugment":  # every one of the 31 bins, up to 135 degrees
        assert len(set(rotate.abs().tolist())) == 31 and rotate.abs().max() == pytest.approx(135.0)


def test_randaugment_settings_change_the_draws():
    def draw(**settings):
        return draw_policy(PolicyConfig("randaugment", **settings), 512, 32, 32, torch.Generator().manual_seed(0))

    assert draw().ops.shape == (512, 2) and draw(num_ops=3).ops.shape == (512, 3)
    assert draw(num_ops=0).ops.shape == (512, 0)
    strong, weak = draw(magnitude=30), draw(magnitude=0)
    rotate = strong.ops == OPS.index("Rotate")
    assert torch.equal(strong.ops, weak.ops)
    assert strong.magnitudes[rotate].abs().max() == pytest.approx(30.0) and weak.magnitudes[rotate].abs().max() == 0


def _loader(data: ImageSet, seed: int = 0, **augment) -> Loader:
    return Loader(data, 16, augment=AugmentConfig(**augment), mean=(0.5,), std=(0.25,), seed=seed)


@pytest.mark.parametrize("policy", POLICIES)
def test_loader_batches_are_seeded_and_vary_per_sample(policy):
    data = ImageSet(_images(64, 1, (12, 12)), torch.arange(64), [str(i) for i in range(64)])
    plain = [x for x, _ in _loader(data, seed=3)]
    first = [x for x, _ in _loader(data, seed=3, auto_augment=policy)]
    again = [x for x, _ in _loader(data, seed=3, auto_augment=policy)]
    other = [x for x, _ in _loader(data, seed=4, auto_augment=policy)]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], other[0])
    changed = torch.cat([(a != b).flatten(1).any(1) for a, b in zip(first, plain, strict=True)])
    assert 0.3 < changed.float().mean() < 1.0  # each sample its own ops: some change, some (identity) do not


def test_bad_policy_settings_are_one_line_user_errors():
    with pytest.raises(UserError, match="unknown augmentation policy 'augmix'"):
        AugmentConfig(auto_augment="augmix")
    with pytest.raises(UserError, match="randaugment_magnitude must be in 0..30"):
        AugmentConfig(auto_augment="randaugment", randaugment_magnitude=31)
    with pytest.raises(UserError, match="randaugment_ops must be >= 0"):
        PolicyConfig("randaugment", num_ops=-1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("policy", POLICIES)
def test_cuda_batches_equal_cpu_batches_with_every_option(policy):
    """The same draws (made on the CPU) give the same batches on a GPU: the policy's pixels exactly, the erasing
    noise up to erfinv's last bit, the mixing to float rounding."""
    data = ImageSet(_images(96, 3, (16, 16)), torch.arange(96) % 10, [str(k) for k in range(10)])
    augment = AugmentConfig(crop_padding=2, flip=True, auto_augment=policy, random_erasing=0.5,
                            random_erasing_value="random")
    kwargs = {"augment": augment, "mean": (0.5, 0.4, 0.3), "std": (0.25, 0.2, 0.3), "seed": 9,
              "mix": MixConfig(mixup_alpha=0.4, cutmix_alpha=1.0)}
    cpu = [(x.clone(), y.clone()) for x, y in Loader(data, 32, **kwargs)]
    gpu = [(x.cpu(), y.cpu()) for x, y in Loader(data, 32, device="cuda", **kwargs)]
    for (x, y), (gx, gy) in zip(cpu, gpu, strict=True):
        torch.testing.assert_close(gy, y, rtol=0, atol=1e-6)
        torch.testing.assert_close(gx, x, rtol=0, atol=1e-4)
    policy_only = {**kwargs, "augment": AugmentConfig(auto_augment=policy), "mix": None}
    for (x, _), (gx, _) in zip(Loader(data, 32, **policy_only), Loader(data, 32, device="cuda", **policy_only),
                               strict=True):
        assert torch.equal(gx.cpu(), x)  # the uint8 policy itself: bit for bit


def test_magnitude_tables_do_not_depend_on_the_default_dtype():
    """The tables are cached: one made under a float64 default (as the DDP tests train) must equal torchvision's
    float32 one, or every later run in the process would get other magnitudes."""
    policies._space_table.cache_clear()
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        under_float64 = policies._space_table("trivialaugment", 28, 28).magnitudes
    finally:
        torch.set_default_dtype(previous)
        policies._space_table.cache_clear()
    assert torch.equal(under_float64, policies._space_table("trivialaugment", 28, 28).magnitudes)
