"""The public API of the package root: every exported name resolves to the function its module defines."""

from __future__ import annotations

import importlib

import pytest

import resnetlab


@pytest.mark.parametrize("name", sorted(set(resnetlab.__all__) - {"__version__"}))
def test_every_exported_name_is_the_object_its_module_defines(name: str) -> None:
    module = importlib.import_module(resnetlab._EXPORTS[name])
    assert getattr(resnetlab, name) is getattr(module, name)
    assert getattr(module, name).__module__ == module.__name__  # defined there, not re-exported from elsewhere


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'run_sweeps'"):
        resnetlab.run_sweeps  # noqa: B018
