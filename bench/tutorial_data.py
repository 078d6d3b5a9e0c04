"""The tutorials' data path, shared by the benchmarks: one PIL image per sample, transformed in a worker; and
`endless`, batches across epoch boundaries."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image
from torch.utils.data import Dataset


class PILDataset(Dataset):
    """The tutorials' Dataset: PIL images, a torchvision transform per sample in the DataLoader worker."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: T.Compose) -> None:
        self.images = [Image.fromarray(img) for img in images]  # (H, W, C) uint8 each
        self.labels = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.images[i]), self.labels[i]


def endless(loader: Iterable) -> Iterator:
    """Batches across epoch boundaries."""
    while True:
        yield from loader
