"""The registry and create_model: names, options, errors, weight files."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import pytest
import torch
from PIL import Image
from support.enginekit import cli_args

from resnetlab.errors import UserError
from resnetlab.models import (
    catalog,
    cifar,
    create_model,
    fast,
    imagenet,
    list_models,
    load_weights,
    preact,
    register_model,
    registry,
)
from resnetlab.models.registry import read_state_dict

ALL_NAMES = [
    "airbench",
    "plain20", "plain32", "plain44", "plain56", "plain110",
    "preact20", "preact32", "preact44", "preact56", "preact110", "preact164", "preact1001", "preact1202",
    "resnet18", "resnet20", "resnet32", "resnet34", "resnet44", "resnet50", "resnet56",
    "resnet101", "resnet110", "resnet152", "resnet164", "resnet1001", "resnet1202", "resnet56-bottleneck",
]  # fmt: skip


def test_list_models_in_natural_order_and_by_pattern() -> None:
    assert list_models() == ALL_NAMES
    assert list_models("plain*") == ["plain20", "plain32", "plain44", "plain56", "plain110"]
    assert list_models("resnet1?") == ["resnet18"]
    assert list_models("nothing*") == []


def test_the_catalog_names_the_registered_zoo() -> None:
    """One source of truth: the torch-free name tables give the builders of cifar.py and imagenet.py."""
    assert catalog.model_names() == list_models() == ALL_NAMES
    assert catalog.model_names("plain*") == list_models("plain*")
    assert set(cifar.BUILDERS) == set(catalog.CIFAR_MODELS)
    assert set(preact.BUILDERS) == set(catalog.PREACT_MODELS)
    assert set(imagenet.BUILDERS) == set(catalog.IMAGENET_MODELS)
    assert set(fast.BUILDERS) == set(catalog.FAST_MODELS)
    builders = {**cifar.BUILDERS, **imagenet.BUILDERS, **fast.BUILDERS}
    assert all(builder.__name__ == name for name, builder in builders.items())


@pytest.mark.parametrize("name", ["resnet1202", "plain110", "resnet1001", "resnet34", "resnet152"])
def test_the_catalog_says_what_is_built(name: str) -> None:
    model = create_model(name)
    blocks = [m for m in model.modules() if isinstance(m, cifar.BasicBlock | cifar.Bottleneck)]
    if name in catalog.CIFAR_MODELS:
        spec = catalog.CIFAR_MODELS[name]
        per_block = 2 if spec.block == "basic" else 3
        assert per_block * len(blocks) + 2 == spec.depth
        assert all(b.residual == spec.residual for b in blocks)
    else:
        spec = catalog.IMAGENET_MODELS[name]
        assert [len(getattr(model, f"layer{i}")) for i in range(1, 5)] == list(spec.layers)
    assert all(type(b) is cifar.BLOCKS[spec.block] for b in blocks)


def test_num_classes_defaults_to_the_models_own() -> None:
    """None = the natural default: 10 for the CIFAR nets, 1000 for the ImageNet ResNets (torchvision, timm)."""
    assert create_model("resnet20").fc.out_features == 10
    assert create_model("plain20").fc.out_features == 10
    assert create_model("resnet18").fc.out_features == 1000
    assert create_model("resnet18", stem="cifar").fc.out_features == 1000
    assert create_model("resnet18", num_classes=None).fc.out_features == 1000
    assert create_model("resnet18", num_classes=10).fc.out_features == 10
    assert create_model("resnet20", num_classes=100).fc.out_features == 100


def test_a_user_model_without_a_default_needs_num_classes() -> None:
    def resnetlab_test_tiny(*, num_classes: int, in_chans: int = 3) -> torch.nn.Module:
        return torch.nn.Conv2d(in_chans, num_classes, 1)

    register_model(resnetlab_test_tiny)
    try:
        assert create_model("resnetlab_test_tiny", num_classes=4).out_channels == 4
        with pytest.raises(UserError, match="^resnetlab_test_tiny has no default number of classes; pass num_"):
            create_model("resnetlab_test_tiny")
    finally:
        del registry._MODELS["resnetlab_test_tiny"]


def test_the_package_exports_the_registry() -> None:
    import resnetlab

    assert resnetlab.list_models("plain2*") == ["plain20"]
    assert type(resnetlab.create_model("resnet20")).__name__ == "CifarResNet"


def test_registering_a_name_twice_raises() -> None:
    def resnet20() -> torch.nn.Module:  # same __name__ as the registered CIFAR net
        raise AssertionError("never built")

    with pytest.raises(ValueError, match="'resnet20' is already registered"):
        register_model(resnet20)
    assert create_model("resnet20").fc.in_features == 64  # the original is still there


def test_unknown_name_lists_the_known_ones() -> None:
    names = r"airbench plain20 .* resnet56-bottleneck \(and any depth as resnet\{D\}-bottleneck"
    with pytest.raises(UserError, match=r"^unknown model 'resnet21'; did you mean resnet20\? known models: " + names):
        create_model("resnet21")


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("resnet20", {"stem": "cifar"},
         "unknown option 'stem' for resnet20; valid options: shortcut, zero_init_residual"),
        ("resnet18", {"shortcut": "A"},
         "unknown option 'shortcut' for resnet18; valid options: stem, zero_init_residual"),
        ("plain20", {"shortcut": "B"}, "unknown option 'shortcut' for plain20; plain20 takes no options"),
        ("resnet18", {"stem": "tiny"}, "unknown stem 'tiny' for resnet18"),
        ("resnet20", {"shortcut": "C"}, "unknown shortcut 'C'"),
    ],
)
def test_bad_options_raise_a_user_error(name: str, options: dict, message: str) -> None:
    with pytest.raises(UserError, match="^" + message.replace("(", r"\(")):
        create_model(name, **options)


def test_bad_sizes_raise_a_user_error() -> None:
    with pytest.raises(UserError, match="in_chans must be a positive integer"):
        create_model("resnet18", in_chans=0)
    with pytest.raises(UserError, match="num_classes must be a positive integer"):
        create_model("resnet20", num_classes=-1)


def test_every_model_has_a_default_image_size() -> None:
    sizes = {name: create_model(name).default_image_size for name in ("resnet20", "plain20", "resnet164")}
    assert sizes == {"resnet20": 32, "plain20": 32, "resnet164": 32}
    assert create_model("resnet18").default_image_size == 224


def test_weights_round_trip_raw_state_dict_and_checkpoint(tmp_path: Path) -> None:
    source = create_model("resnet20", shortcut="B")
    torch.save(source.state_dict(), tmp_path / "raw.pt")
    torch.save({"model": source.state_dict(), "step": 3, "classes": ["a"]}, tmp_path / "ckpt.pt")
    for file in ("raw.pt", "ckpt.pt"):
        model = create_model("resnet20", shortcut="B", weights=tmp_path / file)
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), source.state_dict().values(),
                                                     strict=True))


def test_weights_saved_from_a_wrapped_model_load(tmp_path: Path) -> None:
    source = create_model("resnet20")
    torch.save({f"module.{k}": v for k, v in source.state_dict().items()}, tmp_path / "ddp.pt")
    model = create_model("resnet20", weights=tmp_path / "ddp.pt")
    assert torch.equal(model.conv1.weight, source.conv1.weight)


def test_a_classifier_of_another_size_is_replaced(tmp_path: Path, caplog) -> None:
    source = create_model("resnet20", num_classes=100)
    torch.save(source.state_dict(), tmp_path / "c100.pt")
    with caplog.at_level(logging.INFO, logger="resnetlab"):
        model = create_model("resnet20", num_classes=10, weights=tmp_path / "c100.pt")
    assert model.fc.out_features == 10
    assert torch.equal(model.layer3[2].conv2.weight, source.layer3[2].conv2.weight)
    assert "replaced the 100-output classifier" in caplog.text


def test_missing_corrupt_and_mismatched_weights_raise_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="weights file .*nope.pt not found"):
        create_model("resnet20", weights=tmp_path / "nope.pt")
    torch.save(create_model("resnet20").state_dict(), tmp_path / "good.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((tmp_path / "good.pt").read_bytes()[:5000])
    with pytest.raises(UserError, match="cannot read weights file .*truncated.pt"):
        create_model("resnet20", weights=truncated)
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(UserError, match="holds no state dict"):
        read_state_dict(tmp_path / "list.pt")
    with pytest.raises(UserError, match="do not fit this model: it lacks layer2.0.downsample.0.weight"):
        create_model("resnet20", shortcut="B", weights=tmp_path / "good.pt")
    with pytest.raises(UserError, match="do not fit this model"):
        create_model("resnet32", weights=tmp_path / "good.pt")


def test_weights_loading_never_runs_code(tmp_path: Path) -> None:
    # weights_only=True: a pickle that would build an arbitrary object is refused, not executed.
    torch.save({"model": create_model("resnet20")}, tmp_path / "whole.pt")
    with pytest.raises(UserError, match=r"whole.pt is not a weights file \(refused: it contains code"):
        load_weights(create_model("resnet20"), tmp_path / "whole.pt")


class _Payload:
    """Unpickling this calls Path.mkdir(target): the side effect shows whether the code ran."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return Path.mkdir, (self.target,)


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_a_pickle_that_runs_code_is_refused_and_never_run(tmp_path: Path, protocol: int) -> None:
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps(_Payload(tmp_path / "ran"), protocol=protocol))
    with pytest.raises(UserError) as info:
        read_state_dict(evil)
    message = str(info.value)
    assert message.startswith(f"{evil} is not a weights file (refused: it contains code") and "\n" not in message
    assert not (tmp_path / "ran").exists()


