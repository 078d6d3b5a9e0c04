"""Fixtures for the reports tests: fake sweep directories in the run-directory format (helpers: support.sweepkit)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from resnetlab.experiments.spec import parse_spec


@pytest.fixture
def fake_sweep_dir(tmp_path: Path):
    """make(raw_spec) -> sweep DIR with DIR/sweep.yaml written (runs are added by the test)."""

    def make(raw: dict[str, Any]) -> Path:
        out = tmp_path / "sweep"
        (out / "runs").mkdir(parents=True)
        spec = parse_spec(raw, name="fake")
        (out / "sweep.yaml").write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False))
        return out

    return make
