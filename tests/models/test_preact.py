"""Pre-activation CIFAR ResNets (He et al. 2016b): the paper's parameter counts, the unit's order, the identity path."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from resnetlab.errors import UserError
from resnetlab.models import create_model
from resnetlab.models.preact import PreActBasicBlock, PreActBottleneck, preact_resnet

# "Identity Mappings in Deep Residual Networks", Tables 2-3: ResNet-110 1.7M, ResNet-164 1.7M, ResNet-1001 10.2M.
# The paper's counts are the weights of the convolutions and the classifier: with BatchNorm's scales and shifts
# left out they round to its numbers (10,178,490 -> 10.2M; with them the total is 10,327,706).
PAPER_MILLIONS = {"preact110": 1.7, "preact164": 1.7, "preact1001": 10.2}
TOTALS = {"preact110": 1_727_962, "preact164": 1_703_258, "preact1001": 10_327_706}


def weights_without_bn(model: nn.Module) -> int:
    bn = sum(p.numel() for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters())
    return sum(p.numel() for p in model.parameters()) - bn


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "preact1001" else n
                                  for n in PAPER_MILLIONS])
def test_parameter_counts_of_the_papers_table(name: str) -> None:
    model = create_model(name)
    assert round(weights_without_bn(model) / 1e6, 1) == PAPER_MILLIONS[name]
    assert sum(p.numel() for p in model.parameters()) == TOTALS[name]


def test_unit_types_and_depths() -> None:
    units = [m for m in create_model("preact164").modules() if isinstance(m, PreActBottleneck)]
    assert len(units) == 54  # 9n+2 = 164: n = 18 per stage
    model = create_model("preact110")
    units = [m for m in model.modules() if isinstance(m, PreActBasicBlock)]
    assert len(units) == 54 and len([m for m in model.modules() if isinstance(m, nn.Conv2d)]) + 1 == 110
    assert model.fc.in_features == 64 and create_model("preact164").fc.in_features == 256
    assert len([m for m in create_model("preact29-bottleneck").modules() if isinstance(m, PreActBottleneck)]) == 9


def test_the_identity_path_is_clean() -> None:
    """A unit whose last conv is zero returns its input exactly (no ReLU after the addition, unlike post-act)."""
    unit = PreActBasicBlock(16, 16).eval()
    nn.init.zeros_(unit.conv2.weight)
    x = torch.randn(2, 16, 8, 8)  # negative values too: a ReLU after the addition would clip them
    with torch.no_grad():
        assert torch.equal(unit(x), x)
    bottleneck = PreActBottleneck(64, 16).eval()
    nn.init.zeros_(bottleneck.conv3.weight)
    y = torch.randn(2, 64, 8, 8)
    with torch.no_grad():
        assert torch.equal(bottleneck(y), y)


def test_the_shortcut_of_a_shape_change_sees_the_preactivated_input_and_the_net_trains_backward() -> None:
    model = create_model("preact20", shortcut="B", num_classes=7, in_chans=1)
    first = model.layer2[0]
    assert isinstance(first.downsample, nn.Conv2d) and first.downsample.stride == (2, 2)
    out = model(torch.randn(2, 1, 28, 28))
    assert out.shape == (2, 7)
    out.sum().backward()
    assert model.conv1.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(("call", "message"), [
    (lambda: preact_resnet(21), "depth 21 is not 6n+2 (n >= 1) for basic blocks; try 20, 32, 56, 110"),
    (lambda: create_model("preact56-bottleneck", shortcut="C"), "unknown shortcut 'C'"),
    (lambda: create_model("preact110", zero_init_residual=True), "unknown option 'zero_init_residual' for preact110"),
])
def test_bad_preact_settings_are_user_errors(call, message: str) -> None:
    with pytest.raises(UserError, match="^" + re.escape(message)):
        call()
