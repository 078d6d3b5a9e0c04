"""Helpers for the DDP tests: launching torchrun on the loopback interface, and comparing weights.

Every launch is `python -m torch.distributed.run --nproc-per-node N --master-addr 127.0.0.1 --master-port P`
with OMP_NUM_THREADS=1 and train.threads=1, so that two ranks share two cores without oversubscription.

Why these tests train in float64 (issue 11). Two processes sum a batch's gradient in another order than one
process, and AVX2 and AVX-512 kernels round differently again, so the runs differ by float32 rounding (1e-7
relative) after the first step. A ReLU whose input lies within that rounding of zero then switches, and a switch
changes that step's gradient by about 1e-3 (relative) in the small BatchNorm biases, which the following steps
carry on. Measured on this test's run (resnet20, 16 iterations; float32): of 8 random 1e-7 relative perturbations
of the initial weights, 3 ended 8e-3 apart (worst tensor) at step 4 and 4e-2 apart at step 16, the other 5 stayed
within 7e-6. So in float32 a 1e-5 bound holds or fails by the luck of the rounding: it failed on an AVX-512 CPU
(layer3.1.bn1.bias 4.6e-4 apart) and passed on an AVX2 one. In float64 the rounding is 1e-16, no ReLU input lies
that close to zero, and what is left to compare is the engine's logic (sharding, gradient averaging, resume),
not the kernels' rounding. The product trains in float32; only these comparisons run in float64.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from support.enginekit import cli_args

WORKER = Path(__file__).with_name("ddp_worker.py")

# Augmentation on (drawn per global sample index), momentum, a cosine schedule, BatchNorm frozen (the only
# layer whose training-mode result depends on how the batch is split); 16 iterations cross an epoch boundary
# (12 batches of 32 per epoch); evaluations at 4, 8, 12, 16 with an odd eval batch (37: rounded up to 38 on
# two processes, so shards are uneven); the stop/resume checks happen every 3 steps.
DDP_SETTINGS: dict[str, object] = {
    "data__crop_padding": 2, "data__flip": True, "train__freeze_bn": True, "schedule__name": "cosine",
    "train__iters": 16, "train__eval_every": 4, "train__log_every": 3, "eval__batch_size": 37,
}
FIRST_EVAL_STEP = 4  # the first evaluation, hence the first checkpoint
STOP_STEP = 6  # the stopped runs (one process, and two processes) stop after this many steps
# 2 processes x B/2 against 1 process x B, in float64: measured at most 5e-15 (AVX2); the bound leaves room for
# other kernels' rounding grown over 16 steps (float32's 1e-7 grew 70x in the runs that did not switch a ReLU).
RELATIVE_TOLERANCE = 1e-10
LAUNCH_TIMEOUT_S = 240  # a safety net against a hanging test, far above a normal launch (~20 s on 2 busy cores)


@dataclass
class Launch:
    """A finished torchrun: its exit code, output, and when it ended (time.time())."""

    returncode: int
    stdout: str
    stderr: str
    ended: float


@contextlib.contextmanager
def float64() -> Iterator[None]:
    """Models and batches in float64 for the body (see the module docstring); float32 again afterwards."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_env(**extra: str) -> dict[str, str]:
    """os.environ for a launch: one OpenMP thread per rank, and no torchrun variables of an outer job."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", **extra)
    return env


def torchrun(nproc: int, argv: list[str], *, fault: tuple[str, int, int] = ("none", 0, 0),
             env: dict[str, str] | None = None) -> Launch:
    """Run `resnetlab` + argv on `nproc` local processes (through ddp_worker.py, with `fault` injected)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--master-addr",
           "127.0.0.1", "--master-port", str(free_port()), str(WORKER), *(str(f) for f in fault), *argv]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S, env=env or launch_env())
    return Launch(proc.returncode, proc.stdout, proc.stderr, time.time())


def train_argv(root: Path, out: Path, **extra: object) -> list[str]:
    """`resnetlab train` arguments for the tiny data set with DDP_SETTINGS (and `extra`)."""
    return cli_args(root, out, **{**DDP_SETTINGS, **extra})


def relative_differences(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, float]:
    """||a - b|| / ||b|| for every floating-point tensor of two state dicts with the same keys."""
    assert a.keys() == b.keys()
    return {name: float((a[name].double() - b[name].double()).norm() / b[name].double().norm().clamp_min(1e-12))
            for name in a if a[name].is_floating_point()}


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor],
                        rtol: float = RELATIVE_TOLERANCE) -> float:
    """Assert that every tensor of `a` is within `rtol` (relative norm) of `b`; returns the largest difference."""
    diffs = relative_differences(a, b)
    worst = max(diffs, key=diffs.get)
    assert diffs[worst] <= rtol, f"{worst} differs by {diffs[worst]:.3g} (relative), more than {rtol}"
    return diffs[worst]


def read_jsonl(path: Path) -> list[dict]:
    """The JSON objects of a .jsonl file."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
