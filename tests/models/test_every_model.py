"""Every registered model: forward + backward at its natural size; compile, export, channels_last, save."""

from __future__ import annotations

import io

import pytest
import torch

from resnetlab.models import create_model, list_models

pytestmark = pytest.mark.numeric  # also run with AVX2 kernels only by .ci/run (issue 11)

SLOW = {"resnet1202", "resnet1001", "preact1202", "preact1001"}


def _marked(name: str):
    return pytest.param(name, marks=pytest.mark.slow) if name in SLOW else name


@pytest.mark.parametrize("name", [_marked(n) for n in list_models()])
def test_forward_backward_finite(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=7)
    size = model.default_image_size
    out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    out.logsumexp(dim=1).sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.conv1.weight.grad.abs().sum() > 0  # the gradient reaches the first layer


@pytest.fixture
def resnet20_eval() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = create_model("resnet20")
    model.train()
    model(torch.randn(8, 3, 32, 32))  # non-trivial BN running statistics
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        return model, x, model(x)


def test_channels_last(resnet20_eval) -> None:
    model, x, expected = resnet20_eval
    model = model.to(memory_format=torch.channels_last)
    with torch.no_grad():
        out = model(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)


def test_torch_save_of_the_whole_module(resnet20_eval) -> None:
    model, x, expected = resnet20_eval
    buffer = io.BytesIO()
    torch.save(model, buffer)  # fails on a lambda shortcut
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    with torch.no_grad():
        assert torch.equal(loaded(x), expected)


def test_torch_export(resnet20_eval) -> None:
    model, x, expected = resnet20_eval
    exported = torch.export.export(model, (x,))
    torch.testing.assert_close(exported.module()(x), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_torch_compile_matches_eager_forward_and_backward() -> None:
    torch.manual_seed(0)
    eager = create_model("resnet20")
    compiled_model = create_model("resnet20")
    compiled_model.load_state_dict(eager.state_dict())
    compiled = torch.compile(compiled_model)
    x = torch.randn(4, 3, 32, 32)
    out_eager, out_compiled = eager(x), compiled(x)
    torch.testing.assert_close(out_compiled, out_eager, rtol=1e-4, atol=1e-4)
    out_eager.square().sum().backward()
    out_compiled.square().sum().backward()
    torch.testing.assert_close(compiled_model.conv1.weight.grad, eager.conv1.weight.grad, rtol=1e-3, atol=1e-4)
