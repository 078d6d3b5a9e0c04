"""`resnetlab evaluate RUN_DIR|CKPT`: the numbers of a trained run, the files it writes, one-line errors."""

from __future__ import annotations

import csv
import json
import shutil

import pytest
import torch
from support.evalkit import (
    CLASSES,
    write_checkpoint,
    write_image_folder,
)

from resnetlab.engine.checkpoint import read_checkpoint, save_checkpoint
from resnetlab.reports.evaluation import evaluate_run

pytestmark = pytest.mark.numeric  # also run with AVX2 kernels only by .ci/run (issue 11)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_evaluate_gives_the_test_accuracy_of_summary(tiny_run, run_cli) -> None:
    summary = json.loads((tiny_run / "summary.json").read_text())
    code, out, err = run_cli("evaluate", tiny_run)
    assert code == 0, err
    result = json.loads((tiny_run / "eval_test.json").read_text())
    assert result["acc"] == summary["test_acc"]  # same best.pt, same test images, same count of correct ones
    assert result["loss"] == pytest.approx(summary["test_loss"], rel=1e-5)
    assert result["n"] == 3 * 12 and result["split"] == "test" and result["tta"] is False
    assert result["checkpoint"] == str((tiny_run / "checkpoints" / "best.pt").resolve())
    matrix = result["confusion_matrix"]
    assert sum(map(sum, matrix)) == 36 and [sum(row) for row in matrix] == [12, 12, 12]
    assert sum(matrix[i][i] for i in range(3)) == round(result["acc"] * 36)
    assert [row["class"] for row in result["per_class"]] == CLASSES
    with open(tiny_run / "confusion_test.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["true \\ predicted", *CLASSES]
    assert [[int(v) for v in row[1:]] for row in rows[1:]] == matrix
    assert (tiny_run / "plots" / "confusion_test.png").read_bytes().startswith(PNG_MAGIC)
    assert (tiny_run / "plots" / "wrong_test.png").read_bytes().startswith(PNG_MAGIC)
    assert out.startswith(f"top-1 accuracy  {100 * summary['test_acc']:6.2f}%")
    assert "weighted avg" in out


def test_val_split_is_the_runs_validation_split(tiny_run) -> None:
    summary = json.loads((tiny_run / "summary.json").read_text())
    result = evaluate_run(tiny_run, split="val")
    assert result["n"] == 15  # data.val_size
    assert result["acc"] == summary["best_val_acc"]  # best.pt was selected on exactly this split
    assert (tiny_run / "eval_val.json").is_file() and (tiny_run / "confusion_val.csv").is_file()


def test_tta_is_recorded_and_changes_the_prediction(tiny_run) -> None:
    plain = evaluate_run(tiny_run, split="val")
    tta = evaluate_run(tiny_run, split="val", tta=True)
    assert tta["tta"] is True and json.loads((tiny_run / "eval_val_tta.json").read_text())["tta"] is True
    assert json.loads((tiny_run / "eval_val.json").read_text())["tta"] is False  # not overwritten
    assert (tiny_run / "plots" / "confusion_val_tta.png").is_file() and (tiny_run / "plots" / "confusion_val.png")
    assert tta["loss"] != pytest.approx(plain["loss"], rel=1e-4)  # the flipped view is a different input


def test_bare_checkpoint_writes_next_to_the_file(tiny_run, tmp_path) -> None:
    ckpt = tmp_path / "elsewhere" / "model.pt"
    ckpt.parent.mkdir()
    shutil.copy(tiny_run / "checkpoints" / "best.pt", ckpt)
    result = evaluate_run(ckpt)
    assert (tmp_path / "elsewhere" / "eval_test.json").is_file()
    assert (tmp_path / "elsewhere" / "plots" / "confusion_test.png").is_file()
    assert result["acc"] == json.loads((tiny_run / "summary.json").read_text())["test_acc"]


@pytest.mark.parametrize("kind", ["missing", "truncated", "not-ours", "empty-run-dir"])
def test_bad_checkpoint_is_exit_2_with_one_line(kind, tiny_run, tmp_path, run_cli) -> None:
    path = tmp_path / "model.pt"
    if kind == "truncated":
        data = (tiny_run / "checkpoints" / "best.pt").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "not-ours":
        torch.save({"weights": torch.zeros(3)}, path)
    elif kind == "empty-run-dir":
        path = tmp_path / "run"
        path.mkdir()
    code, out, err = run_cli("evaluate", path)
    assert code == 2 and out == ""
    assert err.startswith("resnetlab: error:") and err.count("\n") == 1, err
    assert "Traceback" not in err


def test_class_count_mismatch_is_exit_2_with_one_line(tmp_path, run_cli) -> None:
    data = write_image_folder(tmp_path / "four", {"train": 3, "test": 2})
    for split in ("train", "test"):  # a fourth class the 3-class checkpoint never saw
        shutil.copytree(data / split / "circle", data / split / "ellipse")
    ckpt = write_checkpoint(tmp_path / "model.pt", overrides=(
        f"data.name=imagefolder:{data}", "data.channels=1", "data.val_size=3", "data.batch_size=4"))
    code, out, err = run_cli("evaluate", ckpt)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "3 classes" in err and "has 4" in err


def test_checkpoint_of_another_model_is_exit_2(tiny_run, tmp_path, run_cli) -> None:
    state = read_checkpoint(tiny_run / "checkpoints" / "best.pt")
    state["config"]["model"]["name"] = "resnet32"  # weights of a resnet20 under the name of a deeper net
    save_checkpoint(tmp_path / "wrong.pt", state)
    code, _, err = run_cli("evaluate", tmp_path / "wrong.pt")
    assert code == 2 and err.count("\n") == 1 and "resnet32" in err
