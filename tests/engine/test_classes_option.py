"""data.classes: a run on some classes of a data set (e.g. a source model for fine-tuning on the others)."""

from __future__ import annotations

import pytest
import torch
import yaml
from support.enginekit import tiny_config

from resnetlab.data import ImageSet, select_classes
from resnetlab.engine import builders
from resnetlab.engine.trainer import train
from resnetlab.errors import UserError
from resnetlab.inference.evaluate import evaluate


def test_select_classes_keeps_and_relabels_in_the_order_given():
    images = torch.arange(6, dtype=torch.uint8).view(6, 1, 1, 1)
    imageset = ImageSet(images, torch.tensor([0, 1, 2, 3, 2, 1]), ["a", "b", "c", "d"])
    picked = select_classes(imageset, ["c", 1])
    assert picked.classes == ["c", "b"]
    assert picked.labels.tolist() == [1, 0, 0, 1] and picked.images.flatten().tolist() == [1, 2, 4, 5]
    with pytest.raises(UserError, match=r"^data.classes: no class 'e' here; the classes are 0..3: a, b, c, d$"):
        select_classes(imageset, ["a", "e"])
    with pytest.raises(UserError, match="names a class twice"):
        select_classes(imageset, [0, "a"])


def test_a_run_on_two_classes_trains_validates_tests_and_evaluates_on_them(tiny_root, tmp_path):
    data = builders.build_data(tiny_config(tiny_root, None, data__classes="[3, 1]"))
    assert data.classes == ["3", "1"] and set(data.train.labels.tolist()) == {0, 1}
    assert len(data.train) + len(data.val) == 240 and len(data.test) == 80  # half of the 480 / 160 (4 classes)
    run = train(tiny_config(tiny_root, tmp_path / "run", data__classes="[3, 1]", data__val_size=20, train__iters=2))
    assert yaml.safe_load((run.run_dir / "config.yaml").read_text())["data"]["classes"] == [3, 1]
    result = evaluate(run.run_dir)
    assert result["n"] == 80 and [r["class"] for r in result["per_class"]] == ["3", "1"]


def test_print_config_and_bad_values(tiny_root, tmp_path, run_cli):
    code, out, _ = run_cli("train", "--print-config", "--set", "data.classes=[0,1,2,3,4]")
    assert code == 0 and "data.classes = [0, 1, 2, 3, 4]" in out
    for setting, words in (("data.classes=[7]", "data.classes must name at least 2 classes"),
                           ("data.classes=[1,12]", "data.classes: no class 12 here; the classes are 0..9"),
                           ("data.classes=[1,9]", "data.classes: no images of class '9' here")):  # tiny set: 0..3
        code, out, err = run_cli("train", "--data-dir", tiny_root, "--out", tmp_path / "run", "--set",
                                 "data.name=mnist", "--set", "data.val_size=20", "--set", setting)
        assert code == 2 and words in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "run").exists()
