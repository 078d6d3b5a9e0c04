"""`resnetlab sweep --launcher slurm`: every unfinished run of a sweep one task of a Slurm job array, via submitit.

Layout, beside DIR/sweep.yaml and DIR/runs/ (`sweepdir.py`): DIR/slurm/ holds submitit's files (the sbatch script
`<job>_submission.sh`, pickles, `<job>_<task>_0_log.out`), one training log per run, `<name>.log` (every attempt
appended, the same output `--jobs N` writes to DIR/logs/), and `jobs.json` (run name -> the Slurm job id of its
latest submission), which `resnetlab sweep --status DIR` reads.

Inside a job (`PointJob.__call__`) a run is trained the way `--jobs N` trains it: the `python -m resnetlab train`
command of `sweep.train_command` (under torchrun with `--nproc-per-node G` for G > 1 GPUs), with `--resume` when the
run directory holds checkpoints/last.pt, decided per attempt by `sweep.plan`, so every attempt of a requeued job
continues where the last one stopped.

Stopping and pre-emption:
- Slurm sends USR2 `SIGNAL_LEAD_S` before the time limit; submitit's hook calls `PointJob.checkpoint`, which asks the
  run to stop (SIGTERM: it saves last.pt at its next log point and exits), then submitit requeues the job.
- scancel, or a pre-emption, sends SIGTERM to every process of the job: the run saves last.pt the same way. A
  requeued job resumes from it; a cancelled one is submitted again by re-running the same command.
Re-running `resnetlab sweep SPEC --out DIR --launcher slurm` submits every run that is neither finished nor queued or
running in Slurm.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resnetlab.engine.rundir import LAST, is_finished, last_checkpoint, read_metrics, write_json
from resnetlab.errors import TrainingFailed, UserError
from resnetlab.experiments.spec import RunPoint, SweepSpec, expand
from resnetlab.experiments.sweep import plan, prepare_sweep, train_command
from resnetlab.experiments.sweepdir import point_dir, read_sweep_spec

logger = logging.getLogger(__name__)

SLURM_DIR = "slurm"
JOBS_FILE = "jobs.json"
INSTALL_HINT = "pip install 'resnetlab[slurm]'"
COMMANDS = ("sbatch", "srun", "squeue", "sinfo", "scontrol")  # submitit needs srun; the rest are ours
# Slurm sends USR2 this long before a job's time limit: the run saves last.pt and submitit requeues the job. Slurm
# delivers it up to a minute late, and the run stops at its next log point: `STOP_WAIT_S` is what it gets for that.
SIGNAL_LEAD_S = 120
STOP_WAIT_S = 50
START_S = 60  # a job's start-up before training: Python, torch, the data set into memory, the model
MIN_TRAIN_S = 60  # what a job must have for training at least, before anything was measured
DEFAULT_TIME_MIN = 240  # --time when the partition sets no DefaultTime (capped at its MaxTime)
MAX_REQUEUES = 100  # time-outs after which submitit stops requeueing a run (each attempt trains >= one interval)
# squeue states of a job that is running (any other state squeue lists is waiting to run)
RUNNING_STATES = {"RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT",
                  "RESIZING"}


@dataclass(frozen=True)
class SlurmOptions:
    """What each job asks Slurm for (the `resnetlab sweep --launcher slurm` flags)."""

    partition: str | None = None  # None: the cluster's default partition
    gpus_per_run: int = 1  # 0 = CPU runs; G > 1 runs torchrun with G processes inside the job
    time_min: int | None = None  # per job; None: the partition's DefaultTime, else DEFAULT_TIME_MIN
    account: str | None = None
    max_parallel: int | None = None  # array tasks running at once; None: no limit of ours

    def check(self) -> None:
        if self.gpus_per_run < 0:
            raise UserError(f"--gpus-per-run must be 0 (CPU) or more; got {self.gpus_per_run}")
        if self.max_parallel is not None and self.max_parallel < 1:
            raise UserError(f"--max-parallel must be at least 1; got {self.max_parallel}")
        if self.time_min is not None and self.time_min * 60 < START_S + SIGNAL_LEAD_S + MIN_TRAIN_S:
            raise UserError(f"--time {self.time_min} is too short for one evaluation: a job needs about {START_S} s "
                            f"to start and {SIGNAL_LEAD_S} s before its limit to save {LAST}, plus time to train; "
                            f"give --time {_minutes(START_S + SIGNAL_LEAD_S + MIN_TRAIN_S)} or more (minutes)")


@dataclass(frozen=True)
class Partition:
    """A Slurm partition as sinfo describes it (times in minutes; None = no limit or none set)."""

    name: str
    max_time: float | None
    default_time: float | None
    gpus_per_node: int  # the most GPUs (gres/gpu) one node of it has


@dataclass(frozen=True)
class Submission:
    """What `submit_sweep` did: the job id (None when nothing needed submitting) and the runs by what happens next."""

    out: Path
    job_id: str | None
    submitted: list[str]
    resumed: list[str]  # of `submitted`: those that continue from last.pt
    retried: list[str]  # of `submitted`: those whose earlier job ended without finishing them
    active: list[str]  # already queued or running in Slurm: left alone
    finished: list[str]
    partition: str

    def describe(self) -> str:
        """What the command prints: the job id, the counts, and where to look next."""
        total = len(self.submitted) + len(self.active) + len(self.finished)
        if self.job_id:
            resumed = f", {len(self.resumed)} resume from {LAST}" if self.resumed else ""
            head = (f"submitted Slurm job {self.job_id} to partition {self.partition}: {len(self.submitted)} of "
                    f"{total} runs{resumed}")
        else:
            head = f"nothing to submit: {len(self.finished)} of {total} runs finished"
        lines = [head]
        if self.retried:
            lines.append(f"submitted again (their last job ended unfinished; why is in "
                         f"{self.out / SLURM_DIR}/<run>.log): {', '.join(self.retried)}")
        if self.active:
            lines.append(f"{len(self.active)} runs still queued or running, left alone: {', '.join(self.active)}")
        lines += [f"logs: {self.out / SLURM_DIR}/", f"watch: resnetlab sweep --status {self.out}",
                  f"tables: resnetlab sweep --aggregate {self.out}"]
        return "\n".join(lines)


@dataclass(frozen=True)
class RunStatus:
    """Where one run of a sweep stands: finished, running, pending, failed (ended in Slurm without summary.json)
    or not submitted."""

    name: str
    state: str
    job_id: str | None = None
    log: Path | None = None
    reason: str = ""  # failed: the last line of its log
    resumable: bool = False  # has checkpoints/last.pt


# ------------------------------------------------------------------------------------------------ submit


def submit_sweep(spec: str | Path, out_dir: str | Path, options: SlurmOptions | None = None) -> Submission:
    """Submit every run of a sweep that is neither finished nor queued/running as one Slurm job array; returns
    at once (the jobs train on the cluster; `sweep_status` watches them, `aggregate` builds the tables).

    Raises:
        UserError: submitit is missing, no Slurm commands on PATH, an unknown partition, a partition without
            GPUs for `gpus_per_run` > 0, a time limit too short for one evaluation, a bad spec, or sbatch refused.
    """
    options = options or SlurmOptions()
    submitit = _import_submitit()
    options.check()
    require_commands()
    partition = find_partition(options.partition, options.gpus_per_run)
    time_min = resolve_time(options.time_min, partition)
    out = Path(out_dir).resolve()
    parsed, points = prepare_sweep(spec, out)
    jobs, queued = read_jobs(out), queued_jobs()
    finished = [p for p in points if is_finished(point_dir(out, p))]
    active = [p for p in points if p not in finished and jobs.get(p.name) in queued]
    todo = [p for p in points if p not in finished and p not in active]
    check_time(time_min, out, todo)
    names = [p.name for p in todo]
    result = Submission(out, None, names, [p.name for p in todo if _has_checkpoint(out, p)],
                        [n for n in names if n in jobs], [p.name for p in active], [p.name for p in finished],
                        partition.name)
    if not todo:
        return result
    (out / SLURM_DIR).mkdir(parents=True, exist_ok=True)
    executor = submitit.SlurmExecutor(folder=out / SLURM_DIR, max_num_timeout=MAX_REQUEUES)
    executor.update_parameters(**_job_parameters(parsed, options, partition, time_min))
    with contextlib.redirect_stderr(io.StringIO()):  # submitit echoes sbatch's stderr; ours is the one line
        try:
            with executor.batch():
                submitted = [executor.submit(PointJob(parsed, out, p, options.gpus_per_run)) for p in todo]
        except submitit.core.utils.FailedJobError as exc:
            raise UserError(f"sbatch refused the jobs: {_first_line(str(exc))}") from None
    ids = [job.job_id for job in submitted]
    write_jobs(out, {**jobs, **dict(zip(names, ids, strict=True))})
    logger.info("submitted %s: %s", ids[0].split("_")[0], ", ".join(f"{n} = {i}" for n, i in zip(names, ids,
                                                                                                 strict=True)))
    return Submission(out, ids[0].split("_")[0], names, result.resumed, result.retried, result.active,
                      result.finished, partition.name)


def _job_parameters(spec: SweepSpec, options: SlurmOptions, partition: Partition, time_min: int) -> dict[str, Any]:
    """submitit's sbatch parameters: one task on one node per run; USR2 `SIGNAL_LEAD_S` before the limit."""
    params: dict[str, Any] = {"job_name": f"resnetlab-{spec.name}", "time": time_min, "nodes": 1,
                              "ntasks_per_node": 1, "signal_delay_s": SIGNAL_LEAD_S, "stderr_to_stdout": True,
                              "partition": partition.name}
    if options.gpus_per_run:
        params["gpus_per_node"] = options.gpus_per_run
    if options.account:
        params["account"] = options.account
    if options.max_parallel:
        params["array_parallelism"] = options.max_parallel
    return params


