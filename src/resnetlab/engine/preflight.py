"""Checks of a config that need no torch, run before the heavy imports: a typo fails in a second, not a minute.

`resnetlab train` imports torch, reads the data and builds the model before its first step (30-60 s on a loaded
machine). A wrong model name, a --data-dir that does not exist, an --out that holds a run, or a size that cannot
fit in memory is known before any of that; `check_start` refuses them with one line. The engine still checks
the same things again where it uses them (a Python caller may skip this module).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from resnetlab.engine.config import Config
from resnetlab.engine.rundir import LOCK
from resnetlab.engine.runlock import lock_run_dir
from resnetlab.errors import UserError
from resnetlab.models.catalog import cifar_spec, model_names, unknown_model_message

# Images and channels of the official data sets (train + test), to size what `data.image_size` keeps in memory.
OFFICIAL_SIZES = {"cifar10": (60_000, 3), "cifar100": (60_000, 3), "fashion-mnist": (70_000, 1), "mnist": (70_000, 1)}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
FIRST_LAYER_CHANNELS = 16  # the narrowest first stage of the zoo (the CIFAR nets): a floor for its activations


def check_start(cfg: Config, *, resume: bool = False) -> None:
    """Refuse, before torch is imported, what would fail only after the data and the model are built.

    Raises:
        UserError: an unknown model (with the nearest name), a missing --data-dir or image folder, an --out that
            is a file or holds a run (without `resume`), or images that cannot fit in this machine's memory.
    """
    check_model_name(cfg.model.name)
    check_data_paths(cfg)
    if not resume and os.environ.get("RANK", "0") == "0":  # under torchrun rank 0 may have created it already
        check_new_out(cfg.train.out_dir)
    check_memory(cfg)


def known_models() -> list[str]:
    """The zoo's names, plus any model registered in this process (register_model) once the registry is loaded."""
    registry = sys.modules.get("resnetlab.models.registry")
    return list(registry.list_models()) if registry is not None else model_names()


def check_model_name(name: str) -> None:
    """A UserError with "did you mean" for a name that is not a model."""
    known = known_models()
    if name not in known and cifar_spec(name) is None:  # resnet47-bottleneck: any valid depth, built on demand
        raise UserError(unknown_model_message(name, known))


def check_data_paths(cfg: Config) -> None:
    """--data-dir must exist (unless the data set is to be downloaded into it); an image folder must exist."""
    d = cfg.data
    if d.root is not None and not d.download:
        root = Path(d.root).expanduser()
        if not root.exists():
            raise UserError(f"--data-dir {d.root} does not exist; give the folder that holds {d.name}, or add "
                            "--set data.download=true to download it there")
        if not root.is_dir():
            raise UserError(f"--data-dir {d.root} is a file; give the folder that holds the data set")
    kind, _, path = d.name.partition(":")
    if kind.strip().lower() == "imagefolder" and not Path(path).expanduser().is_dir():
        raise UserError(f"image folder {path!r} (data.name={d.name}) does not exist or is not a folder")


def check_new_out(out_dir: str | None) -> None:
    """A new run's --out must be a new or empty folder."""
    if not out_dir:
        return
    run_dir = Path(out_dir).expanduser()
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--out {run_dir} is a file; give a folder for the run")
    if (run_dir / LOCK).is_file():
        with lock_run_dir(run_dir):  # a run that trains there now: its PID says more than "already exists"
            pass
    if run_dir.is_dir() and any(p.name != LOCK for p in run_dir.iterdir()):
        raise UserError(f"{run_dir} already exists; choose a new --out, or add --resume to continue that run")


# --------------------------------------------------------------------------------------------------- memory


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (MemAvailable), or None where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def check_memory(cfg: Config, available: int | None = None) -> None:
    """Refuse a data.image_size (kept in memory) or data.resize (per batch) that cannot fit, naming the figure."""
    available = available_memory() if available is None else available
    if available is None:
        return
    d = cfg.data
    count, channels = _image_count(d.name)
    channels = d.channels or channels
    if d.image_size is not None and count:
        need = count * channels * d.image_size ** 2  # uint8 in memory
        if need > available:
            raise UserError(f"data.image_size={d.image_size} keeps {count:,} images of {channels}x{d.image_size}x"
                            f"{d.image_size} pixels in memory: {format_bytes(need)}, more than the "
                            f"{format_bytes(available)} available; lower data.image_size")
    if d.resize is not None:
        batch = max(d.batch_size, cfg.eval.batch_size)
        need = batch * (channels + FIRST_LAYER_CHANNELS) * d.resize ** 2 * 4  # float32 batch + first layer, a floor
        if need > available:
            raise UserError(f"data.resize={d.resize} makes one batch of {batch} images and its first layer at least "
                            f"{format_bytes(need)}, more than the {format_bytes(available)} of memory available; "
                            "lower data.resize (or the batch sizes)")


def _image_count(name: str) -> tuple[int, int]:
    """(images, channels) of a data set, counted without reading an image (0 when unknown)."""
    kind, _, path = name.partition(":")
    if kind.strip().lower() == "imagefolder":
        folder = Path(path).expanduser()
        count = sum(1 for _, _, files in os.walk(folder) for f in files if f.lower().endswith(IMAGE_SUFFIXES))
        return count, 3
    aliases = {"cifar-10": "cifar10", "cifar-100": "cifar100", "fmnist": "fashion-mnist"}
    key = aliases.get(name.strip().lower(), name.strip().lower())
    return OFFICIAL_SIZES.get(key, (0, 3))


def format_bytes(n: float) -> str:
    """1234567 -> '1.2 MB' (powers of 1000, as disks and `free -h --si` count)."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"
