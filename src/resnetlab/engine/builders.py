"""Turn a Config into the run's objects: data splits, loaders, model, optimizer.

Each builder takes the config section it needs (`cfg.data`, `cfg.model`, `cfg.optim`), or the whole Config where
it combines sections (the batch under DDP, the loader, the splits and their normalization). The device, threads and
mixed precision are decided in devices.py.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from resnetlab.data import (
    AugmentConfig,
    ImageSet,
    Loader,
    channel_stats,
    load_dataset,
    pixel_mean,
    select_classes,
    split_train_val,
)
from resnetlab.data.mixing import MixConfig
from resnetlab.engine.config import Config, DataConfig, ModelConfig, OptimConfig
from resnetlab.engine.distributed import DistEnv, convert_sync_batchnorm, in_turn
from resnetlab.engine.param_groups import bn_bias_groups, discriminative_groups
from resnetlab.engine.weights import weights_normalization
from resnetlab.errors import UserError
from resnetlab.models import create_model
from resnetlab.models.registry import get_builder

log = logging.getLogger(__name__)


DEFAULT_VAL_SIZE = 5000  # the paper's 45k/5k CIFAR-10 split (He et al. 2016, sec. 4.2)
DEFAULT_VAL_FRACTION = 0.1  # image folders without a val/ folder; and the cap of the default on small train splits
TEST_SUBSET_SEED = 0  # data.test_size: the same test images for every run seed, so runs compare on one subset
SMALL_DROP = 0.1  # data.drop_last=auto drops an incomplete last batch only when it is under this part of an epoch


@dataclass
class Datasets:
    """The three splits of a run and how their images are normalized.

    `normalization` is {"mean": [...], "std": [...]} in [0, 1] units, measured on `train` only (the
    validation and test images must not leak into preprocessing); with `data.normalize=pixel`, `mean`
    is the per-pixel mean as nested C x H x W lists and `std` is 1 (the paper subtracts the mean only).
    """

    train: ImageSet
    val: ImageSet | None
    test: ImageSet | None  # None when not loaded (lr-find)
    classes: list[str]
    normalization: dict[str, Any]

    @property
    def in_chans(self) -> int:
        """Channels of the images."""
        return int(self.train.images.shape[1])

    @property
    def image_size(self) -> int:
        """Side of the images as loaded (before any `data.resize` on the device)."""
        return int(self.train.images.shape[-1])


# --------------------------------------------------------------------------------------------- data


def load_split(d: DataConfig, split: str) -> ImageSet:
    """One official split of the data set of `data.*`, loaded as the run loads it (size, channels, classes)."""
    if d.root is not None and Path(d.root).expanduser().exists() and not Path(d.root).expanduser().is_dir():
        raise UserError(f"--data-dir {d.root} is a file; give the folder that holds the data set")
    key = (d.name, d.root, split, d.image_size, d.channels, d.coarse)
    cache = _SPLITS.get()
    if cache is not None and key in cache:
        imageset = cache[key]
    else:
        imageset = load_dataset(d.name, root=d.root, split=split, download=d.download, image_size=d.image_size,
                                channels=d.channels, coarse=d.coarse)
        if cache is not None:
            cache[key] = imageset
    return select_classes(imageset, d.classes) if d.classes is not None else imageset


# Within `shared_splits()`, the splits read so far, by what was read (data set, folder, split, size, channels).
_SPLITS: contextvars.ContextVar[dict[tuple[Any, ...], ImageSet] | None] = contextvars.ContextVar("splits",
                                                                                                default=None)


@contextlib.contextmanager
def shared_splits() -> Iterator[None]:
    """Read each official split once inside this block and hand the same ImageSet to every run (an in-process sweep
    trains many runs on one data set; an ImageSet is never modified in place)."""
    token = _SPLITS.set({})
    try:
        yield
    finally:
        _SPLITS.reset(token)


def load_test(d: DataConfig) -> ImageSet:
    """The official test split as the run tests on it: all of it, or `data.test_size` images of it."""
    return subsample(load_split(d, "test"), d.test_size, TEST_SUBSET_SEED, "data.test_size")


def subsample(imageset: ImageSet, size: int | float | None, seed: int, key: str) -> ImageSet:
    """`size` images of `imageset` (a count or a fraction; None, or as many as it has, keeps it whole), stratified
    by class and seeded as the validation split is, in their original order."""
    n = len(imageset)
    count = n if size is None else (round(size * n) if 0 < size < 1 else int(size))
    if count >= n:
        return imageset
    if count < 1:
        raise UserError(f"{key}={size} keeps no images of {n}; give a larger count or fraction, or null for all")
    log.info("%s: %d of %d images", key, count, n)
    return split_train_val(imageset, count, seed)[1]


def build_data(cfg: Config, env: DistEnv | None = None, *, with_test: bool = True) -> Datasets:
    """Load the official train (and test) splits, carve the validation split, measure the normalization.

    The validation split is an image folder's own val/ folder when it has one, else `data.val_size` images
    (a count, or a fraction in (0, 1); default 5,000, or 10% for image folders) carved from the train split.
    `data.train_size` and `data.test_size` then keep a stratified subset of the training and test images.
    Under torchrun the processes load in turn, so that a download happens once.
    """
    d = cfg.data
    with in_turn(env or DistEnv(), enabled=d.download):  # never two downloads into one folder at once
        full_train = load_split(d, "train")
        if len(full_train.classes) < 2:  # it would train a "100%" classifier of one class
            raise UserError(f"{d.name} has one class ({full_train.classes[0]}); a classifier needs images of two or "
                            "more classes (an image folder: one folder per class)")
        test = load_test(d) if with_test else None
        own_val = load_split(d, "val") if has_val_folder(d.name) and d.val_size is None else None
    if own_val is not None:
        train, val = full_train, own_val
    else:
        size = val_count(d.val_size, len(full_train), d.name)
        train, val = split_train_val(full_train, size, cfg.train.seed)
    train = subsample(train, d.train_size, cfg.train.seed, "data.train_size")  # after the split: val stays whole
    if d.batch_size > len(train):
        raise UserError(f"data.batch_size={d.batch_size} is larger than the {len(train)} training images; "
                        "lower --batch-size")
    normalization = weights_normalization(cfg, train.images.shape[1]) or _normalization(train, d)
    return Datasets(train=train, val=val, test=test, classes=list(full_train.classes), normalization=normalization)


def has_val_folder(name: str) -> bool:
    """Whether `name` is an image folder with its own val/ split."""
    kind, _, path = name.partition(":")
    return kind.strip().lower() == "imagefolder" and (Path(path).expanduser() / "val").is_dir()


def val_count(val_size: int | float | None, n_train: int, name: str) -> int:
    """Validation images for `data.val_size`: a count, a fraction of the train split, or None for the default.

    The default is 10% of an image folder, and min(5,000, 10%) of a named data set: 5,000 of the full CIFAR-10,
    CIFAR-100, MNIST and Fashion-MNIST train splits (the paper's 45k/5k), and 10% of a smaller copy (500 of a
    5,000-image CIFAR-10 folder, where 5,000 would leave nothing to train on).
    """
    if val_size is None:
        folder = name.lower().startswith("imagefolder:")
        return round(DEFAULT_VAL_FRACTION * n_train) if folder else min(DEFAULT_VAL_SIZE,
                                                                         round(DEFAULT_VAL_FRACTION * n_train))
    count = round(val_size * n_train) if 0 < val_size < 1 else int(val_size)
    if count >= n_train:
        raise UserError(f"data.val_size={val_size} leaves no training images ({name} train has {n_train}); lower "
                        "it, or give a fraction such as 0.1 (0 = no validation split)")
    return count


def _normalization(train: ImageSet, d: DataConfig) -> dict[str, Any]:
    """data.normalize's {"mean", "std"}: measured on `train` (channel, pixel), none (pixels in [0, 1]), or fixed."""
    channels = int(train.images.shape[1])
    if d.normalize == "none":
        return {"mean": [0.0] * channels, "std": [1.0] * channels}
    if d.normalize == "fixed":
        assert d.mean is not None and d.std is not None  # config.validate
        stats = {"mean": [float(m) for m in d.mean], "std": [float(s) for s in d.std]}
        if (len(d.mean), channels) == (3, 1):  # grey images, colour constants: their average (as weights do)
            log.info("data.mean/data.std have %d values for grey images: normalizing with their averages",
                     len(d.mean))
            return {key: [sum(values) / len(values)] for key, values in stats.items()}
        if len(d.mean) != channels:
            raise UserError(f"data.mean and data.std have {len(d.mean)} values but the images have {channels} "
                            f"channel{'s' if channels > 1 else ''}; give one value per channel (or set data.channels)")
        return stats
    if d.normalize == "pixel":
        mean = pixel_mean(train)  # (C, H, W)
        return {"mean": mean.tolist(), "std": [1.0] * int(mean.shape[0])}
    mean, std = channel_stats(train)
    return {"mean": [float(m) for m in mean], "std": [float(s) for s in std]}


