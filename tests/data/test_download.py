"""download=True: the official archives are fetched with torchvision's downloader and md5-checked.

There is no network here, so torchvision's `download_url` is replaced by a function that writes a generated
archive in the official format where the real download would go.
"""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pytest
import torch
from support.official_formats import idx_bytes, tar_gz, write_cifar10
from torchvision.datasets import utils as tv_utils

from resnetlab.data import download, load_dataset, sources
from resnetlab.errors import UserError


def _fake_download(source_files: dict, calls: list):
    """A stand-in for torchvision's download_url that copies `source_files[url]` (and ignores md5)."""

    def download_url(url, root, filename=None, md5=None, **_):
        calls.append(url)
        if url not in source_files:
            raise OSError("network is unreachable")
        shutil.copy(source_files[url], f"{root}/{filename}")

    return download_url


@pytest.fixture
def cifar_archive(tmp_path):
    """An official-format cifar-10-python.tar.gz, its md5, and the batches it holds."""
    src = tmp_path / "src"
    written = write_cifar10(src)
    archive = tar_gz(src / "cifar-10-batches-py", tmp_path / "cifar-10-python.tar.gz")
    return archive, tv_utils.calculate_md5(str(archive)), written


def _patch_remote(monkeypatch, dataset: str, key: str, md5: str) -> download.Remote:
    remote = download.REMOTES[dataset][key]
    patched = download.Remote(remote.urls, remote.filename, md5)
    monkeypatch.setitem(download.REMOTES[dataset], key, patched)
    return patched


def test_cifar10_download_extracts_and_loads(tmp_path, monkeypatch, cifar_archive):
    archive, md5, written = cifar_archive
    remote = _patch_remote(monkeypatch, "cifar10", "archive", md5)
    calls = []
    monkeypatch.setattr(tv_utils, "download_url", _fake_download({remote.urls[0]: archive}, calls))
    root = tmp_path / "root"
    test = load_dataset("cifar10", root=root, split="test", download=True)
    assert calls == ["https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"]
    assert torch.equal(test.images, torch.from_numpy(written["test_batch"][0]))
    assert (root / "cifar-10-batches-py" / "data_batch_5").is_file()
    load_dataset("cifar10", root=root, split="train", download=True)  # now on disk: no second download
    assert len(calls) == 1


def test_wrong_md5_is_rejected_and_the_file_deleted(tmp_path, monkeypatch, cifar_archive):
    archive, _, _ = cifar_archive
    remote = download.REMOTES["cifar10"]["archive"]  # the official md5, which our archive does not have
    monkeypatch.setattr(tv_utils, "download_url", _fake_download({remote.urls[0]: archive}, []))
    root = tmp_path / "root"
    with pytest.raises(UserError, match=r"cifar-10-python.tar.gz with the official md5 "
                                        r"c58f30108f718f92721af3b95e74349a \(.* gave md5 \w+ \(file deleted\)"):
        load_dataset("cifar10", root=root, download=True)
    assert not (root / "cifar-10-python.tar.gz").exists()
    assert not (root / "cifar-10-batches-py").exists()


def test_network_failure_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setattr(tv_utils, "download_url", _fake_download({}, []))
    with pytest.raises(UserError, match="could not get .*cifar-100-python.tar.gz .*network is unreachable"):
        load_dataset("cifar100", root=tmp_path, download=True)


def test_truncated_archive_with_right_md5_is_not_extracted(tmp_path, monkeypatch, cifar_archive):
    archive, _, _ = cifar_archive
    archive.write_bytes(archive.read_bytes()[:300])
    remote = _patch_remote(monkeypatch, "cifar10", "archive", tv_utils.calculate_md5(str(archive)))
    monkeypatch.setattr(tv_utils, "download_url", _fake_download({remote.urls[0]: archive}, []))
    with pytest.raises(UserError, match="cifar-10-python.tar.gz could not be extracted"):
        load_dataset("cifar10", root=tmp_path / "root", download=True)
    assert not (tmp_path / "root" / "cifar-10-batches-py").exists()


def test_fashion_mnist_download_writes_gz_files(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "FMNIST_SYSTEM_DIR", tmp_path / "no-system-copy")
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8), np.arange(5, dtype=np.uint8)
    files = {}
    for name, array in (("t10k-images-idx3-ubyte.gz", images), ("t10k-labels-idx1-ubyte.gz", labels)):
        path = tmp_path / name
        path.write_bytes(gzip.compress(idx_bytes(array)))
        remote = _patch_remote(monkeypatch, "fashion-mnist", name, tv_utils.calculate_md5(str(path)))
        files[remote.urls[0]] = path
    calls = []
    monkeypatch.setattr(tv_utils, "download_url", _fake_download(files, calls))
    root = tmp_path / "root"
    test = load_dataset("fashion-mnist", root=root, split="test", download=True)
    assert sorted(calls) == sorted(files)
    assert all(url.startswith("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/") for url in calls)
    assert torch.equal(test.images[:, 0], torch.from_numpy(images)) and test.labels.tolist() == list(range(5))
    assert (root / "fashion-mnist" / "t10k-images-idx3-ubyte.gz").is_file()


def test_mnist_tries_the_next_mirror(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    images, labels = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8), np.array([1, 2, 3], dtype=np.uint8)
    files = {}
    for name, array in (("train-images-idx3-ubyte.gz", images), ("train-labels-idx1-ubyte.gz", labels)):
        path = tmp_path / name
        path.write_bytes(gzip.compress(idx_bytes(array)))
        remote = _patch_remote(monkeypatch, "mnist", name, tv_utils.calculate_md5(str(path)))
        files[remote.urls[1]] = path  # only the second mirror answers
    calls = []
    monkeypatch.setattr(tv_utils, "download_url", _fake_download(files, calls))
    train = load_dataset("mnist", root=tmp_path / "root", download=True)
    assert train.labels.tolist() == [1, 2, 3]
    assert calls[0].startswith("https://ossci-datasets.s3.amazonaws.com/mnist/")
    assert calls[1].startswith("http://yann.lecun.com/exdb/mnist/")