def test_a_directory_or_an_image_as_weights_is_named(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=f"^weights path {tmp_path} is a directory; pass a file"):
        create_model("resnet20", weights=tmp_path)
    Image.new("RGB", (8, 8)).save(tmp_path / "cat.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "cat.jpg")
    for name, kind in (("cat.png", "PNG"), ("cat.jpg", "JPEG")):
        with pytest.raises(UserError, match=rf"^{tmp_path / name} is not a weights file \(it is a {kind} image\); "):
            create_model("resnet20", weights=tmp_path / name)
    (tmp_path / "notes.txt").write_text("resnet20 weights are elsewhere\n")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(UserError, match=r"notes.txt is not a weights file \(not the format of torch.save\)"):
        read_state_dict(tmp_path / "notes.txt")
    with pytest.raises(UserError, match="empty.pt is empty"):
        read_state_dict(tmp_path / "empty.pt")


@pytest.mark.parametrize(("kind", "words"), [("dir", "is a directory; pass a file"),
                                             ("png", "is not a weights file (it is a PNG image)")])
def test_train_with_bad_weights_says_what_they_are_in_one_line(tiny_root, tmp_path: Path, run_cli, kind: str,
                                                                words: str) -> None:
    weights = tmp_path / "w"
    weights.mkdir()
    if kind == "png":
        weights = tmp_path / "w.png"
        Image.new("L", (8, 8)).save(weights)
    code, out, err = run_cli(*cli_args(tiny_root, tmp_path / "run"), "--weights", weights)
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and err.startswith("resnetlab: error: ") and words in err, err
