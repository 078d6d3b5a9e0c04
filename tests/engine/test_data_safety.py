"""resnetlab never destroys or mixes a user's data (issue 23), shown by real processes with faults injected.

Each test runs `fault_worker.py FAULT N ARGS...` (the real command line, in a process of its own that
tests/support/faultkit.py forks from a server that imported torch once) and checks every byte on disk afterwards:
starting a run over deletes only the run's own files; who trains a folder is decided under its lock (a race made
exact by handshakes); a checkpoint with a changed byte is refused; a full or read-only disk leaves no partial file;
git is read without locks; the messages say what is true. The default run has one case of each; `-m slow` adds the
longer ones (a kill and resume, a second race, every command, the full disk, the sweep).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from support.enginekit import cli_args, read_rows, tiny_overrides
from support.faultkit import (
    FAULT_SETTINGS,
    error_line,
    one_line,
    require,
    run_worker,
    same_weights,
    snapshot,
    start_worker,
    stray_files,
    wait_for,
    without_timing,
    worker_env,
)

from resnetlab.engine.rundir import LOCK
from resnetlab.engine.runlock import PAUSE_BEFORE_LOCK

SHORT = {**FAULT_SETTINGS, "train__iters": 2}  # a run that ends at once (a mistake on old code costs seconds)


def assert_equal_to(out: Path, straight: Path) -> None:
    """Bit-identical weights and the same metrics rows (each step once) as the uninterrupted run."""
    rows = read_rows(out)
    steps = [row["step"] for row in rows]
    assert len(steps) == len(set(steps)), steps
    assert without_timing(rows) == without_timing(read_rows(straight))
    assert same_weights(out, straight)


# ---------------------------------------------------------------------------- 1. deleting only what it wrote


def user_files(home: Path, outside: Path) -> None:
    """A user's folder: files, nested folders, and links to a folder elsewhere (one named like a run folder)."""
    for rel, data in {"keep.txt": b"keep", "thesis.tex": b"\\section{}", "a/other.txt": b"other",
                      "a/b/notes.md": b"# notes", "photos/sub/b.png": b"\x89PNG fake"}.items():
        (home / rel).parent.mkdir(parents=True, exist_ok=True)
        (home / rel).write_bytes(data)
    (outside / "sub").mkdir(parents=True)
    (outside / "target.txt").write_bytes(b"elsewhere")
    (outside / "sub" / "deep.bin").write_bytes(bytes(range(256)))
    (home / "linked").symlink_to(outside, target_is_directory=True)
    (home / "tb").symlink_to(outside, target_is_directory=True)


def test_resume_on_a_users_folder_deletes_nothing(tiny_root, tmp_path):
    """The issue's case: `--resume --out ../..` from inside a user's folder that holds no run."""
    home, outside = tmp_path / "home", tmp_path / "outside"
    user_files(home, outside)
    before = snapshot(tmp_path)
    done = run_worker("none", 0, [*cli_args(tiny_root, Path("../.."), **SHORT), "--resume"], cwd=home / "a" / "b")
    assert done.returncode == 2 and "holds no run to continue" in one_line(done.stderr)
    assert snapshot(tmp_path) == before  # every byte, every link, no .lock


@pytest.mark.slow
def test_starting_over_deletes_only_the_run_files(tiny_root, tmp_path, straight):
    """A run killed before its first checkpoint, with the user's files put into its folder: --resume refuses and
    deletes nothing; once they are moved away, it starts over (saying so) and ends bit-identical."""
    out, outside = tmp_path / "run", tmp_path / "outside"
    argv = cli_args(tiny_root, out, **FAULT_SETTINGS, train__top_k=5)
    assert run_worker("kill-step", 2, argv).returncode == -9
    assert (out / "config.yaml").is_file() and not (out / "checkpoints" / "last.pt").exists()
    (out / "notes.txt").write_bytes(b"mine")
    (out / "data" / "x").mkdir(parents=True)
    (out / "data" / "x" / "y.bin").write_bytes(b"\0\1\2")
    (out / "checkpoints").mkdir(exist_ok=True)
    (out / "checkpoints" / "my-model.pth").write_bytes(b"not ours")
    outside.mkdir()
    (outside / "t.txt").write_bytes(b"t")
    (out / "plots").symlink_to(outside, target_is_directory=True)
    before = snapshot(tmp_path)
    refused = run_worker("none", 0, [*argv, "--resume"])
    line = one_line(refused.stderr)
    assert refused.returncode == 2 and "did not write" in line and "notes.txt" in line and "nothing was deleted" in line
    assert snapshot(tmp_path) == before
    for path in (out / "notes.txt", out / "plots", out / "checkpoints" / "my-model.pth"):
        path.unlink()
    shutil.rmtree(out / "data")
    done = run_worker("none", 0, [*argv, "--resume"])
    assert done.returncode == 0, done.stderr[-2000:]
    assert "no checkpoint yet" in done.stderr and "starting it over" in done.stderr
    assert_equal_to(out, straight)
    assert (outside / "t.txt").read_bytes() == b"t"


