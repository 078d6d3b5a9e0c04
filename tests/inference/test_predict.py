"""`resnetlab predict`: files are prepared exactly as the evaluation loader prepares the test images."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from resnetlab.data import list_imagefolder
from resnetlab.engine.builders import make_loader
from resnetlab.engine.evaluate import predict_batches
from resnetlab.inference.evaluate import labelled_split
from resnetlab.inference.loading import load_checkpoint
from resnetlab.inference.predict import predict

pytestmark = pytest.mark.numeric  # also run with AVX2 kernels only by .ci/run (issue 11)


def _test_folder(run) -> tuple:
    model, info = load_checkpoint(run)
    imageset, cfg = labelled_split(info, "test")
    folder = info["config"]["data"]["name"].split(":", 1)[1]
    return model, info, imageset, cfg, folder


def test_predictions_on_pngs_equal_evaluate_logits(tiny_run) -> None:
    model, info, imageset, cfg, folder = _test_folder(tiny_run)
    loader = make_loader(imageset, cfg, train=False, device=torch.device("cpu"), normalization=info["normalization"])
    logits, targets = predict_batches(model, loader)
    expected = logits.softmax(dim=1)  # (36, 3), in the order of the folder listing
    files = list_imagefolder(folder, "test").files
    results = predict(tiny_run, [f"{folder}/test"], top_k=3)
    assert [r["path"] for r in results] == [str(f) for f in files]  # folders expand sorted, like the listing
    got = torch.zeros_like(expected)
    for i, result in enumerate(results):
        for guess in result["predictions"]:
            got[i, info["classes"].index(guess["class"])] = guess["prob"]
        probs = [g["prob"] for g in result["predictions"]]
        assert probs == sorted(probs, reverse=True)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    top1 = torch.tensor([info["classes"].index(r["predictions"][0]["class"]) for r in results])
    summary = json.loads((tiny_run / "summary.json").read_text())
    assert (top1 == targets).float().mean().item() == pytest.approx(summary["test_acc"])


def test_rgb_and_resized_files_are_converted(tiny_run, tmp_path) -> None:
    _, _, _, _, folder = _test_folder(tiny_run)
    grey = tmp_path / "grey.png"
    src = np.array(Image.open(f"{folder}/test/cross/000.png"))
    Image.fromarray(src, mode="L").save(grey)
    Image.fromarray(np.stack([src] * 3, axis=-1), mode="RGB").save(tmp_path / "rgb.png")  # luma of (v,v,v) is v
    Image.fromarray(np.kron(src, np.ones((3, 3), dtype=np.uint8)), mode="L").save(tmp_path / "big.png")  # 48 px
    by_name = {r["path"].rsplit("/", 1)[1]: r for r in predict(tiny_run, [tmp_path], top_k=2)}
    assert [p["class"] for p in by_name["rgb.png"]["predictions"]] == [p["class"] for p in by_name["grey.png"][
        "predictions"]]
    # Alone (each the only image of its batch), the same pixels give the same bits: in one batch the kernels may
    # round rows differently by their place in it (AVX2 kernels do, by 1e-6 relative).
    (rgb,), (grey,) = (predict(tiny_run, [tmp_path / name], top_k=2) for name in ("rgb.png", "grey.png"))
    assert rgb["predictions"] == grey["predictions"]
    assert len(by_name["big.png"]["predictions"]) == 2  # resized to the run's 16 px and predicted


def test_unreadable_files_get_an_error_and_the_others_a_prediction(tiny_run, tmp_path, run_cli) -> None:
    _, _, _, _, folder = _test_folder(tiny_run)
    good = f"{folder}/test/square/001.png"
    (tmp_path / "notes.png").write_text("this is not an image")
    code, out, err = run_cli("predict", tiny_run, tmp_path / "notes.png", good, tmp_path / "missing.jpg",
                             "--top-k", "5", "--json")
    assert code == 0
    results = json.loads(out)
    assert [("error" in r) for r in results] == [True, False, True]
    assert len(results[1]["predictions"]) == 3  # top-k is capped at the number of classes
    assert sum(p["prob"] for p in results[1]["predictions"]) == pytest.approx(1.0, abs=1e-6)
    code, out, err = run_cli("predict", tiny_run, tmp_path / "notes.png", good)
    assert code == 0 and out.count("\n") == 1 and out.startswith(f"{good}: ")
    assert err.count("error:") == 1 and "notes.png" in err
    code, _, err = run_cli("predict", tiny_run, tmp_path / "notes.png")
    assert code == 2  # nothing could be predicted
