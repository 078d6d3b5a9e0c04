"""`resnetlab` with a fault injected: a test hook that the package never imports.

    python tests/support/fault_worker.py FAULT N ARGS...

runs exactly `resnetlab.cli.main(ARGS)`, except that:

- kill-step N: the process SIGKILLs itself right after its N-th optimizer step (counted in this process);
- kill-write N: it SIGKILLs itself during its N-th checkpoint write, after the temporary file is written and
  before it is renamed over the checkpoint (the moment a torn write would hurt);
- hold N: it sleeps N seconds after its first optimizer step (to hold the run directory's lock);
- none: nothing.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from torch.optim.optimizer import register_optimizer_step_post_hook

from resnetlab.cli import main


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def install(fault: str, n: int) -> None:
    """Arm the fault `fault` with count `n`."""
    count = [0]
    if fault in ("kill-step", "hold"):
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
