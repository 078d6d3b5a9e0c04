"""Fixtures for the data tests (file writers for the official formats are in official_formats.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _isolated_data_root(tmp_path, monkeypatch):
    """No test reads or writes the user's ~/.cache/resnetlab/data."""
    monkeypatch.setenv("RESNETLAB_DATA", str(tmp_path / "default-root"))
