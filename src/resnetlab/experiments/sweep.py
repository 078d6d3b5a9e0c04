"""`resnetlab sweep`: a grid of configs x seeds, every run an ordinary run directory (the tables and figures that
follow are `reports/`'s, which this module never imports).

Spec (YAML; shipped ones in `resnetlab/sweeps/` are addressed by name, see `spec.py` for every field):

```yaml
recipe: fmnist-fast                            # base recipe (name or YAML path)
set: {train.epochs: 3}                         # fixed dotted overrides for every run
grid: {model.name: [plain20, resnet20]}        # dotted key -> values; every combination is a point
seeds: [0, 1, 2]                               # each point runs once per seed (train.seed)
```

Layout of `--out DIR` (`sweepdir.py` owns it): DIR/sweep.yaml (the spec, so `--aggregate DIR` needs nothing
else), DIR/runs/<name>/ (one run directory per point and seed, e.g. `plain20_seed1`), DIR/logs/<name>.log (output
of runs started as subprocesses); the tables and figures are written afterwards by `reports/sweep_tables.py`:
`reports/sweep_run.run_sweep` (what `resnetlab sweep` calls) is `train_sweep` (this module), then `aggregate`.

Re-running the same command completes a sweep: a run with summary.json is finished and skipped, one with
checkpoints/last.pt is resumed (`resume=True`, bit-exact on CPU), any other leftover directory (a run that
died before its first checkpoint) starts over; a spec with more seeds or grid values extends the sweep. Runs
go seed by seed (every point's first seed, then the second, ...), so a sweep stopped early already compares
every point.

With `jobs=1` runs are trained one after another in this process; with `jobs=N` as N `python -m resnetlab
train` subprocesses at once, which isolates their failures: on CPU each gets `train.threads = cores // N`
(unless the spec sets it), with several GPUs each job slot is pinned to one GPU through CUDA_VISIBLE_DEVICES.
A failed run is logged and the others go on; `train_sweep` returns the failed ones (`SweepOutcome`), and
`run_sweep` builds the tables from whatever finished before `SweepOutcome.check` raises TrainingFailed (exit 1).

`--launcher slurm` (`slurm.py`) submits the same runs as a Slurm job array instead, each trained by
`train_command` inside its job.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from resnetlab.engine.builders import drop_foreign_options, shared_splits
from resnetlab.engine.config import Config, load_config
from resnetlab.engine.devices import physical_cores
from resnetlab.engine.preflight import check_data_paths, check_memory, check_model_name
from resnetlab.engine.resume import changed_settings
from resnetlab.engine.rundir import CONFIG, clear_run, is_finished, read_config
from resnetlab.engine.runlock import lock_run_dir
from resnetlab.engine.trainer import train
from resnetlab.errors import Interrupted, TrainingFailed, UserError
from resnetlab.experiments.spec import RunPoint, SweepSpec, expand, load_spec
from resnetlab.experiments.sweepdir import LOGS_DIR, SPEC_FILE, point_dir, read_sweep_spec, write_sweep_spec

logger = logging.getLogger(__name__)

POLL_S = 0.5  # how often the subprocess scheduler looks for finished runs


@dataclass(frozen=True)
class Task:
    """A run still to do: its point, its directory and whether it continues from checkpoints/last.pt."""

    point: RunPoint
    run_dir: Path
    resume: bool


@dataclass(frozen=True)
class SweepOutcome:
    """What `train_sweep` did: the sweep directory, how many runs the spec has, and those that failed."""

    out: Path
    total: int
    failed: list[str]

    def check(self) -> None:
        """Raise TrainingFailed when some runs failed (after the tables are built from the others)."""
        if self.failed:
            raise TrainingFailed(f"{len(self.failed)} of {self.total} runs failed ({', '.join(self.failed)}); the "
                                 "logs say why, re-run the same command to retry them")


def train_sweep(spec: str | Path | Mapping[str, Any], out_dir: str | Path, jobs: int = 1) -> SweepOutcome:
    """Train (or complete) every point x seed of a sweep; the tables are `reports.sweep_tables`'s (`run_sweep` is
    this, then `aggregate`).

    Args:
        spec: a shipped sweep name (`resnetlab/sweeps/NAME.yaml`), the path of a spec YAML file, or the spec
            as a mapping (see `load_spec`).
        out_dir: the sweep directory; re-running with the same one skips finished runs and resumes the others.
        jobs: runs at once (1 = one after another in this process; N > 1 = N subprocesses).

    Returns:
        SweepOutcome: the runs that failed are logged and listed there, not raised (`SweepOutcome.check` raises).

    Raises:
        UserError: a bad spec (unknown recipe or key, empty grid), or `out_dir` holds a different sweep.
    """
    if jobs < 1:
        raise UserError(f"--jobs must be at least 1; got {jobs}")
    out = Path(out_dir)
    parsed, points = read_spec(spec)  # a bad spec leaves no directory behind
    with lock_run_dir(out, what="swept"):  # one sweep at a time in a directory
        _claim_dir(out, parsed, points)
        return SweepOutcome(out, len(points), _run_claimed(parsed, points, out, jobs))


def _run_claimed(parsed: SweepSpec, points: list[RunPoint], out: Path, jobs: int) -> list[str]:
    tasks = plan(out, points)
    logger.info("sweep %s: %d runs, %d finished, %d to run (%d resumed)", parsed.name, len(points),
                len(points) - len(tasks), len(tasks), sum(t.resume for t in tasks))
    started = time.monotonic()
    if jobs == 1:
        with shared_splits():  # each data set is read once for all the runs, not once per run
            failed = [t.point.name for t in tasks if not _train_in_process(parsed, t)]
    else:
        failed = _run_subprocesses(parsed, tasks, jobs, out / LOGS_DIR)
    logger.info("sweep %s: ran %d runs in %.0f s", parsed.name, len(tasks), time.monotonic() - started)
    return failed


def prepare_sweep(spec: str | Path | Mapping[str, Any], out: Path) -> tuple[SweepSpec, list[RunPoint]]:
    """Read and check a spec, claim `out` for it (DIR/sweep.yaml); returns the spec and its runs (see read_spec)."""
    parsed, points = read_spec(spec)
    with lock_run_dir(out, what="swept"):
        _claim_dir(out, parsed, points)
    return parsed, points


def read_spec(spec: str | Path | Mapping[str, Any]) -> tuple[SweepSpec, list[RunPoint]]:
    """A checked spec and its runs, seed by seed (every point's first seed, then the second, ...: a sweep stopped
    early already compares every point)."""
    parsed = load_spec(spec)
    points = expand(parsed)
    check_spec(parsed, points)
    return parsed, sorted(points, key=lambda p: parsed.seeds.index(p.seed))


def check_spec(spec: SweepSpec, points: list[RunPoint]) -> None:
    """Resolve every run's config up front so that a bad recipe, key or value, an unknown model or a missing data
    folder fails before any training (not hours in, at the grid point that has it)."""
    for point in points:
        try:
            cfg = load_config(point.recipe(spec), point.overrides(spec))
            check_model_name(cfg.model.name)
            check_data_paths(cfg)
            check_memory(cfg)
        except UserError as exc:
            raise UserError(f"sweep {spec.name}, run {point.name}: {exc}") from None


def plan(out: Path, points: list[RunPoint]) -> list[Task]:
    """The runs still to do: finished ones (a valid summary.json) are skipped, any other existing run directory is
    resumed (from last.pt; a run that died before its first checkpoint starts over, a corrupt summary.json counts
    as unfinished)."""
    tasks = []
    for point in points:
        run_dir = point_dir(out, point)
        if not is_finished(run_dir):
            tasks.append(Task(point, run_dir, run_dir.exists()))
    return tasks


def run_config(spec: SweepSpec, point: RunPoint, out: Path) -> Config:
    """The config one run of the sweep trains with (as `train` resolves it)."""
    cfg = load_config(point.recipe(spec), [*point.overrides(spec), f"train.out_dir={point_dir(out, point)}"])
    drop_foreign_options(cfg.model)
    return cfg


def _claim_dir(out: Path, spec: SweepSpec, points: list[RunPoint]) -> None:
    """Write DIR/sweep.yaml. A directory that holds another spec with the same grid keys may take this one when
    every finished run in it has the config this spec gives it (a corrected spec re-runs its failed or unstarted
    runs); an unfinished run whose config changed starts over. More seeds or grid values extend a sweep."""
    path = out / SPEC_FILE
    if path.is_file():
        old = read_sweep_spec(out, name=spec.name)
        if list(old.grid) != list(spec.grid):
            raise UserError(f"{out} holds another sweep (its grid keys {', '.join(old.grid)} differ from this spec's, "
                            f"see {path}); use a new --out DIR")
        if old.to_dict() | {"name": "", "description": ""} != spec.to_dict() | {"name": "", "description": ""}:
            _check_changed_runs(out, spec, points)
    write_sweep_spec(out, spec)


def _check_changed_runs(out: Path, spec: SweepSpec, points: list[RunPoint]) -> None:
    for point in points:
        run_dir = point_dir(out, point)
        if not (run_dir / CONFIG).is_file():
            continue
        changed = config_changes(read_config(run_dir), run_config(spec, point, out))
        if not changed:
            continue
        if is_finished(run_dir):
            raise UserError(f"{out} holds a finished run {point.name} trained with {changed[0]}, which this spec "
                            "changes; use a new --out DIR (finished runs are never mixed with other settings)")
        logger.info("%s: this spec changes %s; starting that unfinished run over", run_dir, changed[0])
        clear_run(run_dir)  # its run files only: anything else in it is refused, not deleted


def config_changes(saved: Config, new: Config) -> list[str]:
    """`key: old -> new` for every setting that differs, but those a resume may change (threads, quiet, ...)."""
    return [f"{key}={old!r} (now {value!r})" for key, (old, value) in changed_settings(saved, new).items()]


# ------------------------------------------------------------------------------------------- one process


def _train_in_process(spec: SweepSpec, task: Task) -> bool:
    """Train one run with the engine in this process; True when it finished. Failures are logged, not raised,
    except an interrupt (Ctrl-C / SIGTERM), which stops the whole sweep."""

    name = task.point.name
    logger.info("%s %s", "resuming" if task.resume else "training", name)
    try:
        cfg = load_config(task.point.recipe(spec), [*task.point.overrides(spec), f"train.out_dir={task.run_dir}"])
        train(cfg, resume=task.resume)
    except (Interrupted, KeyboardInterrupt):
        raise
    except (UserError, TrainingFailed) as exc:
        logger.error("run %s failed: %s", name, exc)
        return False
    except Exception:  # a bug or an out-of-memory in one run must not lose the rest of the sweep
        logger.exception("run %s failed", name)
        return False
    return (task.run_dir / "summary.json").is_file()


# -------------------------------------------------------------------------------------------- subprocesses


def train_command(spec: SweepSpec, task: Task) -> list[str]:
    """The `python -m resnetlab train` command line of one run."""
    command = [sys.executable, "-m", "resnetlab", "train", "--recipe", task.point.recipe(spec), "--out",
               str(task.run_dir)]
    for override in task.point.overrides(spec):
        command += ["--set", override]
    return command + (["--resume"] if task.resume else [])


def _slot_env(slot: int, jobs: int, spec: SweepSpec, gpus: list[str]) -> tuple[dict[str, str], list[str]]:
    """Environment and extra overrides for job slot `slot`: its own GPU where there are several, else a share of
    the CPU threads (N processes each using every core would fight over them)."""
    env = dict(os.environ)
    extra = []
    if len(gpus) > 1:
        env["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
    if "train.threads" not in spec.fixed and "train.threads" not in spec.grid:
        extra.append(f"train.threads={max(1, physical_cores() // jobs)}")  # as the engine counts cores
    return env, extra


def _visible_gpus() -> list[str]:
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g.strip() for g in listed.split(",") if g.strip()]

    return [str(i) for i in range(torch.cuda.device_count())]


def _run_subprocesses(spec: SweepSpec, tasks: list[Task], jobs: int, logs: Path) -> list[str]:
    """Run `tasks` as at most `jobs` subprocesses at once; returns the names of the runs that failed.

    Children run in their own session, so a terminal's Ctrl-C reaches only this process, which passes SIGINT (or
    a SIGTERM it got) on to every running child exactly once, waits for them to save their checkpoints, then
    raises the interrupt.
    """
    logs.mkdir(parents=True, exist_ok=True)
    gpus = _visible_gpus()
    pending, running, failed = list(tasks), {}, []
    free = list(range(jobs))
    with _sigterm_raises():
        try:
            while pending or running:
                while pending and free:
                    slot, task = free.pop(0), pending.pop(0)
                    running[slot] = (task, _launch(spec, task, slot, jobs, gpus, logs))
                time.sleep(POLL_S)
                for slot, (task, proc) in list(running.items()):
                    if proc.poll() is None:
                        continue
                    del running[slot]
                    free.append(slot)
                    if not _finished_ok(task, proc.returncode, logs):
                        failed.append(task.point.name)
        except (KeyboardInterrupt, Interrupted) as exc:
            signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
            for _, proc in running.values():
                if proc.poll() is None:
                    proc.send_signal(signum)
            for _, proc in running.values():
                proc.wait()
            raise
    return failed


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """While the scheduler waits, SIGTERM raises Interrupted (so the children are stopped cleanly) instead of
    killing this process and orphaning them; the previous handler is restored afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise Interrupted(signum, "sweep stopped by SIGTERM; running runs saved their checkpoints, "
                                  "re-run the same command to resume")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _launch(spec: SweepSpec, task: Task, slot: int, jobs: int, gpus: list[str], logs: Path) -> subprocess.Popen:
    env, extra = _slot_env(slot, jobs, spec, gpus)
    command = train_command(spec, task) + [arg for o in extra for arg in ("--set", o)]
    logger.info("%s %s (log: %s)", "resuming" if task.resume else "training", task.point.name,
                logs / f"{task.point.name}.log")
    with (logs / f"{task.point.name}.log").open("ab") as log:
        # The child inherits the file descriptor; closing ours right away is fine.
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)


def _finished_ok(task: Task, returncode: int, logs: Path) -> bool:
    name = task.point.name
    if returncode == 0 and (task.run_dir / "summary.json").is_file():
        logger.info("finished %s", name)
        return True
    log = logs / f"{name}.log"
    lines = log.read_text(errors="replace").strip().splitlines() if log.is_file() else []
    reason = lines[-1] if lines else f"exit code {returncode}"
    logger.error("run %s failed (exit code %d): %s", name, returncode, reason)
    return False
