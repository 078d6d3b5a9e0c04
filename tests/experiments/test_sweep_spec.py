"""Sweep specs: parsing, validation, grid expansion and run names."""

from __future__ import annotations

from pathlib import Path

import pytest

from resnetlab.engine.config import load_config
from resnetlab.errors import UserError
from resnetlab.experiments.spec import expand, format_value, load_spec, parse_spec, shipped_specs
from resnetlab.experiments.sweep import check_spec

BASE = {"recipe": "fmnist-fast", "grid": {"model.name": ["plain20", "resnet20"]}, "seeds": [0, 1]}


def test_expand_is_grid_product_times_seeds_in_order():
    spec = parse_spec({"recipe": "fmnist-fast", "grid": {"optim.lr": [0.1, 0.01], "data.batch_size": [64, 128]},
                       "seeds": [3, 5]})
    runs = expand(spec)
    assert [r.name for r in runs] == [
        "lr0.1_batch_size64_seed3", "lr0.1_batch_size64_seed5", "lr0.1_batch_size128_seed3",
        "lr0.1_batch_size128_seed5", "lr0.01_batch_size64_seed3", "lr0.01_batch_size64_seed5",
        "lr0.01_batch_size128_seed3", "lr0.01_batch_size128_seed5"]
    assert runs[2].values == {"optim.lr": 0.1, "data.batch_size": 128} and runs[2].seed == 3


def test_model_names_read_plainly_and_clashing_leaves_use_the_whole_key():
    spec = parse_spec({"recipe": "r", "grid": {"model.name": ["plain20"], "optim.lr": [0.1], "eval.lr": [1]}})
    assert [r.name for r in expand(spec)] == ["plain20_optim-lr0.1_eval-lr1_seed0"]


def test_overrides_order_set_when_grid_seed_and_round_trip_through_load_config():
    spec = parse_spec({**BASE, "set": {"train.epochs": 2, "optim.lr": 0.05},
                       "when": {"model.name=resnet20": {"optim.lr": 0.02, "schedule.milestones": [0.5, 0.75]}}})
    plain, _, res, _ = expand(spec)
    assert plain.overrides(spec) == ["train.epochs=2", "optim.lr=0.05", "model.name=plain20", "train.seed=0"]
    assert res.overrides(spec) == ["train.epochs=2", "optim.lr=0.02", "schedule.milestones=[0.5, 0.75]",
                                   "model.name=resnet20", "train.seed=0"]
    cfg = load_config(spec.recipe, res.overrides(spec))
    assert (cfg.optim.lr, cfg.schedule.milestones, cfg.model.name, cfg.train.epochs) == (0.02, [0.5, 0.75],
                                                                                          "resnet20", 2)


@pytest.mark.parametrize("value", ["yes", "1e-3", 0.001, [1, 2], "a b", None, True])
def test_format_value_parses_back_to_the_same_value(value):
    import yaml

    assert yaml.safe_load(format_value(value)) == (value if value != "1e-3" else "1e-3")


@pytest.mark.parametrize(("raw", "message"), [
    ({**BASE, "grids": {}}, "unknown key 'grids'"),
    ({"grid": BASE["grid"]}, "needs 'recipe: NAME'"),
    ({**BASE, "grid": {}}, "empty grid"),
    ({**BASE, "grid": {"model.name": []}}, "non-empty list"),
    ({**BASE, "grid": {"model.name": "plain20"}}, "non-empty list"),
    ({**BASE, "grid": {"model.name": ["plain20", "plain20"]}}, "lists a value twice"),
    ({**BASE, "seeds": [0, 0]}, "distinct integers"),
    ({**BASE, "seeds": []}, "distinct integers"),
    ({**BASE, "set": {"train.seed": 1}}, "may not set 'train.seed'"),
    ({**BASE, "grid": {"train.out_dir": ["a", "b"]}}, "may not set 'train.out_dir'"),
    ({**BASE, "set": {"model.name": "resnet20"}}, "both in 'set' and in 'grid'"),
    ({**BASE, "when": {"model.name=resnet56": {"optim.lr": 1}}}, "must name a grid key and one of its values"),
    ({**BASE, "when": {"model.name=resnet20": {"model.name": "x"}}}, "sets grid key"),
])
def test_malformed_specs_are_one_line_user_errors(raw, message):
    with pytest.raises(UserError, match=message) as info:
        parse_spec(raw, name="bad")
    assert "\n" not in str(info.value)


def test_unknown_config_key_or_recipe_is_caught_before_training():
    spec = parse_spec({**BASE, "grid": {"model.name": ["plain20"], "optim.lrr": [0.1]}}, name="bad")
    with pytest.raises(UserError, match=r"run plain20_lrr0.1_seed0: unknown config key 'optim.lrr'"):
        check_spec(spec, expand(spec))
    spec = parse_spec({**BASE, "recipe": "no-such-recipe"}, name="bad")
    with pytest.raises(UserError, match="unknown recipe 'no-such-recipe'"):
        check_spec(spec, expand(spec))
    spec = parse_spec({**BASE, "set": {"optim.lr": "fast"}}, name="bad")
    with pytest.raises(UserError, match="run plain20_seed0: optim.lr must be"):
        check_spec(spec, expand(spec))


