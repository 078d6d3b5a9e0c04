"""`resnetlab export`: the exported ONNX / torch.export program gives the checkpoint's logits, or with
--include-preprocessing the probabilities `resnetlab predict` gives for the same uint8 images."""

from __future__ import annotations

import builtins
import json
import os
from pathlib import Path

import pytest
import torch
from PIL import Image
from support.evalkit import write_checkpoint

import resnetlab.inference.predict as predict_module
from resnetlab.inference.export import export_checkpoint
from resnetlab.inference.images import load_image, stored_size
from resnetlab.inference.loading import load_checkpoint
from resnetlab.inference.predict import predict_logits

pytestmark = pytest.mark.numeric  # also run with AVX2 kernels only by .ci/run (issue 11)


def _reference(ckpt, batch: int = 5):
    model, info = load_checkpoint(ckpt)
    x = torch.randn(batch, info["in_chans"], info["image_size"], info["image_size"],
                    generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        return x, model(x)


def test_pt2_export_matches_checkpoint(random_checkpoint, tmp_path, run_cli) -> None:
    out = tmp_path / "model.pt2"
    code, stdout, _ = run_cli("export", random_checkpoint, "--format", "pt2", "--out", out)
    assert code == 0 and stdout.strip() == str(out)
    x, expected = _reference(random_checkpoint)
    program = torch.export.load(out).module()
    torch.testing.assert_close(program(x), expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(program(x[:1]), expected[:1], rtol=0, atol=1e-5)  # the batch size is dynamic
    meta = json.loads((tmp_path / "model.pt2.json").read_text())
    assert meta["classes"] == ["circle", "cross", "square"]
    assert meta["normalization"] == {"mean": [0.25], "std": [0.5]}


@pytest.mark.slow  # the ONNX exporter's graph passes take ~10 s on 2 cores
def test_onnx_export_matches_checkpoint_in_onnxruntime(random_checkpoint, tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime")
    out = export_checkpoint(random_checkpoint, "onnx", tmp_path / "model.onnx")
    x, expected = _reference(random_checkpoint, batch=7)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    (logits,) = session.run(None, {"images": x.numpy()})
    assert logits.shape == (7, 3)
    torch.testing.assert_close(torch.from_numpy(logits), expected, rtol=0, atol=1e-4)


def test_onnx_without_packages_names_the_extra(random_checkpoint, tmp_path, monkeypatch, run_cli) -> None:
    real_import = builtins.__import__

    def no_onnxscript(name, *args, **kwargs):
        if name == "onnxscript":
            raise ImportError("No module named 'onnxscript'", name="onnxscript")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnxscript)
    code, _, err = run_cli("export", random_checkpoint, "--format", "onnx", "--out", tmp_path / "m.onnx")
    assert code == 2
    assert err.count("\n") == 1 and "pip install 'resnetlab[export]'" in err
    assert not (tmp_path / "m.onnx").exists()


def test_export_of_a_bad_checkpoint_is_one_line(tmp_path, run_cli) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    code, stdout, err = run_cli("export", bad, "--format", "pt2", "--out", tmp_path / "m.pt2")
    assert code == 2 and stdout == ""
    assert err.count("\n") == 1 and err.startswith("resnetlab: error:")


# ----------------------------------------------------------------------------- --include-preprocessing

# Checkpoints whose runs prepared images in each way the Loader can: (write_checkpoint keywords, sides of the test
# images). Per-channel statistics at a fixed size; the paper's per-pixel mean with a shrinking (antialiased)
# resize; and a resize of images kept at their own size (the graph then takes any square side).
PREPROCESSING_CASES = {
    "channel": ({}, [16]),
    "pixel-shrink": ({"in_chans": 3, "image_size": 12, "overrides": ("data.normalize=pixel", "data.image_size=20",
                                                                     "data.resize=12")}, [20]),
    "resize-any-side": ({"in_chans": 3, "image_size": 24, "overrides": ("data.resize=24",),
                         "normalization": {"mean": [0.5, 0.4, 0.3], "std": [0.25, 0.2, 0.3]}}, [16, 40]),
}


def _preprocessing_checkpoint(tmp_path, case: str):
    kwargs, sides = PREPROCESSING_CASES[case]
    kwargs = dict(kwargs)
    if case == "pixel-shrink":
        mean = torch.rand(3, 20, 20, generator=torch.Generator().manual_seed(5))
        kwargs["normalization"] = {"mean": mean.tolist(), "std": [1.0]}
    return write_checkpoint(tmp_path / f"{case}.pt", **kwargs), sides


def _images_and_expected(ckpt, side: int, tmp_path, monkeypatch):
    """uint8 images decoded from files as `resnetlab predict` decodes them, and predict's probabilities.

    Predict runs on the CPU here, as the exported graphs do: a GPU's TF32 convolutions would differ by ~1e-4.
    """
    monkeypatch.setattr(predict_module, "select_device", lambda name: torch.device("cpu"))
    model, info = load_checkpoint(ckpt)
    in_chans = int(info["in_chans"])
    gen = torch.Generator().manual_seed(side)
    paths = []
    for i in range(4):
        pixels = torch.randint(0, 256, (side, side, in_chans), generator=gen, dtype=torch.uint8).squeeze(-1).numpy()
        paths.append(tmp_path / f"img{side}_{i}.png")
        Image.fromarray(pixels).save(paths[-1])
    images = torch.stack([load_image(p, in_chans, stored_size(info)) for p in paths])
    assert images.shape == (4, in_chans, side, side)
    return images, predict_logits(model, info, images).softmax(dim=1)


@pytest.mark.parametrize("case", list(PREPROCESSING_CASES))
def test_pt2_with_preprocessing_takes_uint8_and_gives_predicts_probabilities(tmp_path, run_cli, monkeypatch,
                                                                             case) -> None:
    ckpt, sides = _preprocessing_checkpoint(tmp_path, case)
    out = tmp_path / "model.pt2"
    code, stdout, _ = run_cli("export", ckpt, "--format", "pt2", "--out", out, "--include-preprocessing")
    assert code == 0 and stdout.strip() == str(out)
    program = torch.export.load(out).module()
    for side in sides:
        images, expected = _images_and_expected(ckpt, side, tmp_path, monkeypatch)
        probs = program(images)
        torch.testing.assert_close(probs, expected, rtol=0, atol=1e-5)
        torch.testing.assert_close(program(images[:1]), expected[:1], rtol=0, atol=1e-5)  # dynamic batch
    meta = json.loads((tmp_path / "model.pt2.json").read_text())
    side = None if case == "resize-any-side" else sides[0]
    assert meta["input_dtype"] == "uint8" and meta["output"] == "probabilities" and meta["image_size"] == side
    assert meta["input_shape"] == ["batch", 3 if case != "channel" else 1, side or "side", side or "side"]
    assert "softmax" in meta["output_kind"] and "inside the graph" in meta["preprocessing"]


@pytest.mark.slow  # the ONNX exporter's graph passes take ~10 s per export on 2 cores
@pytest.mark.parametrize("case", list(PREPROCESSING_CASES))
def test_onnx_with_preprocessing_gives_predicts_probabilities_in_onnxruntime(tmp_path, monkeypatch, case) -> None:
    ort = pytest.importorskip("onnxruntime")
    ckpt, sides = _preprocessing_checkpoint(tmp_path, case)
    out = export_checkpoint(ckpt, "onnx", tmp_path / "model.onnx", include_preprocessing=True)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [(i.name, i.type) for i in session.get_inputs()] == [("images", "tensor(uint8)")]
    assert [o.name for o in session.get_outputs()] == ["probabilities"]
    for side in sides:
        images, expected = _images_and_expected(ckpt, side, tmp_path, monkeypatch)
        (probs,) = session.run(None, {"images": images.numpy()})
        torch.testing.assert_close(torch.from_numpy(probs), expected, rtol=0, atol=1e-5)


def test_default_export_metadata_says_float_in_logits_out(random_checkpoint, tmp_path) -> None:
    out = export_checkpoint(random_checkpoint, "pt2", tmp_path / "m.pt2")
    meta = json.loads(Path(f"{out}.json").read_text())
    assert (meta["input_dtype"], meta["output"], meta["input_shape"]) == ("float32", "logits", ["batch", 1, 16, 16])


# ----------------------------------------------------------------------------------------------- --out


def test_out_that_cannot_be_written_is_one_line(random_checkpoint, tmp_path, run_cli) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    cases = [(tmp_path, "is a directory; give a file name"),
             (a_file / "x.pt2", f"{a_file} is a file, not a folder")]  # as /etc/passwd/x.onnx
    if Path("/proc/self").is_dir():
        cases.append((Path("/proc/x.pt2"), "cannot write /proc/x.pt2"))  # refused even to root
    for out, words in cases:
        code, stdout, err = run_cli("export", random_checkpoint, "--format", "pt2", "--out", out)
        assert (code, stdout) == (2, ""), err
        assert err.count("\n") == 1 and err.startswith("resnetlab: error: ") and words in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]  # nothing left behind


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
def test_out_in_a_read_only_folder_is_one_line(random_checkpoint, tmp_path, run_cli) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        code, _, err = run_cli("export", random_checkpoint, "--format", "pt2", "--out", folder / "m.pt2")
    finally:
        folder.chmod(0o755)
    assert code == 2 and err.count("\n") == 1 and "cannot write" in err