def global_batch(cfg: Config, world_size: int) -> int:
    """The batch of one iteration over all processes (dist.batch_size says how data.batch_size is meant)."""
    b = cfg.data.batch_size
    if cfg.dist.batch_size == "per_device":
        return b * world_size
    if b % world_size:
        raise UserError(f"data.batch_size={b} is a global batch that {world_size} processes cannot share "
                        f"evenly; use a multiple of {world_size} or dist.batch_size=per_device")
    return b


def scaled_lr(cfg: Config, world_size: int) -> float:
    """optim.lr after dist.lr_scaling: linear = lr x global batch / data.batch_size (Goyal et al. 2017).

    The reference batch is data.batch_size: optim.lr is the rate for that many images per iteration. With
    dist.batch_size=per_device the global batch grows with the processes and so does the lr; with global the
    batch, and hence the lr, stays as configured on any number of processes.
    """
    if cfg.dist.lr_scaling == "none":
        return cfg.optim.lr
    return cfg.optim.lr * global_batch(cfg, world_size) / cfg.data.batch_size


def augment_config(d: DataConfig, *, train: bool) -> AugmentConfig | None:
    """The batched augmentation for training, or just the resize (if any) for evaluation."""
    if train:
        return AugmentConfig(crop_padding=d.crop_padding, flip=d.flip, translate=d.translate, cutout=d.cutout,
                             resize=d.resize, auto_augment=d.auto_augment, randaugment_ops=d.randaugment_ops,
                             randaugment_magnitude=d.randaugment_magnitude, random_erasing=d.random_erasing,
                             random_erasing_value=d.random_erasing_value, resize_mode=d.resize_mode)
    return AugmentConfig(resize=d.resize, resize_mode=d.resize_mode) if d.resize else None