def test_spec_files_and_names(tmp_path: Path):
    (tmp_path / "base.yaml").write_text("extends: fmnist-fast\n")
    (tmp_path / "mine.yaml").write_text("recipe: base.yaml\ngrid: {model.name: [plain20]}\n")
    spec = load_spec(tmp_path / "mine.yaml")
    assert spec.recipe == str(tmp_path / "base.yaml") and spec.name == "mine" and spec.seeds == [0]
    with pytest.raises(UserError, match="not found"):
        load_spec(tmp_path / "missing.yaml")
    with pytest.raises(UserError, match="unknown sweep 'nope'; give a YAML file or one of: .*degradation-fmnist"):
        load_spec("nope")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(UserError, match="must be a mapping"):
        load_spec(tmp_path / "list.yaml")
    (tmp_path / "broken.yaml").write_text("grid: [\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_spec(tmp_path / "broken.yaml")


def test_a_spec_may_be_a_mapping_such_as_a_shipped_spec_with_a_smaller_budget():
    shipped = load_spec("degradation-fmnist")
    raw = shipped.to_dict()
    raw["set"] = {**raw["set"], "train.iters": 12}
    raw["seeds"] = [0]
    spec = load_spec(raw)
    assert spec.name == "degradation-fmnist" and spec.grid == shipped.grid and spec.fixed["train.iters"] == 12
    assert [r.name for r in expand(spec)] == ["plain20_seed0", "plain56_seed0", "resnet20_seed0", "resnet56_seed0"]
    assert load_spec(BASE).name == "sweep"
    with pytest.raises(UserError, match="unknown key 'grids'"):
        load_spec({"recipe": "fmnist-fast", "grids": {}})


def test_shipped_specs_resolve_against_the_recipes():
    assert shipped_specs() == ["degradation-fmnist", "he2016-table6", "he2016-table6-quick", "seed000-exercises"]
    table6 = load_spec("he2016-table6")
    runs = expand(table6)
    assert len(runs) == 9 * 5 and table6.seeds == [0, 1, 2, 3, 4]
    assert {r.values["model.name"] for r in runs} == {f"{f}{d}" for f in ("plain", "resnet")
                                                     for d in (20, 32, 44, 56)} | {"resnet110"}
    for name in shipped_specs():
        spec = load_spec(name)
        check_spec(spec, expand(spec))
    deep_run = next(r for r in runs if r.values["model.name"] == "resnet110")
    assert deep_run.recipe(table6) == "he2016-cifar10-deep"  # the warm-up is written once, in that recipe
    deep = load_config(deep_run.recipe(table6), deep_run.overrides(table6))
    assert (deep.schedule.warmup_iters, deep.schedule.warmup_lr, deep.train.iters) == (400, 0.01, 64000)
    assert deep.model.name == "resnet110" and deep.optim.weight_decay == 1e-4
    plain = load_config(runs[0].recipe(table6), runs[0].overrides(table6))
    assert plain.schedule.warmup_iters == 0 and runs[0].recipe(table6) == "he2016-cifar10"


def test_cli_bad_spec_exits_2_with_one_line(run_cli, tmp_path: Path):
    (tmp_path / "bad.yaml").write_text("recipe: fmnist-fast\ngrid: {}\n")
    code, out, err = run_cli("sweep", tmp_path / "bad.yaml", "--out", tmp_path / "out")
    assert code == 2 and out == ""
    assert err.strip().count("\n") == 0 and "empty grid" in err
    code, _, err = run_cli("sweep", "no-such-sweep", "--out", tmp_path / "out")
    assert code == 2 and "unknown sweep" in err
    code, _, err = run_cli("sweep", "--aggregate", tmp_path)
    assert code == 2 and "not a sweep directory" in err
    assert not (tmp_path / "out").exists()


def test_the_quick_table6_is_the_paper_recipe_on_half_its_schedule():
    quick = load_spec("he2016-table6-quick")
    runs = expand(quick)
    assert len(runs) == 6 * 3 and {r.values["model.name"] for r in runs} == {f"{f}{d}" for f in ("plain", "resnet")
                                                                            for d in (20, 32, 56)}
    cfg = load_config(runs[0].recipe(quick), runs[0].overrides(quick))
    assert (cfg.train.iters, cfg.schedule.milestones, cfg.optim.lr, cfg.data.batch_size) == (32000, [16000, 24000],
                                                                                               0.1, 128)
    assert cfg.train.iters // cfg.train.eval_every >= 20  # figure6.png gets a curve, not a few points
