"""Nothing lost, nothing mixed: the run directory's lock, kills at any moment, a full disk, and one-line errors.

The processes here are real (`fault_worker.py FAULT N train ...`, each forked by tests/support/faultkit.py's server):
a fault is a SIGKILL after an optimizer step or in the middle of a checkpoint write, or a pause (a handshake) that
holds the lock.
"""

from __future__ import annotations

import errno
import json
import os
import random
from pathlib import Path

import pytest
from support.enginekit import cli_args, read_rows
from support.faultkit import (
    FAULT_SETTINGS,
    run_worker,
    same_weights,
    start_worker,
    stray_files,
    wait_for,
    without_timing,
    worker_env,
)

from resnetlab.engine.checkpoint import read_checkpoint
from resnetlab.engine.rundir import TEMP_MARK


@pytest.mark.slow
def test_kills_at_seeded_random_moments_resume_to_bit_identical_weights(tiny_root, tmp_path, straight):
    """SIGKILL during a checkpoint write (the first one, and a later one: the temporary file is left behind) or
    after a random step mid-epoch (seeded), then --resume until it finishes: the weights and the metrics rows equal
    the uninterrupted run's, and no temporary file is left. (A kill before the first checkpoint, then --resume:
    test_data_safety.py::test_starting_over_deletes_only_the_run_files; after a checkpoint, with last.pt torn:
    test_resume_from_another_checkpoint_when_last_pt_is_corrupt and the --fallback test there.)"""
    rng = random.Random(11)
    faults = [("kill-write", 1), ("kill-write", rng.randint(2, 5)), ("kill-step", rng.randint(13, 23))]
    outcomes = []
    for i, (fault, n) in enumerate(faults):
        out = tmp_path / f"run{i}"
        argv = cli_args(tiny_root, out, **FAULT_SETTINGS)
        killed = run_worker(fault, n, argv)
        assert killed.returncode == -9, killed.stderr[-2000:]
        resumed = run_worker("none", 0, [*argv, "--resume"])
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        outcomes.append((fault, n, same_weights(out, straight), stray_files(out)))
        assert without_timing(read_rows(out)) == without_timing(read_rows(straight)), (fault, n)
    assert all(equal and not stray for _, _, equal, stray in outcomes), outcomes


def test_a_second_train_on_the_same_out_exits_2_naming_the_holder(tiny_root, tmp_path, straight):
    out, handshake = tmp_path / "run", tmp_path / "hs"
    handshake.mkdir()
    argv = cli_args(tiny_root, out, **FAULT_SETTINGS)
    first = start_worker("pause-step", 1, argv, env=worker_env(RESNETLAB_TEST_HANDSHAKE=str(handshake)))
    wait_for(handshake / "stepped", first)  # it holds the lock and waits after its first step
    others = [start_worker("none", 0, other) for other in (
        cli_args(tiny_root, out, **{**FAULT_SETTINGS, "model__name": "plain20"}), [*argv, "--resume"])]
    for other in others:  # both refused while the first one holds the lock
        assert other.wait(timeout=60) == 2 and first.poll() is None
        err = other.read("stderr")
        assert f"PID {first.pid}" in err and len(err.strip().splitlines()) == 1, err
    (handshake / "go").touch()
    assert first.wait(timeout=300) == 0, first.read("stderr")[-2000:]
    assert same_weights(out, straight)  # the first run alone trained there
    assert json.loads((out / "summary.json").read_text())["model"] == "resnet20"


