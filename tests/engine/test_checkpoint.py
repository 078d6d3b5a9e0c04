"""Checkpoint files: atomic writes, weights_only reads, clear errors, RNG capture."""

from __future__ import annotations

import ast
import hashlib
import random
from pathlib import Path

import numpy as np
import pytest
import torch

import resnetlab.engine.checkpoint as checkpoint_module
from resnetlab.engine.checkpoint import (
    FORMAT_VERSION,
    capture_rng,
    read_checkpoint,
    read_checkpoint_and_digest,
    restore_rng,
    save_checkpoint,
)
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


def test_the_digest_of_a_sealed_checkpoint_is_its_files_sha256_and_none_for_an_unsealed_one(tmp_path):
    """The integrity check's read gives the file's SHA-256 (what an evaluation records), so nothing hashes it again."""
    path = save_checkpoint(tmp_path / "sealed.pt", _state())
    state, digest = read_checkpoint_and_digest(path)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest() and state["num_classes"] == 2
    torch.save(_state(), tmp_path / "unsealed.pt")  # as written before checkpoints carried their SHA-256
    assert read_checkpoint_and_digest(tmp_path / "unsealed.pt")[1] is None


def test_the_checkpoint_format_imports_no_training_code():
    """engine/checkpoint.py is the file format: building a model from it is inference's job (inference/loading.py)."""
    source = Path(checkpoint_module.__file__).read_text()
    imported = {node.module for node in ast.walk(ast.parse(source)) if isinstance(node, ast.ImportFrom)}
    ours = {name for name in imported if name and name.startswith("resnetlab")}
    assert ours == {"resnetlab.engine.rundir", "resnetlab.errors", "resnetlab.models.integrity",
                    "resnetlab.models.registry"}
