"""summarize(): parameters and MACs totals of known nets."""

from __future__ import annotations

import pytest
import torch

from resnetlab.errors import UserError
from resnetlab.models import create_model, summarize
from resnetlab.models.summary import format_count


def test_resnet20_summary() -> None:
    model = create_model("resnet20")
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    summary = summarize(model, (1, 3, 32, 32))
    assert summary.params == 269_722
    assert summary.macs == pytest.approx(40.55e6, rel=0.01)
    assert "Total params: 269,722" in summary.text
    assert "MACs: 40.55 M" in summary.text
    assert "[1, 64, 8, 8]" in summary.text  # per-layer output shapes
    assert model.training  # mode restored, BN statistics untouched
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_resnet18_imagenet_stem_macs() -> None:
    summary = summarize(create_model("resnet18", num_classes=1000), (1, 3, 224, 224))
    assert summary.params == 11_689_512  # torchvision's resnet18
    assert summary.macs == pytest.approx(1.82e9, rel=0.01)
    assert "MACs: 1.81 G" in summary.text


def test_input_that_does_not_fit_is_a_user_error() -> None:
    with pytest.raises(UserError, match="cannot run on an input of size"):
        summarize(create_model("resnet20"), (1, 1, 32, 32))  # 1 channel into a 3-channel net
    with pytest.raises(UserError, match="positive sizes"):
        summarize(create_model("resnet20"), (1, 3, 0, 0))


def test_format_count() -> None:
    assert [format_count(n) for n in (40_552_426, 1_814_083_944, 999, 2_500)] == ["40.55 M", "1.81 G", "999", "2.50 k"]
