"""The public evaluation of a run: eval_<tag>.json records the SHA-256 the integrity check computed while reading the
checkpoint (the file is hashed once), and the file's own hash where the checkpoint predates the seal."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from resnetlab.engine.rundir import best_checkpoint
from resnetlab.inference import evalrecord
from resnetlab.inference.evaluate import evaluate


@pytest.fixture
def run_copy(tiny_run, tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("eval_*", "confusion_*", "plots", "report.html"))
    return run


def test_the_record_reuses_the_integrity_checks_digest(run_copy, monkeypatch):
    hashed = []
    monkeypatch.setattr(evalrecord, "file_sha256", lambda path: hashed.append(path) or "recomputed")
    result = evaluate(run_copy)
    best = best_checkpoint(run_copy)
    assert hashed == []  # the sealed checkpoint was read once, its digest computed in that read
    assert result["checkpoint_sha256"] == hashlib.sha256(best.read_bytes()).hexdigest()
    assert json.loads((run_copy / "eval_test.json").read_text())["checkpoint_sha256"] == result["checkpoint_sha256"]


def test_an_unsealed_checkpoint_is_hashed_for_its_record(run_copy):
    best = best_checkpoint(run_copy)
    torch.save(torch.load(best, weights_only=True), best)  # as written before checkpoints were sealed
    result = evaluate(run_copy)
    assert result["checkpoint_sha256"] == hashlib.sha256(best.read_bytes()).hexdigest()
    assert evalrecord.is_current(result, best)
