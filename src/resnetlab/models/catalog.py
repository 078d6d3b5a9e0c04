"""The zoo's names as data, without torch: the one source the builders in cifar.py and imagenet.py are made from.

`resnetlab models` reads these tables alone, so listing the names does not import torch (~2 s).

Sources: He et al. 2016, "Deep Residual Learning for Image Recognition", Table 6 (CIFAR-10 basic-block nets
and their plain twins) and Table 1 (ImageNet nets); He et al. 2016b, "Identity Mappings in Deep Residual
Networks", Table 3 (the 9n+2 bottleneck nets ResNet-164 and ResNet-1001, and their pre-activation versions);
Jordan 2024, arXiv 2404.00498 (airbench94, the fast net of `fast.py`).

Besides the named nets, `resnet{D}-bottleneck`, `resnet{D}-basic`, `plain{D}-basic|bottleneck` and
`preact{D}-basic|bottleneck` name a CIFAR net of any depth D valid for its block (6n+2 basic, 9n+2 bottleneck);
`cifar_spec` reads them. `resnet56-bottleneck` (the first tutorial's `ResNet(56)`, 591,322 parameters) is listed.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Sequence
from typing import Literal, NamedTuple

BlockName = Literal["basic", "bottleneck"]


class CifarSpec(NamedTuple):
    """A named CIFAR net: `depth` weighted layers of `block` blocks, with (`residual`) or without shortcuts."""

    depth: int
    block: BlockName
    residual: bool


class ImageNetSpec(NamedTuple):
    """A named ImageNet net: `block` blocks, `layers` of them in each of the four stages (paper Table 1)."""

    block: BlockName
    layers: tuple[int, int, int, int]


# Depths of the named CIFAR nets. A name never changes the block type: resnet56 is always 9 basic blocks per
# stage (the first tutorial silently made every depth >= 44 a bottleneck net).
CIFAR_DEPTHS: dict[BlockName, tuple[int, ...]] = {"basic": (20, 32, 44, 56, 110, 1202), "bottleneck": (164, 1001)}
PLAIN_DEPTHS: tuple[int, ...] = (20, 32, 44, 56, 110)

CIFAR_MODELS: dict[str, CifarSpec] = {
    **{f"resnet{d}": CifarSpec(d, "basic", True) for d in CIFAR_DEPTHS["basic"]},
    **{f"plain{d}": CifarSpec(d, "basic", False) for d in PLAIN_DEPTHS},
    **{f"resnet{d}": CifarSpec(d, "bottleneck", True) for d in CIFAR_DEPTHS["bottleneck"]},
    "resnet56-bottleneck": CifarSpec(56, "bottleneck", True),  # seed 000's ResNet(56): its depth >= 44 rule
}

# Pre-activation nets (He et al. 2016b, BN-ReLU before each conv, an identity path with nothing on it):
# preact110 (basic, 1.7 M), preact164 and preact1001 (bottleneck, 1.7 M and 10.2 M; the paper's Table 3).
PREACT_MODELS: dict[str, CifarSpec] = {
    **{f"preact{d}": CifarSpec(d, "basic", True) for d in CIFAR_DEPTHS["basic"]},
    **{f"preact{d}": CifarSpec(d, "bottleneck", True) for d in CIFAR_DEPTHS["bottleneck"]},
}

_GENERATED_NAME = re.compile(r"(resnet|plain|preact)(\d+)-(basic|bottleneck)")

IMAGENET_MODELS: dict[str, ImageNetSpec] = {
    "resnet18": ImageNetSpec("basic", (2, 2, 2, 2)),
    "resnet34": ImageNetSpec("basic", (3, 4, 6, 3)),
    "resnet50": ImageNetSpec("bottleneck", (3, 4, 6, 3)),
    "resnet101": ImageNetSpec("bottleneck", (3, 4, 23, 3)),
    "resnet152": ImageNetSpec("bottleneck", (3, 8, 36, 3)),
}

# Nets built for time to accuracy rather than from the paper (models/fast.py).
FAST_MODELS: tuple[str, ...] = ("airbench",)


def natural_key(name: str) -> tuple[str, int]:
    """Sort key that orders the trailing number as a number: resnet20 before resnet110."""
    stem = name.rstrip("0123456789")
    digits = name[len(stem):]
    return stem, int(digits) if digits else -1


def cifar_spec(name: str) -> tuple[str, CifarSpec] | None:
    """(family, spec) of a generated CIFAR name such as `resnet47-bottleneck` or `preact56-basic` (family is
    "resnet" or "preact"; plain nets are the family "resnet" with residual=False), or None for any other name.

    The depth is not checked here: the builder says which depths the block allows."""
    match = _GENERATED_NAME.fullmatch(name)
    if match is None:
        return None
    family, depth, block = match.groups()
    spec = CifarSpec(int(depth), "basic" if block == "basic" else "bottleneck", family != "plain")
    return ("preact" if family == "preact" else "resnet"), spec


def model_names(pattern: str = "*") -> list[str]:
    """The zoo's model names matching the shell-style `pattern`, in natural order (resnet20 before resnet110)."""
    names = [n for n in (*CIFAR_MODELS, *PREACT_MODELS, *IMAGENET_MODELS, *FAST_MODELS)
             if fnmatch.fnmatchcase(n, pattern)]
    return sorted(names, key=natural_key)


def unknown_model_message(name: str, known: Sequence[str]) -> str:
    """The one-line error for a model name that is not in `known`, with the nearest name ("did you mean")."""
    # compared with look-alike letters read as digits (resnet2O, resnet5O), which difflib alone ranks as far
    key = _lookalike_key(name)

    def closeness(candidate: str) -> tuple[float, int]:  # similarity, then the longer common start (resnet21: 20)
        other = _lookalike_key(candidate)
        pairs = zip(key, other, strict=False)
        prefix = next((i for i, (a, b) in enumerate(pairs) if a != b), min(len(key), len(other)))
        return difflib.SequenceMatcher(None, key, other).ratio(), prefix

    ranked = sorted(known, key=closeness, reverse=True)
    close = [ranked[0]] if ranked and closeness(ranked[0])[0] >= 0.6 else []
    hint = f"did you mean {close[0]}? " if close else ""
    return (f"unknown model {name!r}; {hint}known models: {' '.join(sorted(known, key=natural_key))} (and any depth "
            "as resnet{D}-bottleneck, resnet{D}-basic, plain{D}-basic, preact{D}-basic|bottleneck)")


def _lookalike_key(name: str) -> str:
    return name.lower().translate(str.maketrans({"o": "0", "l": "1", "i": "1"}))
