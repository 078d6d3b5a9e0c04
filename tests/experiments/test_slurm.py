"""`resnetlab sweep --launcher slurm` (issue 18) against a real one-node Slurm cluster on this machine.

The cluster comes from tests/slurm/start_cluster.sh (munged, slurmctld, slurmd; `.ci/run` starts it, and the
`slurm_cluster` fixture does when it runs as root). Without it the cluster tests skip with the reason, but fail
under CI=true. The error checks that need no cluster and the status of a local sweep run without one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from support.sweepkit import fake_summary, write_fake_run

from resnetlab.errors import UserError
from resnetlab.experiments import slurm
from resnetlab.experiments.spec import RunPoint, parse_spec

START_CLUSTER = Path(__file__).parents[1] / "slurm" / "start_cluster.sh"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
CPU = ("--gpus-per-run", "0", "--time", "5")  # the test cluster has no GPUs; 5 min covers a tiny run
WAIT_S = 240  # for the jobs of one submission to leave the queue
# The stopped run's length: long enough that each stop (scancel after the first checkpoint at step 10, USR2 after
# the resumed run's first row) lands before its end: the stops landed 1-4 steps after they were sent on a busy CPU.
ITERS = 60


def need(condition: bool, why: str) -> None:
    """Skip with the reason, or fail under CI=true (`.ci/run` installs and starts the cluster)."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{why} (required under CI=true; .ci/run starts the cluster)")
    pytest.skip(why)


def cluster_up() -> bool:
    if shutil.which("sinfo") is None:
        return False
    done = subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], capture_output=True, text=True, timeout=30)
    return done.returncode == 0 and any(s.startswith(("idle", "mix", "alloc")) for s in done.stdout.split())


@pytest.fixture(scope="module")
def submitit_installed() -> None:
    try:
        import submitit  # noqa: F401
    except ImportError:
        need(False, f"submitit is not installed ({slurm.INSTALL_HINT})")


@pytest.fixture(scope="module")
def slurm_cluster(submitit_installed) -> None:
    """A running Slurm cluster with submitit installed; started with the script when this runs as root."""
    why = "no Slurm cluster answers ('sinfo' shows no idle node)"
    if not cluster_up() and os.geteuid() == 0:
        done = subprocess.run([str(START_CLUSTER)], capture_output=True, text=True, timeout=600)
        why = (done.stderr.strip().splitlines() or [why])[-1]
    elif not cluster_up():
        why += f" and only root can start one ({START_CLUSTER.name})"
    need(cluster_up(), why)


@pytest.fixture
def cancel_leftovers():
    """sweeps.append(DIR): at the end of the test, its jobs still in the queue (a failed test's) are cancelled."""
    sweeps: list[Path] = []
    yield sweeps
    for out in sweeps:
        left = set(job_ids(out).values()) & set(slurm.queued_jobs()) if (out / "slurm" / "jobs.json").is_file() else ()
        if left:
            subprocess.run(["scancel", *sorted(left)], check=False)


def write_spec(path: Path, root: Path, grid: dict, seeds: list[int], **extra) -> Path:
    """A sweep on the tiny generated IDX set: 6 iterations of batch 20, validated at steps 3 and 6 (or `extra`)."""
    fixed = {"data.name": "mnist", "data.root": str(root), "data.val_size": 20, "data.batch_size": 20,
             "data.crop_padding": 0, "data.flip": False, "train.iters": 6, "train.eval_every": 3,
             "train.device": "cpu", "train.threads": 1, "train.top_k": 2, "train.quiet": True,
             "train.label_smoothing": 0.0, "eval.batch_size": 64, "schedule.name": "constant", "optim.lr": 0.05,
             **extra}
    fixed = {k: v for k, v in fixed.items() if k not in grid}
    path.write_text(yaml.safe_dump({"recipe": "fmnist-fast", "set": fixed, "grid": grid, "seeds": seeds}))
    return path


def job_ids(out: Path) -> dict[str, str]:
    return json.loads((out / "slurm" / "jobs.json").read_text())


def wait_for_jobs(out: Path, timeout_s: float = WAIT_S) -> None:
    """Until no job of this sweep is queued or running."""
    deadline = time.monotonic() + timeout_s
    while set(job_ids(out).values()) & set(slurm.queued_jobs()):
        assert time.monotonic() < deadline, f"jobs still queued after {timeout_s} s:\n{slurm.format_status(out)}"
        time.sleep(0.25)


