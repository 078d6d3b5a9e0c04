"""The run configuration: one tree of typed dataclasses, named YAML recipes as defaults, dotted overrides.

A recipe (src/resnetlab/recipes/NAME.yaml, or any YAML file such as a run's config.yaml) is a nested
mapping of the sections below plus a `description:` line; `extends: OTHER` starts from another recipe, so
variants are data rather than copies. Overrides are `dotted.key=value` strings whose value is parsed as
YAML and then checked against the field's type.

Iteration counts in the schedule (`milestones`, `step_size`, `warmup_iters`) accept either an iteration
number (>= 1) or a fraction of the total iterations (a number in (0, 1)), so a recipe written as
"divide at 1/2 and 3/4 of training" still means that when `--epochs` changes.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from resnetlab.engine.recipes import DEFAULT_RECIPE, RECIPE_META_KEYS, default_recipe, resolve_recipe
from resnetlab.errors import UserError

MAX_SEED = 2**32 - 1  # numpy's seeds are 32-bit
MAX_LR = 1e3  # a learning rate beyond this overflows the first step of any net here
_BOOL_WORDS = {False: ("off", "no", "false"), True: ("on", "yes", "true")}


@dataclass
class ModelConfig:
    """Which network to build (see `resnetlab models`)."""

    name: str = "resnet20"
    shortcut: Literal["A", "B"] | None = None  # CIFAR nets: None = the model's default (A, as in the paper)
    stem: Literal["imagenet", "cifar"] | None = None  # resnet18..152: None = the model's default
    zero_init_residual: bool = False  # zero the last BN of each block (arXiv 1706.02677)
    weights: str | None = None  # start from this state dict (--weights)
    options: dict[str, Any] = field(default_factory=dict)  # any other create_model keyword


@dataclass
class DataConfig:
    """The data set, its validation split, batching and augmentation."""

    name: str = "fashion-mnist"
    root: str | None = None  # --data-dir; None = $RESNETLAB_DATA or ~/.cache/resnetlab/data
    download: bool = False
    coarse: bool = False  # cifar100: the 20 super-classes
    classes: list[int | str] | None = None  # keep only these classes (names or indices), relabelled in this order
    # carved from the official train split: a count or a fraction in (0, 1); 0 = no validation split;
    # null = min(5,000, 10% of the train split) (the paper's 45k/5k CIFAR split on the full sets), or an image
    # folder's own val/ folder, else 10% of it
    val_size: int | float | None = None
    # quick runs (a notebook's QUICK mode, a smoke test): keep only this many training / test images, a stratified
    # subset seeded like the split (the test subset is the same for every seed); a count or a fraction; null = all
    train_size: int | float | None = None
    test_size: int | float | None = None
    batch_size: int = 128
    drop_last: bool | Literal["auto"] = "auto"  # the incomplete last batch; auto = drop it only when under 10%
    image_size: int | None = None  # resize when loading (stored at this size in memory)
    channels: int | None = None  # convert to 1 or 3 channels when loading
    crop_padding: int = 0  # pad-and-random-crop by this many pixels
    flip: bool | Literal["alternate"] = False  # random horizontal flip; alternate: every other epoch (Jordan 2024)
    translate: int = 0  # random translation by up to this many pixels
    cutout: int = 0  # side of a random square set to zero (0 = off)
    resize: int | None = None  # resize each batch on the device (e.g. 28 -> 96 px without 96-px copies in memory)
    resize_mode: Literal["bilinear", "nearest"] = "bilinear"  # data.resize's interpolation (nearest = nn.Upsample's)
    # channel / pixel: per-channel mean/std, or the paper's per-pixel mean, measured on the training split;
    # none: pixels / 255 in [0, 1]; fixed: (pixels / 255 - data.mean) / data.std with the constants given
    normalize: Literal["none", "channel", "pixel", "fixed"] = "channel"
    mean: list[float] | None = None  # normalize=fixed: one value per channel, e.g. [0.4914, 0.4822, 0.4465]
    std: list[float] | None = None  # normalize=fixed: one value per channel, e.g. [0.2023, 0.1994, 0.2010]
    # with model.weights (a torchvision name or one of our checkpoints) and normalize=channel: the weights' own
    # mean/std (ImageNet's, or the checkpoint's); false = measured on this training split
    weights_normalization: bool = True
    # automatic augmentation after the crop and flip, as torchvision's (autoaugment = its CIFAR-10 policy)
    auto_augment: Literal["randaugment", "trivialaugment", "autoaugment"] | None = None
    randaugment_ops: int = 2  # RandAugment: operations per image
    randaugment_magnitude: int = 9  # RandAugment: magnitude bin, 0..30
    random_erasing: float = 0.0  # probability of erasing a random rectangle of 2-33% of an image; 0 = off
    random_erasing_value: Literal["zero", "random"] = "zero"  # fill it with the mean, or with noise per pixel
    mixup_alpha: float = 0.0  # Mixup: lam ~ Beta(alpha, alpha); 0 = off (torchvision's recipes: 0.2)
    cutmix_alpha: float = 0.0  # CutMix: lam ~ Beta(alpha, alpha); 0 = off (torchvision's recipes: 1.0)
    mix_prob: float = 1.0  # probability that a batch is mixed (Mixup or CutMix)
    mix_switch_prob: float = 0.5  # with both on: probability of CutMix rather than Mixup


@dataclass
class OptimConfig:
    """The optimizer."""

    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = 0.1  # peak learning rate (for the global batch after dist.lr_scaling)
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    no_weight_decay_bn_bias: bool = False  # exempt BatchNorm weights and all biases from weight decay
    backbone_lr_scale: float = 1.0  # every layer but the classifier learns at this x the lr (discriminative lr)
    bn_bias_lr_scale: float = 1.0  # BatchNorm biases learn at this x the lr (airbench94: 64)


@dataclass
class ScheduleConfig:
    """The learning rate as a function of the iteration (stepped every iteration), plus warm-up."""

    name: Literal["multistep", "step", "cosine", "onecycle", "plateau", "constant"] = "multistep"
    milestones: list[int | float] = field(default_factory=list)  # multistep: iterations or fractions
    gamma: float = 0.1  # multistep/step/plateau: multiply the lr by this
    step_size: int | float = 0  # step: every this many iterations (or this fraction of them)
    min_lr: float = 0.0  # cosine/plateau floor
    pct_start: float = 0.3  # onecycle: fraction of the iterations spent rising
    div_factor: float = 25.0  # onecycle: start at lr / div_factor
    final_div_factor: float = 1e4  # onecycle: end at lr / (div_factor * final_div_factor)
    patience: int = 5  # plateau: evaluations without improvement of the validation loss
    threshold: float = 1e-4  # plateau: relative improvement that counts
    warmup_iters: int | float = 0  # iterations (or fraction) of warm-up before the schedule
    warmup_mode: Literal["linear", "constant"] = "linear"
    warmup_lr: float = 0.0  # linear: the lr at iteration 0; constant: the lr during warm-up


AUTO_LOG_EVERY = 50  # train.log_every=auto: a metrics row every 50 steps,
MIN_CURVE_ROWS = 20  # or every total / 20 steps in a shorter run


def rows_every(log_every: int | str, total_iters: int) -> int:
    """Steps between metrics rows: `log_every`, or with `auto` 50, fewer in a run too short for 20 rows of 50
    steps (a 300-step run gets a row every 15 steps, not a curve of 6 points)."""
    if log_every == "auto":
        return max(1, min(AUTO_LOG_EVERY, total_iters // MIN_CURVE_ROWS))
    return int(log_every)


@dataclass
class TrainConfig:
    """The training loop, its device and its outputs."""

    epochs: int = 10
    iters: int = 0  # total iterations; 0 = epochs x batches per epoch
    seed: int = 0
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"  # auto: bf16 where native (CUDA, AVX512_BF16/AMX CPUs)
    channels_last: bool = True
    # torch.compile; auto = on CUDA (on a CPU it did not pay, bench/); reduce-overhead / max-autotune: on, in that
    # torch.compile mode (reduce-overhead replays CUDA graphs: for small nets whose steps are launch-bound)
    compile: bool | Literal["auto", "reduce-overhead", "max-autotune"] = "auto"
    deterministic: bool = False
    label_smoothing: float = 0.0
    ema_decay: float = 0.0  # validate, select and test an exponential moving average of the weights; 0 = off
    whiten_init: bool = False  # airbench: set the 2x2 stem from the training patches' covariance, then freeze it
    grad_clip: float = 0.0  # max gradient norm; 0 = off
    freeze_bn: bool = False  # BatchNorm layers keep their running statistics (eval mode) while training
    eval_every: int = 0  # iterations between validations; 0 = once per epoch
    # iterations between metrics rows and progress updates; auto = 50, fewer in a short run (>= 20 rows: a curve)
    log_every: int | Literal["auto"] = "auto"
    # the gradient norm of every stage (or residual block) at each log_every row of metrics.jsonl; none = off
    grad_norms: Literal["none", "stage", "block"] = "none"
    top_k: int = 0  # also keep the k best checkpoints by validation accuracy
    out_dir: str | None = None  # RUN_DIR (--out)
    quiet: bool = False
    threads: int = 0  # CPU threads; 0 = one per physical core
    accumulate: int = 1  # sum the gradients of this many micro-batches (of data.batch_size / accumulate) per step
    freeze_epochs: float = 0.0  # fine-tuning: train only the classifier (backbone and its BatchNorm frozen) this long
    patience: int = 0  # early stopping: stop after this many evaluations without a better val accuracy; 0 = off


@dataclass
class EvalConfig:
    """Evaluation of the validation and test splits."""

    batch_size: int = 512
    tta: bool | Literal["flip", "shift"] = False  # test-time augmentation: flip (= true) or flip + 1-px shifts


@dataclass
class DistConfig:
    """Several processes under torchrun (ignored in a single process)."""

    batch_size: Literal["per_device", "global"] = "global"  # how data.batch_size is meant
    lr_scaling: Literal["none", "linear"] = "none"  # linear: lr x (global batch / data.batch_size)
    sync_bn: bool = False
    timeout_s: int = 600  # a collective that waits longer than this fails instead of hanging


@dataclass
class Config:
    """The whole run configuration; `recipe` records where its defaults came from."""

    recipe: str = DEFAULT_RECIPE
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    dist: DistConfig = field(default_factory=DistConfig)


# ---------------------------------------------------------------------------------------- typed values


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " | ".join(str(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) in (types.UnionType, typing.Union):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    names = {type(None): "null", bool: "true or false", int: "an integer", float: "a number", str: "text"}
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """`value` checked against the annotation `tp` (int accepted for float); raises UserError naming `key`."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        if isinstance(value, bool):  # YAML 1.1 reads off/no/on/yes as booleans
            value = next((w for w in _BOOL_WORDS[value] if w in args), value)
        if value in args and not isinstance(value, bool):
            return value
        raise UserError(f"{key} must be one of {', '.join(map(str, args))}; got {value!r}")
    if origin in (types.UnionType, typing.Union):
        for member in args:
            try:
                return _coerce(value, member, key)
            except UserError:
                continue
        raise UserError(f"{key} must be {_type_name(tp)}; got {value!r}")
    if origin is list:
        items = value if isinstance(value, (list, tuple)) else [value]
        return [_coerce(item, args[0], f"{key}[{i}]") for i, item in enumerate(items)]
    if origin is dict:
        if isinstance(value, dict):
            return dict(value)
    elif tp is type(None):
        if value is None:
            return None
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as text; it is meant as a number
            with contextlib.suppress(ValueError):
                number = float(value)
        if number is not None and math.isfinite(number):
            return number
        if number is not None:
            raise UserError(f"{key} must be a finite number; got {value!r}")
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is Any:
        return value
    raise UserError(f"{key} must be {_type_name(tp)}; got {value!r}")


