"""Real `resnetlab` processes with a fault injected (tests/support/fault_worker.py), and what to check after them.

Each worker is its own process (own PID, signals, lock, exit status), forked by one fork server per test session
that imported torch and resnetlab once (`fault_worker.py --serve`): a fresh interpreter would spend ~4 s of each
worker importing them.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from resnetlab.engine.checkpoint import read_checkpoint
from resnetlab.engine.rundir import TEMP_MARK

WORKER = Path(__file__).resolve().parent / "fault_worker.py"
# 2 epochs of 12 steps, evaluated every 5 steps (checkpoints at 5, 10, 15, 20, 24), rows every 3 steps.
FAULT_SETTINGS = {"train__eval_every": 5, "train__log_every": 3, "data__crop_padding": 2, "data__flip": True}


def worker_env(**extra: str) -> dict[str, str]:
    """The environment of a worker: one thread, this checkout's package first, and `extra`."""
    src = str(Path(__file__).resolve().parents[2] / "src")
    path = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path, **extra}


class Worker:
    """A running `fault_worker.py FAULT N ARGV` (forked by the server): pid, poll/wait/communicate as Popen's."""

    def __init__(self, pid: int, files: Path) -> None:
        self.pid, self.files, self.returncode = pid, files, None

    def poll(self) -> int | None:
        status = self.files / "status"
        if self.returncode is None and status.exists():
            self.returncode = int(status.read_text())
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = time.monotonic() + (timeout if timeout is not None else 1e9)
        while self.poll() is None:
            if time.monotonic() > deadline:
                os.kill(self.pid, signal.SIGKILL)
                raise subprocess.TimeoutExpired(f"worker {self.pid}", timeout or 0)
            time.sleep(0.01)
        return self.returncode

    def read(self, stream: str) -> str:
        """What the worker wrote so far on `stream` ("stdout" or "stderr")."""
        return (self.files / stream).read_text(errors="backslashreplace")

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        self.wait(timeout)
        return self.read("stdout"), self.read("stderr")


_server: list = []  # [the server, the folder of the workers' output files]


def _fork_server() -> subprocess.Popen:
    """The session's fork server, started on first use (with one OpenMP thread: OpenMP reads it as torch loads)."""
    if not _server or _server[0].poll() is not None:
        server = subprocess.Popen([sys.executable, str(WORKER), "--serve"], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, env=worker_env())
        files = tempfile.mkdtemp(prefix="resnetlab-workers-")
        atexit.register(shutil.rmtree, files, ignore_errors=True)
        atexit.register(server.stdin.close)  # end of input: the server kills what still runs and exits
        _server[:] = [server, files]
    return _server[0]


def start_worker(fault: str, n: int, argv: list, *, env: dict[str, str] | None = None,
                 cwd: Path | str | None = None) -> Worker:
    """Start `resnetlab ARGV` in a new process with `fault` armed; does not wait."""
    server = _fork_server()
    files = Path(tempfile.mkdtemp(dir=_server[1]))
    request = {"fault": fault, "n": n, "argv": [str(a) for a in argv], "cwd": str(cwd or os.getcwd()),
               "env": env or worker_env(), "stdout": str(files / "stdout"), "stderr": str(files / "stderr"),
               "status": str(files / "status")}
    server.stdin.write(json.dumps(request).encode() + b"\n")
    server.stdin.flush()
    pid = server.stdout.readline()
    assert pid, f"the fork server ended (exit {server.wait()}); its error is above"
    return Worker(int(pid), files)


def run_worker(fault: str, n: int, argv: list, *, env: dict[str, str] | None = None,
               cwd: Path | str | None = None) -> subprocess.CompletedProcess:
    """Run `resnetlab ARGV` in a new process with `fault` armed; waits for it."""
    worker = start_worker(fault, n, argv, env=env, cwd=cwd)
    out, err = worker.communicate(timeout=300)
    return subprocess.CompletedProcess(argv, worker.returncode, out, err)


def require(condition: bool, what: str) -> None:
    """Skip the calling test when `condition` is false, or fail under CI=true (as tests/conftest.py's require)."""
    if condition:
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{what} is required under CI=true")
    pytest.skip(f"{what} is not available")


def wait_for(path: Path, *processes: subprocess.Popen, timeout: float = 180) -> None:
    """Block until `path` exists (a handshake with a worker); fail when a worker ends first or after `timeout`."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        ended = [p for p in processes if p.poll() is not None]
        assert not ended, f"a worker ended ({ended[0].returncode}) before {path}: {ended[0].read('stderr')[-2000:]}"
        assert time.monotonic() < deadline, f"no {path} after {timeout} s"
        time.sleep(0.01)


def same_weights(a: Path, b: Path) -> bool:
    """Whether two runs' last.pt hold bit-identical weights."""
    wa, wb = (read_checkpoint(p / "checkpoints" / "last.pt")["model"] for p in (a, b))
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def stray_files(folder: Path) -> list[str]:
    """Temporary files (of atomic writes) left anywhere under `folder`."""
    return [str(p) for p in folder.rglob("*") if TEMP_MARK in p.name]


def without_timing(rows: list[dict]) -> list[dict]:
    """Metrics rows without their wall-clock fields."""
    return [{k: v for k, v in r.items() if k not in ("images_per_s", "time_s")} for r in rows]


def snapshot(folder: Path) -> dict[str, object]:
    """Every entry under `folder` (links not followed): file bytes, link targets, folders (to compare before/after)."""
    state: dict[str, object] = {}
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        if path.is_symlink():
            state[rel] = ("link", os.readlink(path))
        elif path.is_dir():
            state[rel] = "dir"
        else:
            state[rel] = path.read_bytes()
    return state


def one_line(stderr: str) -> str:
    """The one line a refused command writes on stderr (asserts it is one)."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


def error_line(stderr: str) -> str:
    """The last line of a failed command (what it did before may be logged above it), asserting no traceback."""
    assert "Traceback" not in stderr and stderr.strip(), stderr[-3000:]
    line = stderr.strip().splitlines()[-1]
    assert line.startswith("resnetlab: "), stderr[-3000:]
    return line
