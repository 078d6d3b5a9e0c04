"""Data that is always there for the example notebooks: which data sets this machine has, and generated shapes."""

from __future__ import annotations

import pytest
import torch
from support.official_formats import write_cifar10

from resnetlab.data import first_available, is_available, load_dataset, write_shapes
from resnetlab.data.synthetic import SHAPES
from resnetlab.errors import UserError


def test_is_available_looks_for_the_files_without_reading_or_downloading(tmp_path):
    assert not is_available("cifar10", root=tmp_path) and not is_available("mnist", root=tmp_path)
    write_cifar10(tmp_path)
    assert is_available("cifar10", root=tmp_path) and is_available("CIFAR-10", root=tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()  # an incomplete folder would fail to load
    assert not is_available("cifar10", root=tmp_path)
    assert is_available(f"imagefolder:{tmp_path}") and not is_available(f"imagefolder:{tmp_path / 'nothing'}")
    with pytest.raises(UserError, match="unknown data set"):
        is_available("imagenet", root=tmp_path)


def test_first_available_falls_back_in_order(tmp_path, tiny_root):
    assert first_available(["cifar10", "mnist"], root=tiny_root) == "mnist"  # tiny_root holds mnist/ only
    assert first_available(["cifar10", "cifar100"], root=tmp_path) is None
    write_cifar10(tmp_path)
    assert first_available(["cifar10", "mnist"], root=tmp_path) == "cifar10"


def test_write_shapes_makes_a_balanced_image_folder_that_is_the_same_every_time(tmp_path):
    name = write_shapes(tmp_path / "a", {"train": 6, "test": 2}, size=20, seed=3)
    assert name == f"imagefolder:{(tmp_path / 'a').resolve()}"
    train, test = load_dataset(name, split="train"), load_dataset(name, split="test")
    assert train.classes == list(SHAPES) and train.images.shape == (24, 3, 20, 20) and len(test) == 8
    assert torch.bincount(train.labels).tolist() == [6, 6, 6, 6]
    again = load_dataset(write_shapes(tmp_path / "b", {"train": 6, "test": 2}, size=20, seed=3), split="train")
    assert torch.equal(again.images, train.images)
    other = load_dataset(write_shapes(tmp_path / "c", {"train": 6}, size=20, seed=4), split="train")
    assert not torch.equal(other.images, train.images)
    # the shape is visible: inside it the image differs clearly from the border around it
    assert (train.images.float().std(dim=(2, 3)).mean(dim=1) > 20).all()