def mix_config(d: DataConfig) -> MixConfig | None:
    """Mixup/CutMix of the training batches (data.mixup_alpha, cutmix_alpha, mix_prob, mix_switch_prob), or None."""
    mix = MixConfig(mixup_alpha=d.mixup_alpha, cutmix_alpha=d.cutmix_alpha, prob=d.mix_prob,
                    switch_prob=d.mix_switch_prob)
    return mix if mix.enabled else None


def eval_batch(cfg: Config, world_size: int) -> int:
    """The evaluation batch over all processes: a multiple of world_size, which the ranks share.

    eval.batch_size is meant as dist.batch_size says; a global one is rounded up to a multiple of world_size
    (every image is still evaluated exactly once; only the memory per step changes).
    """
    b = cfg.eval.batch_size
    if cfg.dist.batch_size == "per_device":
        return b * world_size
    return -(-b // world_size) * world_size


def make_loader(imageset: ImageSet, cfg: Config, *, train: bool, device: torch.device,
                normalization: dict[str, Any], rank: int = 0, world_size: int = 1) -> Loader:
    """The in-memory Loader for one split.

    Args:
        imageset: the split.
        cfg: the config (data.*, eval.batch_size, train.seed, train.channels_last).
        train: shuffled, augmented, incomplete last batch dropped; else in order, every image once.
        device: where batches go.
        normalization: {"mean", "std"} from `build_data`.
        rank: this process's rank; world_size: the number of processes sharing each batch.
    """
    # The Loader takes the global batch; each rank takes its slice, so samples do not depend on world_size.
    batch = global_batch(cfg, world_size) if train else eval_batch(cfg, world_size)
    drop_last = train and drops_last_batch(cfg.data.drop_last, len(imageset), batch, world_size)
    return Loader(imageset, batch, shuffle=train, drop_last=drop_last, augment=augment_config(cfg.data, train=train),
                  mean=normalization["mean"], std=normalization["std"], device=device, seed=cfg.train.seed,
                  rank=rank, world_size=world_size, channels_last=cfg.train.channels_last,
                  mix=mix_config(cfg.data) if train else None)


def drops_last_batch(mode: bool | str, n: int, batch: int, world_size: int = 1) -> bool:
    """Whether training drops the incomplete last batch of each epoch (`data.drop_last`).

    auto drops it only when it is a small part of the epoch (under 10% of the images; a batch of one or two
    images is noisy and breaks BatchNorm's batch statistics) and keeps it otherwise, saying so; true drops it,
    with a warning when that loses more than 10% of every epoch.
    """
    rest = n % batch
    if rest == 0:
        return True
    share = rest / n
    if mode is True:
        if share >= SMALL_DROP:
            log.warning("data.drop_last=true drops %d of the %d training images every epoch (%.0f%%); set "
                        "data.drop_last=auto or a batch size that divides %d", rest, n, 100 * share, n)
        return True
    if mode is False or (share >= SMALL_DROP and rest >= 2 * world_size):
        if mode == "auto":
            log.info("keeping the incomplete last batch of %d images (%.0f%% of an epoch of %d; data.drop_last=auto)",
                     rest, 100 * share, n)
        return False
    return True


# -------------------------------------------------------------------------------------------- model


def model_options(m: ModelConfig) -> dict[str, Any]:
    """create_model keywords from model.* (unset options are left to the model's defaults)."""
    options = dict(m.options)
    if m.shortcut is not None:
        options["shortcut"] = m.shortcut
    if m.stem is not None:
        options["stem"] = m.stem
    if m.zero_init_residual:
        options["zero_init_residual"] = True
    return options


def _accepted_options(name: str) -> set[str]:
    return set(inspect.signature(get_builder(name)).parameters) - {"num_classes", "in_chans"}


def check_user_options(m: ModelConfig, keys: Sequence[str]) -> None:
    """Refuse a model option the user set (the dotted `keys` of their --set overrides) that model.name does not take:
    dropping it with "the recipe set it" (`drop_foreign_options`) is right only for what a recipe set."""
    accepted = _accepted_options(m.name)
    for key in keys:
        if key == "model.options" or key.startswith("model.options."):
            names = list(m.options) if key == "model.options" else [key.split(".", 2)[2]]
        elif key in ("model.shortcut", "model.stem", "model.zero_init_residual"):
            names = [key.split(".")[1]]
        else:
            continue
        foreign = [name for name in names if name not in accepted]
        if foreign:
            takes = ", ".join(sorted(accepted)) or "no options"
            raise UserError(f"{m.name} takes no option {foreign[0]!r} (set by {key}); it takes: {takes}")


def drop_foreign_options(m: ModelConfig) -> None:
    """Drop from model.* (in place) the options that model.name does not take, each with a one-line note.

    A recipe's options belong to its own model: `--recipe seed000-cifar10 --model plain20` must not fail on the
    recipe's `shortcut: B`, which a plain net does not have.
    """
    accepted = _accepted_options(m.name)
    dropped = [f"{key}={value}" for key, value in m.options.items() if key not in accepted]
    m.options = {key: value for key, value in m.options.items() if key in accepted}
    for key, default in (("shortcut", None), ("stem", None), ("zero_init_residual", False)):
        if key not in accepted and getattr(m, key) != default:
            dropped.append(f"{key}={getattr(m, key)}")
            setattr(m, key, default)
    if dropped:
        log.info("%s takes no %s; dropped (the recipe set it for another model)", m.name, ", ".join(dropped))


def build_model(m: ModelConfig, *, in_chans: int, num_classes: int) -> nn.Module:
    """The zoo model named by model.name for this data, starting from model.weights when set."""
    return create_model(m.name, num_classes=num_classes, in_chans=in_chans, weights=m.weights, **model_options(m))


def place_model(net: nn.Module, cfg: Config, env: DistEnv, device: torch.device) -> nn.Module:
    """The model on its device, channels_last if asked, with SyncBatchNorm under torchrun if asked."""
    net.to(device, memory_format=torch.channels_last if cfg.train.channels_last else torch.preserve_format)
    return convert_sync_batchnorm(net, env, device, cfg.dist.sync_bn)


def build_optimizer(model: nn.Module, o: OptimConfig, lr: float, device: torch.device) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov), Adam or AdamW; optional no weight decay on BatchNorm parameters and biases, and
    the BatchNorm biases at optim.bn_bias_lr_scale x and the backbone at optim.backbone_lr_scale x the classifier's
    lr (each group's `lr_scale`).

    Uses the fused kernels on CUDA and the multi-tensor (foreach) ones elsewhere.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if o.no_weight_decay_bn_bias:
        # BN scales/shifts and biases are all the 1-d parameters; decaying them only fights normalization.
        decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1]
        groups: list[dict[str, Any]] = [{"params": decay, "weight_decay": o.weight_decay},
                                        {"params": no_decay, "weight_decay": 0.0}]
    else:
        groups = [{"params": params, "weight_decay": o.weight_decay}]
    groups = discriminative_groups(bn_bias_groups(groups, model, o.bn_bias_lr_scale), model, o.backbone_lr_scale)
    fast = {"fused": True} if device.type == "cuda" else {"foreach": True}
    if o.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=o.momentum, nesterov=o.nesterov, **fast)
    cls = torch.optim.Adam if o.name == "adam" else torch.optim.AdamW
    return cls(groups, lr=lr, betas=tuple(o.betas), eps=o.eps, **fast)
