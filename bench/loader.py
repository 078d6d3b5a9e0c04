"""Augmented images/s: resnetlab's in-memory Loader against torchvision's per-sample pipeline, case by case.

Each case produces the same augmentation on both sides, normalized, from the same CIFAR-shaped random uint8 data
(50,000 x 3 x 32 x 32), batch 128; every case starts from the paper's CIFAR augmentation (pad 4 + random 32x32 crop,
random horizontal flip):

    crop-flip       just that
    randaugment     + RandAugment (2 ops, magnitude 9 of 31)
    trivialaugment  + TrivialAugmentWide
    autoaugment     + AutoAugment, CIFAR-10 policy
    erasing         + random erasing (p 0.25, zeros)
    erasing-random  + random erasing (p 0.25, normal noise per pixel)
    mix             + Mixup (alpha 0.2) or CutMix (alpha 1.0), one chosen per batch

- ours: `resnetlab.data.Loader` (batched, per-sample parameters, on `--device`, channels_last output);
- torchvision: `torchvision.transforms.v2` on a Dataset of PIL images, one image at a time, through a DataLoader
  with batch_size=128, num_workers=2, shuffle=True, as the tutorials run it; Mixup/CutMix on the collated batch
  (`v2.RandomChoice([v2.MixUp, v2.CutMix])` in the collate function, as torchvision's references do).

Repetitions alternate between the two so that both see the same machine load; warm-up (worker start-up, first
allocations) is excluded; each side's figure is the median over the repetitions. Each case ends with a line
`ratio CASE: X` (ours / torchvision).

    python bench/loader.py [--cases crop-flip,randaugment,...] [--reps 5] [--threads 1] [--device cpu]

Our side runs on one intra-op thread by default (the torchvision side gets two worker processes): on a busy
machine, OpenMP threads that wait for a descheduled peer make small batched ops collapse (measured here on a
shared 2-core box: 2.3k images/s with --threads 2 against 77k with --threads 1).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, default_collate
from torchvision.transforms import v2
from tutorial_data import PILDataset, endless

from resnetlab.data import AugmentConfig, ImageSet, Loader, MixConfig

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
NUM_CLASSES = 10
# case -> (our AugmentConfig extras, our MixConfig, torchvision's extra per-sample ops before / after normalizing,
# torchvision's batch transform)
CASES: dict[str, tuple[dict[str, Any], MixConfig | None, list, list, Callable | None]] = {
    "crop-flip": ({}, None, [], [], None),
    "randaugment": ({"auto_augment": "randaugment"}, None, [v2.RandAugment()], [], None),
    "trivialaugment": ({"auto_augment": "trivialaugment"}, None, [v2.TrivialAugmentWide()], [], None),
    "autoaugment": ({"auto_augment": "autoaugment"}, None, [v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10)], [], None),
    "erasing": ({"random_erasing": 0.25}, None, [], [v2.RandomErasing(0.25)], None),
    "erasing-random": ({"random_erasing": 0.25, "random_erasing_value": "random"}, None, [],
                       [v2.RandomErasing(0.25, value="random")], None),
    "mix": ({}, MixConfig(mixup_alpha=0.2, cutmix_alpha=1.0), [], [],
            v2.RandomChoice([v2.MixUp(alpha=0.2, num_classes=NUM_CLASSES),
                             v2.CutMix(alpha=1.0, num_classes=NUM_CLASSES)])),
}


class MixCollate:
    """torchvision references' collate function: default_collate, then Mixup or CutMix on the batch."""

    def __init__(self, mix: Callable) -> None:
        self.mix = mix

    def __call__(self, batch: list) -> Any:
        return self.mix(*default_collate(batch))


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


def run_case(name: str, images: np.ndarray, labels: np.ndarray, args: argparse.Namespace) -> float:
    """Both sides of one case, alternating; prints the medians and returns the ratio."""
    device = torch.device(args.device)
    extras, mix, before, after, batch_transform = CASES[name]
    imageset = ImageSet(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels),
                        [str(k) for k in range(NUM_CLASSES)])
    ours = Loader(imageset, args.batch_size, augment=AugmentConfig(crop_padding=4, flip=True, **extras), mean=MEAN,
                  std=STD, device=device, seed=0, channels_last=True, mix=mix)
    transform = v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip(), *before, v2.ToImage(),
                            v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD), *after])
    tv = DataLoader(PILDataset(images, labels, transform), batch_size=args.batch_size, shuffle=True,
                    num_workers=args.workers, persistent_workers=args.workers > 0,
                    collate_fn=MixCollate(batch_transform) if batch_transform else None)
    ours_batches, tv_batches = endless(ours), endless(tv)
    timed(ours_batches, 10, device)  # warm-up: first allocations
    timed(tv_batches, 10, device)  # warm-up: worker start-up
    ours_rates, tv_rates = [], []
    for _ in range(args.reps):
        ours_rates.append(timed(ours_batches, args.ours_batches, device))
        tv_rates.append(timed(tv_batches, args.tv_batches, device))
    ours_median, tv_median = statistics.median(ours_rates), statistics.median(tv_rates)
    print(f"{name}: resnetlab Loader {ours_median:,.0f} images/s, torchvision per-sample {tv_median:,.0f} images/s "
          f"(medians of {args.reps}; ranges {min(ours_rates):,.0f}-{max(ours_rates):,.0f} and "
          f"{min(tv_rates):,.0f}-{max(tv_rates):,.0f})")
    print(f"ratio {name}: {ours_median / tv_median:.1f}", flush=True)
    del tv_batches, tv
    return ours_median / tv_median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of: {', '.join(CASES)}")
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--ours-batches", type=int, default=100, help="batches per repetition for our Loader")
    parser.add_argument("--tv-batches", type=int, default=20, help="batches per repetition for torchvision")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of this process (workers use 1)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(CASES)}")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.images, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, NUM_CLASSES, args.images)
    print(f"device {args.device}, batch {args.batch_size}, {args.threads} thread(s) here, {args.workers} DataLoader "
          f"workers, torch {torch.__version__}")
    ratios = {name: run_case(name, images, labels, args) for name in cases}
    print("ratios: " + ", ".join(f"{name} {ratio:.1f}" for name, ratio in ratios.items()))


if __name__ == "__main__":
    main()