def _is_str_field(tp: Any) -> bool:
    args = typing.get_args(tp) if typing.get_origin(tp) in (types.UnionType, typing.Union) else (tp,)
    return str in args


# ------------------------------------------------------------------------------------ dict <-> Config


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """The config as a plain nested dict (what config.yaml and checkpoints hold)."""
    return dataclasses.asdict(cfg)


def config_from_dict(data: dict[str, Any], *, base: Config | None = None) -> Config:
    """A Config from a nested dict (keys missing from `data` keep their value in `base` or the defaults)."""
    cfg = copy.deepcopy(base) if base is not None else Config()
    for key, value in data.items():
        if key in RECIPE_META_KEYS:
            continue
        if isinstance(value, dict) and _section(cfg, key) is not None:
            for sub, subvalue in value.items():
                _set_key(cfg, f"{key}.{sub}", subvalue)
        else:
            _set_key(cfg, key, value)
    return cfg


def _section(cfg: Config, name: str) -> Any:
    value = getattr(cfg, name, None)
    return value if dataclasses.is_dataclass(value) else None


def _known_keys(obj: Any, prefix: str = "") -> list[str]:
    keys = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            keys += _known_keys(value, f"{prefix}{f.name}.")
        else:
            keys.append(f"{prefix}{f.name}")
    return keys


