"""The classifier ("head") and everything before it ("backbone"): what fine-tuning freezes and what learns slower.

Every zoo model ends in `fc`, an `nn.Linear` (as torchvision's ResNets); a user's registered model without one has
its last `nn.Linear` taken as the classifier. `discriminative_groups` splits optimizer parameter groups into a head
part and a backbone part whose `lr_scale` (optim.backbone_lr_scale) `LRSchedule.apply` multiplies the lr by
(discriminative learning rates, Howard & Ruder 2018 "Universal Language Model Fine-tuning", as fastai's
`fine_tune`).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from resnetlab.errors import UserError


def classifier_name(net: nn.Module) -> str:
    """The name of the classifier module: `fc`, else the last `nn.Linear`.

    Raises:
        UserError: the model has no `nn.Linear` to treat as its classifier.
    """
    if isinstance(getattr(net, "fc", None), nn.Linear):
        return "fc"
    linears = [name for name, module in net.named_modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise UserError(f"{type(net).__name__} has no nn.Linear classifier; fine-tuning (train.freeze_epochs, "
                        "optim.backbone_lr_scale) needs one")
    return linears[-1]


def split_parameters(net: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(classifier parameters, backbone parameters) of `net`, each in `net.parameters()` order."""
    head = classifier_name(net)
    named = list(net.named_parameters())
    inside = [p for name, p in named if name.startswith(head + ".")]
    return inside, [p for name, p in named if not name.startswith(head + ".")]


def backbone_batchnorms(net: nn.Module) -> list[nn.Module]:
    """The BatchNorm layers of the backbone (the classifier has none in the zoo, but a user's model might)."""
    head = classifier_name(net)
    return [m for name, m in net.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and not (name == head or name.startswith(head + "."))]


def discriminative_groups(groups: list[dict[str, Any]], net: nn.Module, scale: float) -> list[dict[str, Any]]:
    """`groups` with each split into its backbone part (`lr_scale: scale`) and its classifier part (`lr_scale: 1`).

    The options of a group (weight decay) stay with both parts; empty parts are left out. With `scale` 1 the
    groups are returned as they are, so runs without discriminative lr keep their optimizer state layout.
    """
    if scale == 1.0:
        return groups
    head = {id(p) for p in split_parameters(net)[0]}
    out = []
    for group in groups:
        params = list(group["params"])
        for part, part_scale in (([p for p in params if id(p) not in head], scale),
                                 ([p for p in params if id(p) in head], 1.0)):
            if part:
                out.append({**group, "params": part, "lr_scale": group.get("lr_scale", 1.0) * part_scale})
    return out


def bn_bias_groups(groups: list[dict[str, Any]], net: nn.Module, scale: float) -> list[dict[str, Any]]:
    """`groups` with the BatchNorm biases (shifts) moved into groups of their own at `lr_scale: scale`.

    airbench94 (Jordan 2024, arXiv 2404.00498) trains the BatchNorm biases at a much higher lr than the weights
    (optim.bn_bias_lr_scale). The options of a group (weight decay) stay with both parts; with `scale` 1 the
    groups are returned as they are.
    """
    if scale == 1.0:
        return groups
    biases = {id(m.bias) for m in net.modules()
              if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.bias is not None}
    out = []
    for group in groups:
        params = list(group["params"])
        for part, part_scale in (([p for p in params if id(p) not in biases], 1.0),
                                 ([p for p in params if id(p) in biases], scale)):
            if part:
                out.append({**group, "params": part, "lr_scale": group.get("lr_scale", 1.0) * part_scale})
    return out
