"""CIFAR ResNets of He et al. 2016, "Deep Residual Learning for Image Recognition", section 4.2.

Reading order as torchvision's `resnet.py`: helpers -> shortcuts -> blocks -> stage and init helpers
(shared with `imagenet.py`) -> `CifarResNet` -> one private builder -> the public variants, generated
from the depth table in `catalog.py` (`BUILDERS`, which the registry reads).

The CIFAR net: a 3x3 conv with 16 filters, then three stages of n blocks on 32x32, 16x16 and 8x8 maps with
16, 32 and 64 filters (the first block of stages 2 and 3 subsamples with stride 2), global average pooling
and a fully connected classifier. Basic-block nets have 6n+2 layers; the post-activation bottleneck nets
(ResNet-164/1001 of He et al. 2016b, "Identity Mappings in Deep Residual Networks", run post-activation)
have 9n+2 layers and 64/128/256 output channels.

Tensor shapes in comments are (B, C, H, W).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from resnetlab.errors import UserError
from resnetlab.models.catalog import CIFAR_DEPTHS, CIFAR_MODELS, BlockName, CifarSpec

Shortcut = Literal["A", "B"]
ModelBuilder = Callable[..., nn.Module]  # keyword-only num_classes, in_chans and the model's own options

CIFAR_IMAGE_SIZE = 32
CIFAR_WIDTHS = (16, 32, 64)  # filters per stage, paper section 4.2
CIFAR_STRIDES = (1, 2, 2)  # subsampling by the first conv of stages 2 and 3
CIFAR_NUM_CLASSES = 10  # the natural default of the CIFAR nets (CIFAR-10)


# ------------------------------------------------------------------------------------------------ helpers


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1 and no bias (a BatchNorm follows every conv)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution without bias."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


# ---------------------------------------------------------------------------------------------- shortcuts


class ZeroPadShortcut(nn.Module):
    """Option A: parameter-free identity that subsamples by `stride` and zero-pads the extra channels.

    "(A) The shortcut still performs identity mapping, with extra zero entries padded for increasing
    dimensions. This option introduces no extra parameter" (paper section 3.3). A module rather than a
    lambda so that `torch.save` of a whole model works.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.extra = out_planes - in_planes
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]  # (B, C_in, H/s, W/s)
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))  # (B, C_out, H/s, W/s), new channels are zeros

    def extra_repr(self) -> str:
        return f"pad_channels={self.extra}, stride={self.stride}"


def projection(in_planes: int, out_planes: int, stride: int) -> nn.Sequential:
    """Option B: 1x1 conv + BN where the shape changes (named `downsample.0/.1` as torchvision's)."""
    return nn.Sequential(conv1x1(in_planes, out_planes, stride), nn.BatchNorm2d(out_planes))


# ------------------------------------------------------------------------------------------------- blocks


class BasicBlock(nn.Module):
    """Two 3x3 convs: relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)) (paper Fig. 2, left of Fig. 5).

    With `residual=False` the shortcut is removed and the block is a plain two-layer unit (the paper's
    plain nets). The shortcut is stored as `downsample` (None = identity) to keep torchvision's
    parameter names, so torchvision weights load unchanged into the ImageNet nets.
    """

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 residual: bool = True) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)

    def last_bn(self) -> nn.BatchNorm2d:
        """The BN before the addition (zeroed by `zero_init_residual`)."""
        return self.bn2


class Bottleneck(nn.Module):
    """Post-activation bottleneck 1x1 -> 3x3 -> 1x1 with `expansion = 4` (paper Fig. 5, right).

    The stride sits on the 3x3 conv (as fb.resnet.torch and torchvision's "ResNet v1.5") and the
    addition comes before the last ReLU, as in the 2016 paper.
    """

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 residual: bool = True) -> None:
        super().__init__()
        self.conv1 = conv1x1(in_planes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)

    def last_bn(self) -> nn.BatchNorm2d:
        """The BN before the addition (zeroed by `zero_init_residual`)."""
        return self.bn3


Block = type[BasicBlock] | type[Bottleneck]
BLOCKS: dict[str, Block] = {"basic": BasicBlock, "bottleneck": Bottleneck}


