"""ImageNet ResNets: torchvision's parameter names, shapes and outputs; stems; weight adaptation."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import torchvision

from resnetlab.models import create_model

pytestmark = pytest.mark.numeric  # also run with AVX2 kernels only by .ci/run (issue 11)

IMAGENET_NAMES = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]


@pytest.mark.parametrize("name", IMAGENET_NAMES)
def test_torchvision_weights_load_unchanged_and_give_identical_outputs(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    reference = getattr(torchvision.models, name)(weights=None).eval()
    path = tmp_path / f"{name}.pth"
    torch.save(reference.state_dict(), path)
    ours = create_model(name, num_classes=1000, weights=path).eval()
    theirs = reference.state_dict()
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [(k, v.shape) for k, v in theirs.items()]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(ours(x), reference(x))


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_default_classes_are_torchvisions(name: str) -> None:
    """create_model(name) without num_classes is torchvision's net: 1000 ImageNet classes."""
    ours, theirs = create_model(name), getattr(torchvision.models, name)(weights=None)
    assert ours.fc.out_features == theirs.fc.out_features == 1000
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())


def test_torchvision_resnet18_into_a_one_channel_ten_class_net(tmp_path: Path, caplog) -> None:
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    with caplog.at_level(logging.INFO, logger="resnetlab"):
        model = create_model("resnet18", in_chans=1, num_classes=10, weights=path)
    assert torch.equal(model.conv1.weight, reference.conv1.weight.sum(dim=1, keepdim=True))
    assert model.conv1.weight.shape == (64, 1, 7, 7)
    assert model.fc.weight.shape == (10, 512) and model.fc.bias.shape == (10,)
    assert torch.equal(model.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any("1 input channel" in m and "summed over colour" in m for m in messages)
    assert any("1000-output classifier" in m and "10-output" in m for m in messages)
    # a grey image gives the same features as its 3-channel copy in the original net
    grey = torch.rand(1, 1, 64, 64)
    features = torch.nn.Sequential(*list(model.children())[:-1]).eval()
    features_ref = torch.nn.Sequential(*list(reference.children())[:-1]).eval()
    with torch.no_grad():
        torch.testing.assert_close(features(grey), features_ref(grey.expand(1, 3, 64, 64)))


@pytest.mark.parametrize(("stem", "size", "params"), [("cifar", 32, 11_173_962), ("imagenet", 224, 11_181_642)])
def test_stems(stem: str, size: int, params: int) -> None:
    model = create_model("resnet18", stem=stem, num_classes=10)
    assert sum(p.numel() for p in model.parameters()) == params
    assert model.default_image_size == size
    model.eval()
    with torch.no_grad():
        x = model.maxpool(model.relu(model.bn1(model.conv1(torch.randn(1, 3, size, size)))))
    assert x.shape == ((1, 64, 32, 32) if stem == "cifar" else (1, 64, 56, 56))


def test_zero_init_residual_for_imagenet_nets() -> None:
    model = create_model("resnet50", zero_init_residual=True)
    assert all(torch.count_nonzero(layer[i].bn3.weight) == 0
               for layer in (model.layer1, model.layer4) for i in range(len(layer)))
    assert torch.count_nonzero(model.layer1[0].downsample[1].weight) == 256