def _import_submitit() -> Any:
    try:
        import submitit
    except ImportError:
        raise UserError(f"--launcher slurm needs submitit: {INSTALL_HINT}") from None
    return submitit


def require_commands() -> None:
    """Slurm's client commands must be on PATH (this must be a machine that submits to a cluster)."""
    missing = [c for c in COMMANDS if shutil.which(c) is None]
    if missing:
        raise UserError(f"no {missing[0]!r} on PATH: --launcher slurm runs on a Slurm login node (or use "
                        f"--launcher local)")


# ----------------------------------------------------------------------------------- partition and time


def find_partition(name: str | None, gpus: int) -> Partition:
    """The partition jobs go to (the cluster's default for None), checked to exist and to have `gpus` per node."""
    partitions, default = list_partitions()
    if name is None:
        if default is None:
            raise UserError(f"this cluster has no default partition; give --partition "
                            f"(one of {', '.join(partitions)})")
        name = default
    if name not in partitions:
        raise UserError(f"unknown partition {name!r}; this cluster has: {', '.join(partitions) or 'none'} "
                        f"(see 'sinfo')")
    partition = partitions[name]
    if gpus > partition.gpus_per_node:
        have = f"at most {partition.gpus_per_node} GPUs per node" if partition.gpus_per_node else "no GPUs"
        raise UserError(f"partition {name!r} has {have}; give --gpus-per-run {partition.gpus_per_node}"
                        f"{' for CPU runs' if not partition.gpus_per_node else ''} or another --partition")
    return partition


