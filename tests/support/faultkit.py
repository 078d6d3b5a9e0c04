"""Real `resnetlab` processes with a fault injected (tests/support/fault_worker.py), and what to check after them."""

from __future__ import annotations

import os
import subprocess
import sys
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


def run_worker(fault: str, n: int, argv: list, *, env: dict[str, str] | None = None,
               **kwargs) -> subprocess.CompletedProcess:
    """Run `resnetlab ARGV` in a new process with `fault` armed; waits for it."""
    return subprocess.run([sys.executable, str(WORKER), fault, str(n), *map(str, argv)], capture_output=True,
                          text=True, env=env or worker_env(), timeout=300, **kwargs)


def start_worker(fault: str, n: int, argv: list, *, env: dict[str, str] | None = None, **kwargs) -> subprocess.Popen:
    """Start `resnetlab ARGV` in a new process with `fault` armed; does not wait."""
    return subprocess.Popen([sys.executable, str(WORKER), fault, str(n), *map(str, argv)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env or worker_env(), **kwargs)


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
        assert not ended, f"a worker ended ({ended[0].returncode}) before {path}: {ended[0].stderr.read()[-2000:]}"
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