def _unknown_key_message(cfg: Config, key: str) -> str:
    known = _known_keys(cfg)
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    section = key.split(".")[0]
    if _section(cfg, section) is not None:
        return f"unknown config key {key!r}; {hint}keys of {section}: {' '.join(_known_keys(_section(cfg, section)))}"
    sections = [f.name for f in dataclasses.fields(cfg)]
    return f"unknown config key {key!r}; {hint}keys start with one of: {' '.join(sections)} (see --print-config)"


def _set_key(cfg: Config, key: str, value: Any, raw: str | None = None) -> None:
    """Set dotted `key` to `value` (checked against the field's type); `raw` is the unparsed override text."""
    *path, name = key.split(".")
    obj: Any = cfg
    for part in path:
        obj = _section(obj, part)
        if obj is None:
            break
    if obj is None or not any(f.name == name for f in dataclasses.fields(obj)):
        raise UserError(_unknown_key_message(cfg, key))
    if dataclasses.is_dataclass(getattr(obj, name)):
        example = _known_keys(getattr(obj, name), key + ".")[0]
        raise UserError(f"{key} is a section; set its keys instead, e.g. {example}=...")
    tp = _field_types(type(obj))[name]
    if raw is not None and _is_str_field(tp) and not isinstance(value, str) and value is not None:
        value = raw  # a path or name such as "runs/2024" or "yes" stays the text the user typed
    setattr(obj, name, _coerce(value, tp, key))