def list_partitions() -> tuple[dict[str, Partition], str | None]:
    """Every partition (by sinfo) and the default one's name."""
    rows = _slurm_command(["sinfo", "--noheader", "--format=%P|%l|%L|%G"]).splitlines()
    merged: dict[str, Partition] = {}
    default = None
    for row in rows:
        name, max_time, default_time, gres = (row.split("|") + ["", "", ""])[:4]
        if name.endswith("*"):
            name = default = name[:-1]
        old = merged.get(name)
        gpus = max(_gres_gpus(gres), old.gpus_per_node if old else 0)
        merged[name] = Partition(name, parse_slurm_time(max_time), parse_slurm_time(default_time), gpus)
    return merged, default


def resolve_time(time_min: int | None, partition: Partition) -> int:
    """The time limit of each job in minutes: the one given (at most the partition's MaxTime), else the partition's
    DefaultTime, else `DEFAULT_TIME_MIN` capped at its MaxTime."""
    limit = partition.max_time
    if time_min is None:
        time_min = int(partition.default_time or min(DEFAULT_TIME_MIN, limit or DEFAULT_TIME_MIN))
        SlurmOptions(time_min=time_min).check()
    elif limit is not None and time_min > limit:
        raise UserError(f"--time {time_min} is longer than partition {partition.name!r} allows ({int(limit)} min); "
                        f"give --time {int(limit)} or less")
    return time_min


