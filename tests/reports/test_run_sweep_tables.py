"""A whole sweep (reports/sweep_run.py): the experiments train it and write no table, the reports add the tables
afterwards, and failed runs are raised only once the tables hold the others."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.sweepkit import fake_curve, fake_summary, write_fake_run

from resnetlab.errors import TrainingFailed
from resnetlab.experiments.sweep import SweepOutcome, train_sweep
from resnetlab.reports import sweep_run
from resnetlab.reports.sweep_run import run_sweep

SPEC = {"recipe": "fmnist-fast", "grid": {"model.name": ["plain20", "resnet20"]}, "seeds": [0]}


@pytest.fixture
def finished_sweep(fake_sweep_dir) -> Path:
    """A sweep directory whose every run is finished (nothing left to train)."""
    out = fake_sweep_dir(SPEC)
    for name, acc in (("plain20_seed0", 0.8), ("resnet20_seed0", 0.9)):
        write_fake_run(out / "runs" / name, fake_summary(acc, acc, acc), fake_curve([acc], [acc]))
    return out


def test_train_sweep_writes_no_table_and_run_sweep_writes_them_after_it(finished_sweep: Path):
    outcome = train_sweep(SPEC, finished_sweep)
    assert outcome == SweepOutcome(finished_sweep, 2, [])
    assert not (finished_sweep / "results.md").exists() and not (finished_sweep / "results.csv").exists()
    assert run_sweep(SPEC, finished_sweep) == finished_sweep / "results.md"
    assert "2 of 2 runs finished" in (finished_sweep / "results.md").read_text()
    assert (finished_sweep / "results.csv").read_text().count("\n") == 3
    assert (finished_sweep / "figure6.png").is_file()


def test_failed_runs_are_raised_after_the_tables_are_written(finished_sweep: Path, monkeypatch):
    monkeypatch.setattr(sweep_run, "train_sweep", lambda spec, out, jobs: SweepOutcome(Path(out), 3, ["plain56_seed0"]))
    with pytest.raises(TrainingFailed, match=r"^1 of 3 runs failed \(plain56_seed0\); the logs say why, re-run the "
                                             r"same command to retry them$"):
        run_sweep(SPEC, finished_sweep)
    assert "2 of 2 runs finished" in (finished_sweep / "results.md").read_text()  # the tables came first
