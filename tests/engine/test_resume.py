"""Stopping and resuming: SIGTERM/SIGINT save a checkpoint, --resume finishes bit-identically; NaN and bad files."""

from __future__ import annotations

import logging
import os
import shutil
import signal

import pytest
import torch
from support.enginekit import cli_args, read_rows, tiny_config
from support.faultkit import run_worker
from torch.optim.optimizer import register_optimizer_step_post_hook

from resnetlab.engine.checkpoint import read_checkpoint, save_checkpoint
from resnetlab.engine.hooks import StopAt
from resnetlab.engine.resume import command_config
from resnetlab.engine.rundir import write_config
from resnetlab.engine.trainer import train
from resnetlab.errors import Interrupted

pytestmark = pytest.mark.numeric  # also run with AVX2 kernels only by .ci/run (issue 11)

# Everything that draws random numbers or carries state across steps is on: augmentation, momentum, a
# changing lr, label smoothing; evaluations at 10, 20 and 24, and the stop at 13 falls between two of them.
RESUME_SETTINGS = {"data__crop_padding": 2, "data__flip": True, "optim__nesterov": True, "optim__weight_decay": 5e-4,
                   "schedule__name": "onecycle", "train__label_smoothing": 0.1, "train__epochs": 2,
                   "train__eval_every": 10}


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def _without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("time_s", "images_per_s")} for r in rows]


@pytest.fixture(scope="module")
def straight_run(tiny_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("straight") / "run"
    train(tiny_config(tiny_root, out, **RESUME_SETTINGS))
    return out


def test_sigterm_then_resume_is_bit_identical_to_an_uninterrupted_run(tiny_root, tmp_path, straight_run, run_cli):
    """A real SIGTERM to a `resnetlab train` process right after step 13, then --resume (in this process)."""
    out = tmp_path / "run"
    proc = run_worker("term-step", 13, cli_args(tiny_root, out, **RESUME_SETTINGS))
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr
    assert "resume" in proc.stderr
    stopped = read_checkpoint(out / "checkpoints" / "last.pt")
    assert stopped["step"] == 13 and stopped["loader"] == {"epoch": 1, "batch": 1}  # mid-epoch, between evaluations
    assert [r["step"] for r in read_rows(out)] == [10] and not (out / "summary.json").exists()

    code, _, err = run_cli(*cli_args(tiny_root, out, **RESUME_SETTINGS), "--resume")
    assert code == 0, err
    _assert_same_weights(read_checkpoint(out / "checkpoints" / "last.pt")["model"],
                         read_checkpoint(straight_run / "checkpoints" / "last.pt")["model"])
    assert _without_timing(read_rows(out)) == _without_timing(read_rows(straight_run))


def test_sigint_saves_last_pt_and_exits_130_then_resume_finishes(tiny_root, tmp_path, straight_run, run_cli):
    count = [0]

    def interrupt_at_7(optimizer, args, kwargs):
        count[0] += 1
        if count[0] == 7:
            os.kill(os.getpid(), signal.SIGINT)

    handle = register_optimizer_step_post_hook(interrupt_at_7)
    before = signal.getsignal(signal.SIGINT)  # Python's default, or SIG_IGN when pytest runs in the background
    try:
        code, _, err = run_cli(*cli_args(tiny_root, tmp_path / "run", **RESUME_SETTINGS))
    finally:
        handle.remove()
    assert code == 130 and "interrupted by signal 2" in err
    assert read_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["step"] == 7
    assert signal.getsignal(signal.SIGINT) is before  # the run's handler is gone again
    code, _, err = run_cli(*cli_args(tiny_root, tmp_path / "run", **RESUME_SETTINGS), "--resume")
    assert code == 0, err
    _assert_same_weights(read_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["model"],
                         read_checkpoint(straight_run / "checkpoints" / "last.pt")["model"])


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tiny_root, tmp_path, run_cli):
    # lr 0.01 until iteration 6, then 1e6: the weights blow up and the loss becomes NaN/inf.
    args = cli_args(tiny_root, tmp_path / "run", optim__lr=0.01, schedule__name="multistep", schedule__milestones="[6]",
                    schedule__gamma=1e8, train__eval_every=5, train__iters=20)
    code, _, err = run_cli(*args)
    assert code == 1
    assert "NaN or infinite" in err and "last.pt" in err and len(err.strip().splitlines()) == 1
    last = read_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert 5 <= last["step"] < 20 and last["step"] == read_rows(tmp_path / "run")[-1]["step"]
    assert all(torch.isfinite(t).all() for t in last["model"].values() if t.is_floating_point())
    assert not (tmp_path / "run" / "summary.json").exists()