def check_time(time_min: int, out: Path, points: list[RunPoint]) -> None:
    """Each job must fit one evaluation interval of its run, as measured by the run's earlier attempts
    (metrics.jsonl `time_s`), besides start-up and the `SIGNAL_LEAD_S` it needs to save before its limit."""
    for point in points:
        interval = longest_interval(point_dir(out, point))
        if interval is None:
            continue
        need = START_S + SIGNAL_LEAD_S + interval
        if time_min * 60 < need:
            raise UserError(f"--time {time_min} is too short for run {point.name}: one evaluation interval took "
                            f"{interval / 60:.1f} min there, and a job also needs about {START_S} s to start and "
                            f"{SIGNAL_LEAD_S} s to save before its limit; give --time {_minutes(need)} or more "
                            f"(or a smaller train.eval_every)")


def longest_interval(run_dir: Path) -> float | None:
    """The longest time between two evaluations (checkpoints) of a run, in seconds of training, if any."""
    times = [float(row["time_s"]) for row in read_metrics(run_dir, required=False)
             if isinstance(row.get("time_s"), (int, float)) and row.get("val_acc") is not None]
    if not times:
        return None
    return max(b - a for a, b in zip([0.0, *times], times, strict=False))


def parse_slurm_time(text: str) -> float | None:
    """Minutes in a Slurm time ("30", "1:30:00", "2-12", "1-00:00:00"); None for "infinite", "UNLIMITED", "n/a"."""
    text = text.strip()
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
    if not match:
        return None
    days, first, second, third = (int(g) if g else None for g in match.groups())
    if days is not None:  # days-hours[:minutes[:seconds]]
        return days * 1440 + first * 60 + (second or 0) + (third or 0) / 60
    if third is not None:  # hours:minutes:seconds
        return first * 60 + second + third / 60
    return first + (second or 0) / 60  # minutes[:seconds]


def _gres_gpus(gres: str) -> int:
    """GPUs per node in sinfo's %G ("gpu:4", "gpu:a100:8(S:0-1)", "(null)")."""
    counts = [int(m.group(1)) for m in re.finditer(r"gpu(?::[^:,(]+)?:(\d+)", gres)]
    return max(counts, default=0)


def _minutes(seconds: float) -> int:
    return max(1, math.ceil(seconds / 60))


# ------------------------------------------------------------------------------------------------ status


