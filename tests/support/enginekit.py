"""Tiny data sets in an official format (IDX files in a `mnist/` folder) and small configs for engine tests."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from torch.optim.optimizer import register_optimizer_step_post_hook

from resnetlab.engine.config import Config, load_config
from resnetlab.engine.trainer import train
from resnetlab.errors import Interrupted
from support.official_formats import write_idx

IMAGE_SIZE = 12
CLASSES_USED = 4  # labels 0..3 of MNIST's ten: chance is 25%


def separable_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` 12x12 grey images whose class (0..3) is their brightness (low/high) x stripe orientation, plus noise.

    Both cues survive global average pooling, flips and crops, so a small ResNet separates them quickly.
    """
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % CLASSES_USED
    rng.shuffle(labels)
    ramp = (np.arange(IMAGE_SIZE) % 4 < 2).astype(np.float64)  # stripes of period 4 px
    stripes = {0: np.tile(ramp[:, None], (1, IMAGE_SIZE)), 1: np.tile(ramp[None, :], (IMAGE_SIZE, 1))}
    images = np.empty((n, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    for i, label in enumerate(labels):
        level = 90 if label % 2 == 0 else 140
        img = level + 40 * stripes[label // 2] + rng.normal(0, 40, (IMAGE_SIZE, IMAGE_SIZE))
        images[i] = np.clip(img, 0, 255).astype(np.uint8)
    return images, labels.astype(np.uint8)


def make_mnist_root(root: Path, n_train: int = 480, n_test: int = 160) -> Path:
    """A data root with mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz holding separable images."""
    folder = root / "mnist"
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        images, labels = separable_images(n, seed)
        write_idx(folder, prefix, images, labels, gz=True)
    return root


def tiny_overrides(root: Path, out: Path | None, **extra: object) -> list[str]:
    """Overrides for a fast run: resnet20 on the tiny set, batch 32 (12 steps per epoch), 1 thread, quiet."""
    settings: dict[str, object] = {
        "data.name": "mnist", "data.root": str(root), "data.val_size": 96, "data.batch_size": 32,
        "data.crop_padding": 0, "data.flip": False, "optim.name": "sgd", "optim.lr": 0.05, "optim.nesterov": False,
        "schedule.name": "constant", "train.epochs": 2, "train.iters": 0, "train.seed": 0, "train.device": "cpu",
        "train.threads": 1, "train.quiet": True, "train.label_smoothing": 0.0, "eval.batch_size": 128,
        "train.log_every": 50,  # rows only at evaluations in these short runs (auto would log every step)
    }
    if out is not None:
        settings["train.out_dir"] = str(out)
    settings.update({k.replace("__", "."): v for k, v in extra.items()})
    return [f"{key}={_yaml(value)}" for key, value in settings.items()]


def _yaml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return str(value)


def tiny_config(root: Path, out: Path | None, **extra: object) -> Config:
    """fmnist-resnet20 with `tiny_overrides` (keys as data__batch_size=16)."""
    return load_config("fmnist-resnet20", tiny_overrides(root, out, **extra))


def read_rows(run_dir: Path) -> list[dict]:
    """metrics.jsonl as a list of dicts."""
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def cli_args(root: Path, out: Path, **extra: object) -> list[str]:
    """`resnetlab train` arguments for the tiny config (every setting as --set)."""
    args = ["train", "--recipe", "fmnist-resnet20", "--out", str(out)]
    for item in tiny_overrides(root, out, **extra):
        args += ["--set", item]
    return args


@contextlib.contextmanager
def signal_at(step: int, signum: int = signal.SIGTERM) -> Iterator[None]:
    """Send this process `signum` right after optimizer step `step` (counted from entering the block)."""
    count = [0]

    def hook(optimizer, args, kwargs) -> None:
        count[0] += 1
        if count[0] == step:
            os.kill(os.getpid(), signum)

    handle = register_optimizer_step_post_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def train_until_stopped(config: Config, step: int, resume: bool = False) -> None:
    """Train `config` and stop it with SIGTERM after `step` steps, as the engine's Interrupted."""
    with signal_at(step), pytest.raises(Interrupted):
        train(config, resume=resume)
