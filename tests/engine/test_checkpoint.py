"""Checkpoint files: atomic writes, weights_only reads, clear errors, RNG capture."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from resnetlab.engine.checkpoint import FORMAT_VERSION, capture_rng, read_checkpoint, restore_rng, save_checkpoint
from resnetlab.errors import UserError


def _state(value: float = 1.0) -> dict:
    return {"format_version": FORMAT_VERSION, "model": {"w": torch.full((3,), value)}, "config": {"a": 1},
            "classes": ["a", "b"], "normalization": {"mean": [0.5], "std": [0.25]}, "in_chans": 1, "num_classes": 2,
            "rng": capture_rng()}


def test_save_replaces_atomically_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "ckpt" / "last.pt"
    save_checkpoint(path, _state(1.0))
    save_checkpoint(path, _state(2.0))
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]
    assert torch.equal(read_checkpoint(path)["model"]["w"], torch.full((3,), 2.0))
    torch.load(path, weights_only=True)  # only tensors and plain values inside


def test_truncated_checkpoint_is_a_user_error_naming_the_file(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, _state())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="last.pt.*truncated or corrupt"):
        read_checkpoint(path)


def test_missing_and_foreign_files_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a zip file at all")
    with pytest.raises(UserError, match="garbage.pt"):
        read_checkpoint(tmp_path / "garbage.pt")
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "state_dict.pt")
    with pytest.raises(UserError, match="not a resnetlab checkpoint"):
        read_checkpoint(tmp_path / "state_dict.pt")


class _Payload:
    pass


def test_a_checkpoint_never_runs_code(tmp_path):
    state = _state()
    state["extra"] = _Payload()  # an arbitrary object would need pickle code execution to load
    torch.save(state, tmp_path / "evil.pt")
    with pytest.raises(UserError, match="evil.pt"):
        read_checkpoint(tmp_path / "evil.pt")


def test_rng_state_round_trips_through_a_checkpoint(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    save_checkpoint(tmp_path / "r.pt", _state())
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    restore_rng(read_checkpoint(tmp_path / "r.pt")["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
