"""Where a run ran: code and library versions, the device and the CPU kernels, the resolved amp/compile settings.

Recorded in summary.json, in every checkpoint and in report.html. Bit-exact resume is promised on the same
versions and CPU capability only (float rounding differs between AVX2 and AVX-512 kernels), so `--resume` on
another torch version or CPU capability says so in one line (`check_resume`).
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
import torchvision

from resnetlab.version import __version__

log = logging.getLogger(__name__)

# What must match for a resumed run to continue bit-identically.
RESUME_KEYS = ("torch", "cpu_capability")


def git_commit(path: Path | None = None, cwd: Path | None = None) -> str | None:
    """The commit of the checkout resnetlab runs from (with "+dirty" for uncommitted changes), or None.

    Read only when the command runs inside that checkout (`cwd`, default the working directory): a package
    installed from a checkout elsewhere never touches that repository. Git runs with `--no-optional-locks` and
    only `rev-parse` and `diff --quiet`, so it takes no lock (`.git/index.lock`) a user committing there would meet.
    """
    top = _work_tree(path or Path(__file__).resolve().parent)
    here = (cwd or Path.cwd()).resolve()
    if top is None or (here != top and top not in here.parents):
        return None
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    git = ["git", "--no-optional-locks", "-C", str(top)]
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        head = subprocess.run([*git, "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=5,
                              env=env)
        if head.returncode != 0:
            return None
        dirty = subprocess.run([*git, "diff", "--quiet", "HEAD", "--"], capture_output=True, timeout=5, env=env)
        return head.stdout.strip() + ("+dirty" if dirty.returncode == 1 else "")
    return None


def _work_tree(folder: Path) -> Path | None:
    """The top of the git work tree holding `folder` (found by its .git entry, without running git), or None."""
    for candidate in (folder, *folder.parents):
        if (candidate / ".git").exists():
            return candidate.resolve()
    return None


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, platform.processor() elsewhere)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_capability() -> str:
    """The vector instructions PyTorch's CPU kernels use (e.g. AVX2, AVX512), as torch reports them."""
    with contextlib.suppress(AttributeError, RuntimeError):
        return str(torch.backends.cpu.get_cpu_capability())
    return "unknown"


def collect(device: torch.device, *, amp: str | None = None, compiled: bool | None = None) -> dict[str, Any]:
    """The provenance record of a run on `device` (plain values, JSON- and checkpoint-safe)."""
    record: dict[str, Any] = {
        "resnetlab": __version__, "git_commit": git_commit(), "python": platform.python_version(),
        "torch": str(torch.__version__), "torchvision": str(torchvision.__version__), "device": str(device),
        "cpu": cpu_model(), "cpu_capability": cpu_capability(), "threads": torch.get_num_threads(),
        "platform": platform.platform(), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"), "command": " ".join(sys.argv),
    }
    if device.type == "cuda":
        record["gpu"] = torch.cuda.get_device_name(device)
        record["cuda"] = str(torch.version.cuda)
    if amp is not None:
        record["amp"] = amp
    if compiled is not None:
        record["compile"] = compiled
    return record


def check_resume(saved: dict[str, Any] | None, current: dict[str, Any]) -> None:
    """Warn in one line when a run resumes on another torch version or CPU capability than it was saved on."""
    if not saved:
        return
    changed = [f"{key} {saved.get(key)} -> {current.get(key)}" for key in RESUME_KEYS
               if saved.get(key) is not None and saved.get(key) != current.get(key)]
    if changed:
        log.warning("resuming on another %s: the run continues, but bit-identical results are promised only on the "
                    "same torch version and CPU capability", ", ".join(changed))