def test_resume_on_a_missing_path_names_the_nearest_runs(tiny_root, tmp_path):
    runs = tmp_path / "runs"
    for name in ("resnet20-a", "resnet20-b", "plain20-a"):
        (runs / name).mkdir(parents=True)
        (runs / name / "config.yaml").write_text("model: {name: resnet20}\n")
    (runs / "resnet20-notes").mkdir()  # no run in it: never suggested
    before = snapshot(tmp_path)
    done = run_worker("none", 0, [*cli_args(tiny_root, runs / "resnet20-c", **SHORT), "--resume"])
    line = one_line(done.stderr)
    assert done.returncode == 2 and f"{runs / 'resnet20-c'} does not exist" in line
    assert str(runs / "resnet20-a") in line and str(runs / "resnet20-b") in line and "notes" not in line
    assert snapshot(tmp_path) == before


@pytest.mark.slow
def test_a_changed_sweep_spec_keeps_the_users_files_in_an_unfinished_run(tiny_root, tmp_path):
    """A corrected spec starts its unfinished runs over: their run files only, never a folder with other files."""
    pairs = [item.split("=", 1) for item in tiny_overrides(tiny_root, None)]
    settings = {key: yaml.safe_load(value) for key, value in pairs if key not in ("train.seed", "optim.lr")}
    spec = {"recipe": "fmnist-fast", "set": {**settings, "train.iters": 4}, "grid": {"optim.lr": [0.05]}, "seeds": [0]}
    first, second, out = tmp_path / "first.yaml", tmp_path / "second.yaml", tmp_path / "sweep"
    first.write_text(yaml.safe_dump(spec))
    second.write_text(yaml.safe_dump({**spec, "set": {**spec["set"], "train.iters": 5}}))
    assert run_worker("kill-step", 2, ["sweep", first, "--out", out]).returncode == -9
    (run,) = (out / "runs").iterdir()
    (run / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    done = run_worker("none", 0, ["sweep", second, "--out", out])
    assert done.returncode == 2 and "notes.txt" in error_line(done.stderr) and "nothing was deleted" in done.stderr
    assert {k: v for k, v in snapshot(tmp_path).items() if k.endswith(("notes.txt", "config.yaml"))} == {
        k: v for k, v in before.items() if k.endswith(("notes.txt", "config.yaml"))}


# ------------------------------------------------------------------------------------- 2. deciding under the lock


def without_tensorboard(state: dict) -> dict:
    """A snapshot without tb/ (TensorBoard's writer thread may flush there while its run is paused)."""
    return {rel: data for rel, data in state.items() if not rel.startswith("tb")}


def test_the_loser_of_a_race_for_the_lock_changes_nothing(tiny_root, tmp_path, straight):
    """A makes the folder and pauses before locking it; B takes the lock and trains; A, then C, are refused and
    change nothing; B's run completes unmixed."""
    out, hs_a, hs_b = tmp_path / "run", tmp_path / "hs-a", tmp_path / "hs-b"
    hs_a.mkdir(), hs_b.mkdir()
    argv = cli_args(tiny_root, out, **FAULT_SETTINGS, train__top_k=5)
    a = start_worker("none", 0, argv, env=worker_env(**{PAUSE_BEFORE_LOCK: str(hs_a)}))
    wait_for(hs_a / "paused", a)  # A made the folder and holds no lock
    b = start_worker("pause-step", 7, argv, env=worker_env(RESNETLAB_TEST_HANDSHAKE=str(hs_b)))
    wait_for(hs_b / "stepped", b)  # B holds the lock, checkpointed at step 5, stopped after step 7
    before = without_tensorboard(snapshot(out))
    (hs_a / "go").touch()
    _, err = a.communicate(timeout=120)
    assert a.returncode == 2 and f"PID {b.pid}" in one_line(err)
    c = run_worker("none", 0, argv)
    assert c.returncode == 2 and f"PID {b.pid}" in one_line(c.stderr)
    assert without_tensorboard(snapshot(out)) == before  # neither loser removed or wrote a byte
    (hs_b / "go").touch()
    _, err = b.communicate(timeout=300)
    assert b.returncode == 0, err[-2000:]
    assert_equal_to(out, straight)


@pytest.mark.slow
def test_two_processes_released_at_once_train_one_run(tiny_root, tmp_path, straight):
    """Both make (or find) the folder and wait before locking; released together, one trains, the other is refused
    without touching the run, whichever wins."""
    out = tmp_path / "run"
    argv = cli_args(tiny_root, out, **FAULT_SETTINGS, train__top_k=5)
    handshakes = [tmp_path / f"hs-{i}" for i in range(2)]
    workers = []
    for handshake in handshakes:
        handshake.mkdir()
        workers.append(start_worker("none", 0, argv, env=worker_env(**{PAUSE_BEFORE_LOCK: str(handshake)})))
    for handshake in handshakes:
        wait_for(handshake / "paused", *workers)
    for handshake in handshakes:
        (handshake / "go").touch()
    results = [(w.wait(timeout=300), w.read("stderr")) for w in workers]
    assert sorted(code for code, _ in results) == [0, 2], [err[-1000:] for _, err in results]
    loser = one_line(next(err for code, err in results if code == 2))
    assert "being trained by another process" in loser or "already exists" in loser  # (a loser that woke late)
    assert_equal_to(out, straight)


def test_a_refused_train_leaves_no_lock_in_a_users_folder(tiny_root, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "data.csv").write_text("a,b\n")
    before = snapshot(tmp_path)
    done = run_worker("none", 0, cli_args(tiny_root, home, **SHORT))
    assert done.returncode == 2 and "already exists" in one_line(done.stderr)
    assert snapshot(tmp_path) == before and not (home / LOCK).exists()
    bad = run_worker("none", 0, cli_args(tiny_root, tmp_path / "new" / "run", **SHORT, data__root=tmp_path / "none"))
    assert bad.returncode == 2 and not (tmp_path / "new").exists()  # refused after the lock: no folder is left


# ------------------------------------------------------------------------------------ 3. checkpoint integrity


def flipped(source: Path, dest: Path, offset: int) -> Path:
    data = bytearray(source.read_bytes())
    data[offset] ^= 0xFF
    dest.write_bytes(bytes(data))
    return dest


def test_a_flipped_byte_anywhere_is_detected(straight, tmp_path, run_cli):
    best = straight / "checkpoints" / "best.pt"
    size = best.stat().st_size
    offsets = [30, 200, size // 8, size // 4, size // 2, 3 * size // 4, size - 400, size - 90, size - 5]
    detected = []
    for i, offset in enumerate(offsets):
        bad = flipped(best, tmp_path / f"bad{i}.pt", offset)
        code, _, err = run_cli("evaluate", bad)
        detected.append(code == 2 and str(bad) in one_line(err) and "corrupt" in err)
    assert all(detected), list(zip(offsets, detected, strict=True))


@pytest.mark.slow
def test_every_command_refuses_a_corrupt_checkpoint(straight, tmp_path, tiny_root):
    bad = flipped(straight / "checkpoints" / "best.pt", tmp_path / "bad.pt", 5000)
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((12, 12), dtype=np.uint8)).save(image)
    commands = {"evaluate": ["evaluate", bad], "predict": ["predict", bad, image],
                "export": ["export", bad, "--format", "pt2", "--out", tmp_path / "m.pt2"],
                "fine-tune": cli_args(tiny_root, tmp_path / "ft", **SHORT, model__weights=bad)}
    for name, argv in commands.items():
        done = run_worker("none", 0, argv)
        assert done.returncode == 2 and str(bad) in one_line(done.stderr) and "corrupt" in done.stderr, name
    assert not (tmp_path / "m.pt2").exists() and not (tmp_path / "ft").exists()


@pytest.mark.slow
def test_resume_falls_back_to_the_previous_good_checkpoint_only_when_asked(tiny_root, tmp_path, straight):
    out = tmp_path / "run"
    argv = cli_args(tiny_root, out, **FAULT_SETTINGS, train__top_k=5)
    assert run_worker("kill-step", 17, argv).returncode == -9  # last.pt at step 15
    last = out / "checkpoints" / "last.pt"
    flipped(last, last, last.stat().st_size // 2)
    before = snapshot(out)
    refused = run_worker("none", 0, [*argv, "--resume"])
    assert refused.returncode == 2 and "--fallback" in one_line(refused.stderr) and str(last) in refused.stderr
    assert snapshot(out) == before
    done = run_worker("none", 0, [*argv, "--resume", "--fallback"])
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--fallback: continuing from" in done.stderr and "(step 15)" in done.stderr
    assert_equal_to(out, straight)


def test_checkpoints_without_a_checksum_load_and_are_checked_by_crc(straight, tmp_path, run_cli):
    """A checkpoint from before the checksum (no zip comment) loads; a flipped byte in it is caught by the CRC-32s."""
    data = (straight / "checkpoints" / "best.pt").read_bytes()
    end = data.rindex(b"PK\x05\x06")
    old = tmp_path / "old.pt"
    old.write_bytes(data[:end + 20] + b"\x00\x00")  # the archive as torch.save wrote it, no comment
    code, _, err = run_cli("evaluate", old)
    assert code == 0, err
    bad = flipped(old, tmp_path / "old-bad.pt", len(data) // 2)
    code, _, err = run_cli("evaluate", bad)
    assert code == 2 and "CRC-32" in one_line(err)


# ------------------------------------------------------------------------------ 4. full and read-only disks


def mount(folder: Path, *options: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(folder)],
                          capture_output=True, text=True)
    require(done.returncode == 0, f"mounting a tmpfs needs root ({done.stderr.strip()})")


@pytest.fixture
def tmpfs(tmp_path):
    """mount(options...) -> a fresh tmpfs under tmp_path; unmounted afterwards."""
    mounted: list[Path] = []

    def make(*options: str) -> Path:
        folder = tmp_path / f"mnt{len(mounted)}"
        mount(folder, *options)
        mounted.append(folder)
        return folder

    yield make
    for folder in reversed(mounted):
        subprocess.run(["umount", "-l", str(folder)], check=False)


def copy_run(run: Path, dest: Path) -> Path:
    """The files `evaluate` and `report` need of a finished run (no last.pt: it is large)."""
    (dest / "checkpoints").mkdir(parents=True)
    for rel in ("config.yaml", "metrics.jsonl", "summary.json", "checkpoints/best.pt"):
        shutil.copy2(run / rel, dest / rel)
    return dest


def fill(folder: Path, leave: int) -> None:
    """Fill the file system of `folder` but `leave` bytes."""
    free = shutil.disk_usage(folder).free
    (folder / "filler").write_bytes(bytes(max(free - leave, 0)))


def no_partial_files(folder: Path, before: dict) -> list[str]:
    """Files under `folder` that are new and empty, temporary, or images/exports that were not there before."""
    after = snapshot(folder)
    bad = [rel for rel, data in after.items() if rel not in before and (data == b"" or rel.endswith(
        (".png", ".html", ".onnx", ".pt2")))]
    return bad + stray_files(folder)


@pytest.mark.slow
def test_a_full_disk_leaves_no_partial_file(straight, tmpfs, tmp_path):
    mnt = tmpfs("size=4m")
    run = copy_run(straight, mnt / "run")
    fill(mnt, 24 * 1024)  # room for eval_test.json and the csv, not for a plot
    before = snapshot(mnt)
    commands = {"evaluate": ["evaluate", run], "report": ["report", run],
                "onnx": ["export", run, "--format", "onnx", "--out", mnt / "m.onnx"],
                "pt2": ["export", run, "--format", "pt2", "--out", mnt / "m.pt2"]}
    for name, argv in commands.items():
        done = run_worker("none", 0, argv)
        assert done.returncode == 1 and "no space left on the device" in error_line(done.stderr), name
        assert not no_partial_files(mnt, before), (name, no_partial_files(mnt, before))


def test_a_read_only_disk_is_one_line_and_unchanged(straight, tmpfs):
    mnt = tmpfs("size=16m")
    run = copy_run(straight, mnt / "run")
    subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
    before = snapshot(mnt)
    for argv in (["evaluate", run], ["report", run], ["export", run, "--format", "onnx", "--out", mnt / "m.onnx"],
                 ["export", run, "--format", "pt2", "--out", mnt / "m.pt2"]):
        done = run_worker("none", 0, argv)
        assert done.returncode == 1 and "read-only" in error_line(done.stderr), argv
    assert snapshot(mnt) == before


@pytest.mark.slow
def test_export_refuses_to_overwrite_without_force(straight, tmp_path):
    out = tmp_path / "m.pt2"
    out.write_bytes(b"an older export")
    refused = run_worker("none", 0, ["export", straight, "--format", "pt2", "--out", out])
    assert refused.returncode == 2 and "--force" in one_line(refused.stderr) and out.read_bytes() == b"an older export"
    done = run_worker("none", 0, ["export", straight, "--format", "pt2", "--out", out, "--force"])
    assert done.returncode == 0, done.stderr[-2000:]
    assert torch.export.load(out) is not None and not stray_files(tmp_path)


# ----------------------------------------------------------------------------------------------- 5. git


FAKE_GIT = """#!/bin/sh
echo "$PWD $*" >> "{log}"
exec {git} "$@"
"""


def test_git_is_read_without_locks_and_only_in_the_checkout_one_runs_in(tmp_path, monkeypatch):
    from resnetlab.engine.provenance import git_commit

    git = shutil.which("git")
    require(git is not None, "git")
    bin_dir, log = tmp_path / "bin", tmp_path / "git.log"
    bin_dir.mkdir()
    (bin_dir / "git").write_text(FAKE_GIT.format(log=log, git=git))
    (bin_dir / "git").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.chdir(tmp_path)
    assert git_commit() is None and not log.exists()  # run elsewhere: git is not run at all
    monkeypatch.chdir(Path(__file__).resolve().parents[2])  # this checkout
    assert git_commit() not in ("", None)
    calls = log.read_text().splitlines()
    assert calls and all("--no-optional-locks" in call and " status" not in call for call in calls), calls


# ------------------------------------------------------------------------------------------- 6. true messages


@pytest.mark.parametrize(("step", "words"), [(1, "no checkpoint was saved yet"), pytest.param(
    7, "last.pt keeps the last good state (step 5)", marks=pytest.mark.slow)])
def test_the_nan_stop_names_the_checkpoint_that_exists(tiny_root, tmp_path, step, words):
    out = tmp_path / "run"
    done = run_worker("nan-step", step, cli_args(tiny_root, out, **FAULT_SETTINGS))
    assert done.returncode == 1 and words in one_line(done.stderr)
    assert (out / "checkpoints" / "last.pt").exists() == (step == 7)


def test_nan_starting_weights_are_named_as_such(tiny_root, tmp_path):
    from resnetlab.models import create_model

    weights = tmp_path / "nan.pt"
    state = create_model("resnet20", num_classes=10, in_chans=1).state_dict()
    next(iter(state.values())).fill_(float("nan"))  # the first convolution
    torch.save(state, weights)
    done = run_worker("none", 0, cli_args(tiny_root, tmp_path / "run", **SHORT, model__weights=weights))
    line = one_line(done.stderr)
    assert done.returncode == 1 and "starting weights hold NaN" in line and "lower optim.lr" not in line
    assert not (tmp_path / "run").exists()  # stopped before its first step: nothing is left


@pytest.mark.slow
def test_sigterm_during_the_final_test_stops_like_during_training(tiny_root, tmp_path, straight):
    out = tmp_path / "run"
    argv = cli_args(tiny_root, out, **FAULT_SETTINGS, train__top_k=5)
    stopped = run_worker("term-test", 0, argv)
    line = one_line(stopped.stderr)
    assert stopped.returncode == 128 + signal.SIGTERM and line.startswith("resnetlab: interrupted by signal 15 at step")
    assert "checkpoint saved" in line and "--resume" in line and not (out / "summary.json").exists()
    done = run_worker("none", 0, [*argv, "--resume"])
    assert done.returncode == 0, done.stderr[-2000:]
    summary, expected = (json.loads((p / "summary.json").read_text()) for p in (out, straight))
    assert summary["test_acc"] == expected["test_acc"] and summary["test_acc_final"] == expected["test_acc_final"]


@pytest.mark.parametrize("fault", ["term-parse", "term-data"])
def test_sigterm_before_training_is_one_line_and_leaves_nothing(tiny_root, tmp_path, fault):
    done = run_worker(fault, 0, cli_args(tiny_root, tmp_path / "run", **SHORT))
    assert done.returncode == 128 + signal.SIGTERM and "interrupted by signal 15" in one_line(done.stderr)
    assert not (tmp_path / "run").exists()


def test_quiet_prints_only_the_result(tiny_root, tmp_path):
    done = run_worker("none", 0, [*cli_args(tiny_root, tmp_path / "run", **SHORT), "--quiet"])
    assert done.returncode == 0 and done.stderr == ""
    lines = done.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith("test accuracy: ") and lines[1].startswith("run directory: ")


def test_a_hidden_class_folder_is_named(tmp_path):
    for name in ("cats", "dogs", "..hidden"):
        (tmp_path / "images" / name).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((8, 8), 40 * i, dtype=np.uint8)).save(tmp_path / "images" / name / f"{i}.png")
    done = run_worker("none", 0, ["train", "--data", f"imagefolder:{tmp_path / 'images'}", "--out", tmp_path / "run",
                                  "--iters", "1", "--device", "cpu"])
    assert done.returncode == 2 and "..hidden" in error_line(done.stderr) and not (tmp_path / "run").exists()
