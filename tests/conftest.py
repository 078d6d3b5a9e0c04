"""Shared test fixtures.

Tests that need the real Fashion-MNIST or a browser skip on a developer's machine without them, but fail
under CI=true (`.ci/run` installs both).
"""

from __future__ import annotations

# resnetlab before torch: OpenMP's idle threads then sleep instead of spinning (resnetlab/__init__.py). Under xdist
# a test that sets two threads on its worker's one core ran 13x slower with spinning threads (lr-find, 22 s vs 1.7 s).
# isort: off
import resnetlab  # noqa: F401
# isort: on
import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from support.enginekit import make_mnist_root
from support.evalkit import train_tiny_run, write_checkpoint

from resnetlab.experiments.spec import parse_spec

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
CHROMIUM = Path("/usr/bin/chromium")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# Under pytest-xdist (`make test`: two workers, --dist loadscope: a module's tests on one worker, in order, so that
# a module-scoped fixture, one torchrun launch or one sweep, runs once) each worker and everything it starts (notebook
# kernels, `resnetlab` subprocesses, torchrun's ranks) keeps to its own share of the CPUs: two workers never put two
# OpenMP teams on the same cores, and each process there sees one core and uses one thread.
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER")  # gw0, gw1, ...
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if XDIST_WORKER and hasattr(os, "sched_setaffinity") and 1 < _WORKERS <= len(os.sched_getaffinity(0)):
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[int(XDIST_WORKER.removeprefix("gw")) % _WORKERS::_WORKERS])
_CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
torch.set_num_threads(min(2, _CPUS))

# torch.compile's cache, one per kernel set: kernels cached under one ISA carry oneDNN weight layouts chosen for it,
# and reused under ONEDNN_MAX_CPU_ISA=AVX2 (CI's second pass) they computed NaN on an AMX Xeon.
_KERNELS = "-".join(os.environ.get(name, "native") for name in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA"))
_CACHE = os.environ.get("TORCHINDUCTOR_CACHE_DIR") or os.path.join(os.environ.get("TMPDIR", "/tmp"), "torchinductor")
os.environ["TORCHINDUCTOR_CACHE_DIR"] = f"{_CACHE}-tests-{_KERNELS}"  # read at each compile (importing torch sets it)


# The longest modules, started first under xdist (loadscope hands out modules in collection order): a long module
# left to the end would run on one worker's core while the other worker has nothing left to do.
LONGEST_FIRST = ["test_examples.py", "engine/test_data_safety.py", "engine/test_faults.py",
                 "experiments/test_slurm.py", "distributed/test_torchrun.py", "engine/test_export.py",
                 "models/test_every_model.py", "experiments/test_sweep_run.py"]


def pytest_collection_modifyitems(config, items) -> None:
    if not XDIST_WORKER:
        return
    rank = {f"tests/{name}": i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))  # stable: the rest keeps its order


def require(condition: bool, what: str) -> None:
    """Skip the calling test when `condition` is false, or fail under CI=true."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{what} is required under CI=true (.ci/run installs it)")
    pytest.skip(f"{what} is not installed")


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One intra-op thread for the test (tiny convolutions: two threads fight over a shared 2-core CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def real_fmnist() -> Path:
    """The Debian copy of Fashion-MNIST (package dataset-fashion-mnist)."""
    require((FMNIST_DIR / "train-images-idx3-ubyte.gz").exists(), f"Fashion-MNIST in {FMNIST_DIR}")
    return FMNIST_DIR


@pytest.fixture
def jupyter_kernel() -> str:
    """The Jupyter kernel that runs this interpreter (nbclient, nbformat and ipykernel come with the dev extra)."""
    missing = [m for m in ("nbclient", "nbformat", "ipykernel") if importlib.util.find_spec(m) is None]
    require(not missing, f"{', '.join(missing)} (pip install -e '.[dev]')")
    return "python3"  # jupyter_client starts ipykernel's own spec with sys.executable


@pytest.fixture
def chromium() -> Path:
    """Debian's Chromium, for the report's browser test."""
    require(CHROMIUM.exists(), f"Chromium at {CHROMIUM}")
    return CHROMIUM


@pytest.fixture(scope="session")
def captum() -> None:
    """captum, for the Grad-CAM tests (the `explain` extra; `make test` installs it with `dev`)."""
    require(importlib.util.find_spec("captum") is not None, "captum (pip install 'resnetlab[explain]')")


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    """A data root with a small separable 4-class 'mnist' (480 train, 160 test images of 12x12)."""
    return make_mnist_root(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def random_checkpoint(tmp_path_factory) -> Path:
    """RUN/checkpoints/best.pt of an untrained resnet20 (1 channel, 3 classes, 16 px)."""
    return write_checkpoint(tmp_path_factory.mktemp("random-ckpt") / "checkpoints" / "best.pt")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """RUN_DIR of resnet20 trained for 40 iterations on a generated 3-class image folder (16x16 grey)."""
    return train_tiny_run(tmp_path_factory.mktemp("tiny-run"))


@pytest.fixture
def fake_sweep_dir(tmp_path: Path):
    """make(raw_spec) -> sweep DIR with DIR/sweep.yaml written (runs are added by the test)."""

    def make(raw: dict[str, Any]) -> Path:
        out = tmp_path / "sweep"
        (out / "runs").mkdir(parents=True)
        spec = parse_spec(raw, name="fake")
        (out / "sweep.yaml").write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False))
        return out

    return make


@pytest.fixture
def run_cli(capsys):
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    from resnetlab.cli import main

    def _run(*argv: str) -> tuple[int, str, str]:
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err

    return _run
