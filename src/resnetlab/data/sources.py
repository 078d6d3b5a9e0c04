"""Readers for the official files: CIFAR-10/100 python pickles, MNIST / Fashion-MNIST IDX, and image folders.

`load_dataset` returns an `ImageSet` of the official split. Every file is checked as it is read (pickle
structure, IDX magic number, dimensions and byte count, label count = image count, label range): a bad file is
a UserError that names it, and nothing read from it is kept.
"""

from __future__ import annotations

import gzip
import logging
import os
import pickle
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from resnetlab.data.download import REMOTES, fetch, fetch_archive
from resnetlab.data.folder import load_imagefolder
from resnetlab.data.imageset import ImageSet, convert_channels, resize_images
from resnetlab.errors import UserError

log = logging.getLogger(__name__)

FMNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian package dataset-fashion-mnist
DOWNLOAD_HINT = "--set data.download=true (Python: download=True)"
NAMES = ("cifar10", "cifar100", "fashion-mnist", "mnist", "imagefolder:PATH")
_ALIASES = {"cifar-10": "cifar10", "cifar-100": "cifar100", "fmnist": "fashion-mnist",
            "fashion_mnist": "fashion-mnist", "fashionmnist": "fashion-mnist"}


def default_root() -> Path:
    """$RESNETLAB_DATA, else ~/.cache/resnetlab/data."""
    env = os.environ.get("RESNETLAB_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "resnetlab" / "data"


def load_dataset(name: str, root: str | os.PathLike | None = None, split: str = "train", download: bool = False,
                 *, image_size: int | None = None, channels: int | None = None, coarse: bool = False,
                 max_bytes: int | None = None) -> ImageSet:
    """Load one official split of a data set into memory.

    Args:
        name: cifar10, cifar100, fashion-mnist, mnist or imagefolder:PATH.
        root: the folder holding `cifar-10-batches-py/`, `cifar-100-python/`, or `fashion-mnist/` / `mnist/`
            with the four IDX files (the files may also sit in `root` itself). Default: $RESNETLAB_DATA or
            ~/.cache/resnetlab/data. Fashion-MNIST is also looked for in /usr/share/datasets/fashion-mnist.
        split: "train" or "test" (image folders also "val" when they have a val/ folder).
        download: fetch the official files (md5-checked) when they are not found.
        image_size: resize the shorter side to this and center-crop a square (None = keep the size).
        channels: convert to 1 or 3 channels (None = as stored; image folders default to 3).
        coarse: cifar100 only: the 20 super-classes instead of the 100 classes.
        max_bytes: image folders only: the largest decoded size kept in memory (see `load_imagefolder`).

    Returns:
        The split as an ImageSet (uint8 N x C x H x W, int64 labels, class names).
    """
    key = name.strip()
    if coarse and _ALIASES.get(key.lower(), key.lower()) != "cifar100":
        raise UserError(f"data.coarse applies to cifar100 only, not {key}; remove it")
    if key.lower().startswith("imagefolder:"):

        return load_imagefolder(key.split(":", 1)[1], split, image_size=image_size, channels=channels,
                                max_bytes=max_bytes)
    key = _ALIASES.get(key.lower(), key.lower())
    if key not in ("cifar10", "cifar100", "fashion-mnist", "mnist"):
        raise UserError(f"unknown data set {name!r}; use one of {', '.join(NAMES)}")
    if split not in ("train", "test"):
        raise UserError(f"{key} has official splits train and test, not {split!r}; the validation split is "
                        "carved from train (data.val_size)")
    base = Path(root).expanduser() if root else default_root()
    if key.startswith("cifar"):
        imageset = _load_cifar(key, base, split, download, coarse)
    else:
        imageset = _load_idx(key, base, split, download)
    return _adapt(imageset, image_size, channels)


def is_available(name: str, root: str | os.PathLike | None = None) -> bool:
    """Whether `load_dataset(name, root)` finds the train and test files on this machine, without downloading.

    Only looks for the files (CIFAR batches, the four IDX files, an image folder); it reads none of them.
    """
    key = name.strip()
    if key.lower().startswith("imagefolder:"):
        return Path(key.split(":", 1)[1]).expanduser().is_dir()
    key = _ALIASES.get(key.lower(), key.lower())
    base = Path(root).expanduser() if root else default_root()
    if key in CIFAR:
        layout = CIFAR[key]
        return all((base / layout.folder / f).is_file() for f in (*layout.train, *layout.test, layout.meta))
    if key in IDX_FOLDERS:
        try:
            for split in ("train", "test"):
                _idx_files(key, base, split, download=False)
        except UserError:
            return False
        return True
    raise UserError(f"unknown data set {name!r}; use one of {', '.join(NAMES)}")


def first_available(names: Sequence[str], root: str | os.PathLike | None = None) -> str | None:
    """The first of `names` whose files are on this machine (see `is_available`), or None.

    A notebook written for CIFAR-10 runs anywhere with `first_available(["cifar10", "fashion-mnist"])`.
    """
    return next((name for name in names if is_available(name, root)), None)


def _adapt(imageset: ImageSet, image_size: int | None, channels: int | None) -> ImageSet:
    images = imageset.images
    if channels is not None and channels != images.shape[1]:
        log.info("converting %d-channel images to %d channels", images.shape[1], channels)
        images = convert_channels(images, channels)
    if image_size is not None and tuple(images.shape[2:]) != (image_size, image_size):
        log.info("resizing %dx%d images to %dx%d in memory", images.shape[2], images.shape[3], image_size, image_size)
        images = resize_images(images, image_size)
    return imageset if images is imageset.images else ImageSet(images, imageset.labels, imageset.classes)


def _check_labels(labels: np.ndarray, n_images: int, n_classes: int, path: Path) -> torch.Tensor:
    if len(labels) != n_images:
        raise UserError(f"{path} has {len(labels)} labels for {n_images} images; the file is corrupt, replace it")
    out = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    if len(out) and (int(out.min()) < 0 or int(out.max()) >= n_classes):
        raise UserError(f"{path} has labels outside 0..{n_classes - 1}; the file is corrupt, replace it")
    return out


# ------------------------------------------------------------------------------------------------ CIFAR


@dataclass(frozen=True)
class CifarLayout:
    """Where one CIFAR variant keeps its batches and which pickle keys hold labels and class names."""

    folder: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    meta: str
    labels: str
    names: str


CIFAR = {
    "cifar10": CifarLayout("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
                           "batches.meta", "labels", "label_names"),
    "cifar100": CifarLayout("cifar-100-python", ("train",), ("test",), "meta", "fine_labels", "fine_label_names"),
}
CIFAR100_COARSE = ("coarse_labels", "coarse_label_names")
_CIFAR_SHAPE = (3, 32, 32)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: a data file must never run code."""

    _ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
                ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"it references {module}.{name}, which a data file must not")
        if module.startswith("numpy.core."):  # Python-2 era name; numpy 2 moved it to numpy._core
            module = module.replace("numpy.core.", "numpy._core.") if hasattr(np, "_core") else module
        return super().find_class(module, name)


def read_pickle(path: Path) -> dict[str, Any]:
    """A CIFAR pickle as a dict with str keys (the official files are Python-2 pickles: bytes keys)."""
    try:
        with open(path, "rb") as f:
            data = _ArrayUnpickler(f, encoding="bytes").load()
    except Exception as exc:  # truncated or garbled pickles fail in many ways (EOF, bad opcode, bad memo...)
        raise UserError(f"{path} is not a readable CIFAR pickle ({exc}); the file is corrupt, replace it") from exc
    if not isinstance(data, dict):
        raise UserError(f"{path} is not a CIFAR pickle (no dict inside); replace it")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in data.items()}


def _get(data: dict[str, Any], key: str, path: Path) -> Any:
    if key not in data:
        raise UserError(f"{path} has no {key!r} entry; the file is corrupt or not from this data set, replace it")
    return data[key]


def _read_cifar_batch(path: Path, label_key: str, n_classes: int) -> tuple[np.ndarray, torch.Tensor]:
    data = read_pickle(path)
    pixels = _get(data, "data", path)
    if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8 or pixels.ndim != 2 \
            or pixels.shape[1] != int(np.prod(_CIFAR_SHAPE)):
        raise UserError(f"{path} does not hold N x 3072 uint8 pixels; the file is corrupt, replace it")
    labels = _check_labels(np.asarray(_get(data, label_key, path)), len(pixels), n_classes, path)
    return pixels.reshape(-1, *_CIFAR_SHAPE), labels


def _load_cifar(key: str, root: Path, split: str, download: bool, coarse: bool) -> ImageSet:
    layout = CIFAR[key]
    folder = root / layout.folder
    if not folder.is_dir():
        if not download:
            raise UserError(f"{key} not found: no {layout.folder}/ in {root}; download it with {DOWNLOAD_HINT}, "
                            f"or extract the official archive there (or point data.root / --data-dir at it)")
        folder = fetch_archive(REMOTES[key]["archive"], root, layout.folder)
    label_key, names_key = CIFAR100_COARSE if coarse else (layout.labels, layout.names)
    files = [folder / f for f in (*getattr(layout, split), layout.meta)]
    for f in files:
        if not f.is_file():
            raise UserError(f"{f} is missing; the {layout.folder}/ folder is incomplete: delete it and download "
                            f"again with {DOWNLOAD_HINT}")
    meta = read_pickle(files[-1])
    names = [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in _get(meta, names_key, files[-1])]
    batches = [_read_cifar_batch(f, label_key, len(names)) for f in files[:-1]]
    images = torch.from_numpy(np.concatenate([b[0] for b in batches]))
    labels = torch.cat([b[1] for b in batches])
    log.info("%s %s: %d images from %s", key, split, len(labels), folder)
    return ImageSet(images, labels, names)


# -------------------------------------------------------------------------------------------------- IDX


IDX_MAGIC = {1: 2049, 3: 2051}  # 0x00000801 labels, 0x00000803 images (unsigned bytes)
IDX_FOLDERS = {"mnist": ("mnist", "MNIST/raw"), "fashion-mnist": ("fashion-mnist", "FashionMNIST/raw")}
IDX_CLASSES = {
    "mnist": [str(d) for d in range(10)],
    "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"],
}


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file (raw or gzip, told apart by content) as a uint8 array, checked by magic, dims and size."""
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise UserError(f"{path} could not be read ({exc}); the file is corrupt, replace it") from exc
    header = 4 + 4 * ndim
    if len(raw) < header or int.from_bytes(raw[:4], "big") != IDX_MAGIC[ndim]:
        raise UserError(f"{path} is not an IDX file with {ndim}-d unsigned bytes (magic {IDX_MAGIC[ndim]}); "
                        "replace it")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    if len(raw) != header + int(np.prod(dims)):
        state = "truncated" if len(raw) < header + int(np.prod(dims)) else "longer than its header says"
        raise UserError(f"{path} is {state} ({len(raw) - header} bytes of data for dims {dims}); replace it")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _idx_dirs(key: str, root: Path) -> list[Path]:
    dirs = [root / sub for sub in IDX_FOLDERS[key]] + [root]
    return dirs + ([FMNIST_SYSTEM_DIR] if key == "fashion-mnist" else [])


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def _idx_files(key: str, root: Path, split: str, download: bool) -> tuple[Path, Path]:
    prefix = "train" if split == "train" else "t10k"
    stems = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    dirs = _idx_dirs(key, root)
    for folder in dirs:
        found = [_find(folder, s) for s in stems]
        if found[0] and found[1]:
            return found[0], found[1]
    if not download:
        extra = "; or apt-get install dataset-fashion-mnist" if key == "fashion-mnist" else ""
        raise UserError(f"{key} {split} not found ({stems[0]}[.gz] and {stems[1]}[.gz] in "
                        f"{', '.join(map(str, dirs))}); download it with {DOWNLOAD_HINT}{extra}")
    target = root / IDX_FOLDERS[key][0]
    images, labels = (fetch(REMOTES[key][s + ".gz"], target) for s in stems)
    return images, labels


def _load_idx(key: str, root: Path, split: str, download: bool) -> ImageSet:
    image_file, label_file = _idx_files(key, root, split, download)
    pixels = read_idx(image_file, 3)
    labels = _check_labels(read_idx(label_file, 1), len(pixels), len(IDX_CLASSES[key]), label_file)
    images = torch.from_numpy(pixels.copy()).unsqueeze(1)  # (N, 1, H, W); copy: frombuffer is read-only
    log.info("%s %s: %d images from %s", key, split, len(labels), image_file.parent)
    return ImageSet(images, labels, list(IDX_CLASSES[key]))
