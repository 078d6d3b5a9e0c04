"""Training images/s of ResNet-20: resnetlab's engine with its defaults against the first tutorial's loop, side by side.

Both train ResNet-20 on the same CIFAR-shaped random uint8 data (3 x 32 x 32, 10 classes) with the paper's
augmentation (4-px zero pad + random 32x32 crop, random horizontal flip), batch 128, SGD with momentum:

- ours: the engine's own objects, built from the `he2016-cifar10` recipe through `engine.builders` (in-memory
  Loader with batched augmentation on the device, model in the engine's memory format, foreach/fused SGD, the
  engine's thread setting, `torch.compile` if `train.compile`), stepped by `engine.trainer.train_step` (the
  very function `resnetlab train` runs: lr schedule, autocast, metrics without host sync);
- tutorial: the first tutorial's loop as it runs (its ResNet-20 has projection shortcuts, i.e. option B):
  RandomCrop(32, 4) + RandomHorizontalFlip + ToTensor + Normalize on PIL images in a Dataset, a DataLoader
  with num_workers=2 and shuffle, fp32 NCHW, SGD(0.1, momentum 0.9, weight decay 5e-4), and per step
  `loss.item()` and the accuracy count with `.item()`, in torch's default thread setting.

Repetitions alternate between the two so that both see the same machine load; warm-up (compilation, worker
start-up, first allocations) is excluded from the rates and reported on its own; each side's figure is the
median over the repetitions. The last line is `ratio: X` (ours / tutorial).

    python bench/throughput.py [--reps 5] [--iters 20] [--set train.compile=true] [--device cpu]

On a CPU shared with other jobs, run it as `OMP_WAIT_POLICY=PASSIVE python bench/throughput.py` (the setting
applies to both sides): OpenMP threads that spin while their peer is descheduled make both loops collapse
(measured here: 25 images/s each with spinning threads, 126 and 101 with passive ones).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
import torchvision.transforms as T
from torch import nn
from torch.utils.data import DataLoader
from tutorial_data import PILDataset, endless

from resnetlab.data import ImageSet, pixel_mean
from resnetlab.engine import builders, devices, trainer
from resnetlab.engine.config import Config, load_config
from resnetlab.engine.distributed import DistEnv
from resnetlab.engine.run import Run, build_run
from resnetlab.engine.runtime import Session, StopSignals, process_settings
from resnetlab.models import create_model, summarize

TUTORIAL_MEAN, TUTORIAL_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)  # the tutorial's constants
Step = Callable[[], int]  # one training step; returns the images it trained on


# ------------------------------------------------------------------------------------------------ ours


def engine_run(cfg: Config, imageset: ImageSet, device: torch.device, total_iters: int) -> Run:
    """The run `resnetlab train` would build for `cfg` (engine.run.build_run), on `imageset` instead of a named
    data set, writing nothing."""
    normalization = {"mean": pixel_mean(imageset).tolist(), "std": [1.0] * imageset.images.shape[1]}  # pixel mean
    data = builders.Datasets(train=imageset, val=None, test=None, classes=list(imageset.classes),
                             normalization=normalization)
    cfg.train.iters = total_iters
    return build_run(cfg, Session(DistEnv(), device, StopSignals()), None, None, data=data)


def engine_step(run: Run) -> Step:
    """One `trainer.train_step` per call, on the Loader's next batch (across epochs)."""
    batches = endless(run.train_loader)
    trainer.set_train_mode(run)

    def step() -> int:
        x, y = next(batches)
        trainer.train_step(run, x, y)
        return len(y)

    return step


# -------------------------------------------------------------------------------------------- tutorial


