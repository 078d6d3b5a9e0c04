"""Official download locations and md5 sums, and fetching them with torchvision's download utilities.

The md5 sums are those of the official archives (the same ones torchvision checks). Only downloaded files are
checked against them: Debian's `dataset-fashion-mnist` ships recompressed .gz files whose md5 differs, so
files found on disk are checked by their headers and counts instead (see sources.py).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from resnetlab.errors import UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Remote:
    """One official file: the URLs to try in order, its name on disk and its md5."""

    urls: tuple[str, ...]
    filename: str
    md5: str


_CIFAR = "https://www.cs.toronto.edu/~kriz/"
_MNIST = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
_FMNIST = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)


def _idx_remotes(mirrors: tuple[str, ...], md5s: dict[str, str]) -> dict[str, Remote]:
    return {name: Remote(tuple(m + name for m in mirrors), name, md5) for name, md5 in md5s.items()}


# Archives (CIFAR: one tar.gz holding the batch folder) and IDX files (one .gz per file), by data set.
REMOTES: dict[str, dict[str, Remote]] = {
    "cifar10": {"archive": Remote((_CIFAR + "cifar-10-python.tar.gz",), "cifar-10-python.tar.gz",
                                  "c58f30108f718f92721af3b95e74349a")},
    "cifar100": {"archive": Remote((_CIFAR + "cifar-100-python.tar.gz",), "cifar-100-python.tar.gz",
                                   "eb9058c3a382ffc7106e4002c42a8d85")},
    "mnist": _idx_remotes(_MNIST, {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    }),
    "fashion-mnist": _idx_remotes(_FMNIST, {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    }),
}


def fetch(remote: Remote, folder: Path) -> Path:
    """Download `remote` into `folder` (trying each URL in turn) and check its md5; returns the file.

    A file already there with the right md5 is not downloaded again. A file with the wrong md5 is deleted
    (nothing is kept from a bad download); when no URL gives the right file, a UserError names it.
    """
    from torchvision.datasets import utils as tv_utils  # here, not at the top: importing it costs seconds

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / remote.filename
    errors = []
    for url in remote.urls:
        log.info("downloading %s to %s", url, folder)
        try:
            # torchvision checks the md5 too; we check again below so that a file put there by any route
            # (a pre-existing one, a proxy, a patched downloader) is verified the same way.
            tv_utils.download_url(url, str(folder), filename=remote.filename, md5=remote.md5)
        except Exception as exc:  # network errors come in many types; report them all
            errors.append(f"{url}: {exc}")
        if path.exists():
            actual = tv_utils.calculate_md5(str(path))
            if actual == remote.md5:
                return path
            path.unlink()
            errors.append(f"{url} gave md5 {actual} (file deleted)")
    raise UserError(f"could not get {path} with the official md5 {remote.md5} ({'; '.join(errors)}); check the "
                    "network, or download it by hand")


def fetch_archive(remote: Remote, root: Path, folder_name: str) -> Path:
    """Download and md5-check an archive, extract it, and move `folder_name` into `root` in one step.

    Extraction goes to a temporary folder first, so an interrupted or failed extraction never leaves a
    half-filled `root / folder_name` behind.
    """
    from torchvision.datasets import utils as tv_utils  # here, not at the top: importing it costs seconds

    archive = fetch(remote, root)
    target = root / folder_name
    with tempfile.TemporaryDirectory(dir=root, prefix=".extract-") as tmp:
        try:
            tv_utils.extract_archive(str(archive), tmp)
        except Exception as exc:  # tarfile, zlib and EOF errors all mean a bad archive
            raise UserError(f"{archive} could not be extracted ({exc}); delete it and download again") from exc
        extracted = Path(tmp) / folder_name
        if not extracted.is_dir():
            raise UserError(f"{archive} does not contain {folder_name}/; delete it and download again")
        if target.exists():
            shutil.rmtree(target)
        extracted.replace(target)
    return target
