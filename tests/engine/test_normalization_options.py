"""data.normalize (none | channel | pixel | fixed with data.mean/data.std) and data.resize_mode (bilinear |
nearest): each reaches the loader's pixels, the checkpoint keeps what was used (evaluate, predict and export read
it), the tutorials' recipes use their tutorial's choice, bad values exit 2 with one line."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import yaml
from support.enginekit import tiny_config

from resnetlab.engine import builders
from resnetlab.engine.checkpoint import read_checkpoint
from resnetlab.engine.config import load_config
from resnetlab.engine.trainer import train
from resnetlab.inference.evaluate import evaluate
from resnetlab.inference.export import with_preprocessing
from resnetlab.inference.loading import load_checkpoint

pytestmark = pytest.mark.numeric

CPU = torch.device("cpu")
SEED_CONSTANTS = {"mean": [0.4914, 0.4822, 0.4465], "std": [0.2023, 0.1994, 0.2010]}  # seeds 000 and 002


def _val_batch(root, **overrides) -> tuple[torch.Tensor, torch.Tensor]:
    """The first validation batch the engine makes (in order, no augmentation) and the uint8 images it came from."""
    cfg = tiny_config(root, None, **overrides)
    data = builders.build_data(cfg, with_test=False)
    loader = builders.make_loader(data.val, cfg, train=False, device=CPU, normalization=data.normalization)
    x, _ = next(iter(loader))
    return x, data.val.images[: len(x)].float()


def test_none_feeds_pixels_in_0_1(tiny_root):
    x, pixels = _val_batch(tiny_root, data__normalize="none")
    assert torch.allclose(x, pixels / 255, atol=1e-6)
    measured, _ = _val_batch(tiny_root)  # channel: the training split's statistics; not pixels / 255
    assert not torch.allclose(measured, pixels / 255, atol=1e-2)


def test_fixed_uses_the_given_constants(tiny_root):
    x, pixels = _val_batch(tiny_root, data__normalize="fixed", data__mean="[0.5]", data__std="[0.25]")
    assert torch.allclose(x, (pixels / 255 - 0.5) / 0.25, atol=1e-5)


def test_colour_constants_on_grey_images_take_their_average(tiny_root):
    """`--recipe seed000-cifar10 --data fashion-mnist`: the tutorial's colour constants, averaged for grey images."""
    x, pixels = _val_batch(tiny_root, data__normalize="fixed", data__mean="[0.2,0.4,0.6]", data__std="[0.1,0.2,0.3]")
    assert torch.allclose(x, (pixels / 255 - 0.4) / 0.2, atol=1e-5)


def test_nearest_resize_repeats_pixels_as_nn_upsample(tiny_root):
    x, pixels = _val_batch(tiny_root, data__normalize="none", data__resize=36, data__resize_mode="nearest")
    expected = torch.nn.Upsample(size=(36, 36))(pixels / 255)  # the fourth tutorial's upsampler (mode nearest)
    assert x.shape[-2:] == (36, 36) and torch.allclose(x, expected, atol=1e-6)
    bilinear, _ = _val_batch(tiny_root, data__normalize="none", data__resize=36)
    assert torch.allclose(bilinear, F.interpolate(pixels / 255, size=(36, 36), mode="bilinear"), atol=1e-5)
    assert not torch.allclose(bilinear, expected, atol=1e-3)


def test_the_checkpoint_keeps_the_fixed_constants_and_evaluate_and_export_use_them(tiny_root, tmp_path):
    run = train(tiny_config(tiny_root, tmp_path / "run", train__iters=4, data__normalize="fixed",
                            data__mean="[0.3]", data__std="[0.5]", data__resize=16, data__resize_mode="nearest"))
    best = run.run_dir / "checkpoints" / "best.pt"
    assert read_checkpoint(best)["normalization"] == {"mean": [0.3], "std": [0.5]}
    assert evaluate(run.run_dir)["acc"] == pytest.approx(run.summary["test_acc"])
    model, info = load_checkpoint(best)
    wrapped, _ = with_preprocessing(model, info)
    assert wrapped.mode == "nearest"
    images = torch.randint(0, 256, (2, 1, 12, 12), dtype=torch.uint8)
    with torch.no_grad():
        expected = model(F.interpolate((images.float() / 255 - 0.3) / 0.5, size=(16, 16))).softmax(dim=1)
        assert torch.allclose(wrapped(images), expected, atol=1e-5)


@pytest.mark.parametrize(("recipe", "normalize", "constants", "resize_mode", "batch"), [
    ("seed000-cifar10", "fixed", SEED_CONSTANTS, "bilinear", 128),
    ("seed001-fmnist", "none", None, "bilinear", 256),
    ("seed002-cifar10", "fixed", SEED_CONSTANTS, "bilinear", 64),  # its loaders' batch_size=64
    ("seed004-cifar10", "none", None, "nearest", 128),  # nn.Upsample(size=(224, 224)) on pixels in [0, 1]
])
def test_the_tutorials_recipes_use_their_tutorials_choice(recipe, normalize, constants, resize_mode, batch):
    d = load_config(recipe).data
    assert (d.normalize, d.resize_mode, d.batch_size) == (normalize, resize_mode, batch)
    assert (d.mean, d.std) == ((constants["mean"], constants["std"]) if constants else (None, None))


def test_keys_in_print_config_and_config_yaml(tiny_root, tmp_path, run_cli):
    code, out, _ = run_cli("train", "--recipe", "seed004-cifar10", "--print-config")
    assert code == 0
    for line in ("data.normalize = none", "data.resize_mode = nearest", "data.mean = null", "data.std = null"):
        assert line in out
    code, out, _ = run_cli("train", "--recipe", "seed000-cifar10", "--print-config")
    assert "data.normalize = fixed" in out and "data.mean = [0.4914, 0.4822, 0.4465]" in out
    train(tiny_config(tiny_root, tmp_path / "run", train__iters=1, data__normalize="fixed", data__mean="[0.4]",
                      data__std="[0.2]", data__resize_mode="nearest"))
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["data"]
    assert (saved["normalize"], saved["mean"], saved["std"], saved["resize_mode"]) == ("fixed", [0.4], [0.2],
                                                                                       "nearest")


@pytest.mark.parametrize(("settings", "words"), [
    (["data.normalize=fixed"], "data.normalize=fixed needs data.mean and data.std"),
    (["data.normalize=fixed", "data.mean=[0.5]", "data.std=[0.2,0.3]"], "one value per channel each; got 1 and 2"),
    (["data.normalize=fixed", "data.mean=[0.5]", "data.std=[0]"], "data.std must be positive"),
    (["data.mean=[0.5]"], "data.mean and data.std are the constants of data.normalize=fixed"),
    (["data.normalize=standard"], "data.normalize must be one of none, channel, pixel, fixed"),
    (["data.resize_mode=bicubic"], "data.resize_mode must be one of bilinear, nearest"),
    (["data.normalize=fixed", "data.mean=[0.5,0.5]", "data.std=[0.2,0.2]"],
     "data.mean and data.std have 2 values but the images have 1 channel"),
])
def test_bad_values_exit_2_with_one_line(tiny_root, tmp_path, run_cli, settings, words):
    extra = [arg for s in settings for arg in ("--set", s)]
    code, out, err = run_cli("train", "--data-dir", tiny_root, "--out", tmp_path / "run", "--set", "data.name=mnist",
                             "--set", "data.val_size=96", "--set", "train.iters=1",
                             "--set", "data.batch_size=32", *extra)
    assert code == 2 and words in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "run").exists()
