"""`resnetlab export`: the exported ONNX / torch.export program gives the checkpoint's logits."""

from __future__ import annotations

import builtins
import json

import pytest
import torch

from resnetlab.engine.checkpoint import load_checkpoint
from resnetlab.engine.export import export_checkpoint

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
