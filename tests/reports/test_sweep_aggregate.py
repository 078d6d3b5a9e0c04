"""Aggregation of a sweep directory into results.csv, results.md and figures, on fake run directories."""

from __future__ import annotations

import csv
import os
import statistics
from pathlib import Path

import matplotlib.image
import pytest
from support.sweepkit import fake_curve, fake_summary, write_fake_run

from resnetlab.experiments.sweepdir import read_sweep_spec
from resnetlab.reports.sweep_data import collect_runs, group_points, mean_std
from resnetlab.reports.sweep_figures import family_depth, mean_curve
from resnetlab.reports.sweep_tables import aggregate

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# test_acc_final, best_val_acc, final_train_acc per run
FAKE = {
    "plain20_seed0": (0.90, 0.91, 0.95), "plain20_seed1": (0.88, 0.90, 0.94), "plain20_seed2": (0.86, 0.89, 0.93),
    "plain56_seed0": (0.80, 0.82, 0.85), "plain56_seed1": (0.84, 0.83, 0.86),
    "resnet20_seed0": (0.91, 0.92, 0.96), "resnet20_seed1": (0.93, 0.93, 0.97),
    "resnet56_seed0": (0.94, 0.95, 0.99),  # resnet56_seed1 and _seed2 unfinished
}
SPEC = {"recipe": "fmnist-fast", "grid": {"model.name": ["plain20", "plain56", "resnet20", "resnet56"]},
        "seeds": [0, 1, 2]}


def assert_png(path: Path, min_size: int = 200) -> None:
    assert path.read_bytes()[:8] == PNG_MAGIC
    height, width = matplotlib.image.imread(path).shape[:2]
    assert height >= min_size and width >= min_size


@pytest.fixture
def depth_sweep(fake_sweep_dir) -> Path:
    out = fake_sweep_dir(SPEC)
    for name, (test, val, train) in FAKE.items():
        write_fake_run(out / "runs" / name, fake_summary(test, val, train, wall_time_s=10.0 + test),
                       fake_curve([train - 0.1, train], [val - 0.1, val]))
    write_fake_run(out / "runs" / "resnet56_seed1", None, fake_curve([0.5], [0.5]))
    write_fake_run(out / "runs" / "not_in_the_grid_seed0", fake_summary(0.5, 0.5, 0.5), [])
    return out


def test_results_md_numbers_are_mean_and_sample_std_of_the_summaries(depth_sweep: Path):
    table = aggregate(depth_sweep)
    assert table == depth_sweep / "results.md"
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in table.read_text().splitlines() if line.startswith("| ") and "seeds" not in line}
    assert list(rows) == ["plain20", "plain56", "resnet20", "resnet56"]
    for model, cells in rows.items():
        runs = [v for k, v in FAKE.items() if k.startswith(model + "_")]
        seeds, test, val, train, params, wall = cells
        assert int(seeds) == len(runs)
        for cell, column in ((test, 0), (val, 1), (train, 2)):
            errors = [100 * (1 - r[column]) for r in runs]
            spread = f" ± {statistics.stdev(errors):.2f}" if len(runs) > 1 else ""
            expected = f"{statistics.mean(errors):.2f}{spread}"
            assert cell == expected
        assert params == "0.27M"
        assert wall == f"{statistics.mean(10.0 + r[0] for r in runs):.0f} s"
    assert rows["plain20"][1] == "12.00 ± 2.00"  # errors 10, 12, 14 by hand
    assert "8 of 12 runs finished" in table.read_text()


def test_results_csv_has_one_row_per_finished_run(depth_sweep: Path):
    aggregate(depth_sweep)
    with (depth_sweep / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["run"] for r in rows] == list(FAKE)
    first = rows[0]
    assert (first["model.name"], first["seed"], float(first["test_acc_final"])) == ("plain20", "0", 0.90)
    assert float(first["test_acc"]) == pytest.approx(0.89) and first["params"] == "270000"


def test_figure6_and_error_vs_depth_for_plain_and_residual_grids(depth_sweep: Path):
    aggregate(depth_sweep)
    assert_png(depth_sweep / "figure6.png")
    assert_png(depth_sweep / "training_loss.png")  # the fourth tutorial's figures: training loss, plain and ResNet
    assert "![training_loss](training_loss.png)" in (depth_sweep / "results.md").read_text()
    assert_png(depth_sweep / "error_vs_depth.png")
    assert "![figure6](figure6.png)" in (depth_sweep / "results.md").read_text()