# ---------------------------------------------------------------------------------- shared stage and init


def make_stage(block: Block, in_planes: int, planes: int, num_blocks: int, stride: int, *,
               shortcut: Shortcut = "B", residual: bool = True) -> nn.Sequential:
    """`num_blocks` blocks; the first one changes the width/resolution and gets the shortcut `shortcut`."""
    out_planes = planes * block.expansion
    downsample: nn.Module | None = None
    if residual and (stride != 1 or in_planes != out_planes):
        if shortcut == "A":
            downsample = ZeroPadShortcut(in_planes, out_planes, stride)
        else:
            downsample = projection(in_planes, out_planes, stride)
    layers = [block(in_planes, planes, stride, downsample, residual)]
    layers += [block(out_planes, planes, 1, None, residual) for _ in range(num_blocks - 1)]
    return nn.Sequential(*layers)


def init_weights(model: nn.Module, zero_init_residual: bool = False) -> None:
    """He initialisation as in the paper (section 3.4; He et al. 2015, fan_out for ReLU), BN weight 1 bias 0.

    `zero_init_residual` zeroes the last BN of every block so that each residual branch starts as zero
    and each block as the identity; it improves accuracy by 0.2-0.3% (Goyal et al. 2017, arXiv 1706.02677).
    The classifier keeps PyTorch's default init (as torchvision: the paper does not specify it).
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if zero_init_residual:
        for m in model.modules():
            if isinstance(m, BasicBlock | Bottleneck):
                nn.init.zeros_(m.last_bn().weight)


# -------------------------------------------------------------------------------------------- the network


class CifarResNet(nn.Module):
    """3x3 stem -> three stages of `num_blocks` blocks (16/32/64 planes) -> global average pool -> fc."""

    def __init__(self, block: Block, num_blocks: int, *, num_classes: int = CIFAR_NUM_CLASSES, in_chans: int = 3,
                 shortcut: Shortcut = "A", residual: bool = True, zero_init_residual: bool = False) -> None:
        super().__init__()
        self.default_image_size = CIFAR_IMAGE_SIZE
        stem_planes = CIFAR_WIDTHS[0]
        self.conv1 = conv3x3(in_chans, stem_planes)
        self.bn1 = nn.BatchNorm2d(stem_planes)
        self.relu = nn.ReLU(inplace=True)
        in_planes = stem_planes
        for i, (planes, stride) in enumerate(zip(CIFAR_WIDTHS, CIFAR_STRIDES, strict=True), start=1):
            stage = make_stage(block, in_planes, planes, num_blocks, stride, shortcut=shortcut, residual=residual)
            self.add_module(f"layer{i}", stage)
            in_planes = planes * block.expansion
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        init_weights(self, zero_init_residual)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))  # (B, 16, 32, 32)
        x = self.layer1(x)  # (B, 16e, 32, 32), e = block.expansion
        x = self.layer2(x)  # (B, 32e, 16, 16)
        x = self.layer3(x)  # (B, 64e, 8, 8)
        x = torch.flatten(self.avgpool(x), 1)  # (B, 64e)
        return self.fc(x)  # (B, num_classes)


# ---------------------------------------------------------------------------------------------- builders

# Layers per block and the default shortcut of each block type: the paper's CIFAR basic nets use
# option A (section 4.2); the bottleneck nets of He et al. 2016b project (1x1 conv + BN) where the
# width changes, which gives ResNet-164 its 1.7 M parameters.
_LAYERS_PER_BLOCK = {"basic": 2, "bottleneck": 3}
_DEFAULT_SHORTCUT: dict[str, Shortcut] = {"basic": "A", "bottleneck": "B"}
_EXAMPLE_DEPTHS = {"basic": (), "bottleneck": (29, 47, 56, 110)}  # 9n+2 depths besides the named ones


def cifar_resnet(depth: int, block: BlockName = "basic", residual: bool = True, shortcut: Shortcut | None = None,
                 num_classes: int = CIFAR_NUM_CLASSES, in_chans: int = 3,
                 zero_init_residual: bool = False) -> CifarResNet:
    """A CIFAR ResNet (or its plain twin) of any valid depth.

    Args:
        depth: number of weighted layers, 6n+2 for basic blocks, 9n+2 for bottleneck blocks.
        block: "basic" (two 3x3 convs) or "bottleneck" (1x1, 3x3, 1x1 with expansion 4).
        residual: False removes every shortcut (the paper's plain nets, same parameters as option A).
        shortcut: "A" (zero-padding identity) or "B" (1x1 projection where the shape changes);
            default "A" for basic blocks (paper section 4.2) and "B" for bottleneck blocks.
        num_classes: outputs of the classifier.
        in_chans: channels of the input images.
        zero_init_residual: start each residual branch at zero (last BN gamma = 0).

    Returns:
        The network, He-initialised, with `default_image_size = 32`.

    Raises:
        UserError: for an unknown block or shortcut, an invalid depth, or options a plain net cannot have.
    """
    if block not in BLOCKS:
        raise UserError(f"unknown block {block!r}; use one of: {', '.join(BLOCKS)}")
    per_stage = 3 * _LAYERS_PER_BLOCK[block]  # layers added by one more block in each of the 3 stages
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < per_stage + 2 or (depth - 2) % per_stage:
        tries = ", ".join(str(d) for d in sorted({*CIFAR_DEPTHS[block], *_EXAMPLE_DEPTHS[block]}))
        raise UserError(f"depth {depth} is not {per_stage}n+2 (n >= 1) for {block} blocks; try {tries}")
    if shortcut is not None and shortcut not in ("A", "B"):
        raise UserError(f"unknown shortcut {shortcut!r}; use 'A' (zero-padding identity) or 'B' (projection)")
    if not residual and (shortcut is not None or zero_init_residual):
        raise UserError("a plain net has no shortcut and no residual branch; drop shortcut/zero_init_residual")
    check_sizes(num_classes, in_chans)
    return CifarResNet(BLOCKS[block], (depth - 2) // per_stage, num_classes=num_classes, in_chans=in_chans,
                       shortcut=shortcut or _DEFAULT_SHORTCUT[block], residual=residual,
                       zero_init_residual=zero_init_residual)


def check_sizes(num_classes: int, in_chans: int) -> None:
    """Raise a UserError unless `num_classes` and `in_chans` are positive integers."""
    for name, value in (("num_classes", num_classes), ("in_chans", in_chans)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"{name} must be a positive integer, got {value!r}")


# The named variants are data (catalog.CIFAR_MODELS); each gets a builder with the options it can take.


def _residual_variant(name: str, depth: int, block: BlockName) -> ModelBuilder:
    default_block = block

    # `block` (model.options.block) keeps the depth and says the block type outright: resnet56 with
    # block="bottleneck" is seed 000's ResNet(56), the same net as resnet56-bottleneck.
    def builder(*, num_classes: int = CIFAR_NUM_CLASSES, in_chans: int = 3, shortcut: Shortcut | None = None,
                zero_init_residual: bool = False, block: BlockName = default_block) -> CifarResNet:
        return cifar_resnet(depth, block, True, shortcut, num_classes, in_chans, zero_init_residual)

    return _named(builder, name, f"ResNet-{depth} for 32x32 images ({block} blocks, CIFAR layout).")


def _plain_variant(name: str, depth: int, block: BlockName) -> ModelBuilder:
    def builder(*, num_classes: int = CIFAR_NUM_CLASSES, in_chans: int = 3) -> CifarResNet:
        return cifar_resnet(depth, block, False, None, num_classes, in_chans)

    return _named(builder, name, f"Plain-{depth}: ResNet-{depth}'s layers without shortcuts (paper Fig. 6).")


def _named(builder: Callable[..., CifarResNet], name: str, doc: str) -> ModelBuilder:
    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = doc
    return builder


def variant(name: str, spec: CifarSpec) -> ModelBuilder:
    """The builder of a CIFAR net named `name` after `spec` (the named table, or a generated name such as
    `resnet47-bottleneck`, `catalog.cifar_spec`)."""
    factory = _residual_variant if spec.residual else _plain_variant
    return factory(name, spec.depth, spec.block)


BUILDERS: dict[str, ModelBuilder] = {name: variant(name, spec) for name, spec in CIFAR_MODELS.items()}
