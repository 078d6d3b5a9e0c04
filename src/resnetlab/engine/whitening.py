"""Patch-whitening initialisation of a model's 2x2 stem from the training images (`train.whiten_init`).

airbench94 (Jordan 2024, arXiv 2404.00498; https://github.com/KellerJordan/cifar10-airbench): the first layer's
filters are the eigenvectors of the covariance of the training images' k x k patches, each scaled by
1 / sqrt(eigenvalue + eps), once with each sign; the layer then outputs decorrelated, unit-variance features,
and its weights stay fixed (its bias still learns). The covariance is measured on the first `WHITEN_IMAGES`
images of the run's training split (never validation or test), normalized as the loader normalizes them.

The filters are a deterministic function of the training split, so a resumed run computes the same ones
before its checkpoint is loaded over them.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from resnetlab.engine.hooks import Hook, RunView
from resnetlab.errors import UserError

log = logging.getLogger(__name__)
WHITEN_IMAGES = 5000  # images whose patches estimate the covariance (airbench94: 5,000 of CIFAR-10's 50,000)
WHITEN_EPS = 5e-4  # added to every eigenvalue before the square root (airbench94)


def patch_whitening_filters(images: torch.Tensor, kernel: int, eps: float = WHITEN_EPS) -> torch.Tensor:
    """The 2 x C*k*k whitening filters (C*k*k, C, k, k) of `images` (N, C, H, W, normalized float), +v then -v.

    Ordered by decreasing eigenvalue; computed in float64 so that the smallest eigenvalues are not lost.
    """
    x = images.double()
    c = x.shape[1]
    patches = x.unfold(2, kernel, 1).unfold(3, kernel, 1)  # (N, C, H', W', k, k)
    flat = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * kernel * kernel)  # (N H' W', C k k)
    covariance = flat.T @ flat / flat.shape[0]
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending
    eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.T.flip(0)  # rows = eigenvectors, largest first
    filters = (eigenvectors / torch.sqrt(eigenvalues.clamp_min(0) + eps)[:, None]).view(-1, c, kernel, kernel)
    return torch.cat([filters, -filters]).float()


def normalized_images(images: torch.Tensor, normalization: dict[str, Any]) -> torch.Tensor:
    """uint8 (N, C, H, W) images as the loader feeds them: (pixel / 255 - mean) / std, in float64."""
    c, h, w = images.shape[1:]
    mean = torch.tensor(normalization["mean"], dtype=torch.float64)
    mean = mean.view(c, 1, 1) if mean.dim() == 1 else mean.view(c, h, w)
    std = torch.tensor(normalization["std"], dtype=torch.float64).reshape(-1).expand(c).view(c, 1, 1)
    return (images.double() / 255 - mean) / std


class PatchWhitening(Hook):
    """Set the model's patch-whitening stem (`conv1` of a model with `patch_whitening = True`) from the data.

    A model without one (resnet20 under a recipe written for airbench) is left as it is, with an INFO note.
    """

    name = "whiten_init"

    def setup(self, run: RunView) -> None:
        """Compute the filters from the training split, copy them into the stem and freeze its weight."""
        net = run.net
        stem = getattr(net, "conv1", None)
        if not getattr(net, "patch_whitening", False) or not isinstance(stem, nn.Conv2d):
            # A recipe's technique belongs to its model: `--recipe fmnist-fast --model resnet56` trains resnet56.
            log.info("%s has no patch-whitening stem; train.whiten_init leaves it as it is", run.cfg.model.name)
            return
        images = normalized_images(run.data.train.images[:WHITEN_IMAGES], run.data.normalization)
        filters = patch_whitening_filters(images, stem.kernel_size[0])
        if filters.shape != stem.weight.shape:
            raise UserError(f"the whitening stem of {run.cfg.model.name} has {tuple(stem.weight.shape)} filters; "
                            f"the data's {images.shape[1]} channels need {tuple(filters.shape)}")
        with torch.no_grad():
            stem.weight.copy_(filters)
        stem.weight.requires_grad_(False)  # fixed, as airbench94's; the optimizer skips a parameter without a grad
