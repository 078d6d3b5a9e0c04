"""CIFAR pickles and IDX files: known pixels and labels round-trip; bad or missing files are one clear UserError."""

from __future__ import annotations

import gzip
import pickle

import numpy as np
import pytest
import torch
from support.official_formats import CIFAR10_NAMES, idx_bytes, py2_pickle, write_cifar10, write_cifar100, write_idx

from resnetlab.data import load_dataset, sources
from resnetlab.data.sources import IDX_CLASSES, read_pickle
from resnetlab.errors import UserError

# ---------------------------------------------------------------------------------------------- CIFAR


def test_generated_cifar_files_are_python2_pickles_with_bytes_keys(tmp_path):
    """The test files are faithful: encoding="bytes" gives bytes keys, as with the official files."""
    write_cifar10(tmp_path)
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    assert set(batch) == {b"batch_label", b"labels", b"data", b"filenames"}
    assert batch[b"data"].dtype == np.uint8 and batch[b"data"].shape == (4, 3072)


def test_cifar10_round_trip(tmp_path):
    written = write_cifar10(tmp_path, per_batch=4)
    train = load_dataset("cifar10", root=tmp_path, split="train")
    test = load_dataset("cifar10", root=tmp_path, split="test")
    assert train.classes == CIFAR10_NAMES
    assert train.images.dtype == torch.uint8 and train.images.shape == (20, 3, 32, 32)
    expected = np.concatenate([written[f"data_batch_{k}"][0] for k in range(1, 6)])
    assert torch.equal(train.images, torch.from_numpy(expected))
    assert train.labels.dtype == torch.int64
    assert train.labels.tolist() == sum((written[f"data_batch_{k}"][1] for k in range(1, 6)), [])
    assert torch.equal(test.images, torch.from_numpy(written["test_batch"][0]))
    assert test.labels.tolist() == written["test_batch"][1]


def test_cifar_pixel_layout_is_channel_major(tmp_path):
    """The official row of 3072 bytes is 1024 red, 1024 green, 1024 blue values, each row-major."""
    write_cifar10(tmp_path, per_batch=1)
    raw = read_pickle(tmp_path / "cifar-10-batches-py" / "test_batch")["data"][0]
    image = load_dataset("cifar10", root=tmp_path, split="test").images[0]
    assert image[1, 0, 5] == raw[1024 + 5] and image[2, 3, 7] == raw[2048 + 3 * 32 + 7]


def test_cifar100_fine_and_coarse(tmp_path):
    written = write_cifar100(tmp_path, n=6)
    fine = load_dataset("cifar100", root=tmp_path, split="train")
    coarse = load_dataset("cifar100", root=tmp_path, split="test", coarse=True)
    images, fine_labels, _ = written["train"]
    assert torch.equal(fine.images, torch.from_numpy(images))
    assert fine.labels.tolist() == fine_labels and len(fine.classes) == 100 and fine.classes[3] == "fine3"
    assert coarse.labels.tolist() == written["test"][2] and len(coarse.classes) == 20
    assert torch.equal(coarse.images, torch.from_numpy(written["test"][0]))


def test_cifar_missing_names_the_folder_and_the_download_option(tmp_path):
    with pytest.raises(UserError, match=r"cifar-10-batches-py/ in .*data.download=true.*download=True"):
        load_dataset("cifar10", root=tmp_path)


def test_cifar_missing_batch_file(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(UserError, match="data_batch_3 is missing"):
        load_dataset("cifar10", root=tmp_path)


def test_cifar_truncated_pickle_names_the_file(tmp_path):
    write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(UserError, match="data_batch_2 is not a readable CIFAR pickle"):
        load_dataset("cifar10", root=tmp_path)


def test_cifar_label_count_mismatch_names_the_file(tmp_path):
    write_cifar10(tmp_path)
    py2_pickle({"labels": [1, 2, 3], "data": np.zeros((4, 3072), np.uint8)}, tmp_path / "cifar-10-batches-py" /
               "test_batch")
    with pytest.raises(UserError, match="test_batch has 3 labels for 4 images"):
        load_dataset("cifar10", root=tmp_path, split="test")


def test_cifar_label_out_of_range(tmp_path):
    write_cifar10(tmp_path)
    py2_pickle({"labels": [1, 2, 3, 10], "data": np.zeros((4, 3072), np.uint8)}, tmp_path / "cifar-10-batches-py" /
               "test_batch")
    with pytest.raises(UserError, match="test_batch has labels outside 0..9"):
        load_dataset("cifar10", root=tmp_path, split="test")


def test_pickle_that_would_run_code_is_refused(tmp_path):
    """A data file is only ever containers and numpy arrays: anything else is rejected before it runs."""
    write_cifar10(tmp_path)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps({"data": Evil()}, protocol=2))
    with pytest.raises(UserError, match=r"test_batch is not a readable CIFAR pickle \(it references \w+\.print"):
        load_dataset("cifar10", root=tmp_path, split="test")


# ------------------------------------------------------------------------------------------------ IDX


