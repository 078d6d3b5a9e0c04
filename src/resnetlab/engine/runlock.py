"""RUN_DIR/.lock: one process at a time trains a run (or sweeps a sweep directory), and a refused one leaves
nothing behind.

`lock_run_dir` takes an exclusive fcntl lock on the lock file (the OS releases it when the process dies) and
records what it made (folders, the lock file) in a `RunLock`, so that a command refused after taking it removes
only what it added (`RunLock.undo`). The names of the files are the run directory's (rundir.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from resnetlab.engine.rundir import LOCK, owned_files, remove_empty_owned_dirs, write_error
from resnetlab.errors import UserError

PAUSE_BEFORE_LOCK = "RESNETLAB_TEST_PAUSE_BEFORE_LOCK"  # tests only: a handshake folder (see _test_pause)


class RunLock:
    """What `lock_run_dir` did to take the lock: the folders it made and whether it made the lock file."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.made_dirs: list[Path] = []  # made by this process, outermost first
        self.made_lock = False
        self.was_empty = False  # RUN_DIR held nothing but the lock file when the lock was taken
        self.fd: int | None = None
        self.previous = b""  # what a lock file made before held (the PID of its last holder)

    def undo(self) -> None:
        """Remove what this process added since it took the lock, when the command is refused: the run files of a
        folder that was empty then (they are this process's), the lock file and the folders it made, once empty.
        Anything else is kept; a folder is only ever removed empty."""
        if self.was_empty:
            for path in owned_files(self.run_dir):
                with contextlib.suppress(OSError):
                    path.unlink()
            remove_empty_owned_dirs(self.run_dir)
        if self.made_lock:
            with contextlib.suppress(OSError):
                (self.run_dir / LOCK).unlink()
        elif self.fd is not None:  # a lock file found there gets its old content back: not a byte changes
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
                os.pwrite(self.fd, self.previous, 0)
        for folder in reversed(self.made_dirs):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty: never a tree


def _make_dirs(run_dir: Path, lock: RunLock) -> None:
    """mkdir -p that records the folders this process made (another process may make them at the same time)."""
    missing = [p for p in (run_dir, *run_dir.parents) if not p.exists()]
    for folder in reversed(missing):
        try:
            folder.mkdir()
            lock.made_dirs.append(folder)
        except FileExistsError:
            pass
    if os.environ.get(PAUSE_BEFORE_LOCK):
        _test_pause(Path(os.environ[PAUSE_BEFORE_LOCK]))


def _test_pause(handshake: Path) -> None:
    """Test hook (RESNETLAB_TEST_PAUSE_BEFORE_LOCK=DIR): write DIR/paused, wait for DIR/go (races made exact)."""
    (handshake / "paused").write_text(f"{os.getpid()}\n")
    while not (handshake / "go").exists():
        time.sleep(0.01)


@contextlib.contextmanager
def lock_run_dir(run_dir: Path, what: str = "trained") -> Iterator[RunLock]:
    """Hold RUN_DIR/.lock (an exclusive fcntl lock) for the body; the OS releases it when the process dies.

    A process that does not get the lock changes nothing (it neither removes nor writes a file). The body decides
    what the folder holds only once the lock is held; a body that refuses the command calls `RunLock.undo()`.

    Raises:
        UserError: another live process holds it (the message names its PID).
    """
    lock = RunLock(run_dir)
    try:
        _make_dirs(run_dir, lock)
        fd = _open_locked(run_dir, lock, what)
    except OSError as exc:
        raise write_error(run_dir / LOCK, exc) from None
    try:
        lock.was_empty = not any(p.name != LOCK for p in run_dir.iterdir())
        lock.fd, lock.previous = fd, os.pread(fd, 64, 0)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield lock
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _open_locked(run_dir: Path, lock: RunLock, what: str) -> int:
    """The descriptor of RUN_DIR/.lock, locked. A lock file removed by a refused process between our open and our
    flock is opened again, so two processes never hold two different files."""
    path = run_dir / LOCK
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            lock.made_lock = True
        except FileExistsError:
            fd = os.open(path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise UserError(f"{run_dir} is being {what} by another process (PID {holder}); wait for it to end, or "
                            "choose another --out") from None
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        os.close(fd)
        lock.made_lock = False