def test_a_full_disk_stops_with_one_line_and_keeps_the_earlier_checkpoint(tiny_root, tmp_path, run_cli, monkeypatch):
    out = tmp_path / "run"
    writes = [0]
    fsync = os.fsync

    def full_on_the_third_checkpoint(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").endswith(f".pt{TEMP_MARK}{os.getpid()}"):
            writes[0] += 1
            if writes[0] == 3:  # best.pt and last.pt at step 5, then the first one of step 10
                raise OSError(errno.ENOSPC, "No space left on device")
        fsync(fd)

    monkeypatch.setattr(os, "fsync", full_on_the_third_checkpoint)
    code, _, err = run_cli(*cli_args(tiny_root, out, **FAULT_SETTINGS))
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "no space left on the device for" in err and "checkpoints/" in err and " free)" in err and "--resume" in err
    assert read_checkpoint(out / "checkpoints" / "last.pt")["step"] == 5  # the earlier checkpoint is intact
    assert not stray_files(out)


def test_stale_temporary_files_are_removed_when_a_run_starts(tiny_root, tmp_path, run_cli):
    out = tmp_path / "run"
    code, _, _ = run_cli(*cli_args(tiny_root, out, **{**FAULT_SETTINGS, "train__iters": 5}))
    (out / "summary.json").unlink()
    stale = [out / "checkpoints" / f".last.pt{TEMP_MARK}99999", out / f".summary.json{TEMP_MARK}12"]
    for path in stale:
        path.write_bytes(b"half a file")
    code, _, err = run_cli(*cli_args(tiny_root, out, **{**FAULT_SETTINGS, "train__iters": 5}), "--resume")
    assert code == 0, err
    assert not any(p.exists() for p in stale)


def test_resume_from_another_checkpoint_when_last_pt_is_corrupt(tiny_root, tmp_path, straight, run_cli):
    out = tmp_path / "run"
    argv = cli_args(tiny_root, out, **{**FAULT_SETTINGS, "train__top_k": 5})
    assert run_worker("kill-step", 17, argv).returncode == -9
    (out / "checkpoints" / "last.pt").write_bytes(b"PK\x03\x04 torn")
    code, _, err = run_cli(*argv, "--resume")
    assert code == 2 and "is truncated or corrupt" in err and "--resume-from" in err
    code, _, err = run_cli(*argv, "--resume-from", out / "checkpoints" / "top-00000010.pt")
    assert code == 0, err
    assert same_weights(out, straight)  # from step 10, exactly as the uninterrupted run went on
    assert without_timing(read_rows(out)) == without_timing(read_rows(straight))


@pytest.mark.parametrize(("argv", "words"), [
    (["--set", "train.out_dir=/etc/passwd/run"], "cannot write /etc/passwd/run"),
    (["--set", "train.out_dir=/proc/1/resnetlab-run"], "cannot write /proc/1/resnetlab-run"),
    (["--set", "optim.lr=1e308"], "optim.lr must be positive and below"),
    (["--set", "data.root=/etc/passwd"], "--data-dir /etc/passwd is a file"),
    (["--set", "model.weights=/tmp"], "is a directory"),
])
def test_bad_places_and_values_are_one_line_errors(tiny_root, tmp_path, run_cli, argv, words):
    base = cli_args(tiny_root, tmp_path / "run", train__iters=2)
    code, _, err = run_cli(*base, *argv)
    assert code == 2 and words in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


def test_files_that_are_not_checkpoints_say_what_they_are(tmp_path, run_cli):
    import pickle

    png = tmp_path / "photo.pt"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo owned > " + str(tmp_path / "owned"),))

    code_file = tmp_path / "model.pt"
    code_file.write_bytes(pickle.dumps({"model": Payload()}, protocol=2))
    for path, words in ((png, "is not a resnetlab checkpoint (it is a PNG image)"),
                        (code_file, "is not a resnetlab checkpoint (refused: it contains code")):
        for argv in (("evaluate", path), ("predict", path, png), ("export", path, "--format", "pt2", "--out",
                                                                  tmp_path / "m.pt2")):
            code, _, err = run_cli(*argv)
            assert code == 2 and words in err and len(err.strip().splitlines()) == 1, (argv, err)
    assert not (tmp_path / "owned").exists()  # the pickled code never ran


def test_plot_into_a_folder_or_without_a_suffix_says_the_file_it_wrote(tiny_root, tmp_path, run_cli):
    run = tmp_path / "run"
    assert run_cli(*cli_args(tiny_root, run, train__iters=3))[0] == 0
    (tmp_path / "figs").mkdir()
    code, out, _ = run_cli("plot", run, "--out", tmp_path / "figs")
    assert code == 0 and out.strip() == str(tmp_path / "figs" / "curves.png") and Path(out.strip()).is_file()
    code, out, _ = run_cli("plot", run, "--out", tmp_path / "curves")
    assert code == 0 and out.strip() == str(tmp_path / "curves.png") and Path(out.strip()).is_file()