class TutorialLoop:
    """The first tutorial's training iteration, as it runs (see the module docstring).

    `start()` starts the DataLoader's worker processes and `stop()` ends them: they exist only during the
    tutorial's own repetitions, as in the tutorial, where nothing else runs beside them. (Kept alive through our
    side's repetitions, idle workers cost our side about 30% on two cores: 310 against 443 images/s measured.)
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, device: torch.device, workers: int) -> None:
        transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                               T.Normalize(TUTORIAL_MEAN, TUTORIAL_STD)])
        self.loader = DataLoader(PILDataset(images, labels, transform), batch_size=128, shuffle=True,
                                 num_workers=workers)
        self.model = create_model("resnet20", num_classes=10, shortcut="B").to(device)  # projection shortcuts
        self.criterion = nn.CrossEntropyLoss()
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
        self.device, self.batches = device, None
        self.totals = {"loss": 0.0, "correct": 0}

    def start(self) -> None:
        self.batches = iter(self.loader)

    def stop(self) -> None:
        self.batches = None  # the iterator goes, and its worker processes with it

    def __call__(self) -> int:
        try:
            inputs, targets = next(self.batches)
        except StopIteration:  # a new epoch
            self.start()
            inputs, targets = next(self.batches)
        inputs, targets = inputs.to(self.device), targets.to(self.device)
        self.optimizer.zero_grad()
        outputs = self.model(inputs)
        loss = self.criterion(outputs, targets)
        loss.backward()
        self.optimizer.step()
        self.totals["loss"] += loss.item()  # the tutorial syncs with the device twice per step
        self.totals["correct"] += outputs.max(1)[1].eq(targets).sum().item()
        return len(targets)


# ---------------------------------------------------------------------------------------------- timing


def timed(step: Step, iters: int, device: torch.device) -> tuple[float, float]:
    """(images/s, seconds) over `iters` steps, waiting for the device at the end."""
    start = time.perf_counter()
    images = sum(step() for _ in range(iters))
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return images / seconds, seconds


def matmul_peak(dtype: torch.dtype, device: torch.device, size: int = 1024, reps: int = 10) -> float:
    """The best GFLOP/s of a size x size matrix product in `dtype` on `device` (2 size^3 operations)."""
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(size, size, generator=gen).to(device=device, dtype=dtype) for _ in range(2))
    best = float("inf")
    for i in range(reps + 3):
        start = time.perf_counter()
        torch.matmul(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 3:  # the first products warm up the kernels
            best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def training_gflop_per_image(cfg: Config, imageset: ImageSet) -> float:
    """Forward + backward of one training image: about 3 x 2 x its multiply-accumulates (the backward pass costs
    twice the forward one), in GFLOP."""
    net = builders.build_model(cfg.model, in_chans=imageset.images.shape[1], num_classes=len(imageset.classes))
    return 3 * 2 * summarize(net.eval(), (1, *imageset.images.shape[1:])).macs / 1e9


def random_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, ImageSet]:
    """n random CIFAR-shaped images: (N, 32, 32, 3) uint8 for PIL, the labels, and the same as an ImageSet."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, n)
    imageset = ImageSet(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels),
                        [str(k) for k in range(10)])
    return images, labels, imageset


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--reps", type=int, default=5, help="alternating repetitions per side")
    parser.add_argument("--iters", type=int, default=20, help="training steps per repetition")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per side first (compilation included)")
    parser.add_argument("--workers", type=int, default=2, help="the tutorial's DataLoader workers")
    parser.add_argument("--recipe", default="he2016-cifar10", help="our side's recipe (batch 128, crop 4 + flip)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override our side's config, e.g. train.compile=false or train.threads=1")
    parser.add_argument("--device", default="cpu")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    cfg = load_config(args.recipe, [f"train.device={args.device}", *args.overrides])
    images, labels, imageset = random_data(args.images)
    default_threads = torch.get_num_threads()  # the tutorial runs in torch's default setting
    tutorial = TutorialLoop(images, labels, device, args.workers)
    with process_settings(cfg, device):
        ours_threads = torch.get_num_threads()
        run = engine_run(cfg, imageset, device, total_iters=args.warmup + args.reps * args.iters)
        ours = engine_step(run)
        _, ours_warmup = timed(ours, args.warmup, device)
    tutorial.start()
    _, tutorial_warmup = timed(tutorial, args.warmup, device)
    tutorial.stop()
    ours_rates, tutorial_rates = [], []
    for rep in range(args.reps):
        with process_settings(cfg, device):
            ours_rates.append(timed(ours, args.iters, device)[0])
        tutorial.start()
        timed(tutorial, 2, device)  # its workers start and fill their queues, untimed
        tutorial_rates.append(timed(tutorial, args.iters, device)[0])
        tutorial.stop()
        print(f"rep {rep + 1}: resnetlab {ours_rates[-1]:,.1f} images/s, tutorial {tutorial_rates[-1]:,.1f} images/s",
              flush=True)
    ours_median, tutorial_median = statistics.median(ours_rates), statistics.median(tutorial_rates)
    with process_settings(cfg, device):  # the peaks with our side's threads, measured now, in this run
        peaks = {"fp32": matmul_peak(torch.float32, device), "bf16": matmul_peak(torch.bfloat16, device)}
    gflop = training_gflop_per_image(cfg, imageset)
    ours_dtype = "bf16" if run.amp == torch.bfloat16 else "fp32"
    t, compiled = cfg.train, devices.use_compile(cfg.train.compile, device)
    print(f"device {device}, torch {torch.__version__}, batch 128, {args.reps} x {args.iters} steps per side")
    print(f"warm-up ({args.warmup} steps): resnetlab {ours_warmup:.1f} s, tutorial {tutorial_warmup:.1f} s")
    print(f"resnetlab engine ({ours_threads} threads, channels_last={t.channels_last}, compile={compiled}, "
          f"amp={run.amp}): {ours_median:,.1f} images/s (median)")
    print(f"tutorial loop ({default_threads} threads, {args.workers} DataLoader workers, fp32 NCHW):"
          f" {tutorial_median:,.1f} images/s (median)")
    print(f"matmul peak ({ours_threads} threads, measured in this run): fp32 {peaks['fp32']:,.1f} GFLOP/s, "
          f"bf16 {peaks['bf16']:,.1f} GFLOP/s")
    for name, rate, dtype in (("resnetlab", ours_median, ours_dtype), ("tutorial", tutorial_median, "fp32")):
        achieved = rate * gflop
        print(f"{name}: {achieved:,.1f} GFLOP/s achieved ({gflop:.3f} GFLOP per training image) = "
              f"{100 * achieved / peaks[dtype]:.1f}% of the {dtype} matmul peak")
    print(f"ratio: {ours_median / tutorial_median:.2f}")


if __name__ == "__main__":
    main()
