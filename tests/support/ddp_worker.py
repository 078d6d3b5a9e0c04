"""`resnetlab` under torchrun with a fault injected on one rank: a test hook that the package never imports.

    python -m torch.distributed.run ... tests/support/ddp_worker.py FAULT STEP RANK train --out ... [flags]

runs exactly `resnetlab.cli.main` (what `-m resnetlab` runs), except that on rank RANK, right after its
optimizer step number STEP (counted from 1 in this process), FAULT strikes:

- none: nothing (the plain command);
- stop: the rank sends itself SIGTERM (a graceful stop that the ranks agree on at the next log point);
- kill: the rank sends itself SIGKILL (it dies at once, as after an out-of-memory kill or a crash);
- hang: the rank stops answering (sleeps forever) but still dies on SIGTERM, like a stuck collective.

Models and batches are float64 (torch's default dtype), as in the one-process references (ddpkit's docstring
says why).

With DDPKIT_FAULT_FILE set, the striking rank writes time.time() there first (when the fault happened).
With DDPKIT_EVAL_LOG set, every rank appends one JSON line {"rank", "n"} per `evaluate_model()` call of the trainer
(how many images the reduced metrics counted).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from resnetlab.cli import main
from resnetlab.engine import trainer


def _strike(fault: str) -> None:
    marker = os.environ.get("DDPKIT_FAULT_FILE")
    if marker:
        Path(marker).write_text(repr(time.time()))
    if fault == "stop":
        os.kill(os.getpid(), signal.SIGTERM)
    elif fault == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif fault == "hang":
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the run's own handler would only note the signal
        while True:
            time.sleep(1)


def _spy_on_evaluations(log_path: str) -> None:
    evaluate, rank = trainer.evaluate_model, os.environ.get("RANK", "0")

    def counted(*args, **kwargs):
        result = evaluate(*args, **kwargs)
        with open(log_path, "a") as f:
            f.write(json.dumps({"rank": int(rank), "n": result["n"]}) + "\n")
        return result

    trainer.evaluate_model = counted


def run(argv: list[str]) -> int:
    """Install the fault hook for FAULT STEP RANK (argv[:3]) and run the CLI with argv[3:]."""
    fault, step, rank = argv[0], int(argv[1]), int(argv[2])
    if fault not in ("none", "stop", "kill", "hang"):
        raise SystemExit(f"unknown fault {fault!r}")
    steps = [0]

    def after_step(optimizer, args, kwargs) -> None:
        steps[0] += 1
        if steps[0] == step and int(os.environ.get("RANK", "0")) == rank and fault != "none":
            _strike(fault)

    register_optimizer_step_post_hook(after_step)
    torch.set_default_dtype(torch.float64)
    if os.environ.get("DDPKIT_EVAL_LOG"):
        _spy_on_evaluations(os.environ["DDPKIT_EVAL_LOG"])
    return main(argv[3:])


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
