"""eval_<tag>.json names the checkpoint it scored (path, step, sha256 of its bytes); `report` reuses an evaluation of
best.pt as it is, scores again one of another checkpoint, and `evaluate` says when a run has not finished."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from resnetlab.reports.report import write_report


@pytest.fixture
def run_copy(tiny_run, tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("eval_*", "confusion_*", "plots", "report.html"))
    return run


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_evaluate_records_the_checkpoint_and_report_reuses_it(run_copy, run_cli):
    code, _, err = run_cli("evaluate", run_copy)
    assert code == 0, err
    result = json.loads((run_copy / "eval_test.json").read_text())
    best = run_copy / "checkpoints" / "best.pt"
    assert result["checkpoint"] == str(best.resolve()) and result["checkpoint_sha256"] == _sha256(best)
    assert result["step"] == json.loads((run_copy / "summary.json").read_text())["best_step"]
    before = (run_copy / "eval_test.json").stat().st_mtime_ns
    code, _, err = run_cli("report", run_copy)
    assert code == 0, err
    assert (run_copy / "eval_test.json").stat().st_mtime_ns == before  # not scored a second time


def test_report_scores_again_an_evaluation_of_another_checkpoint(run_copy):
    write_report(run_copy)
    path = run_copy / "eval_test.json"
    stale = json.loads(path.read_text())
    stale.update(checkpoint_sha256="0" * 64, step=1, acc=0.123456)  # as if best.pt had moved on since
    path.write_text(json.dumps(stale))
    page = write_report(run_copy).read_text()
    fresh = json.loads(path.read_text())
    assert fresh["checkpoint_sha256"] == _sha256(run_copy / "checkpoints" / "best.pt") and fresh["acc"] != 0.123456
    assert "12.35%" not in page


def test_evaluate_on_an_unfinished_run_says_it_scores_the_best_so_far(run_copy, run_cli, caplog):
    step = json.loads((run_copy / "summary.json").read_text())["best_step"]
    (run_copy / "summary.json").unlink()
    with caplog.at_level("WARNING"):
        code, _, _ = run_cli("evaluate", run_copy)
    assert code == 0
    assert f"has not finished (no summary.json): scoring its best checkpoint so far, from step {step}" in caplog.text


def test_no_evaluation_bar_outside_a_terminal(run_copy, run_cli, monkeypatch):
    """In a log file tqdm's carriage returns ran the bar into the next line."""
    import resnetlab.engine.evaluate as evaluate_module

    bars = []
    monkeypatch.setattr(evaluate_module, "tqdm", lambda *a, **k: bars.append(k) or a[0])
    code, _, err = run_cli("evaluate", run_copy)  # stderr captured: not a terminal
    assert code == 0, err
    assert bars == []