def wait_until(condition, what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def table_without_times(text: str) -> list[str]:
    """results.md rows without the wall-time column and line (the only cells that differ between launchers)."""
    return [line.rsplit("|", 2)[0] if line.startswith("|") else line
            for line in text.splitlines() if not line.startswith("Wall time")]


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    return {"step": torch.tensor(ckpt["step"]), **ckpt["model"]}


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------------ without a cluster


def test_slurm_time_strings():
    assert [slurm.parse_slurm_time(t) for t in ("30", "5:30", "1:30:00", "2-12", "1-00:00:00", "infinite", "n/a")] \
        == [30, 5.5, 90, 3600, 1440, None, None]
    assert [slurm._gres_gpus(g) for g in ("(null)", "gpu:4", "gpu:a100:8(S:0-1)", "gpu:v100:2,gpu:a100:4")] \
        == [0, 4, 8, 4]


def test_bad_flags_give_one_line_and_exit_2(submitit_installed, tmp_path: Path, run_cli):
    spec = tmp_path / "s.yaml"
    for argv, message in [
        ((spec, "--out", tmp_path / "o", "--partition", "debug"), "--partition is for --launcher slurm"),
        ((spec, "--out", tmp_path / "o", "--launcher", "slurm", "--jobs", "2"), "use --max-parallel K"),
        ((spec, "--out", tmp_path / "o", "--launcher", "slurm", "--time", "1"),
         "--time 1 is too short for one evaluation"),
        ((spec, "--out", tmp_path / "o", "--launcher", "slurm", "--gpus-per-run", "-1"), "--gpus-per-run must be"),
        ((spec, "--out", tmp_path / "o", "--launcher", "slurm", "--max-parallel", "0"), "--max-parallel must be"),
    ]:
        code, out, err = run_cli("sweep", *argv)
        assert (code, out) == (2, ""), err
        assert err.count("\n") == 1 and message in err, err


def test_no_sbatch_on_path(submitit_installed, tmp_path: Path, monkeypatch, run_cli):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing of Slurm's there
    code, out, err = run_cli("sweep", "whatever", "--out", tmp_path / "o", "--launcher", "slurm")
    assert (code, out) == (2, "")
    assert err == "resnetlab: error: no 'sbatch' on PATH: --launcher slurm runs on a Slurm login node (or use " \
                  "--launcher local)\n"


def test_missing_submitit_says_how_to_install(tmp_path: Path, monkeypatch, run_cli):
    monkeypatch.setitem(sys.modules, "submitit", None)  # `import submitit` raises ImportError
    code, _, err = run_cli("sweep", "whatever", "--out", tmp_path / "o", "--launcher", "slurm")
    assert code == 2 and err == "resnetlab: error: --launcher slurm needs submitit: pip install 'resnetlab[slurm]'\n"


def test_time_limit_must_fit_one_measured_evaluation_interval(fake_sweep_dir):
    out = fake_sweep_dir({"recipe": "fmnist-fast", "grid": {"model.name": ["resnet110"]}, "seeds": [0]})
    point = RunPoint("resnet110_seed0", {"model.name": "resnet110"}, 0)
    # evaluations (rows with val_acc) 600 s apart at most; a row between them without one does not count
    curve = [{"step": 2000 * (i + 1), "time_s": t, "val_acc": v}
             for i, (t, v) in enumerate([(300.0, 0.5), (600.0, None), (900.0, 0.6), (1400.0, 0.7)])]
    write_fake_run(out / "runs" / point.name, None, curve)
    slurm.check_time(13, out, [point])  # 60 s to start + 600 s + 120 s to save = 13 min
    with pytest.raises(UserError, match=r"^--time 12 is too short for run resnet110_seed0: one evaluation interval "
                                        r"took 10\.0 min there.*give --time 13 or more"):
        slurm.check_time(12, out, [point])


def test_job_command_is_the_local_train_command_under_torchrun_for_several_gpus(tmp_path: Path):
    from resnetlab.experiments.sweep import Task, train_command

    spec = parse_spec({"recipe": "fmnist-fast", "grid": {"model.name": ["resnet20"]}, "seeds": [3]})
    task = Task(RunPoint("resnet20_seed3", {"model.name": "resnet20"}, 3), tmp_path / "runs" / "r", resume=True)
    local = train_command(spec, task)
    assert slurm.job_command(spec, task, 0, {}) == local
    assert slurm.job_command(spec, task, 1, {"SLURM_CPUS_ON_NODE": "8"}) == [*local, "--set", "train.threads=8"]
    assert slurm.job_command(spec, task, 4, {"SLURM_CPUS_ON_NODE": "32"}) == [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=4", "-m", "resnetlab",
        "train", *local[4:], "--set", "train.threads=8"]
    assert local[-1] == "--resume" and local[:4] == [sys.executable, "-m", "resnetlab", "train"]


def test_status_of_a_sweep_without_jobs_needs_no_slurm(fake_sweep_dir, tmp_path: Path, monkeypatch, run_cli):
    out = fake_sweep_dir({"recipe": "fmnist-fast", "grid": {"model.name": ["plain20", "resnet20"]}, "seeds": [0]})
    write_fake_run(out / "runs" / "plain20_seed0", fake_summary(0.9, 0.9, 0.95), [])
    (out / "runs" / "resnet20_seed0" / "checkpoints").mkdir(parents=True)
    (out / "runs" / "resnet20_seed0" / "checkpoints" / "last.pt").write_bytes(b"")
    monkeypatch.setenv("PATH", str(tmp_path))
    code, stdout, err = run_cli("sweep", "--status", out)
    assert code == 0, err
    assert stdout.splitlines() == [
        "2 runs: 1 finished, 0 running, 0 pending, 0 failed, 1 not submitted",
        "finished      plain20_seed0",
        "not submitted resnet20_seed0  (resumes from last.pt)",
        "re-run the same 'resnetlab sweep SPEC --out DIR' command to finish the other runs"]
    code, _, err = run_cli("sweep", "--status", tmp_path / "nothing")
    assert code == 2 and "is not a sweep directory" in err


# ------------------------------------------------------------------------------- against the cluster


def test_cluster_errors_give_one_line_and_exit_2(slurm_cluster, tiny_mnist: Path, tmp_path: Path, run_cli):
    spec = write_spec(tmp_path / "s.yaml", tiny_mnist, {"model.name": ["resnet20"]}, [0])
    code, out, err = run_cli("sweep", spec, "--out", tmp_path / "o", "--launcher", "slurm", "--partition", "nope")
    assert (code, out) == (2, "") and err.count("\n") == 1
    assert "unknown partition 'nope'; this cluster has: debug (see 'sinfo')" in err
    code, out, err = run_cli("sweep", spec, "--out", tmp_path / "o", "--launcher", "slurm")  # 1 GPU by default
    assert (code, out) == (2, "") and err.count("\n") == 1
    assert "partition 'debug' has no GPUs; give --gpus-per-run 0 for CPU runs or another --partition" in err
    assert not (tmp_path / "o").exists()  # nothing was claimed or submitted


@pytest.mark.slow
def test_slurm_sweep_table_equals_the_local_one(slurm_cluster, cancel_leftovers, tiny_mnist: Path, tmp_path: Path,
                                                run_cli):
    """Two points x two seeds as a Slurm job array: the command returns at once with the job id, --status follows
    the jobs, and the aggregated table equals the one of the same sweep run by --launcher local."""
    spec = write_spec(tmp_path / "tiny.yaml", tiny_mnist, {"model.name": ["plain20", "resnet20"]}, [0, 1])
    out = tmp_path / "slurm"
    cancel_leftovers.append(out)
    code, stdout, err = run_cli("sweep", spec, "--out", out, "--launcher", "slurm", *CPU, "--max-parallel", "2")
    assert code == 0, err
    assert re.match(r"submitted Slurm job \d+ to partition debug: 4 of 4 runs\n", stdout)
    assert f"logs: {out}/slurm/" in stdout
    ids = job_ids(out)
    assert list(ids) == ["plain20_seed0", "resnet20_seed0", "plain20_seed1", "resnet20_seed1"]
    assert len({i.split("_")[0] for i in ids.values()}) == 1  # one job array
    code, status, _ = run_cli("sweep", "--status", out)
    assert code == 0 and status.startswith("4 runs: ")
    assert all(line.split()[0] in ("pending", "running", "finished") for line in status.splitlines()[1:5])

    wait_for_jobs(out)
    code, status, _ = run_cli("sweep", "--status", out)
    assert status.splitlines()[0] == "4 runs: 4 finished, 0 running, 0 pending, 0 failed"
    assert all((out / "slurm" / f"{name}.log").is_file() for name in ids)
    code, stdout, _ = run_cli("sweep", spec, "--out", out, "--launcher", "slurm", *CPU)  # nothing left to do
    assert code == 0 and stdout.startswith("nothing to submit: 4 of 4 runs finished")
    code, table, _ = run_cli("sweep", "--aggregate", out)
    assert code == 0 and "4 of 4 runs finished" in table

    code, local_table, _ = run_cli("sweep", spec, "--out", tmp_path / "local")
    assert code == 0
    assert table_without_times(table) == table_without_times(local_table)
    for name in ids:
        assert same_weights(weights(out / "runs" / name), weights(tmp_path / "local" / "runs" / name))


@pytest.mark.slow
def test_cancelled_and_preempted_runs_resume_bit_identically(slurm_cluster, cancel_leftovers, tiny_mnist: Path,
                                                           tmp_path: Path, run_cli):
    """One run is cancelled with scancel after its first checkpoint; re-running the command resubmits it (with
    --resume) and the failed run beside it. The resumed job is then pre-empted (USR2, as Slurm sends it before the
    time limit): submitit's hook stops the run, which saves last.pt, and requeues the job. The run ends with the
    weights of the same run trained without a stop, bit for bit; the failed run is reported with its log."""
    spec = write_spec(tmp_path / "long.yaml", tiny_mnist, {"data.batch_size": [20, 5000]}, [0], **{
        "model.name": "resnet20", "train.iters": ITERS, "train.eval_every": 10, "train.log_every": 1})
    out, name = tmp_path / "slurm", "batch_size20_seed0"
    run_dir = out / "runs" / name
    cancel_leftovers.append(out)
    argv = ("sweep", spec, "--out", out, "--launcher", "slurm", *CPU)
    assert run_cli(*argv)[0] == 0
    wait_until(lambda: (run_dir / "checkpoints" / "last.pt").is_file(), "the first checkpoint")
    subprocess.run(["scancel", job_ids(out)[name]], check=True)
    wait_for_jobs(out)
    assert not (run_dir / "summary.json").exists()
    code, status, _ = run_cli("sweep", "--status", out)
    lines = status.splitlines()
    assert lines[0] == "2 runs: 0 finished, 0 running, 0 pending, 2 failed"
    assert lines[1].startswith(f"failed        {name}  ") and lines[1].endswith("(resumes from last.pt)")
    failed = out / "slurm" / "batch_size5000_seed0.log"
    assert f"log {failed}: resnetlab: error: data.batch_size=5000 is larger than the 140 training images" in lines[2]

    code, stdout, err = run_cli(*argv)
    assert code == 0 and "2 of 2 runs, 1 resume from last.pt" in stdout, err
    assert f"submitted again (their last job ended unfinished; why is in {out}/slurm/<run>.log): {name}, " \
           f"batch_size5000_seed0\n" in stdout
    rows = len((run_dir / "metrics.jsonl").read_text().splitlines())
    wait_until(lambda: len((run_dir / "metrics.jsonl").read_text().splitlines()) > rows, "the resumed run's progress")
    subprocess.run(["scancel", "--signal=USR2", job_ids(out)[name]], check=True)
    wait_for_jobs(out)

    log = (out / "slurm" / f"{name}.log").read_text()
    assert [line.split(": ")[1].split()[0] for line in log.splitlines() if line.startswith("===")] == [
        "starting", "resuming", "resuming"]  # started, cancelled; resubmitted, pre-empted; requeued, finished
    assert len(re.findall(r"interrupted by signal 15 at step \d+; checkpoint saved", log)) == 2
    job = job_ids(out)[name]
    assert "Requeued job" in (out / "slurm" / f"{job}_0_log.out").read_text()
    code, status, _ = run_cli("sweep", "--status", out)
    assert status.splitlines()[0] == "2 runs: 1 finished, 0 running, 0 pending, 1 failed"

    code, _, err = run_cli("sweep", spec, "--out", tmp_path / "local")  # the same runs, never stopped
    assert code == 1 and "1 of 2 runs failed (batch_size5000_seed0)" in err
    assert same_weights(weights(run_dir), weights(tmp_path / "local" / "runs" / name))
    summary = json.loads((run_dir / "summary.json").read_text())
    local = json.loads((tmp_path / "local" / "runs" / name / "summary.json").read_text())
    assert (summary["steps"], summary["test_acc_final"]) == (local["steps"], local["test_acc_final"]) == (
        ITERS, local["test_acc_final"])