def test_tables_and_figures_are_replaced_whole_through_the_atomic_writer(depth_sweep: Path):
    """results.md, results.csv and the figures are written beside the old ones and renamed over them: a reader
    holding an old file (a hard link here) keeps it whole, and no temporary file is left behind."""
    names = ("results.md", "results.csv", "figure6.png", "error_vs_depth.png", "training_loss.png")
    for name in names:
        (depth_sweep / name).write_text(f"old {name}")
        os.link(depth_sweep / name, depth_sweep / f"held-{name}")
    aggregate(depth_sweep)
    for name in names:
        assert (depth_sweep / f"held-{name}").read_text() == f"old {name}", name
        assert (depth_sweep / name).read_bytes() != f"old {name}".encode(), name
    assert (depth_sweep / "results.md").read_text().startswith("# Sweep fake")
    assert (depth_sweep / "results.csv").read_text().startswith("run,model.name,seed,")
    assert not [p.name for p in depth_sweep.iterdir() if ".tmp-" in p.name]


def test_mean_curves_average_the_seeds_at_common_steps(depth_sweep: Path):
    spec = read_sweep_spec(depth_sweep)
    points = group_points(spec, collect_runs(depth_sweep, spec))
    steps, train = mean_curve(points[0], "train_acc")  # plain20: train acc 0.95/0.94/0.93 at the last step
    val_steps, val = mean_curve(points[0], "val_acc")
    assert steps == val_steps == [10, 20]
    assert train[-1] == pytest.approx(100 * (1 - statistics.mean([0.95, 0.94, 0.93])))
    assert val[0] == pytest.approx(100 * (1 - statistics.mean([0.81, 0.80, 0.79])))


def test_a_grid_without_model_families_gets_error_against_its_first_key(fake_sweep_dir):
    out = fake_sweep_dir({"recipe": "seed000-cifar10", "grid": {"train.epochs": [1, 2], "data.batch_size": [64, 128]},
                          "seeds": [0]})
    for i, name in enumerate(["epochs1_batch_size64_seed0", "epochs1_batch_size128_seed0",
                              "epochs2_batch_size64_seed0", "epochs2_batch_size128_seed0"]):
        write_fake_run(out / "runs" / name, fake_summary(0.5 + 0.1 * i, None, 0.7),
                       fake_curve([0.3], [None]))
    text = aggregate(out).read_text()
    assert "| epochs | batch_size | seeds |" in text
    assert "| 2 | 128 | 1 | 20.00 | — | 30.00 |" in text  # one seed: no ±; no validation split: —
    assert not (out / "figure6.png").exists()
    assert_png(out / "error_vs_epochs.png")


def test_aggregate_of_a_sweep_with_no_finished_run(fake_sweep_dir):
    out = fake_sweep_dir(SPEC)
    text = aggregate(out).read_text()
    assert "0 of 12 runs finished" in text and (out / "results.csv").read_text().startswith("run,model.name,seed")


def test_mean_std_and_family_depth():
    assert mean_std([]) == "—"
    assert mean_std([7.5]) == "7.50"
    assert mean_std([1.0, 2.0, 3.0]) == "2.00 ± 1.00"
    assert family_depth("plain110") == ("plain", 110) and family_depth("resnet20") == ("resnet", 20)
    assert family_depth("resnet18x") is None and family_depth("wide20") is None


def test_mean_curves_take_training_rows_between_evaluations(fake_sweep_dir):
    """Rows every logging interval carry training numbers only; evaluations add the validation ones."""
    out = fake_sweep_dir({"recipe": "fmnist-fast", "grid": {"model.name": ["plain20"]}, "seeds": [0, 1]})
    for seed in (0, 1):
        rows = fake_curve([0.5, 0.6, 0.7, 0.8], [None, 0.55, None, 0.75], every=5)
        write_fake_run(out / "runs" / f"plain20_seed{seed}", fake_summary(0.7, 0.75, 0.8), rows)
    spec = read_sweep_spec(out)
    (point,) = group_points(spec, collect_runs(out, spec))
    assert mean_curve(point, "train_acc")[0] == [5, 10, 15, 20]
    steps, val = mean_curve(point, "val_acc")
    assert steps == [10, 20] and val == pytest.approx([45.0, 25.0])
