"""Augmented images/s: resnetlab's in-memory Loader against torchvision's per-sample pipeline, side by side.

Both produce the paper's CIFAR augmentation (pad 4 + random 32x32 crop, random horizontal flip), normalized,
from the same CIFAR-shaped random uint8 data (50,000 x 3 x 32 x 32), batch 128:

- ours: `resnetlab.data.Loader` (batched per-sample augmentation, channels_last output);
- torchvision: RandomCrop(32, padding=4) + RandomHorizontalFlip + ToTensor + Normalize on a Dataset of PIL
  images, through a DataLoader with batch_size=128, num_workers=2, shuffle=True, as the tutorials run it.

Repetitions alternate between the two so that both see the same machine load; warm-up (worker start-up,
first allocations) is excluded; each side's figure is the median over the repetitions. The last line is
`ratio: X` (ours / torchvision).

    python bench/loader.py [--reps 5] [--threads 1] [--device cpu]

Our side runs on one intra-op thread by default (the torchvision side gets two worker processes): on a busy
machine, OpenMP threads that wait for a descheduled peer make small batched ops collapse (measured here on a
shared 2-core box: 2.3k images/s with --threads 2 against 77k with --threads 1).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Iterator

import numpy as np
import torch
import torchvision.transforms as T
from torch.utils.data import DataLoader
from tutorial_data import PILDataset

from resnetlab.data import AugmentConfig, ImageSet, Loader

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def endless(loader) -> Iterator:
    """Batches across epoch boundaries."""
    while True:
        yield from loader


def timed(batches: Iterator, n_batches: int, device: torch.device) -> float:
    """Images per second over the next `n_batches` batches."""
    start = time.perf_counter()
    images = 0
    for _ in range(n_batches):
        x, _ = next(batches)
        images += len(x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return images / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--ours-batches", type=int, default=200, help="batches per repetition for our Loader")
    parser.add_argument("--tv-batches", type=int, default=20, help="batches per repetition for torchvision")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of this process (workers use 1)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.images, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, args.images)
    imageset = ImageSet(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels),
                        [str(k) for k in range(10)])
    ours = Loader(imageset, args.batch_size, augment=AugmentConfig(crop_padding=4, flip=True), mean=MEAN, std=STD,
                  device=device, seed=0, channels_last=True)
    transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(MEAN, STD)])
    tv = DataLoader(PILDataset(images, labels, transform), batch_size=args.batch_size, shuffle=True,
                    num_workers=args.workers, persistent_workers=args.workers > 0)

    ours_batches, tv_batches = endless(ours), endless(tv)
    timed(ours_batches, 10, device)  # warm-up: first allocations
    timed(tv_batches, 10, device)  # warm-up: worker start-up
    ours_rates, tv_rates = [], []
    for rep in range(args.reps):
        ours_rates.append(timed(ours_batches, args.ours_batches, device))
        tv_rates.append(timed(tv_batches, args.tv_batches, device))
        print(f"rep {rep + 1}: resnetlab Loader {ours_rates[-1]:,.0f} images/s, "
              f"torchvision DataLoader {tv_rates[-1]:,.0f} images/s")
    ours_median, tv_median = statistics.median(ours_rates), statistics.median(tv_rates)
    print(f"device {device}, batch {args.batch_size}, {args.threads} thread(s) here, {args.workers} DataLoader workers")
    print(f"resnetlab Loader (crop 4 + flip + normalize, channels_last): {ours_median:,.0f} images/s (median)")
    print(f"torchvision per-sample pipeline:                            {tv_median:,.0f} images/s (median)")
    print(f"ratio: {ours_median / tv_median:.1f}")


if __name__ == "__main__":
    main()