# -------------------------------------------------------------------------------------------- loading


def load_config(recipe: str | None, overrides: list[str] | None = None) -> Config:
    """Resolve a recipe and overrides into a validated Config.

    Args:
        recipe: a recipe name (see `list_recipes()`), a path to a YAML file, or None for `fmnist-fast`.
        overrides: `dotted.key=value` strings applied in order; values are parsed as YAML.

    Returns:
        The config.

    Raises:
        UserError: unknown recipe or key, a value of the wrong type, or an impossible setting.
    """
    name = recipe or default_recipe(overrides or [])
    data = resolve_recipe(name)
    cfg = config_from_dict(data)
    if "recipe" not in data:
        cfg.recipe = name
    return apply_overrides(cfg, overrides or [])


def override_key(item: str) -> str:
    """The dotted key of a `key=value` override."""
    key, sep, _ = item.partition("=")
    if not sep or not key.strip():
        raise UserError(f"an override must look like key=value (e.g. optim.lr=0.05); got {item!r}")
    return key.strip()


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """`cfg` with `dotted.key=value` overrides applied in order (values parsed as YAML), validated."""
    for item in overrides:
        key, text = override_key(item), item.partition("=")[2]
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        _set_key(cfg, key, value, raw=text)
    validate(cfg)
    return cfg


def format_config(cfg: Config) -> str:
    """Every dotted key with its value, one per line (what `--print-config` shows).

    Of train.epochs and train.iters only the one in force is shown (iters when it is set, else epochs).
    """
    lines = []
    hidden = "train.epochs" if cfg.train.iters else "train.iters"

    def walk(obj: Any, prefix: str) -> None:
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                walk(value, f"{prefix}{f.name}.")
            elif f"{prefix}{f.name}" != hidden:
                lines.append(f"{prefix}{f.name} = {_format_value(value)}")

    walk(cfg, "")
    return "\n".join(lines)


def _format_value(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=1 << 20).strip().removesuffix("\n...").strip()


def dump_config(cfg: Config) -> str:
    """The resolved config as YAML text (RUN_DIR/config.yaml); `--recipe` that file reproduces the run."""
    header = {"description": f"resolved config of a run (recipe {cfg.recipe})"}
    return yaml.safe_dump(header, sort_keys=False) + yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


# ----------------------------------------------------------------------------------------- validation


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)


