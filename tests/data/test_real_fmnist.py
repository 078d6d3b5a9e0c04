"""The real Fashion-MNIST (Debian's dataset-fashion-mnist): official counts, balance and a known label."""

from __future__ import annotations

import torch

from resnetlab.data import channel_stats, load_dataset, split_train_val


def test_real_fashion_mnist(real_fmnist, tmp_path):
    # An empty root: the files must be found in the Debian location.
    train = load_dataset("fashion-mnist", root=tmp_path, split="train")
    test = load_dataset("fashion-mnist", root=tmp_path, split="test")
    assert train.images.shape == (60_000, 1, 28, 28) and train.images.dtype == torch.uint8
    assert test.images.shape == (10_000, 1, 28, 28)
    assert torch.bincount(train.labels).tolist() == [6_000] * 10
    assert torch.bincount(test.labels).tolist() == [1_000] * 10
    assert int(test.labels[0]) == 9 and test.classes[9] == "Ankle boot"
    mean, std = channel_stats(train)
    assert abs(mean[0] - 0.2860) < 1e-4 and abs(std[0] - 0.3530) < 1e-4  # the well-known statistics
    fit, val = split_train_val(train, 5_000, seed=0)
    assert len(fit) == 55_000 and torch.bincount(val.labels).tolist() == [500] * 10
