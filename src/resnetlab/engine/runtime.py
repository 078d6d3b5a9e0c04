"""Where and how a run trains: the one setup of `train` and `lr-find` (`session`), and the process-wide settings
for the length of a run (seeds, threads, deterministic algorithms, stop signals).

Everything set here is restored when the run ends, so that training in-process (tests, sweeps, notebooks)
leaves the interpreter as it found it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from resnetlab.engine import devices
from resnetlab.engine.config import Config
from resnetlab.engine.distributed import DistEnv, collective_failures, destroy_distributed, init_distributed


@dataclass(frozen=True)
class Session:
    """This process's place under torchrun, its device, and the stop signals it listens to (`session`)."""

    env: DistEnv
    device: torch.device
    stop: StopSignals

    @contextlib.contextmanager
    def settings(self, cfg: Config) -> Iterator[None]:
        """For the body: `cfg`'s process settings (`process_settings`), and a failed collective (a lost rank, a
        timeout) as TrainingFailed. `cfg` is the config the run trains with (a resumed run's own)."""
        with process_settings(cfg, self.device, self.env.is_main, self.stop), \
                collective_failures(self.env, cfg.dist.timeout_s):
            yield


@contextlib.contextmanager
def session(cfg: Config) -> Iterator[Session]:
    """The setup of `train` and `lr-find`: stop signals first (a SIGINT/SIGTERM from then on stops cleanly),
    resnetlab's INFO messages off with train.quiet, the device (train.device; under torchrun the local rank's), and
    the process group under torchrun, left at the end. The run's own settings follow with `Session.settings`."""
    env = DistEnv.from_environ()
    with StopSignals() as stop, quiet_logs(cfg.train.quiet):
        device = devices.select_device(cfg.train.device, env.local_rank)
        init_distributed(env, device, cfg.dist.timeout_s)
        try:
            yield Session(env, device, stop)
        finally:
            destroy_distributed()


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (model initialisation; the Loader has its own seeded generators)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def process_settings(cfg: Config, device: torch.device, is_main: bool = True, stop: StopSignals | None = None
                     ) -> Iterator[StopSignals]:
    """Threads, deterministic algorithms, signal handlers (and quiet logs off rank 0) for the run; then the old ones.

    `stop`: signal handlers the caller installed already (before it loaded anything); else they are installed here.
    """
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    benchmark = torch.backends.cudnn.benchmark
    package_log = logging.getLogger("resnetlab")
    log_level = package_log.level
    if not is_main:
        package_log.setLevel(logging.WARNING)  # one copy of the INFO messages, from rank 0
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    devices.configure_threads(cfg.train.threads, local_world if device.type == "cpu" else 1)
    if cfg.train.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it for determinism
    torch.use_deterministic_algorithms(cfg.train.deterministic)
    torch.backends.cudnn.benchmark = device.type == "cuda" and not cfg.train.deterministic
    try:
        if stop is not None:
            yield stop
        else:
            with StopSignals() as stop:
                yield stop
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
        torch.backends.cudnn.benchmark = benchmark
        package_log.setLevel(log_level)


@contextlib.contextmanager
def quiet_logs(quiet: bool) -> Iterator[None]:
    """With `quiet`, resnetlab's INFO messages are off for the body (warnings and errors remain)."""
    package_log = logging.getLogger("resnetlab")
    level = package_log.level
    if quiet:
        package_log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        package_log.setLevel(level)


class StopSignals:
    """Turns SIGINT/SIGTERM into a request to stop after the current step (a second SIGINT stops at once)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = self.signum or signum

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
