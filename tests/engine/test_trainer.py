"""The training loop on a tiny separable data set: what a run writes, and that it learns."""

from __future__ import annotations

import json

import pytest
import torch
from support.enginekit import read_rows, tiny_config
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from resnetlab.engine.checkpoint import read_checkpoint
from resnetlab.engine.config import load_config
from resnetlab.engine.trainer import train
from resnetlab.inference.evaluate import evaluate
from resnetlab.inference.loading import load_checkpoint
from resnetlab.models import create_model

pytestmark = pytest.mark.numeric  # also run with AVX2 kernels only by .ci/run (issue 11)

SUMMARY_KEYS = {"best_val_acc", "best_step", "test_acc", "test_loss", "test_acc_final", "final_train_acc", "params",
                "macs", "steps", "train_time_s", "wall_time_s", "images_per_s"}
ROW_KEYS = ["step", "epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "images_per_s", "time_s"]


def test_a_tiny_run_learns(base_run):
    summary = json.loads((base_run / "summary.json").read_text())
    assert summary["test_acc"] >= 0.9 and summary["test_acc_final"] >= 0.9  # chance is 0.25
    rows = read_rows(base_run)
    assert rows[-1]["train_loss"] < rows[0]["train_loss"] / 5


def test_run_directory_layout_and_summary(base_run):
    summary = json.loads((base_run / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(summary)
    rows = read_rows(base_run)
    assert [r["step"] for r in rows] == [12, 24, 36] and [r["epoch"] for r in rows] == [1.0, 2.0, 3.0]
    assert all(list(r) == ROW_KEYS for r in rows)
    best = max(rows, key=lambda r: (r["val_acc"], -r["step"]))
    assert (summary["best_val_acc"], summary["best_step"]) == (best["val_acc"], best["step"])
    assert summary["steps"] == 36 and summary["final_train_acc"] == rows[-1]["train_acc"]
    expected_params = sum(p.numel() for p in create_model("resnet20", num_classes=10, in_chans=1).parameters())
    assert summary["params"] == expected_params and summary["macs"] > 0
    assert 0 < summary["train_time_s"] <= summary["wall_time_s"]
    files = [p for p in base_run.rglob("*") if p.is_file() and p.name != ".lock"]  # the lock: a later process
    assert max(p.stat().st_mtime_ns for p in files) == (base_run / "summary.json").stat().st_mtime_ns  # written last
    assert (base_run / "config.yaml").exists() and list((base_run / "tb").glob("events.out.tfevents.*"))


def test_best_checkpoint_is_selected_on_validation_and_top_k_kept(base_run):
    rows = read_rows(base_run)
    best = read_checkpoint(base_run / "checkpoints" / "best.pt")
    last = read_checkpoint(base_run / "checkpoints" / "last.pt")
    assert best["step"] == json.loads((base_run / "summary.json").read_text())["best_step"]
    assert last["step"] == 36 and best["best"]["val_acc"] == max(r["val_acc"] for r in rows)
    ranked = sorted(rows, key=lambda r: (-r["val_acc"], r["step"]))[:2]
    kept = sorted(p.name for p in (base_run / "checkpoints").glob("top-*.pt"))
    assert kept == sorted(f"top-{r['step']:08d}.pt" for r in ranked)


def test_tensorboard_events_hold_the_logged_scalars(base_run):
    acc = EventAccumulator(str(base_run / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/acc", "val/loss", "val/acc", "lr", "images_per_s"} <= tags
    rows = read_rows(base_run)
    for tag, key in (("val/acc", "val_acc"), ("train/loss", "train_loss")):
        events = acc.Scalars(tag)
        assert [e.step for e in events] == [r["step"] for r in rows]
        assert [e.value for e in events] == pytest.approx([r[key] for r in rows], rel=1e-6)


def test_the_test_of_a_mixed_precision_run_is_what_evaluate_gives(tiny_root, tmp_path):
    run_dir = train(tiny_config(tiny_root, tmp_path / "run", train__iters=4, train__eval_every=2,
                                train__amp="bf16")).run_dir
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["amp"] == "bf16"  # trained under bf16 autocast; the test runs in full precision, as evaluate
    best, final = evaluate(run_dir), evaluate(run_dir / "checkpoints" / "last.pt")
    assert best["n"] == final["n"] == 160
    assert (best["acc"], final["acc"]) == (summary["test_acc"], summary["test_acc_final"])
    assert best["loss"] == pytest.approx(summary["test_loss"], rel=1e-5)
    assert final["loss"] == pytest.approx(summary["test_loss_final"], rel=1e-5)


def test_validation_every_n_iterations_and_at_the_end(tiny_root, tmp_path):
    train(tiny_config(tiny_root, tmp_path / "run", train__epochs=2, train__eval_every=5))
    assert [r["step"] for r in read_rows(tmp_path / "run")] == [5, 10, 15, 20, 24]


def test_rerunning_config_yaml_reproduces_the_run(tiny_root, tmp_path):
    first = train(tiny_config(tiny_root, tmp_path / "first", train__iters=6, data__flip=True, optim__lr=0.02))
    again = train(load_config(str(first.run_dir / "config.yaml"), [f"train.out_dir={tmp_path / 'again'}"]))
    a, b = (read_checkpoint(r.run_dir / "checkpoints" / "last.pt")["model"] for r in (first, again))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert again.summary["test_acc"] == first.summary["test_acc"]


def test_without_validation_split_best_is_last(tiny_root, tmp_path, caplog):
    caplog.set_level("INFO")
    result = train(tiny_config(tiny_root, tmp_path / "run", data__val_size=0, train__iters=8, train__quiet=False))
    s = result.summary
    assert s["best_val_acc"] is None and s["best_step"] == 8 and s["test_acc"] == s["test_acc_final"]
    assert all(r["val_acc"] is None for r in read_rows(tmp_path / "run"))
    assert "no validation split" in caplog.text
    best = read_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")
    assert best["step"] == 8


def test_schedule_is_applied_per_iteration_in_the_loop(tiny_root, tmp_path):
    # multistep at iteration 10 and a constant warm-up for 5 iterations that returns to the base lr
    train(tiny_config(tiny_root, tmp_path / "run", schedule__name="multistep", schedule__milestones="[10]",
                      schedule__warmup_iters=5, schedule__warmup_mode="constant", schedule__warmup_lr=0.001,
                      train__eval_every=5, train__iters=15))
    # a row's lr is the one used by its last iteration: 4 (warm-up), 9 (back to 0.05), 14 (after the drop)
    assert [r["lr"] for r in read_rows(tmp_path / "run")] == pytest.approx([0.001, 0.05, 0.005])


def test_quiet_prints_nothing(tiny_root, tmp_path, caplog, capsys):
    caplog.set_level("INFO")
    train(tiny_config(tiny_root, tmp_path / "loud", train__iters=4, train__log_every=2, train__quiet=False))
    assert "step 2/4" in caplog.text and "test accuracy" in caplog.text
    caplog.clear()
    train(tiny_config(tiny_root, tmp_path / "quiet", train__iters=4, train__log_every=2, train__quiet=True))
    assert "step 2/4" not in caplog.text and "test accuracy" not in caplog.text
    assert capsys.readouterr().err == ""


def test_progress_bar_on_a_terminal(tiny_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("sys.stderr.isatty", lambda: True)
    train(tiny_config(tiny_root, tmp_path / "run", train__iters=4, train__log_every=2, train__quiet=False))
    err = capsys.readouterr().err
    assert "4/4" in err and "img_s=" in err and "lr=" in err and "acc=" in err  # tqdm's bar and postfix


def test_public_api_exports():
    import resnetlab
    from resnetlab.inference.predict import predict

    assert resnetlab.train is train and resnetlab.load_checkpoint is load_checkpoint and resnetlab.predict is predict
    assert resnetlab.evaluate is evaluate and resnetlab.load_config("fmnist-fast", []).recipe == "fmnist-fast"
