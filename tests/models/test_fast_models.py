"""The fast net of models/fast.py (airbench94-style, issue 25): sizes pinned, options that change the net."""

from __future__ import annotations

import pytest
import torch

from resnetlab.errors import UserError
from resnetlab.models import create_model, list_models, model_names, summarize

pytestmark = pytest.mark.numeric  # also run with AVX2 kernels only by .ci/run (issue 11)


@pytest.mark.parametrize(("in_chans", "size", "options", "params", "macs"), [
    (1, 28, {}, 290_226, 11_691_890),  # the fmnist-fast net: 0.29M parameters, 11.7M MACs per 28x28 image
    (3, 32, {}, 295_106, 19_911_362),  # the cifar10-fast net
    (3, 32, {"widths": [64, 256, 256]}, 1_972_802, 118_172_738),  # airbench94's widths
])
def test_parameters_and_macs_are_pinned(in_chans, size, options, params, macs):
    model = create_model("airbench", in_chans=in_chans, **options)
    result = summarize(model, (1, in_chans, size, size))
    assert (result.params, result.macs) == (params, macs)


def test_it_is_listed_with_and_without_torch():
    assert "airbench" in list_models() and "airbench" in model_names("air*")


def test_the_stem_is_a_2x2_conv_with_two_filters_per_patch_direction():
    model = create_model("airbench", in_chans=1)
    assert model.patch_whitening and model.conv1.weight.shape == (8, 1, 2, 2) and model.conv1.bias is not None


def test_residual_and_activation_options_change_the_function():
    x = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    outs = {}
    for key, options in {"residual": {}, "plain": {"residual": False}, "relu": {"act": "relu"}}.items():
        torch.manual_seed(0)
        outs[key] = create_model("airbench", in_chans=1, **options).eval()(x)
    assert not torch.allclose(outs["residual"], outs["plain"]) and not torch.allclose(outs["residual"], outs["relu"])


@pytest.mark.parametrize(("options", "message"), [
    ({"widths": [32, 64]}, "three positive integers"),
    ({"widths": [32, 0, 64]}, "three positive integers"),
    ({"act": "tanh"}, "unknown activation"),
    ({"depth": 3}, "unknown option 'depth' for airbench"),
])
def test_bad_options_are_user_errors(options, message):
    with pytest.raises(UserError, match=message):
        create_model("airbench", **options)