def validate(cfg: Config) -> None:
    """Refuse impossible settings up front with one line that says what to do."""
    _validate_optim(cfg.optim)
    _validate_data(cfg.data)
    _check(cfg.eval.batch_size >= 1, f"eval.batch_size must be at least 1; got {cfg.eval.batch_size}")
    _validate_train(cfg.train)
    _validate_techniques(cfg)
    _check(cfg.dist.timeout_s >= 1, f"dist.timeout_s must be at least 1; got {cfg.dist.timeout_s}")
    _validate_schedule(cfg.schedule)


def _validate_optim(optim: OptimConfig) -> None:
    _check(0 < optim.lr < MAX_LR, f"optim.lr must be positive and below {MAX_LR:g}; got {optim.lr}")
    _check(0 <= optim.momentum < 1, f"optim.momentum must be in [0, 1); got {optim.momentum}")
    _check(not optim.nesterov or (optim.name == "sgd" and optim.momentum > 0),
           "optim.nesterov needs optim.name=sgd, momentum > 0")
    _check(optim.weight_decay >= 0, f"optim.weight_decay must be >= 0; got {optim.weight_decay}")
    _check(optim.eps > 0, f"optim.eps must be a small positive number (e.g. 1e-8); got {optim.eps}")
    betas_ok = len(optim.betas) == 2 and all(0 <= b < 1 for b in optim.betas)
    _check(betas_ok, f"optim.betas must be two numbers in [0, 1); got {optim.betas}")


def _validate_data(data: DataConfig) -> None:
    _check(data.batch_size >= 1, f"data.batch_size must be at least 1; got {data.batch_size}")
    _check(data.val_size is None or data.val_size >= 0, "data.val_size must be a count, a fraction in (0, 1), 0 (no "
           f"validation split) or null; got {data.val_size}")
    _check(data.val_size is None or data.val_size < 1 or float(data.val_size).is_integer(),
           f"data.val_size must be a whole number of images or a fraction in (0, 1); got {data.val_size}")
    for key in ("train_size", "test_size"):
        value = getattr(data, key)
        _check(value is None or (value > 0 and (value < 1 or float(value).is_integer())),
               f"data.{key} must be a positive whole number of images, a fraction in (0, 1) or null (all); got {value}")
    for key in ("crop_padding", "translate", "cutout"):
        _check(getattr(data, key) >= 0, f"data.{key} must be >= 0; got {getattr(data, key)}")
    for key in ("image_size", "resize"):
        value = getattr(data, key)
        _check(value is None or value >= 1, f"data.{key} must be a positive size in pixels or null; got {value}")
    _check(data.channels in (None, 1, 3), f"data.channels must be 1, 3 or null; got {data.channels}")
    _validate_normalize(data)
    _check(data.classes is None or len(data.classes) >= 2, "data.classes must name at least 2 classes (or be null "
           f"for all); got {data.classes}")
    _validate_augmentation(data)


def _validate_train(train: TrainConfig) -> None:
    _check(train.epochs >= 1 or train.iters >= 1, "train.epochs or train.iters must be at least 1")
    _check(train.iters >= 0 and train.epochs >= 0, "train.epochs and train.iters must be >= 0")
    _check(0 <= train.label_smoothing < 1, f"train.label_smoothing must be in [0, 1); got {train.label_smoothing}")
    _check(0 <= train.ema_decay < 1, f"train.ema_decay must be in [0, 1) (0 = off, e.g. 0.999); got {train.ema_decay}")
    for key in ("grad_clip", "eval_every", "top_k", "threads"):
        _check(getattr(train, key) >= 0, f"train.{key} must be >= 0; got {getattr(train, key)}")
    _check(train.log_every == "auto" or train.log_every >= 1,
           f"train.log_every must be auto or at least 1; got {train.log_every}")
    _check(0 <= train.seed <= MAX_SEED, f"train.seed must be from 0 to {MAX_SEED}; got {train.seed}")


