"""Config: recipes, typed dotted overrides, validation, the printed and saved forms."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from resnetlab.engine import builders
from resnetlab.engine.config import (
    Config,
    config_from_dict,
    config_to_dict,
    dump_config,
    format_config,
    load_config,
)
from resnetlab.engine.recipes import list_recipes
from resnetlab.errors import UserError

RECIPES = ["cifar10-fast", "finetune", "fmnist-best", "fmnist-fast", "fmnist-resnet20", "he2016-cifar10",
           "he2016-cifar10-deep", "seed000-cifar10", "seed001-fmnist", "seed002-cifar10", "seed004-cifar10"]


def _leaf_keys(obj: object, prefix: str = "") -> list[str]:
    keys = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        keys += _leaf_keys(value, f"{prefix}{f.name}.") if dataclasses.is_dataclass(value) else [prefix + f.name]
    return keys


def test_every_recipe_is_listed_with_a_description_and_loads():
    listed = dict(list_recipes())
    assert sorted(listed) == sorted(RECIPES)
    for name in RECIPES:
        assert listed[name].strip(), f"{name} has no description"
        assert load_config(name, []).recipe == name


def test_default_recipe_is_fmnist_fast():
    cfg = load_config(None, [])
    assert cfg.recipe == "fmnist-fast"
    assert (cfg.model.name, cfg.data.name, cfg.schedule.name) == ("airbench", "fashion-mnist", "onecycle")
    assert cfg.data.batch_size == 512 and cfg.data.val_size is None and cfg.train.label_smoothing == 0.2
    assert builders.val_count(cfg.data.val_size, 60000, cfg.data.name) == 5000  # null: the 5,000 default


def test_paper_recipe_values():
    cfg = load_config("he2016-cifar10", [])
    assert (cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay, cfg.data.batch_size) == (0.1, 0.9, 1e-4, 128)
    assert cfg.schedule.milestones == [32000, 48000] and cfg.train.iters == 64000
    assert (cfg.model.shortcut, cfg.data.crop_padding, cfg.data.flip) == ("A", 4, True)
    assert builders.val_count(cfg.data.val_size, 50000, cfg.data.name) == 5000  # the paper's 45k/5k split


def test_deep_recipe_extends_the_paper_recipe_and_adds_the_warmup():
    cfg = load_config("he2016-cifar10-deep", [])
    base = load_config("he2016-cifar10", [])
    assert cfg.model.name == "resnet110"
    assert (cfg.schedule.warmup_iters, cfg.schedule.warmup_mode, cfg.schedule.warmup_lr) == (400, "constant", 0.01)
    assert cfg.schedule.milestones == base.schedule.milestones and cfg.optim == base.optim


def test_seed_recipes_follow_the_tutorials():
    s0 = load_config("seed000-cifar10", [])
    assert (s0.model.shortcut, s0.optim.weight_decay, s0.train.epochs) == ("B", 5e-4, 100)
    assert s0.schedule.milestones == [0.5, 0.75]
    s1 = load_config("seed001-fmnist", [])
    assert (s1.model.name, s1.data.resize, s1.data.batch_size) == ("resnet18", 96, 256)
    assert (s1.optim.name, s1.optim.lr, s1.optim.weight_decay) == ("adam", 1e-3, 0.0)
    assert (s1.schedule.name, s1.schedule.step_size, s1.schedule.gamma, s1.train.epochs) == ("step", 0.2, 0.9, 10)
    s2 = load_config("seed002-cifar10", [])
    assert (s2.model.name, s2.data.resize, s2.data.batch_size, s2.data.val_size) == ("resnet34", 224, 64, 0.1)
    assert (s2.optim.lr, s2.optim.weight_decay, s2.schedule.name, s2.train.epochs) == (0.01, 1e-3, "constant", 20)
    s4 = load_config("seed004-cifar10", [])
    assert (s4.model.name, s4.data.resize, s4.data.batch_size, s4.data.flip, s4.data.crop_padding) == (
        "resnet50", 224, 128, True, 0)
    assert (s4.optim.lr, s4.optim.weight_decay, s4.schedule.name, s4.schedule.patience, s4.train.epochs) == (
        0.01, 1e-4, "plateau", 10, 40)


def test_overrides_are_parsed_as_yaml_and_typed():
    cfg = load_config("fmnist-fast", ["optim.lr=0.05", "train.epochs=3", "schedule.milestones=[100, 200]",
                                      "data.resize=null", "optim.nesterov=false", "optim.weight_decay=1",
                                      "schedule.min_lr=1e-5", "train.amp=off"])
    assert cfg.optim.lr == 0.05 and isinstance(cfg.optim.weight_decay, float)
    assert cfg.train.epochs == 3 and cfg.schedule.milestones == [100, 200] and cfg.data.resize is None
    assert cfg.optim.nesterov is False
    assert cfg.schedule.min_lr == 1e-5 and cfg.train.amp == "off"  # YAML 1.1 reads 1e-5 as text, off as false


def test_text_fields_keep_what_was_typed():
    # YAML would turn these into an int and a bool; a path or name stays the text the user typed.
    cfg = load_config(None, ["train.out_dir=2024", "data.root=yes"])
    assert cfg.train.out_dir == "2024" and cfg.data.root == "yes"


@pytest.mark.parametrize("override, words", [
    ("optim.lrr=0.1", ["optim.lrr", "did you mean optim.lr", "momentum"]),
    ("foo.bar=1", ["foo.bar", "model", "schedule"]),
    ("train.epochs=1.5", ["train.epochs", "integer", "1.5"]),
    ("optim.name=rmsprop", ["optim.name", "sgd", "adam", "adamw"]),
    ("train.amp=yes", ["train.amp", "bf16"]),
    ("optim=1", ["optim", "section"]),
    ("novalue", ["key=value"]),
])
def test_bad_overrides_are_one_line_user_errors(override, words):
    with pytest.raises(UserError) as info:
        load_config(None, [override])
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message


@pytest.mark.parametrize("override, word", [
    ("optim.lr=-0.1", "optim.lr"), ("optim.lr=0", "optim.lr"), ("data.batch_size=0", "data.batch_size"),
    ("data.val_size=-1", "data.val_size"), ("train.label_smoothing=1.0", "label_smoothing"),
    ("schedule.milestones=[0.75, 0.5]", "milestones"), ("schedule.pct_start=1.5", "pct_start"),
    ("optim.betas=[0.9]", "betas"), ("data.channels=2", "data.channels"),
    ("data.test_size=0", "data.test_size"), ("data.train_size=2.5", "data.train_size"),
    ("data.test_size=-3", "test_size"),
])
def test_impossible_settings_are_refused_up_front(override, word):
    with pytest.raises(UserError, match=word):
        load_config(None, [override])


def test_unknown_recipe_lists_the_known_ones(tmp_path):
    with pytest.raises(UserError) as info:
        load_config("he2017", [])
    for name in RECIPES:
        assert name in str(info.value)
    with pytest.raises(UserError, match="does not exist"):
        load_config(str(tmp_path / "missing.yaml"), [])


def test_a_recipe_file_can_extend_a_named_recipe(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("description: mine\nextends: he2016-cifar10\noptim:\n  lr: 0.05\n")
    cfg = load_config(str(path), [])
    assert cfg.optim.lr == 0.05 and cfg.train.iters == 64000 and cfg.recipe == str(path)


def test_recipe_with_a_bad_key_names_it(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("optim:\n  learning_rate: 0.1\n")
    with pytest.raises(UserError, match="optim.learning_rate"):
        load_config(str(path), [])


def test_format_config_lists_every_key_with_its_value():
    cfg = load_config("seed000-cifar10", ["optim.lr=0.025"])
    lines = format_config(cfg).splitlines()
    assert [line.split(" = ")[0] for line in lines] == [k for k in _leaf_keys(cfg) if k != "train.iters"]  # 0: off
    assert "optim.lr = 0.025" in lines and "schedule.milestones = [0.5, 0.75]" in lines
    assert "model.weights = null" in lines


def test_saved_config_reproduces_the_run_config(tmp_path):
    cfg = load_config("he2016-cifar10-deep", ["optim.lr=0.05", "schedule.milestones=[0.5, 0.75]", "train.seed=7"])
    path = tmp_path / "config.yaml"
    path.write_text(dump_config(cfg))
    assert "description" in yaml.safe_load(path.read_text())
    again = load_config(str(path), [])
    assert again == cfg
    assert config_from_dict(config_to_dict(cfg)) == cfg
    assert config_to_dict(Config())["train"]["iters"] == 0
