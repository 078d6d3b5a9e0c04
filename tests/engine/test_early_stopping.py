"""Early stopping (train.patience): stop after N evaluations without a better validation accuracy; resume keeps
the count."""

from __future__ import annotations

from support.enginekit import read_rows, tiny_config, train_until_stopped

from resnetlab.engine.checkpoint import read_checkpoint
from resnetlab.engine.trainer import train

# An lr of 1e-12 with BatchNorm frozen leaves the predictions as they are: the validation accuracy of the first
# evaluation is never beaten, so with patience 2 the run stops at the third evaluation (step 3); without patience it
# runs all 5 steps (room for a count started afresh on resume, which would stop at step 4).
STALLED = {"optim__lr": 1e-12, "train__freeze_bn": True, "train__eval_every": 1, "train__iters": 5,
           "train__patience": 2}


def test_patience_stops_the_run_and_it_still_tests(tiny_root, tmp_path):
    result = train(tiny_config(tiny_root, tmp_path / "run", **STALLED))
    summary = result.summary
    assert summary["steps"] == 3 and "no better validation accuracy in 2 evaluations" in summary["stopped_early"]
    assert summary["test_acc"] is not None and (tmp_path / "run" / "summary.json").is_file()
    assert [r["step"] for r in read_rows(tmp_path / "run") if r["val_acc"] is not None] == [1, 2, 3]
    full = train(tiny_config(tiny_root, tmp_path / "full", **{**STALLED, "train__patience": 0}))
    assert full.summary["steps"] == 5 and full.summary["stopped_early"] is None


def test_resume_keeps_the_count(tiny_root, tmp_path):
    train_until_stopped(tiny_config(tiny_root, tmp_path / "run", **STALLED), 2)
    saved = read_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert saved["step"] == 2 and saved["hooks"]["early_stopping"]["bad_evals"] == 1
    result = train(tiny_config(tiny_root, tmp_path / "run", **STALLED), resume=True)
    assert result.summary["steps"] == 3  # a count started afresh would have stopped at step 4


def test_a_run_stopped_before_its_summary_only_tests_when_resumed(tiny_root, tmp_path):
    out = tmp_path / "run"
    train(tiny_config(tiny_root, out, **STALLED))
    (out / "summary.json").unlink()  # as if the process died between the last checkpoint and the summary
    result = train(tiny_config(tiny_root, out, **STALLED), resume=True)
    assert result.summary["steps"] == 3 and result.summary["stopped_early"]
