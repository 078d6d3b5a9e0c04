"""ImageNet ResNets of He et al. 2016 (paper Table 1): ResNet-18/34/50/101/152.

Parameter names and shapes equal torchvision's (`conv1`, `bn1`, `layer1..4` with blocks `.conv1/.bn1/...`
and `.downsample.0/.1`, `fc`), so torchvision's weights load unchanged and give identical outputs. The
blocks, stages and initialisation are the ones of the CIFAR nets (`cifar.py`); shortcuts are projections
(option B) where the shape changes, as in torchvision.

`stem="cifar"` swaps the 7x7/2 conv + 3x3/2 max-pool for a 3x3 stride-1 conv without pooling, the usual
way to run these nets on 32x32 images; `in_chans=1` serves MNIST and Fashion-MNIST.

Tensor shapes in comments are (B, C, H, W) for a 224x224 input and the imagenet stem.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from resnetlab.errors import UserError
from resnetlab.models.catalog import IMAGENET_MODELS
from resnetlab.models.cifar import (
    BLOCKS,
    CIFAR_IMAGE_SIZE,
    Block,
    ModelBuilder,
    check_sizes,
    conv3x3,
    init_weights,
    make_stage,
)

Stem = Literal["imagenet", "cifar"]

IMAGENET_IMAGE_SIZE = 224
IMAGENET_WIDTHS = (64, 128, 256, 512)  # planes per stage, paper Table 1
IMAGENET_STRIDES = (1, 2, 2, 2)
IMAGENET_NUM_CLASSES = 1000  # the natural default of the ImageNet nets (as torchvision and timm)
STEMS = ("imagenet", "cifar")


class ResNet(nn.Module):
    """Stem -> four stages (64/128/256/512 planes) -> global average pool -> fc (paper Table 1)."""

    def __init__(self, block: Block, layers: tuple[int, int, int, int], *, num_classes: int = IMAGENET_NUM_CLASSES,
                 in_chans: int = 3, stem: Stem = "imagenet", zero_init_residual: bool = False) -> None:
        super().__init__()
        stem_planes = IMAGENET_WIDTHS[0]
        if stem == "imagenet":
            self.default_image_size = IMAGENET_IMAGE_SIZE
            self.conv1 = nn.Conv2d(in_chans, stem_planes, kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        else:
            # Keeps the name `conv1` so every other parameter still matches torchvision's.
            self.default_image_size = CIFAR_IMAGE_SIZE
            self.conv1 = conv3x3(in_chans, stem_planes)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(stem_planes)
        self.relu = nn.ReLU(inplace=True)
        in_planes = stem_planes
        for i, (planes, blocks, stride) in enumerate(zip(IMAGENET_WIDTHS, layers, IMAGENET_STRIDES, strict=True), 1):
            self.add_module(f"layer{i}", make_stage(block, in_planes, planes, blocks, stride, shortcut="B"))
            in_planes = planes * block.expansion
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        init_weights(self, zero_init_residual)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, 64, 56, 56)
        x = self.layer1(x)  # (B, 64e, 56, 56), e = block.expansion
        x = self.layer2(x)  # (B, 128e, 28, 28)
        x = self.layer3(x)  # (B, 256e, 14, 14)
        x = self.layer4(x)  # (B, 512e, 7, 7)
        x = torch.flatten(self.avgpool(x), 1)  # (B, 512e)
        return self.fc(x)  # (B, num_classes)


def _resnet(name: str, *, num_classes: int, in_chans: int, stem: str, zero_init_residual: bool) -> ResNet:
    if stem not in STEMS:
        raise UserError(f"unknown stem {stem!r} for {name}; use 'imagenet' (7x7/2 conv + max-pool) or 'cifar'")
    check_sizes(num_classes, in_chans)
    spec = IMAGENET_MODELS[name]  # blocks per stage, paper Table 1
    return ResNet(BLOCKS[spec.block], spec.layers, num_classes=num_classes, in_chans=in_chans,
                  stem=stem, zero_init_residual=zero_init_residual)  # type: ignore[arg-type]


def _variant(name: str) -> ModelBuilder:
    def builder(*, num_classes: int = IMAGENET_NUM_CLASSES, in_chans: int = 3, stem: Stem = "imagenet",
                zero_init_residual: bool = False) -> ResNet:
        return _resnet(name, num_classes=num_classes, in_chans=in_chans, stem=stem,
                       zero_init_residual=zero_init_residual)

    depth = name.removeprefix("resnet")
    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = f"ResNet-{depth} of paper Table 1 with torchvision's parameter names."
    return builder


BUILDERS: dict[str, ModelBuilder] = {name: _variant(name) for name in IMAGENET_MODELS}