def _validate_techniques(cfg: Config) -> None:
    """Gradient accumulation, fine-tuning and early stopping (train.accumulate, freeze_epochs, patience)."""
    train, batch_size = cfg.train, cfg.data.batch_size
    _check(1 <= train.accumulate <= batch_size, f"train.accumulate must be from 1 to data.batch_size ({batch_size}) "
           f"micro-batches per step; got {train.accumulate}")
    _check(train.freeze_epochs >= 0, "train.freeze_epochs must be >= 0 (0 = no frozen phase); got "
           f"{train.freeze_epochs}")
    _check(0 < cfg.optim.backbone_lr_scale <= MAX_LR, "optim.backbone_lr_scale must be positive (e.g. 0.1: the "
           f"backbone at a tenth of the classifier's lr); got {cfg.optim.backbone_lr_scale}")
    _check(0 < cfg.optim.bn_bias_lr_scale <= MAX_LR, "optim.bn_bias_lr_scale must be positive (1 = the lr of the "
           f"other weights); got {cfg.optim.bn_bias_lr_scale}")
    _check(train.patience >= 0, f"train.patience must be >= 0 (0 = no early stopping); got {train.patience}")
    _check(train.patience == 0 or cfg.data.val_size != 0, "train.patience needs a validation split to watch; set "
           "data.val_size (e.g. 0.1) or train.patience=0")


def _validate_normalize(data: DataConfig) -> None:
    """data.normalize=fixed takes data.mean and data.std (as many values, std positive); the others take neither."""
    if data.normalize != "fixed":
        _check(data.mean is None and data.std is None, "data.mean and data.std are the constants of "
               f"data.normalize=fixed (data.normalize is {data.normalize}); set data.normalize=fixed, or "
               "data.mean=null data.std=null")
        return
    _check(bool(data.mean) and bool(data.std), "data.normalize=fixed needs data.mean and data.std, one value per "
           "channel (e.g. data.mean=[0.4914,0.4822,0.4465] data.std=[0.2023,0.1994,0.2010])")
    assert data.mean is not None and data.std is not None
    _check(len(data.mean) == len(data.std), f"data.mean and data.std need one value per channel each; got "
           f"{len(data.mean)} and {len(data.std)} values")
    _check(all(value > 0 for value in data.std), f"data.std must be positive; got {data.std}")


def _validate_augmentation(data: DataConfig) -> None:
    _check(data.randaugment_ops >= 0, f"data.randaugment_ops must be >= 0; got {data.randaugment_ops}")
    _check(0 <= data.randaugment_magnitude <= 30, f"data.randaugment_magnitude must be in 0..30; got "
           f"{data.randaugment_magnitude}")
    for key in ("random_erasing", "mix_prob", "mix_switch_prob"):
        _check(0 <= getattr(data, key) <= 1,
               f"data.{key} is a probability and must be in [0, 1]; got {getattr(data, key)}")
    for key in ("mixup_alpha", "cutmix_alpha"):
        _check(getattr(data, key) >= 0, f"data.{key} must be >= 0 (0 = off); got {getattr(data, key)}")


def _validate_schedule(schedule: ScheduleConfig) -> None:
    milestones = schedule.milestones
    _check(all(m > 0 for m in milestones), f"schedule.milestones must be positive; got {milestones}")
    fractions, iterations = [m for m in milestones if m < 1], [m for m in milestones if m >= 1]
    ordered = fractions == sorted(fractions) and iterations == sorted(iterations)
    _check(ordered, f"schedule.milestones must increase; got {milestones}")
    _check(schedule.gamma > 0, f"schedule.gamma must be positive; got {schedule.gamma}")
    _check(schedule.name != "step" or schedule.step_size > 0,
           "schedule.name=step needs schedule.step_size > 0 (e.g. 0.2 or 2000)")
    _check(schedule.name != "multistep" or milestones,
           "schedule.name=multistep needs schedule.milestones, e.g. [0.5, 0.75]")
    _check(0 < schedule.pct_start < 1, f"schedule.pct_start must be in (0, 1); got {schedule.pct_start}")
    _check(schedule.div_factor >= 1 and schedule.final_div_factor >= 1,
           "schedule.div_factor and final_div_factor must be >= 1")
    _check(schedule.warmup_iters >= 0, f"schedule.warmup_iters must be >= 0; got {schedule.warmup_iters}")
    _check(schedule.warmup_lr >= 0 and schedule.min_lr >= 0, "schedule.warmup_lr and schedule.min_lr must be >= 0")
    _check(schedule.patience >= 0, f"schedule.patience must be >= 0; got {schedule.patience}")
