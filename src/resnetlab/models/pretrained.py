"""torchvision's ImageNet weights by name (`weights="IMAGENET1K_V1"`): resolved, downloaded with the hash check, cached.

The names are torchvision's (`torchvision.models.get_model_weights("resnet50")`: IMAGENET1K_V1, IMAGENET1K_V2,
DEFAULT, or the full `ResNet50_Weights.IMAGENET1K_V2`), for resnet18..resnet152 only: our ImageNet ResNets have
torchvision's parameter names, so its files load unchanged. A file is downloaded once into the torch hub cache,
`$TORCH_HOME/hub/checkpoints/` (`torch.hub.get_dir()`), under torchvision's file name, whose part after the dash is
the start of the file's sha256 (`resnet50-11ad3fa6.pth`): a download whose hash differs is refused and not kept.
A cached file is used as it is, so a machine without internet works once the file is there; without it, the
error names the exact path to put the file at and the URL to get it from.

What the weights were trained with (the ImageNet mean and std, the crop size, the 1000 class names) comes from the
same torchvision entry (`meta["categories"]` and the preset `transforms()`), so a run can preprocess as they did.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torchvision.models

from resnetlab.errors import UserError
from resnetlab.models.catalog import IMAGENET_MODELS

log = logging.getLogger(__name__)

# "IMAGENET1K_V1", "DEFAULT" or "ResNet50_Weights.IMAGENET1K_V1": upper-case words, never a path or a file name.
WEIGHT_NAME = re.compile(r"^(?:(?P<enum>[A-Za-z0-9]+_Weights)\.)?(?P<name>[A-Z][A-Z0-9_]*)$")
HASH_PREFIX = re.compile(r"-([a-f0-9]+)\.")  # torch.hub's rule: resnet50-11ad3fa6.pth -> 11ad3fa6
_HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class PretrainedWeights:
    """One torchvision weight entry of a zoo model: where its file is and how its images were prepared."""

    model: str  # resnet18 .. resnet152
    name: str  # IMAGENET1K_V1, ... (DEFAULT resolved to the entry it stands for)
    url: str
    categories: tuple[str, ...] = field(repr=False)  # the classifier's outputs, in order
    mean: tuple[float, ...]  # per RGB channel, in [0, 1] units
    std: tuple[float, ...]
    crop_size: int  # the side of the images the weights were evaluated on (torchvision's preset transform)
    resize_size: int  # the shorter side before that centre crop

    @property
    def file_name(self) -> str:
        """torchvision's file name, e.g. resnet50-11ad3fa6.pth."""
        return self.url.rsplit("/", 1)[-1]

    @property
    def hash_prefix(self) -> str:
        """The start of the file's sha256, from its name (torch.hub's convention)."""
        match = HASH_PREFIX.search(self.file_name)
        return match.group(1) if match else ""

    @property
    def path(self) -> Path:
        """Where the file is cached: torch.hub.get_dir()/checkpoints/FILE ($TORCH_HOME/hub/checkpoints)."""
        return hub_checkpoints_dir() / self.file_name


def hub_checkpoints_dir() -> Path:
    """The torch hub's weight cache: $TORCH_HOME/hub/checkpoints (default ~/.cache/torch/hub/checkpoints)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def is_weight_name(weights: str | os.PathLike | None) -> bool:
    """Whether `weights` is a torchvision weight name rather than a file (an existing file always wins)."""
    if weights is None or not isinstance(weights, str) or not WEIGHT_NAME.match(weights):
        return False
    return not Path(weights).exists()


def get_weights(model: str, weights: str) -> PretrainedWeights:
    """The torchvision weight entry `weights` (e.g. IMAGENET1K_V2) of the zoo model `model`.

    Raises:
        UserError: `model` has no torchvision weights (the CIFAR nets), or `weights` is not one of its names.
    """
    match = WEIGHT_NAME.match(weights)
    if model not in IMAGENET_MODELS:
        raise UserError(f"weight names such as {weights} exist only for {', '.join(IMAGENET_MODELS)}; for {model} "
                        "pass a weights file (a state dict or one of our checkpoints)")
    enum = torchvision.models.get_model_weights(model)
    names = [*enum.__members__]
    if match is None or match["name"] not in names or match["enum"] not in (None, enum.__name__):
        raise UserError(f"unknown weights {weights!r} for {model}; torchvision has {', '.join(names)} "
                        f"(or {enum.__name__}.NAME), or pass a weights file")
    entry = enum[match["name"]]
    preset = entry.transforms()
    return PretrainedWeights(model=model, name=entry.name, url=entry.url, categories=tuple(entry.meta["categories"]),
                             mean=tuple(float(m) for m in preset.mean), std=tuple(float(s) for s in preset.std),
                             crop_size=int(preset.crop_size[0]), resize_size=int(preset.resize_size[0]))


def fetch_weights(weights: PretrainedWeights, progress: bool = True) -> Path:
    """The cached file of `weights`, downloaded first (with torchvision's hash check) when it is not there.

    Raises:
        UserError: the download failed (offline: the message names the path to put the file at and its URL), or
            the downloaded file's sha256 does not start with the prefix in its name (the file is not kept).
    """
    path = weights.path
    if path.is_file():
        return path
    where = f"put {weights.file_name} (from {weights.url}) at {path}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the weight cache {path.parent} ({exc.strerror}); set TORCH_HOME to a "
                        f"writable folder, or {where}") from None
    partial = path.with_name(f"{path.name}.download")
    log.info("downloading %s weights %s from %s to %s", weights.model, weights.name, weights.url, path)
    try:
        torch.hub.download_url_to_file(weights.url, str(partial), hash_prefix=weights.hash_prefix or None,
                                       progress=progress)
        _check_hash(partial, weights)
        os.replace(partial, path)
    except OSError as exc:  # no network, DNS, HTTP errors, a full disk
        raise UserError(f"cannot download {weights.model} weights {weights.name} ({_reason(exc)}); offline, "
                        f"{where}") from None
    except RuntimeError as exc:  # torch.hub's "invalid hash value"
        raise UserError(f"the download of {weights.url} failed its hash check ({exc}); it was not kept. Try "
                        f"again, or {where}") from None
    finally:
        partial.unlink(missing_ok=True)
    return path


def _check_hash(path: Path, weights: PretrainedWeights) -> None:
    """Raise RuntimeError when the file's sha256 does not start with the prefix in its torchvision name."""
    prefix = weights.hash_prefix
    if not prefix or not path.is_file():
        return
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    if not digest.hexdigest().startswith(prefix):
        raise RuntimeError(f'invalid hash value (expected "{prefix}", got "{digest.hexdigest()}")')


def _reason(exc: OSError) -> str:
    reason = getattr(exc, "reason", None) or exc.strerror or exc
    return str(reason).splitlines()[0] if str(reason) else type(exc).__name__
