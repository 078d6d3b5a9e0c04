"""CIFAR ResNets: exact parameter counts (paper section 4.2), shortcuts A/B, plain twins, init, depths."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from resnetlab.errors import UserError
from resnetlab.models import cifar_resnet, create_model
from resnetlab.models.cifar import BasicBlock, Bottleneck, ZeroPadShortcut

OPTION_A_PARAMS = {
    "resnet20": 269_722,
    "resnet32": 464_154,
    "resnet44": 658_586,
    "resnet56": 853_018,
    "resnet110": 1_727_962,
    "resnet1202": 19_421_274,
}
OPTION_B_EXTRA = 2_752  # 1x1 conv + BN projections 16->32 (512 + 64) and 32->64 (2,048 + 128)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def blocks(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, BasicBlock | Bottleneck)]


@pytest.mark.parametrize(("name", "params"), OPTION_A_PARAMS.items())
def test_parameter_counts_option_a_and_b(name: str, params: int) -> None:
    assert n_params(create_model(name)) == params
    assert n_params(create_model(name, shortcut="B")) == params + OPTION_B_EXTRA


@pytest.mark.parametrize("depth", [20, 32, 44, 56, 110])
def test_plain_twin_has_the_parameters_of_option_a(depth: int) -> None:
    plain = create_model(f"plain{depth}")
    assert n_params(plain) == OPTION_A_PARAMS[f"resnet{depth}"]
    assert all(not b.residual and b.downsample is None for b in blocks(plain))


def test_resnet164_is_the_bottleneck_net_with_projection_shortcuts() -> None:
    model = create_model("resnet164")
    assert n_params(model) == 1_704_154
    assert len(blocks(model)) == 54 and all(isinstance(b, Bottleneck) for b in blocks(model))
    assert model.fc.in_features == 256
    # the same net from the generic builder (its default shortcut for bottleneck blocks is the projection)
    assert n_params(cifar_resnet(164, block="bottleneck")) == 1_704_154


def test_names_never_change_the_block_type() -> None:
    # The first tutorial made every depth >= 44 a bottleneck net; resnet56 here is 27 basic blocks.
    model = create_model("resnet56")
    assert len(blocks(model)) == 27 and all(type(b) is BasicBlock for b in blocks(model))
    assert len(blocks(create_model("resnet1001"))) == 333
    assert len(blocks(cifar_resnet(56, block="basic"))) == 27


SEED000_RESNET56_PARAMS = 591_322  # the first tutorial's ResNet(56): 6 bottleneck blocks per stage (its depth >= 44)


def test_seed000s_bottleneck_resnet56_by_name_by_option_and_any_9n_plus_2_depth() -> None:
    by_name, by_option = create_model("resnet56-bottleneck"), create_model("resnet56", block="bottleneck")
    for model in (by_name, by_option):
        assert n_params(model) == SEED000_RESNET56_PARAMS
        assert len(blocks(model)) == 18 and all(type(b) is Bottleneck for b in blocks(model))
    assert n_params(create_model("resnet56")) == OPTION_A_PARAMS["resnet56"]  # the name alone stays basic
    model = create_model("resnet47-bottleneck")  # not in the table: a generated name, any 9n+2 depth
    assert len(blocks(model)) == 15 and model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert len(blocks(create_model("resnet26-basic"))) == 12


def test_the_command_line_summarizes_and_trains_generated_names(run_cli):
    code, out, _ = run_cli("summary", "resnet56-bottleneck")
    assert code == 0 and "591,322" in out
    code, out, _ = run_cli("train", "--recipe", "seed000-cifar10", "--model", "resnet110-bottleneck", "--print-config")
    assert code == 0 and "model.name = resnet110-bottleneck" in out
    code, out, err = run_cli("summary", "resnet44-bottleneck")
    assert code == 2 and "depth 44 is not 9n+2" in err


@pytest.mark.parametrize(("name", "message"), [
    ("resnet44-bottleneck", "depth 44 is not 9n+2 (n >= 1) for bottleneck blocks; try 29, 47, 56"),  # seed 000's 44
    ("resnet48", "unknown model 'resnet48'; did you mean resnet44? known models:"),
])
def test_invalid_generated_names_say_what_to_try(name: str, message: str) -> None:
    with pytest.raises(UserError, match="^" + re.escape(message)):
        create_model(name)


@pytest.mark.parametrize("depth", [8, 26, 50])
def test_cifar_resnet_builds_any_valid_depth(depth: int) -> None:
    n = (depth - 2) // 6
    model = cifar_resnet(depth)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(blocks(model)) == 3 * n
    assert len(convs) + 1 == depth  # weighted layers: the convs plus the fc (option A adds no conv)


def test_bottleneck_depth_counts_layers() -> None:
    model = cifar_resnet(29, block="bottleneck", shortcut="A")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) + 1 == 29


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"depth": 21}, "depth 21 is not 6n+2 (n >= 1) for basic blocks; try 20, 32, 44, 56, 110, 1202"),
        ({"depth": 2}, "depth 2 is not 6n+2"),
        ({"depth": 21, "block": "bottleneck"},
         "depth 21 is not 9n+2 (n >= 1) for bottleneck blocks; try 29, 47, 56, 110, 164, 1001"),
        ({"depth": 20, "block": "wide"}, "unknown block 'wide'"),
        ({"depth": 20, "shortcut": "C"}, "unknown shortcut 'C'"),
        ({"depth": 20, "residual": False, "shortcut": "B"}, "a plain net has no shortcut"),
        ({"depth": 20, "num_classes": 0}, "num_classes must be a positive integer"),
    ],
)
def test_invalid_cifar_nets_raise_a_user_error(kwargs: dict, message: str) -> None:
    with pytest.raises(UserError, match="^" + re.escape(message)):
        cifar_resnet(**kwargs)


def test_option_a_shortcut_subsamples_and_zero_pads() -> None:
    x = torch.randn(2, 16, 8, 8)
    y = ZeroPadShortcut(16, 32, stride=2)(x)
    assert y.shape == (2, 32, 4, 4)
    assert torch.equal(y[:, :16], x[:, :, ::2, ::2])
    assert torch.equal(y[:, 16:], torch.zeros(2, 16, 4, 4))


def zero_last_bns(model: nn.Module) -> nn.Module:
    for block in blocks(model):
        block.last_bn().weight.data.zero_()
    return model.eval()


def test_zeroed_residual_block_is_its_shortcut_path() -> None:
    model = zero_last_bns(create_model("resnet20"))
    x = torch.randn(2, 16, 32, 32)
    first_of_stage2 = model.layer2[0]
    with torch.no_grad():
        assert torch.equal(model.layer1[1](x), torch.relu(x))
        assert torch.equal(first_of_stage2(x), torch.relu(first_of_stage2.downsample(x)))


@pytest.mark.parametrize("depth", [20, 56])
def test_plain_net_has_no_shortcut_path(depth: int) -> None:
    # With the last BN of every block zeroed, a plain block outputs relu(0) = 0 and the whole net a constant
    # (the classifier's bias) whatever the input; its residual twin still passes the input on.
    x = torch.randn(2, 3, 32, 32) * torch.tensor([1.0, 3.0]).view(2, 1, 1, 1)
    plain = zero_last_bns(create_model(f"plain{depth}"))
    residual = zero_last_bns(create_model(f"resnet{depth}"))
    with torch.no_grad():
        plain_out, residual_out = plain(x), residual(x)
    assert torch.equal(plain_out, plain.fc.bias.expand(2, -1))
    assert not torch.allclose(residual_out[0], residual_out[1])


def test_he_init_and_batchnorm_init() -> None:
    torch.manual_seed(0)
    model = create_model("resnet56")
    conv = model.layer3[4].conv2  # 64 x 64 x 3 x 3: fan_out = 576, He std = sqrt(2 / 576)
    assert conv.weight.std().item() == pytest.approx((2 / 576) ** 0.5, rel=0.03)
    assert torch.equal(model.bn1.weight, torch.ones(16)) and torch.equal(model.bn1.bias, torch.zeros(16))


def test_zero_init_residual_zeroes_only_the_last_bn_of_each_block() -> None:
    model = create_model("resnet20", zero_init_residual=True)
    assert all(torch.count_nonzero(b.bn2.weight) == 0 for b in blocks(model))
    assert all(torch.equal(b.bn1.weight, torch.ones_like(b.bn1.weight)) for b in blocks(model))
    model = create_model("resnet164", zero_init_residual=True)
    assert all(torch.count_nonzero(b.bn3.weight) == 0 and torch.count_nonzero(b.bn2.weight) > 0 for b in blocks(model))


def test_cifar_nets_take_in_chans_and_num_classes() -> None:
    model = create_model("resnet20", in_chans=1, num_classes=100)
    assert model.conv1.in_channels == 1 and model.fc.out_features == 100
    assert model.default_image_size == 32
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 100)
