"""torchvision's weights by name: resolved from torchvision, downloaded with the hash check, cached, used offline.

No network here: the cache is pre-filled with state dicts of the right shapes (support.hubkit), and
`torch.hub.download_url_to_file` is replaced by a function that writes a file where the download would go.
"""

from __future__ import annotations

import urllib.error

import pytest
import torch
from support.hubkit import fake_weights, fill_cache, sha256, use_torch_home

from resnetlab.errors import UserError
from resnetlab.models import create_model, get_weights, pretrained


def _no_download(*args, **kwargs):
    raise AssertionError("a cached file must not be downloaded again")


def test_weight_names_are_torchvisions_with_their_files_and_preprocessing():
    v2 = get_weights("resnet50", "IMAGENET1K_V2")
    assert (v2.url, v2.file_name, v2.hash_prefix) == ("https://download.pytorch.org/models/resnet50-11ad3fa6.pth",
                                                      "resnet50-11ad3fa6.pth", "11ad3fa6")
    assert (v2.mean, v2.std, v2.crop_size, v2.resize_size) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 224, 232)
    assert len(v2.categories) == 1000 and v2.categories[0] == "tench"
    assert get_weights("resnet50", "DEFAULT").name == "IMAGENET1K_V2"
    assert get_weights("resnet50", "ResNet50_Weights.IMAGENET1K_V1").file_name == "resnet50-0676ba61.pth"
    assert get_weights("resnet18", "IMAGENET1K_V1").resize_size == 256
    assert {get_weights(m, "IMAGENET1K_V1").model for m in ("resnet34", "resnet101", "resnet152")} == {
        "resnet34", "resnet101", "resnet152"}


@pytest.mark.parametrize(("model", "name", "message"), [
    ("resnet20", "IMAGENET1K_V1", "exist only for resnet18, resnet34, resnet50, resnet101, resnet152"),
    ("resnet50", "IMAGENET1K_V3", "unknown weights 'IMAGENET1K_V3' for resnet50; torchvision has IMAGENET1K_V1"),
    ("resnet50", "ResNet18_Weights.IMAGENET1K_V1", "unknown weights"),
])
def test_a_name_for_a_cifar_net_or_an_unknown_name_is_one_line(model, name, message):
    with pytest.raises(UserError, match=message) as info:
        create_model(model, weights=name)
    assert "\n" not in str(info.value)


def test_a_file_still_wins_over_a_name_shaped_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save(fake_weights("resnet18"), tmp_path / "MYWEIGHTS")
    assert pretrained.is_weight_name("IMAGENET1K_V1") and not pretrained.is_weight_name("MYWEIGHTS")
    assert not pretrained.is_weight_name("runs/a/checkpoints/best.pt") and not pretrained.is_weight_name(None)


def test_a_cached_file_is_used_offline_and_a_new_classifier_replaces_imagenets(tmp_path, monkeypatch):
    cache = use_torch_home(monkeypatch, tmp_path / "torch")
    path, state = fill_cache("resnet18", "IMAGENET1K_V1")
    assert path == cache / "resnet18-f37072fd.pth"
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_download)
    model = create_model("resnet18", weights="IMAGENET1K_V1")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    assert model.pretrained_weights.categories[:2] == ("tench", "goldfish")
    tuned = create_model("resnet18", num_classes=10, weights="IMAGENET1K_V1")
    assert tuned.fc.out_features == 10 and torch.equal(tuned.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
    grey = create_model("resnet18", num_classes=10, in_chans=1, weights="IMAGENET1K_V1")
    assert torch.allclose(grey.conv1.weight, state["conv1.weight"].sum(dim=1, keepdim=True))


def test_offline_without_the_file_says_where_to_put_it_in_one_line(tmp_path, monkeypatch):
    cache = use_torch_home(monkeypatch, tmp_path / "torch")

    def offline(url, dst, hash_prefix=None, progress=True):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(UserError) as info:
        create_model("resnet34", weights="IMAGENET1K_V1")
    message = str(info.value)
    assert "\n" not in message and "Temporary failure in name resolution" in message
    assert f"at {cache / 'resnet34-b627a593.pth'}" in message
    assert "https://download.pytorch.org/models/resnet34-b627a593.pth" in message


def _writing_download(payload: bytes, calls: list):
    def download(url, dst, hash_prefix=None, progress=True):
        calls.append((url, hash_prefix))
        with open(dst, "wb") as f:
            f.write(payload)

    return download


def test_a_download_whose_hash_differs_is_refused_and_not_kept(tmp_path, monkeypatch):
    cache = use_torch_home(monkeypatch, tmp_path / "torch")
    source = tmp_path / "impostor.pth"
    torch.save(fake_weights("resnet18"), source)  # the right shapes, but not the file whose hash is in the name
    calls = []
    monkeypatch.setattr(torch.hub, "download_url_to_file", _writing_download(source.read_bytes(), calls))
    with pytest.raises(UserError, match="failed its hash check") as info:
        create_model("resnet18", weights="IMAGENET1K_V1")
    assert calls == [("https://download.pytorch.org/models/resnet18-f37072fd.pth", "f37072fd")]
    assert "\n" not in str(info.value) and not list(cache.iterdir())  # nothing kept, no partial file


def test_a_download_with_the_right_hash_is_kept_and_loaded(tmp_path, monkeypatch):
    cache = use_torch_home(monkeypatch, tmp_path / "torch")
    source = tmp_path / "weights.pth"
    state = fake_weights("resnet18", seed=3)
    torch.save(state, source)
    prefix = sha256(source)[:8]
    entry = get_weights("resnet18", "IMAGENET1K_V1")
    forged = pretrained.PretrainedWeights(**{**entry.__dict__,
                                             "url": f"https://download.pytorch.org/models/resnet18-{prefix}.pth"})
    calls = []
    monkeypatch.setattr(torch.hub, "download_url_to_file", _writing_download(source.read_bytes(), calls))
    monkeypatch.setattr(pretrained, "get_weights", lambda model, name: forged)
    monkeypatch.setattr("resnetlab.models.registry.get_weights", lambda model, name: forged)
    model = create_model("resnet18", weights="IMAGENET1K_V1")
    assert calls == [(forged.url, prefix)] and sorted(p.name for p in cache.iterdir()) == [f"resnet18-{prefix}.pth"]
    assert torch.equal(model.fc.weight, state["fc.weight"])
    create_model("resnet18", weights="IMAGENET1K_V1")  # cached now: no second download
    assert len(calls) == 1


def test_a_damaged_cached_file_says_to_delete_it(tmp_path, monkeypatch):
    use_torch_home(monkeypatch, tmp_path / "torch")
    path, _ = fill_cache("resnet18", "IMAGENET1K_V1")
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(UserError, match=f"truncated or corrupt.*delete {path} to download it again"):
        create_model("resnet18", weights="IMAGENET1K_V1")
