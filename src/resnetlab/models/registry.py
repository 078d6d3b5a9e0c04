"""The model registry: a plain dict from name to builder (as torchvision's `_api.py`), and `create_model`.

The dict starts with the zoo's builders (`cifar.BUILDERS`, `imagenet.BUILDERS`, `fast.BUILDERS`, made from the
name tables in `catalog.py`); `@register_model` adds a user's own, and registering a name twice is an error. A
builder takes keyword-only `num_classes`, `in_chans` and its own options; its `num_classes` default is the
model's natural one (10 for the CIFAR nets, 1000 for the ImageNet ResNets). `create_model` checks options against the
builder's signature and optionally loads weights (ours or torchvision's), adapting the classifier and a
3-channel first conv.
"""

from __future__ import annotations

import fnmatch
import inspect
import logging
import pickletools
import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from resnetlab.errors import UserError
from resnetlab.models import cifar, fast, imagenet, integrity, preact
from resnetlab.models.catalog import cifar_spec, natural_key, unknown_model_message
from resnetlab.models.cifar import ModelBuilder
from resnetlab.models.pretrained import fetch_weights, get_weights, is_weight_name

log = logging.getLogger(__name__)

_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since PyTorch 1.6; older files are one pickle (b"\x80\x02...")
_OTHER_FORMATS = (  # file signatures of what people pass as weights by mistake
    (b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"), (b"BM", "a BMP image"),
    (b"II*\x00", "a TIFF image"), (b"MM\x00*", "a TIFF image"), (b"RIFF", "a RIFF file (WebP image?)"),
    (b"\x1f\x8b", "a gzip file"), (b"\x89HDF", "an HDF5 file (Keras?)"),
)
_CALLING_OPCODES = frozenset({"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "NEWOBJ", "NEWOBJ_EX"})

__all__ = ["ModelBuilder", "create_model", "get_builder", "list_models", "load_weights", "read_state_dict",
           "register_model", "unreadable_reason"]


def _zoo() -> dict[str, ModelBuilder]:
    tables = (cifar.BUILDERS, preact.BUILDERS, imagenet.BUILDERS, fast.BUILDERS)
    clash = sorted(set.intersection(set(a), set(b)) for i, a in enumerate(tables) for b in tables[i + 1:])
    if any(clash):
        raise ValueError(f"model {next(c for c in clash if c)!r} is defined by two of the zoo's tables")
    return {**cifar.BUILDERS, **preact.BUILDERS, **imagenet.BUILDERS, **fast.BUILDERS}


_MODELS: dict[str, ModelBuilder] = _zoo()


def register_model(fn: ModelBuilder) -> ModelBuilder:
    """Register `fn` under its `__name__`; a second registration of the same name raises."""
    name = fn.__name__
    if name in _MODELS:
        raise ValueError(f"model {name!r} is already registered")
    _MODELS[name] = fn
    return fn


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching the shell-style `pattern`, in natural order (resnet20 before resnet110)."""
    names = [n for n in _MODELS if fnmatch.fnmatchcase(n, pattern)]
    return sorted(names, key=natural_key)


def get_builder(name: str) -> ModelBuilder:
    """The builder registered as `name` (or a generated CIFAR name such as `resnet47-bottleneck`, built on demand),
    or a UserError that lists the known names."""
    if name in _MODELS:
        return _MODELS[name]
    generated = cifar_spec(name)
    if generated is not None:
        family, spec = generated
        return (preact.variant if family == "preact" else cifar.variant)(name, spec)
    raise UserError(unknown_model_message(name, list_models()))


def create_model(name: str, *, num_classes: int | None = None, in_chans: int = 3,
                 weights: str | Path | None = None, **options: object) -> nn.Module:
    """Build the registered model `name`, optionally starting from a weights file.

    Args:
        name: a name from `list_models()`.
        num_classes: outputs of the classifier; None = the model's natural default: 10 for the CIFAR nets
            (CIFAR-10), 1000 for the ImageNet ResNets (ImageNet, as torchvision and timm).
        in_chans: channels of the input images.
        weights: a state dict file (ours or torchvision's) or one of our checkpoints (a dict whose "model" is
            the state dict), or a torchvision weight name for resnet18..152 (`IMAGENET1K_V1`, `IMAGENET1K_V2`,
            `DEFAULT`): downloaded once with its hash check into the torch hub cache ($TORCH_HOME), and kept on
            the model as `model.pretrained_weights` (class names, mean/std, crop size). A classifier of another
            size is replaced by a freshly initialised one and a 3-channel first conv is adapted to `in_chans=1`
            by summing over colour; each logs an INFO message.
        **options: the builder's options, e.g. `shortcut="B"`, `stem="cifar"`, `zero_init_residual=True`.

    Returns:
        The model in training mode, on the CPU, with `default_image_size` set.

    Raises:
        UserError: unknown name or option, invalid option value, missing/corrupt/incompatible weights.
    """
    builder = get_builder(name)
    _check_options(name, builder, options)
    if num_classes is not None:
        options = {"num_classes": num_classes, **options}
    elif inspect.signature(builder).parameters["num_classes"].default is inspect.Parameter.empty:
        raise UserError(f"{name} has no default number of classes; pass num_classes")
    pretrained = get_weights(name, str(weights)) if is_weight_name(weights) else None
    model = builder(in_chans=in_chans, **options)
    if pretrained is not None:
        path = fetch_weights(pretrained)
        try:
            load_weights(model, path)
        except UserError as exc:  # a damaged cached file: say how to get a good one
            raise UserError(f"{exc}; delete {path} to download it again") from None
        model.pretrained_weights = pretrained
    elif weights is not None:
        load_weights(model, weights)
    return model


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load the state dict in `path` into `model`, adapting the classifier and first conv (see create_model)."""
    state = _adapt_state_dict(model, read_state_dict(path), Path(path))
    model.load_state_dict(state, strict=False)  # fc.* may be left out on purpose; everything else was checked


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict in a weights or checkpoint file, read with `weights_only=True` (it never runs code).

    Raises:
        UserError: one line saying what `path` is instead: missing, a directory, empty, truncated, an image, a
            pickle that would run code (refused), or no state dict.
    """
    path = Path(path)
    if path.is_dir():
        raise UserError(f"weights path {path} is a directory; pass a file: a state dict or checkpoint saved with "
                        "torch.save")
    if not path.is_file():
        raise UserError(f"weights file {path} not found; pass a state dict or checkpoint saved with torch.save")
    integrity.verify(path, "weights file")  # our SHA-256, or the zip's CRC-32s: a changed byte is an error
    try:
        with warnings.catch_warnings():  # a plain pickle of protocol > 2 warns before it fails: one line is enough
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # zip, pickle and unpickler errors all mean "not a readable weights file"
        raise UserError(unreadable_reason(path, exc)) from None
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        obj = obj["model"]  # one of our checkpoints
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"{path} holds no state dict; pass a file saved with torch.save(model.state_dict(), ...)")
    # State dicts saved from a DDP-wrapped or compiled model carry a prefix on every key.
    return {_strip_wrappers(key): value for key, value in obj.items()}


def unreadable_reason(path: Path, exc: Exception, what: str = "weights file",
                      hint: str = "pass a state dict or checkpoint saved with torch.save") -> str:
    """Why torch.load(weights_only=True) refused `path`, as one line that says what to do (never torch's text).

    Args:
        path: the file.
        exc: what torch.load raised.
        what: what the file was meant to be ("weights file", "resnetlab checkpoint").
        hint: what to do instead.
    """
    with path.open("rb") as f:
        head = f.read(16)
    kind = next((name for magic, name in _OTHER_FORMATS if head.startswith(magic)), None)
    if not head:
        return f"{what} {path} is empty; {hint}"
    if kind is not None:
        return f"{path} is not a {what} (it is {kind}); {hint}"
    if re.search("unsupported global", str(exc), re.IGNORECASE) or (head[:1] == b"\x80" and _pickle_calls(path)):
        return (f"{path} is not a {what} (refused: it contains code, e.g. a whole pickled model, which "
                "weights_only loading never runs); load it yourself only if you trust its source")
    if head.startswith(_ZIP_MAGIC) or head[:1] == b"\x80" or isinstance(exc, EOFError):
        return f"cannot read {what} {path} ({type(exc).__name__}): it is truncated or corrupt; {hint}"
    return f"{path} is not a {what} (not the format of torch.save); {hint}"


def _pickle_calls(path: Path) -> bool:
    """Whether the (first) pickle in `path` builds objects by calling code (imports a global or reduces)."""
    with path.open("rb") as f:
        try:
            return any(op.name in _CALLING_OPCODES for op, _, _ in pickletools.genops(f))
        except Exception:  # a truncated or garbled pickle: nothing certain to report
            return False


def _strip_wrappers(key: str) -> str:
    for prefix in ("module.", "_orig_mod."):
        key = key.removeprefix(prefix)
    return key


def _adapt_state_dict(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    own = model.state_dict()
    conv = state.get("conv1.weight")
    if conv is not None and "conv1.weight" in own and conv.dim() == 4 and conv.shape[1] == 3:
        if own["conv1.weight"].shape[1] == 1:
            # Grey = a colour image with equal channels: summing the filters over colour gives the same response.
            state["conv1.weight"] = conv.sum(dim=1, keepdim=True)
            log.info("adapted the 3-channel first conv of %s to 1 input channel (summed over colour)", path)
    fc, own_fc = state.get("fc.weight"), own.get("fc.weight")
    if fc is not None and own_fc is not None and fc.shape != own_fc.shape:
        state = {k: v for k, v in state.items() if k not in ("fc.weight", "fc.bias")}
        log.info("replaced the %d-output classifier of %s with a freshly initialised %d-output one",
                 fc.shape[0], path, own_fc.shape[0])
    elif fc is None and own_fc is not None:
        log.info("%s has no classifier (fc); it stays freshly initialised", path)
    _check_fit(own, state, path)
    return state


def _check_fit(own: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], path: Path) -> None:
    missing = [k for k in own if k not in state and not k.startswith("fc.")]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(v.shape)} != {tuple(own[k].shape)}" for k, v in state.items()
             if k in own and v.shape != own[k].shape]
    for what, keys in (("lacks", missing), ("has unexpected", unexpected), ("has wrong shapes:", wrong)):
        if keys:
            more = f" (+{len(keys) - 3} more)" if len(keys) > 3 else ""
            raise UserError(f"weights in {path} do not fit this model: it {what} {', '.join(keys[:3])}{more}; "
                            "were they saved from another model or with other options?")


def _check_options(name: str, builder: ModelBuilder, options: Mapping[str, object]) -> None:
    valid = [p for p in inspect.signature(builder).parameters if p not in ("num_classes", "in_chans")]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        hint = f"valid options: {', '.join(valid)}" if valid else f"{name} takes no options"
        raise UserError(f"unknown option {unknown[0]!r} for {name}; {hint}")
