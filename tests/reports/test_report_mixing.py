"""report.html says how the training accuracy was counted when a run mixed its batches (Mixup/CutMix)."""

from __future__ import annotations

import json

import pytest

from resnetlab.engine.config import dump_config, load_config
from resnetlab.reports.report import write_report

NOTE = "the training accuracy counts each prediction by the share its class has in the mixed target"


@pytest.mark.parametrize(("settings", "says"), [
    ([], False),
    (["data.mixup_alpha=0.2"], True),
    (["data.cutmix_alpha=1.0"], True),
    (["data.cutmix_alpha=1.0", "data.mix_prob=0"], False),  # configured, never mixed
    (["data.auto_augment=trivialaugment", "data.random_erasing=0.25"], False),
])
def test_the_report_notes_mixed_training_accuracy(tmp_path, settings, says) -> None:
    run = tmp_path / "run"
    run.mkdir()
    cfg = load_config(None, [f"data.name=imagefolder:{tmp_path / 'gone'}", *settings])  # no data: curves only
    (run / "config.yaml").write_text(dump_config(cfg))
    (run / "metrics.jsonl").write_text(json.dumps({"step": 10, "lr": 0.1, "train_loss": 2.0, "train_acc": 0.5,
                                                   "val_loss": 1.1, "val_acc": 0.4}) + "\n")
    page = write_report(run).read_text()
    assert (NOTE in page) == says
    assert ("Mixup/CutMix apply to the training loss only" in page) == says  # the loss note names it too
