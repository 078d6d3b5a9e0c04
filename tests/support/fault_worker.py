"""`resnetlab` with a fault injected: a test hook that the package never imports.

    python tests/support/fault_worker.py FAULT N ARGS...

runs exactly `resnetlab.cli.main(ARGS)`, except that:

- kill-step N: the process SIGKILLs itself right after its N-th optimizer step (counted in this process);
- kill-write N: it SIGKILLs itself during its N-th checkpoint write, after the temporary file is written and
  before it is renamed over the checkpoint (the moment a torn write would hurt);
- hold N: it sleeps N seconds after its first optimizer step (to hold the run directory's lock);
- pause-step N: after its N-th optimizer step it writes $RESNETLAB_TEST_HANDSHAKE/stepped and waits for
  $RESNETLAB_TEST_HANDSHAKE/go (a handshake: the test decides when it goes on);
- nan-step N: after its N-th optimizer step a weight becomes NaN (the next check stops the run);
- term-data 0: it sends itself SIGTERM as the data starts loading;
- term-test 0: it sends itself SIGTERM as the final test starts;
- term-parse 0: it sends itself SIGTERM before the command line is parsed (before any command set its handlers);
- none: nothing.

(The pause between creating a run folder and locking it is the package's own test hook,
RESNETLAB_TEST_PAUSE_BEFORE_LOCK=DIR, in engine/rundir.py.)
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from resnetlab.cli import main


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def wait_for(path: Path) -> None:
    """Block until `path` exists (the other side of a handshake)."""
    while not path.exists():
        time.sleep(0.01)


def _after_step(n: int, action) -> None:
    count = [0]

    def hook(optimizer, args, kwargs) -> None:
        count[0] += 1
        if count[0] == n:
            action(optimizer)

    register_optimizer_step_post_hook(hook)


def _pause(optimizer) -> None:
    handshake = Path(os.environ["RESNETLAB_TEST_HANDSHAKE"])
    (handshake / "stepped").write_text(f"{os.getpid()}\n")
    wait_for(handshake / "go")


def _poison(optimizer) -> None:
    with torch.no_grad():
        optimizer.param_groups[0]["params"][0].fill_(float("nan"))


def _term_first(module, name: str, when=lambda *a, **k: True) -> None:
    """Wrap module.name so that its first call that `when` accepts sends this process SIGTERM first."""
    original, sent = getattr(module, name), [False]

    def wrapper(*args, **kwargs):
        if not sent[0] and when(*args, **kwargs):
            sent[0] = True
            os.kill(os.getpid(), signal.SIGTERM)
        return original(*args, **kwargs)

    setattr(module, name, wrapper)


def install(fault: str, n: int) -> None:
    """Arm the fault `fault` with count `n`."""
    count = [0]
    if fault == "pause-step":
        _after_step(n, _pause)
    elif fault == "nan-step":
        _after_step(n, _poison)
    elif fault == "term-data":
        from resnetlab.engine import builders
        _term_first(builders, "build_data")
    elif fault == "term-test":
        from resnetlab.engine import trainer
        _term_first(trainer, "evaluate_model", when=lambda *a, **k: k.get("what") == "test")
    elif fault == "term-parse":
        import resnetlab.cli
        _term_first(resnetlab.cli, "build_parser")
    elif fault in ("kill-step", "hold"):
        def after_step(optimizer, args, kwargs) -> None:
            count[0] += 1
            if fault == "kill-step" and count[0] == n:
                _kill()
            if fault == "hold" and count[0] == 1:
                time.sleep(n)

        register_optimizer_step_post_hook(after_step)
    elif fault == "kill-write":
        replace = os.replace

        def replace_or_die(src, dst, *args, **kwargs):
            if str(dst).endswith(".pt"):
                count[0] += 1
                if count[0] == n:
                    _kill()
            return replace(src, dst, *args, **kwargs)

        os.replace = replace_or_die
    elif fault != "none":
        raise SystemExit(f"unknown fault {fault!r}")


if __name__ == "__main__":
    install(sys.argv[1], int(sys.argv[2]))
    sys.exit(main(sys.argv[3:]))
