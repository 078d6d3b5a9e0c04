"""Writers for small data files in the exact official formats, so the readers are tested on the real layout.

- CIFAR: Python-2 pickles (protocol 2, Python-2 `str` for every string, numpy arrays referenced through
  `numpy.core.multiarray`), so that `pickle.load(f, encoding="bytes")` gives bytes keys, as the originals do.
- IDX: big-endian header with the real magic numbers (2051 images, 2049 labels), raw or gzip.
- Image folders: PNG files with known pixels.
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


class Py2Pickler(pickle._Pickler):
    """A protocol-2 pickler that writes str and bytes as Python-2 `str` (BINSTRING), like cPickle did."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj: str | bytes) -> None:
        data = obj.encode("latin1") if isinstance(obj, str) else bytes(obj)
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    def save_global(self, obj, name=None) -> None:
        name = name or obj.__name__
        module = pickle.whichmodule(obj, name).replace("numpy._core", "numpy.core")  # the Python-2 era name
        self.write(pickle.GLOBAL + module.encode() + b"\n" + name.encode() + b"\n")
        self.memoize(obj)

    dispatch[str] = save_py2_str
    dispatch[bytes] = save_py2_str
    dispatch[type] = save_global
    dispatch[type(len)] = save_global


def py2_pickle(obj, path: Path) -> Path:
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    path.write_bytes(buf.getvalue())
    return path


def random_images(n: int, seed: int, shape=(3, 32, 32)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


def write_cifar10(root: Path, per_batch: int = 4, seed: int = 0) -> dict[str, tuple[np.ndarray, list[int]]]:
    """cifar-10-batches-py/ with 5 train batches and a test batch; returns {file: (images N x 3 x 32 x 32, labels)}."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    written = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        images = random_images(per_batch, seed + i)
        labels = [(i + j) % 10 for j in range(per_batch)]
        py2_pickle({"batch_label": f"batch {i}", "labels": labels, "data": images.reshape(per_batch, -1),
                    "filenames": [f"img{j}.png" for j in range(per_batch)]}, folder / name)
        written[name] = (images, labels)
    py2_pickle({"num_cases_per_batch": per_batch, "label_names": CIFAR10_NAMES, "num_vis": 3072},
               folder / "batches.meta")
    return written


def write_cifar100(root: Path, n: int = 6, seed: int = 0) -> dict[str, tuple[np.ndarray, list[int], list[int]]]:
    """cifar-100-python/ with train, test and meta; returns {file: (images, fine labels, coarse labels)}."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    written = {}
    for i, name in enumerate(["train", "test"]):
        images = random_images(n, seed + 10 + i)
        fine = [(7 * j + i) % 100 for j in range(n)]
        coarse = [f % 20 for f in fine]
        py2_pickle({"filenames": [f"f{j}.png" for j in range(n)], "batch_label": name, "fine_labels": fine,
                    "coarse_labels": coarse, "data": images.reshape(n, -1)}, folder / name)
        written[name] = (images, fine, coarse)
    py2_pickle({"fine_label_names": [f"fine{k}" for k in range(100)],
                "coarse_label_names": [f"coarse{k}" for k in range(20)]}, folder / "meta")
    return written


def idx_bytes(array: np.ndarray) -> bytes:
    magic = {1: 2049, 3: 2051}[array.ndim]
    return struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.astype(np.uint8).tobytes()


def write_idx(folder: Path, prefix: str, images: np.ndarray, labels: np.ndarray, gz: bool) -> tuple[Path, Path]:
    """{prefix}-images-idx3-ubyte[.gz] and {prefix}-labels-idx1-ubyte[.gz] in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
        path = folder / f"{prefix}-{kind}-ubyte{'.gz' if gz else ''}"
        data = idx_bytes(array)
        path.write_bytes(gzip.compress(data) if gz else data)
        paths.append(path)
    return paths[0], paths[1]


def write_png(path: Path, array: np.ndarray) -> Path:
    """A PNG of uint8 `array`: H x W is grey (L), H x W x 3 RGB, H x W x 4 RGBA."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def tar_gz(folder: Path, archive: Path) -> Path:
    """The folder as the official archives are: a .tar.gz holding `folder.name/`."""
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return archive