def sweep_status(out_dir: str | Path) -> list[RunStatus]:
    """Where every run of the sweep in `out_dir` stands (squeue for the jobs of unfinished runs)."""
    out = Path(out_dir).resolve()
    spec = read_sweep_spec(out)
    points = sorted(expand(spec), key=lambda p: spec.seeds.index(p.seed))
    jobs = read_jobs(out)
    unfinished = [p for p in points if not is_finished(point_dir(out, p))]
    queued = queued_jobs() if any(p.name in jobs for p in unfinished) else {}
    statuses = []
    for point in points:
        name, job = point.name, jobs.get(point.name)
        if point not in unfinished:
            statuses.append(RunStatus(name, "finished", job))
        elif job is None:
            statuses.append(RunStatus(name, "not submitted", resumable=_has_checkpoint(out, point)))
        elif job in queued:
            state = "running" if queued[job] in RUNNING_STATES else "pending"
            statuses.append(RunStatus(name, state, job, _log_path(out, name, job)))
        else:
            log = _log_path(out, name, job)
            statuses.append(RunStatus(name, "failed", job, log, _last_line(log), _has_checkpoint(out, point)))
    return statuses


def format_status(out_dir: str | Path) -> str:
    """`resnetlab sweep --status DIR`: one line per run, the counts on top, failures with their log."""
    statuses = sweep_status(out_dir)
    counts = {s: sum(r.state == s for r in statuses) for s in ("finished", "running", "pending", "failed")}
    waiting = sum(r.state == "not submitted" for r in statuses)
    lines = [f"{len(statuses)} runs: " + ", ".join(f"{n} {s}" for s, n in counts.items())
             + (f", {waiting} not submitted" if waiting else "")]
    width = max(len(r.name) for r in statuses)
    for run in statuses:
        line = f"{run.state:<13} {run.name:<{width}}"
        if run.job_id:
            line += f"  job {run.job_id}"
        if run.state == "failed":
            line += f"  log {run.log}" + (f": {run.reason}" if run.reason else "")
        if run.state in ("failed", "not submitted") and run.resumable:
            line += f"  (resumes from {LAST})"
        lines.append(line.rstrip())
    if counts["failed"] or waiting:
        lines.append("re-run the same 'resnetlab sweep SPEC --out DIR --launcher slurm' command to submit the "
                     "failed and unsubmitted runs again" if any(r.job_id for r in statuses) else
                     "re-run the same 'resnetlab sweep SPEC --out DIR' command to finish the other runs")
    return "\n".join(lines)


def queued_jobs() -> dict[str, str]:
    """Job id ("123" or array task "123_4") -> state, of every job of this user that Slurm still lists."""
    text = _slurm_command(["squeue", "--noheader", "--array", "--me", "--format=%i|%T"])
    return dict(line.split("|", 1) for line in text.splitlines() if "|" in line)


def read_jobs(out: Path) -> dict[str, str]:
    """DIR/slurm/jobs.json: run name -> the job id of its latest submission."""
    path = out / SLURM_DIR / JOBS_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def write_jobs(out: Path, jobs: dict[str, str]) -> None:
    """Write DIR/slurm/jobs.json atomically."""
    write_json(out / SLURM_DIR / JOBS_FILE, jobs)


def _log_path(out: Path, name: str, job: str) -> Path:
    """The run's training log, or submitit's log of the job when the run never started."""
    log = out / SLURM_DIR / f"{name}.log"
    return log if log.is_file() else out / SLURM_DIR / f"{job}_0_log.out"


def _last_line(path: Path) -> str:
    lines = path.read_text(errors="replace").strip().splitlines() if path.is_file() else []
    return lines[-1].strip() if lines else ""


def _has_checkpoint(out: Path, point: RunPoint) -> bool:
    return last_checkpoint(point_dir(out, point)).is_file()


