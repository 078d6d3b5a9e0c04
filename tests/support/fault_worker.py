"""`resnetlab` with a fault injected: a test hook that the package never imports.

    python tests/support/fault_worker.py FAULT N ARGS...

runs exactly `resnetlab.cli.main(ARGS)`, except that:

- kill-step N: the process SIGKILLs itself right after its N-th optimizer step (counted in this process);
- kill-write N: it SIGKILLs itself during its N-th checkpoint write, after the temporary file is written and
  before it is renamed over the checkpoint (the moment a torn write would hurt);
- pause-step N: after its N-th optimizer step it writes $RESNETLAB_TEST_HANDSHAKE/stepped and waits for
  $RESNETLAB_TEST_HANDSHAKE/go (a handshake: the test decides when it goes on);
- term-step N: it sends itself SIGTERM right after its N-th optimizer step;
- nan-step N: after its N-th optimizer step a weight becomes NaN (the next check stops the run);
- term-data 0: it sends itself SIGTERM as the data starts loading;
- term-test 0: it sends itself SIGTERM as the final test starts;
- term-parse 0: it sends itself SIGTERM before the command line is parsed (before any command set its handlers);
- none: nothing.

(The pause between creating a run folder and locking it is the package's own test hook,
RESNETLAB_TEST_PAUSE_BEFORE_LOCK=DIR, in engine/runlock.py.)

    python tests/support/fault_worker.py --serve

is a fork server (tests/support/faultkit.py drives it): it imports torch and resnetlab once, then for each request
(a JSON line on stdin: fault, n, argv, cwd, env, files for stdout/stderr/status) it forks a child that runs as
above (its own process, PID, signals, lock and exit status; the environment and working folder the request
gives) and answers the child's PID on stdout; when the child ends it writes its exit status (negative: killed by
that signal, as subprocess's returncode) to the status file. A fresh interpreter spends ~4 s importing; a fork,
milliseconds. On end of input it SIGKILLs the children still running and exits.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import json
import os
import select
import signal
import sys
import threading
import time
import traceback
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
    elif fault == "kill-step":
        _after_step(n, lambda optimizer: _kill())
    elif fault == "term-step":
        _after_step(n, lambda optimizer: os.kill(os.getpid(), signal.SIGTERM))
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


def _child(request: dict) -> None:
    """In the forked child: become `python fault_worker.py FAULT N ARGV` with the request's folder, env and files."""
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    for fd, (name, mode) in enumerate(((os.devnull, os.O_RDONLY), (request["stdout"], os.O_WRONLY | os.O_CREAT),
                                       (request["stderr"], os.O_WRONLY | os.O_CREAT))):
        opened = os.open(name, mode, 0o644)
        os.dup2(opened, fd)
        os.close(opened)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 (the streams a fresh interpreter has)
    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, errors="backslashreplace", closefd=False)  # noqa: SIM115
    sys.argv = [sys.argv[0], request["fault"], str(request["n"]), *request["argv"]]
    install(request["fault"], int(request["n"]))
    try:
        code = main(request["argv"])
    except SystemExit as stop:  # as the interpreter handles it
        code = stop.code if isinstance(stop.code, int) else 0 if stop.code is None else 1
        if not isinstance(stop.code, int | None):
            print(stop.code, file=sys.stderr)
    except BaseException:  # what the interpreter would print before exiting 1
        traceback.print_exc()
        code = 1
    # The interpreter's own ending, less the teardown of every module (in a forked heap: seconds of page copies).
    threading._shutdown()  # waits for non-daemon threads
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


def _reap(children: dict[int, str]) -> None:
    """Write the exit status of each child that ended to its status file (atomically)."""
    while children:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            return
        path = Path(children.pop(pid))
        path.with_name(path.name + ".tmp").write_text(str(os.waitstatus_to_exitcode(status)))
        path.with_name(path.name + ".tmp").rename(path)


def serve() -> None:
    """The fork server (see the module docstring)."""
    import torch  # noqa: F401  (what every command imports, once; nothing runs, so no thread pool to fork)
    import torchvision  # noqa: F401

    import resnetlab.engine.trainer  # noqa: F401

    for optional in ("captum.attr", "onnx", "onnxscript"):  # Grad-CAM and ONNX export, where installed
        with contextlib.suppress(ImportError):
            importlib.import_module(optional)

    children: dict[int, str] = {}
    pending = b""
    while True:
        readable, _, _ = select.select([0], [], [], 0.01)
        _reap(children)
        if not readable:
            continue
        chunk = os.read(0, 65536)
        if not chunk:
            break
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            request = json.loads(line)
            pid = os.fork()
            if pid == 0:
                _child(request)
            children[pid] = request["status"]
            os.write(1, f"{pid}\n".encode())
    for pid in children:
        os.kill(pid, signal.SIGKILL)


if __name__ == "__main__":
    if sys.argv[1] == "--serve":
        serve()
    else:
        install(sys.argv[1], int(sys.argv[2]))
        sys.exit(main(sys.argv[3:]))
