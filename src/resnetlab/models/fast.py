"""A residual net built for time to accuracy on small hardware, after airbench94 (Jordan 2024).

Keller Jordan, "94% on CIFAR-10 in 3.29 Seconds on a Single GPU", arXiv 2404.00498, and its repository
https://github.com/KellerJordan/cifar10-airbench (`airbench94.py`): a 2x2 patch-whitening first layer, then three
groups of two 3x3 convs with a max-pool after the first conv of each group (so the second conv runs at a quarter
of the pixels), BatchNorm, GELU, a global max-pool and a linear classifier. Its widths 64/256/256 are chosen for
an A100; ours default to 32/64/128 (`widths`), measured on a 2-core CPU (bench/time_to_accuracy.py --search).

Our one change: `residual=True` adds an identity shortcut around each group's second conv (both ends have the
same shape), as the residual blocks of ResNet-9 (Page 2018, "How to train your ResNet", the DAWNBench entry).
It costs no parameters and one add per group.

The stem `conv1` (2x2, no padding, 2 x in_chans x 4 filters with a bias) is a plain conv at initialisation;
`train.whiten_init` sets its filters from the training images' patch covariance (`engine/whitening.py`).

Tensor shapes in comments are (B, C, H, W) for a 32x32 input; a 28x28 one gives 27 -> 13 -> 6 -> 3.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from resnetlab.errors import UserError
from resnetlab.models.catalog import FAST_MODELS
from resnetlab.models.cifar import ModelBuilder, check_sizes, conv3x3

Activation = Literal["gelu", "relu"]

AIRBENCH_WIDTHS = (32, 64, 128)  # filters per group for a 2-core CPU (airbench94's own: 64, 256, 256)
WHITEN_KERNEL = 2  # the stem sees 2x2 patches (airbench94)
WHITEN_FACTOR = 2  # each whitening direction gets two filters, +v and -v, so that GELU keeps both signs


def _activation(name: Activation) -> nn.Module:
    if name == "gelu":
        return nn.GELU()
    if name == "relu":
        return nn.ReLU(inplace=True)
    raise UserError(f"unknown activation {name!r}; use gelu or relu")


class ConvGroup(nn.Module):
    """conv3x3 -> max-pool 2 -> BN -> act, then conv3x3 -> BN -> act (plus the input, when `residual`)."""

    def __init__(self, in_planes: int, planes: int, act: Activation, residual: bool) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes)
        self.pool = nn.MaxPool2d(2)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = _activation(act)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = _activation(act)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.pool(self.conv1(x))))  # (B, planes, H/2, W/2)
        out = self.act2(self.bn2(self.conv2(x)))
        return x + out if self.residual else out

    def extra_repr(self) -> str:
        return f"residual={self.residual}"


class AirbenchNet(nn.Module):
    """2x2 patch-whitening stem -> three ConvGroups -> global max-pool -> fc."""

    patch_whitening = True  # conv1 is a 2x2 stem that train.whiten_init may set from the data

    def __init__(self, widths: Sequence[int] = AIRBENCH_WIDTHS, *, num_classes: int = 10, in_chans: int = 3,
                 act: Activation = "gelu", residual: bool = True) -> None:
        super().__init__()
        self.default_image_size = 32
        stem = WHITEN_FACTOR * in_chans * WHITEN_KERNEL**2
        self.conv1 = nn.Conv2d(in_chans, stem, kernel_size=WHITEN_KERNEL, padding=0, bias=True)
        self.act = _activation(act)
        in_planes = stem
        for i, planes in enumerate(widths, start=1):
            self.add_module(f"layer{i}", ConvGroup(in_planes, planes, act, residual))
            in_planes = planes
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and m is not self.conv1:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.conv1(x))  # (B, 8 x in_chans, 31, 31)
        x = self.layer1(x)  # (B, w1, 15, 15)
        x = self.layer2(x)  # (B, w2, 7, 7)
        x = self.layer3(x)  # (B, w3, 3, 3)
        x = torch.flatten(self.pool(x), 1)  # (B, w3)
        return self.fc(x)  # (B, num_classes)


def airbench(*, num_classes: int = 10, in_chans: int = 3, widths: Sequence[int] = AIRBENCH_WIDTHS,
             act: Activation = "gelu", residual: bool = True) -> AirbenchNet:
    """airbench94's net (Jordan 2024, arXiv 2404.00498) with CPU-sized widths and identity shortcuts.

    Args:
        num_classes: outputs of the classifier.
        in_chans: channels of the input images.
        widths: filters of the three conv groups (airbench94: 64, 256, 256).
        act: gelu (airbench94) or relu.
        residual: identity shortcut around the second conv of each group (False: airbench94 exactly).
    """
    check_sizes(num_classes, in_chans)
    if isinstance(widths, (str, bytes)) or len(widths) != 3 or not all(
            isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in widths):
        raise UserError(f"airbench widths must be three positive integers, e.g. [32, 64, 128]; got {widths!r}")
    return AirbenchNet(tuple(widths), num_classes=num_classes, in_chans=in_chans, act=act, residual=residual)


BUILDERS: dict[str, ModelBuilder] = {"airbench": airbench}
assert set(BUILDERS) == set(FAST_MODELS), "models/catalog.py FAST_MODELS and models/fast.py disagree"