def _slurm_command(command: list[str]) -> str:
    """Run a Slurm client command; a failure (no controller, ...) is a UserError with its first line."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise UserError(f"no {command[0]!r} on PATH: this needs a Slurm login node") from None
    except subprocess.TimeoutExpired:
        raise UserError(f"{command[0]} did not answer in 60 s; is the Slurm controller up?") from None
    if done.returncode:
        raise UserError(f"{command[0]} failed: {_first_line(done.stderr or done.stdout)}")
    return done.stdout


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else "(no message)"


# ------------------------------------------------------------------------------------------- inside a job


class PointJob:
    """One run of a sweep as a submitit job (pickled, so plain data only). `checkpoint` is the hook submitit calls
    on USR2 (time limit near, or pre-emption): it stops the run, which saves last.pt, and lets submitit requeue."""

    def __init__(self, spec: SweepSpec, out: Path, point: RunPoint, gpus: int) -> None:
        self.spec, self.out, self.point, self.gpus = spec, out, point, gpus
        self._child: subprocess.Popen | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_child": None}

    def __call__(self) -> str:
        """Train (or resume) the run in a `python -m resnetlab train` subprocess; its output goes to
        DIR/slurm/<name>.log. Returns "finished"; raises TrainingFailed when the run did not finish."""
        tasks = plan(self.out, [self.point])  # per attempt: resume from last.pt, or start (over)
        name, log = self.point.name, self.out / SLURM_DIR / f"{self.point.name}.log"
        if not tasks:
            return "finished"
        command = job_command(self.spec, tasks[0], self.gpus, os.environ)
        with log.open("ab") as handle:
            job = os.environ.get("SLURM_ARRAY_JOB_ID", os.environ.get("SLURM_JOB_ID", "?"))
            task = os.environ.get("SLURM_ARRAY_TASK_ID")
            handle.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} job {job}{f'_{task}' if task else ''} on "
                         f"{socket.gethostname()}: {'resuming' if tasks[0].resume else 'starting'} {name}: "
                         f"{shlex.join(command)}\n".encode())
            handle.flush()
            # The run must not die of the USR2 meant for submitit (Slurm signals every process of the job):
            # an ignored signal stays ignored across exec, in torchrun and its workers too.
            self._child = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                           preexec_fn=_ignore_usr2)
        code = self._child.wait()
        if code == 0 and is_finished(tasks[0].run_dir):
            return "finished"
        if code in (128 + signal.SIGTERM, 128 + signal.SIGINT):
            raise TrainingFailed(f"run {name} stopped by a signal (exit code {code}); {LAST} was saved, "
                                 f"it resumes when the job is requeued or submitted again")
        raise TrainingFailed(f"run {name} failed (exit code {code}); see {log}")

    def checkpoint(self) -> Any:
        """submitit's pre-emption / time-limit hook: stop the run (it saves last.pt), then requeue this job; the next
        attempt resumes from last.pt."""
        from submitit.helpers import DelayedSubmission

        if self._child is not None:
            _stop_child(self._child)
        return DelayedSubmission(PointJob(self.spec, self.out, self.point, self.gpus))


def job_command(spec: SweepSpec, task: Any, gpus: int, environ: dict[str, str] | os._Environ) -> list[str]:
    """The command a job runs: `sweep.train_command` (under torchrun for gpus > 1), with `train.threads` set to the
    job's CPUs shared among its processes unless the spec sets it (the node may have more cores than the job)."""
    command = train_command(spec, task)
    processes = max(1, gpus)
    cpus = environ.get("SLURM_CPUS_PER_TASK") or environ.get("SLURM_CPUS_ON_NODE")
    if cpus and "train.threads" not in spec.fixed and "train.threads" not in spec.grid:
        command += ["--set", f"train.threads={max(1, int(cpus) // processes)}"]
    if gpus > 1:  # torchrun's standalone rendezvous: a free port on this node, so array tasks never clash
        command = [command[0], "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={gpus}",
                   *command[1:]]
    return command


def _ignore_usr2() -> None:
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def _stop_child(child: subprocess.Popen) -> None:
    """SIGTERM the run and wait (at most `STOP_WAIT_S`) until it has saved last.pt and exited. Runs in a signal
    handler that may interrupt `child.wait()`, so it only peeks (WNOWAIT) and leaves the reaping to that wait."""
    if child.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_WAIT_S
    while time.monotonic() < deadline:
        try:
            if os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return
        except ChildProcessError:
            return
        time.sleep(0.2)
    print(f"resnetlab: the run did not stop within {STOP_WAIT_S} s of SIGTERM", file=sys.stderr)