def _digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8)


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("name,folder", [("mnist", "mnist"), ("fashion-mnist", "fashion-mnist")])
def test_idx_round_trip(tmp_path, gz, name, folder):
    images, labels = _digits(7, 1)
    test_images, test_labels = _digits(3, 2)
    write_idx(tmp_path / folder, "train", images, labels, gz)
    write_idx(tmp_path / folder, "t10k", test_images, test_labels, gz)
    train = load_dataset(name, root=tmp_path)
    test = load_dataset(name, root=tmp_path, split="test")
    assert train.images.shape == (7, 1, 28, 28) and train.images.dtype == torch.uint8
    assert torch.equal(train.images[:, 0], torch.from_numpy(images))
    assert train.labels.tolist() == labels.tolist() and train.labels.dtype == torch.int64
    assert torch.equal(test.images[:, 0], torch.from_numpy(test_images))
    assert test.labels.tolist() == test_labels.tolist()
    assert train.classes == IDX_CLASSES[name]


def test_idx_files_directly_in_root(tmp_path):
    images, labels = _digits(5, 3)
    write_idx(tmp_path, "t10k", images, labels, gz=False)
    test = load_dataset("mnist", root=tmp_path, split="test")
    assert torch.equal(test.images[:, 0], torch.from_numpy(images))


def test_default_root_is_resnetlab_data(tmp_path, monkeypatch):
    monkeypatch.setenv("RESNETLAB_DATA", str(tmp_path))
    images, labels = _digits(4, 4)
    write_idx(tmp_path / "mnist", "train", images, labels, gz=True)
    assert load_dataset("mnist").labels.tolist() == labels.tolist()


def test_idx_missing_says_where_and_how(tmp_path, monkeypatch):
    system_dir = tmp_path / "usr-share-datasets-fashion-mnist"
    monkeypatch.setattr(sources, "FMNIST_SYSTEM_DIR", system_dir)
    with pytest.raises(UserError) as err:
        load_dataset("fashion-mnist", root=tmp_path, split="test")
    message = str(err.value)
    assert "t10k-images-idx3-ubyte" in message and str(tmp_path / "fashion-mnist") in message
    assert str(system_dir) in message
    assert "data.download=true" in message and "apt-get install dataset-fashion-mnist" in message
    assert "\n" not in message


@pytest.mark.parametrize("gz", [True, False])
def test_idx_truncated_names_the_file(tmp_path, gz):
    images, labels = _digits(6, 5)
    image_file, _ = write_idx(tmp_path / "mnist", "train", images, labels, gz)
    data = idx_bytes(images)[:-100]
    image_file.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(UserError, match=f"{image_file.name} is truncated"):
        load_dataset("mnist", root=tmp_path)
    write_idx(tmp_path / "mnist", "train", images, labels, gz)  # repaired: read afresh, nothing kept from before
    assert torch.equal(load_dataset("mnist", root=tmp_path).images[:, 0], torch.from_numpy(images))


def test_idx_corrupt_gzip_names_the_file(tmp_path):
    images, labels = _digits(6, 5)
    image_file, _ = write_idx(tmp_path / "mnist", "train", images, labels, gz=True)
    image_file.write_bytes(image_file.read_bytes()[:40])
    with pytest.raises(UserError, match=f"{image_file.name} could not be read"):
        load_dataset("mnist", root=tmp_path)


def test_idx_wrong_magic(tmp_path):
    images, labels = _digits(6, 5)
    _, label_file = write_idx(tmp_path / "mnist", "train", images, labels, gz=False)
    label_file.write_bytes(idx_bytes(images))  # an image file where the labels should be
    with pytest.raises(UserError, match=f"{label_file.name} is not an IDX file with 1-d unsigned bytes"):
        load_dataset("mnist", root=tmp_path)


def test_idx_label_count_mismatch(tmp_path):
    images, labels = _digits(6, 5)
    _, label_file = write_idx(tmp_path / "mnist", "train", images, labels[:5], gz=True)
    with pytest.raises(UserError, match=f"{label_file.name} has 5 labels for 6 images"):
        load_dataset("mnist", root=tmp_path)


# ----------------------------------------------------------------------------------------------- misc


def test_unknown_name_and_bad_split(tmp_path):
    with pytest.raises(UserError, match="unknown data set 'imagenet'; use one of cifar10"):
        load_dataset("imagenet", root=tmp_path)
    with pytest.raises(UserError, match="carved from train"):
        load_dataset("cifar10", root=tmp_path, split="val")
    with pytest.raises(UserError, match="cifar100 only"):
        load_dataset("mnist", root=tmp_path, coarse=True)


def test_channels_and_image_size_options(tmp_path):
    images, labels = _digits(3, 6)
    write_idx(tmp_path / "mnist", "train", images, labels, gz=True)
    rgb = load_dataset("mnist", root=tmp_path, channels=3)
    assert rgb.images.shape == (3, 3, 28, 28)
    assert all(torch.equal(rgb.images[:, c], torch.from_numpy(images)) for c in range(3))
    big = load_dataset("mnist", root=tmp_path, image_size=32)
    assert big.images.shape == (3, 1, 32, 32) and big.images.dtype == torch.uint8