def test_resume_from_a_truncated_checkpoint_is_a_clear_error(base_run, tmp_path, run_cli, tiny_root):
    run = tmp_path / "run"
    shutil.copytree(base_run, run)
    (run / "summary.json").unlink()
    last = run / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    code, _, err = run_cli(*cli_args(tiny_root, run), "--resume")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "last.pt" in err and "truncated or corrupt" in err


def test_resume_refuses_a_finished_run_and_a_folder_without_a_run(base_run, tmp_path, run_cli, tiny_root):
    code, _, err = run_cli(*cli_args(tiny_root, base_run), "--resume")
    assert code == 2 and "already finished" in err
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(*cli_args(tiny_root, tmp_path / "empty", train__iters=2), "--resume")
    assert code == 2 and "holds no run to continue" in err and len(err.strip().splitlines()) == 1, err
    assert list((tmp_path / "empty").iterdir()) == []  # not even a .lock is left behind


def test_resume_uses_the_runs_own_config(tiny_root, tmp_path, caplog):
    out = tmp_path / "run"
    handle = register_optimizer_step_post_hook(
        lambda opt, a, k: os.kill(os.getpid(), signal.SIGTERM))
    try:
        with pytest.raises(Exception, match="interrupted by signal 15"):
            train(tiny_config(tiny_root, out, train__iters=6))
    finally:
        handle.remove()
    result = train(tiny_config(tiny_root, out, train__iters=6, optim__lr=0.5, train__quiet=False), resume=True)
    assert "ignoring 1 different setting(s): optim.lr=0.5" in caplog.text
    assert result.summary["steps"] == 6
    assert read_checkpoint(out / "checkpoints" / "last.pt")["config"]["optim"]["lr"] == 0.05


def test_resume_on_another_torch_or_cpu_kind_warns_in_one_line(tiny_root, tmp_path, caplog):
    out = tmp_path / "run"
    handle = register_optimizer_step_post_hook(lambda opt, a, k: os.kill(os.getpid(), signal.SIGTERM))
    try:
        with pytest.raises(Exception, match="interrupted by signal 15"):
            train(tiny_config(tiny_root, out, train__iters=4))
    finally:
        handle.remove()
    last = out / "checkpoints" / "last.pt"
    state = read_checkpoint(last)
    assert state["provenance"]["torch"] == str(torch.__version__) and state["provenance"]["cpu_capability"]
    here = state["provenance"]["cpu_capability"]
    other = "AVX2" if here != "AVX2" else "AVX512"  # another kind than this CPU's (AVX512 on Sapphire Rapids)
    state["provenance"].update(torch="1.0.0", cpu_capability=other)
    save_checkpoint(last, state)
    caplog.set_level(logging.WARNING, logger="resnetlab")
    train(tiny_config(tiny_root, out, train__iters=4), resume=True)
    warned = [r.getMessage() for r in caplog.records if "bit-identical results are promised only" in r.getMessage()]
    assert len(warned) == 1 and "torch 1.0.0 -> " in warned[0] and f"cpu_capability {other} -> {here}" in warned[0]


def test_stop_at_hook_interrupts_like_ctrl_c_and_resume_is_bit_identical(tiny_root, tmp_path, straight_run):
    cfg = tiny_config(tiny_root, tmp_path / "run", **RESUME_SETTINGS)
    with pytest.raises(Interrupted, match="step 13"):
        train(cfg, hooks=[StopAt(13)])
    assert read_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["step"] == 13
    train(cfg, resume=True)
    _assert_same_weights(read_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["model"],
                         read_checkpoint(straight_run / "checkpoints" / "last.pt")["model"])
    with pytest.raises(ValueError, match="step >= 1"):
        StopAt(0)


def test_the_commands_config_when_resuming_is_the_runs_own_with_what_a_resume_may_change(tiny_root, tmp_path,
                                                                                       caplog):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write_config(run_dir, tiny_config(tiny_root, run_dir, optim__lr=0.01))
    asked = ["optim.lr=0.5", "train.threads=2"]
    resumed = command_config(None, asked, str(run_dir), resume=True)
    assert (resumed.optim.lr, resumed.train.threads) == (0.01, 2)  # the run's lr; a resume may change the threads
    assert "ignoring optim.lr=0.5" in caplog.text
    assert command_config(None, asked, str(run_dir), resume=False).optim.lr == 0.5  # a new run: the recipe's
    assert command_config("fmnist-resnet20", asked, str(run_dir), resume=True).optim.lr == 0.5  # --recipe given
