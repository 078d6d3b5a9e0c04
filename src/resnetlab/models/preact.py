"""Pre-activation CIFAR ResNets of He et al. 2016b, "Identity Mappings in Deep Residual Networks".

The residual unit moves BatchNorm and ReLU in front of each convolution ("full pre-activation", the paper's
Fig. 4e), so the shortcut path carries x unchanged from block to block, and a final BN-ReLU follows the last
stage. Layout as `cifar.py`: a 3x3 stem with 16 filters, three stages of n units on 32/16/8 px maps, 16/32/64
planes (x4 out of a bottleneck), global average pooling, a linear classifier. Depth 6n+2 with basic units,
9n+2 with bottleneck units: preact110 (1.7 M parameters), preact164 (1.7 M) and preact1001 (10.2 M) are the
nets of the paper's Table 3 (ResNet-164 5.46%, ResNet-1001 4.92% CIFAR-10 error).

Where the shape changes, the shortcut sees the pre-activated input (as the authors' code, which applies
BN-ReLU "before the split" in those units); option B projects it with a 1x1 convolution alone (no BN, as in
their code), option A pads it with zero channels. Tensor shapes in comments are (B, C, H, W).
"""

from __future__ import annotations

import torch
from torch import nn

from resnetlab.errors import UserError
from resnetlab.models.catalog import PREACT_MODELS, BlockName, CifarSpec
from resnetlab.models.cifar import (
    CIFAR_IMAGE_SIZE,
    CIFAR_NUM_CLASSES,
    CIFAR_STRIDES,
    CIFAR_WIDTHS,
    ModelBuilder,
    Shortcut,
    ZeroPadShortcut,
    check_sizes,
    conv1x1,
    conv3x3,
)

_LAYERS_PER_BLOCK = {"basic": 2, "bottleneck": 3}
_DEFAULT_SHORTCUT: dict[str, Shortcut] = {"basic": "A", "bottleneck": "B"}  # as the post-activation nets


class PreActBasicBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3, added to the shortcut with nothing after the addition (Fig. 4e)."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.relu = nn.ReLU(inplace=False)  # the block input x must stay intact for the identity path
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(x))
        shortcut = x if self.downsample is None else self.downsample(out)
        out = self.conv1(out)
        out = self.conv2(self.relu(self.bn2(out)))
        return out + shortcut


class PreActBottleneck(nn.Module):
    """BN-ReLU-conv1x1, BN-ReLU-conv3x3 (stride here), BN-ReLU-conv1x1 to 4x the planes, plus the shortcut."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = conv1x1(in_planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.relu = nn.ReLU(inplace=False)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(x))
        shortcut = x if self.downsample is None else self.downsample(out)
        out = self.conv1(out)
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.conv3(self.relu(self.bn3(out)))
        return out + shortcut


PreActBlock = type[PreActBasicBlock] | type[PreActBottleneck]
PREACT_BLOCKS: dict[str, PreActBlock] = {"basic": PreActBasicBlock, "bottleneck": PreActBottleneck}


def _stage(block: PreActBlock, in_planes: int, planes: int, num_blocks: int, stride: int,
           shortcut: Shortcut) -> nn.Sequential:
    out_planes = planes * block.expansion
    downsample: nn.Module | None = None
    if stride != 1 or in_planes != out_planes:
        downsample = ZeroPadShortcut(in_planes, out_planes, stride) if shortcut == "A" else \
            conv1x1(in_planes, out_planes, stride)
    layers = [block(in_planes, planes, stride, downsample)]
    layers += [block(out_planes, planes) for _ in range(num_blocks - 1)]
    return nn.Sequential(*layers)


class PreActResNet(nn.Module):
    """3x3 stem -> three stages of pre-activation units -> BN-ReLU -> global average pool -> fc."""

    def __init__(self, block: PreActBlock, num_blocks: int, *, num_classes: int = CIFAR_NUM_CLASSES,
                 in_chans: int = 3, shortcut: Shortcut = "A") -> None:
        super().__init__()
        self.default_image_size = CIFAR_IMAGE_SIZE
        in_planes = CIFAR_WIDTHS[0]
        self.conv1 = conv3x3(in_chans, in_planes)  # no BN-ReLU here: the first unit pre-activates its input
        for i, (planes, stride) in enumerate(zip(CIFAR_WIDTHS, CIFAR_STRIDES, strict=True), start=1):
            self.add_module(f"layer{i}", _stage(block, in_planes, planes, num_blocks, stride, shortcut))
            in_planes = planes * block.expansion
        self.bn = nn.BatchNorm2d(in_planes)  # the final activation of the last unit's output
        self.relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        for m in self.modules():  # He initialisation (fan_out), BN weight 1 bias 0, as cifar.init_weights
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)  # (B, 16, 32, 32)
        x = self.layer3(self.layer2(self.layer1(x)))  # (B, 64e, 8, 8), e = block.expansion
        x = self.relu(self.bn(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))  # (B, num_classes)


def preact_resnet(depth: int, block: BlockName = "basic", shortcut: Shortcut | None = None,
                  num_classes: int = CIFAR_NUM_CLASSES, in_chans: int = 3) -> PreActResNet:
    """A pre-activation CIFAR ResNet of any valid depth.

    Args:
        depth: weighted layers, 6n+2 for basic units, 9n+2 for bottleneck units.
        block: "basic" or "bottleneck".
        shortcut: "A" (zero padding) or "B" (1x1 projection) where the shape changes; default A for basic
            units, B for bottleneck units.
        num_classes: outputs of the classifier.
        in_chans: channels of the input images.

    Raises:
        UserError: an unknown block or shortcut, or a depth the block does not allow.
    """
    if block not in PREACT_BLOCKS:
        raise UserError(f"unknown block {block!r}; use one of: {', '.join(PREACT_BLOCKS)}")
    per_stage = 3 * _LAYERS_PER_BLOCK[block]
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < per_stage + 2 or (depth - 2) % per_stage:
        tries = "20, 32, 56, 110" if block == "basic" else "29, 56, 164, 1001"
        raise UserError(f"depth {depth} is not {per_stage}n+2 (n >= 1) for {block} blocks; try {tries}")
    if shortcut is not None and shortcut not in ("A", "B"):
        raise UserError(f"unknown shortcut {shortcut!r}; use 'A' (zero-padding identity) or 'B' (projection)")
    check_sizes(num_classes, in_chans)
    return PreActResNet(PREACT_BLOCKS[block], (depth - 2) // per_stage, num_classes=num_classes, in_chans=in_chans,
                        shortcut=shortcut or _DEFAULT_SHORTCUT[block])


def variant(name: str, spec: CifarSpec) -> ModelBuilder:
    """The builder of the pre-activation net `name` (a named one, or a generated `preact{D}-basic|bottleneck`)."""
    default_block = spec.block

    def builder(*, num_classes: int = CIFAR_NUM_CLASSES, in_chans: int = 3, shortcut: Shortcut | None = None,
                block: BlockName = default_block) -> PreActResNet:
        return preact_resnet(spec.depth, block, shortcut, num_classes, in_chans)

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = f"Pre-activation ResNet-{spec.depth} for 32x32 images ({spec.block} units, He et al. 2016b)."
    return builder


BUILDERS: dict[str, ModelBuilder] = {name: variant(name, spec) for name, spec in PREACT_MODELS.items()}
