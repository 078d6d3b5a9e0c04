"""End to end: a tiny two-point, two-seed sweep trained by the real engine on a generated IDX dataset, its
skip/resume behaviour, its tables against the runs' summary.json, subprocess jobs, failures, lr-find."""

from __future__ import annotations

import csv
import json
import shutil
import statistics
from pathlib import Path

import pytest
import torch
import yaml

from resnetlab.reports.sweep_run import run_sweep

pytestmark = pytest.mark.numeric  # also run with AVX2 kernels only by .ci/run (issue 11)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RUNS = ["plain20_seed0", "plain20_seed1", "resnet20_seed0", "resnet20_seed1"]


def tiny_settings(root: Path) -> dict:
    """6 iterations of batch 20 on 140 16x16 training images, validated at steps 3 and 6 (top_k keeps both
    checkpoints, so a test can rewind a run to step 3)."""
    return {"data.name": "mnist", "data.root": str(root), "data.val_size": 20, "data.batch_size": 20,
            "data.crop_padding": 0, "data.flip": False, "train.iters": 6, "train.eval_every": 3,
            "train.device": "cpu", "train.threads": 1, "train.top_k": 2, "train.quiet": True,
            "train.label_smoothing": 0.0, "eval.batch_size": 64, "schedule.name": "constant", "optim.lr": 0.05,
            "train.log_every": 50}  # rows at the evaluations only


def write_spec(path: Path, root: Path, grid: dict, seeds: list[int]) -> Path:
    fixed = {k: v for k, v in tiny_settings(root).items() if k not in grid}
    path.write_text(yaml.safe_dump({"recipe": "fmnist-fast", "set": fixed, "grid": grid, "seeds": seeds}))
    return path


@pytest.fixture(scope="module")
def finished_sweep(tiny_mnist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny sweep, run once for the module (jobs=1: in this process)."""
    base = tmp_path_factory.mktemp("sweep")
    spec = write_spec(base / "tiny.yaml", tiny_mnist, {"model.name": ["plain20", "resnet20"]}, [0, 1])
    table = run_sweep(spec, base / "out")
    assert table == base / "out" / "results.md"
    return base


def summaries(out: Path) -> dict[str, dict]:
    return {name: json.loads((out / "runs" / name / "summary.json").read_text()) for name in RUNS}


def test_every_run_is_an_ordinary_finished_run_directory(finished_sweep: Path):
    out = finished_sweep / "out"
    assert sorted(p.name for p in (out / "runs").iterdir()) == RUNS
    for name, summary in summaries(out).items():
        cfg = yaml.safe_load((out / "runs" / name / "config.yaml").read_text())
        assert (cfg["model"]["name"], cfg["train"]["seed"]) == (name.split("_")[0], int(name[-1]))
        assert summary["steps"] == 6 and (out / "runs" / name / "checkpoints" / "last.pt").is_file()
    # seeds differ: the two plain20 runs did not train identically
    s = summaries(out)
    finished_order = sorted(RUNS, key=lambda n: (out / "runs" / n / "summary.json").stat().st_mtime_ns)
    assert finished_order == ["plain20_seed0", "resnet20_seed0", "plain20_seed1", "resnet20_seed1"]  # seed by seed
    assert s["plain20_seed0"]["test_loss"] != s["plain20_seed1"]["test_loss"]


def test_tables_agree_with_the_summaries(finished_sweep: Path):
    out = finished_sweep / "out"
    s = summaries(out)
    text = (out / "results.md").read_text()
    for model in ("plain20", "resnet20"):
        runs = [s[f"{model}_seed0"], s[f"{model}_seed1"]]
        test = [100 * (1 - r["test_acc_final"]) for r in runs]
        val = [100 * (1 - r["best_val_acc"]) for r in runs]
        train = [100 * (1 - r["final_train_acc"]) for r in runs]
        cells = [f"{statistics.mean(v):.2f} ± {statistics.stdev(v):.2f}" for v in (test, val, train)]
        assert f"| {model} | 2 | {cells[0]} | {cells[1]} | {cells[2]} | {runs[0]['params'] / 1e6:.2f}M |" in text
    assert "4 of 4 runs finished" in text
    with (out / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["run"] for r in rows] == RUNS
    for row in rows:
        assert float(row["test_acc_final"]) == s[row["run"]]["test_acc_final"]
        assert row["model.name"] == row["run"].split("_")[0] and row["seed"] == row["run"][-1]
    for figure in ("figure6.png", "error_vs_depth.png"):
        assert (out / figure).read_bytes()[:8] == PNG_MAGIC


def test_rerun_skips_finished_runs_and_resumes_an_unfinished_one(finished_sweep: Path):
    out = finished_sweep / "out"
    before = summaries(out)
    mtimes = {n: (out / "runs" / n / "summary.json").stat().st_mtime_ns for n in RUNS}
    rewound = out / "runs" / "resnet20_seed1"
    final_weights = torch.load(rewound / "checkpoints" / "last.pt", weights_only=True)["model"]
    # Make it an unfinished run stopped at step 3: no summary, last.pt = the step-3 checkpoint.
    (rewound / "summary.json").unlink()
    shutil.copy(rewound / "checkpoints" / "top-00000003.pt", rewound / "checkpoints" / "last.pt")
    config_mtime = (rewound / "config.yaml").stat().st_mtime_ns

    run_sweep(finished_sweep / "tiny.yaml", out)

    after = summaries(out)
    for name in RUNS[:3]:  # not retrained
        assert (out / "runs" / name / "summary.json").stat().st_mtime_ns == mtimes[name]
    # resumed from step 3, not restarted (a fresh start would rewrite config.yaml), and bit-exact on the CPU
    assert (rewound / "config.yaml").stat().st_mtime_ns == config_mtime
    resumed = torch.load(rewound / "checkpoints" / "last.pt", weights_only=True)
    assert resumed["step"] == 6
    assert all(torch.equal(resumed["model"][k], v) for k, v in final_weights.items())
    assert after["resnet20_seed1"]["test_acc_final"] == before["resnet20_seed1"]["test_acc_final"]
    assert len((rewound / "metrics.jsonl").read_text().splitlines()) == 2


def test_aggregate_flag_rebuilds_tables_and_figures(finished_sweep: Path, run_cli):
    out = finished_sweep / "out"
    expected = (out / "results.md").read_text()
    for name in ("results.md", "results.csv", "figure6.png", "error_vs_depth.png"):
        (out / name).unlink()
    code, stdout, _ = run_cli("sweep", "--aggregate", out)
    assert code == 0 and stdout == expected == (out / "results.md").read_text()
    assert (out / "results.csv").is_file() and (out / "figure6.png").read_bytes()[:8] == PNG_MAGIC


def test_a_different_sweep_is_refused_and_fewer_seeds_or_a_new_description_accepted(finished_sweep: Path,
                                                                                   tiny_mnist: Path, run_cli):
    out = finished_sweep / "out"
    other = write_spec(finished_sweep / "other.yaml", tiny_mnist, {"optim.lr": [0.1]}, [0])
    code, _, err = run_cli("sweep", other, "--out", out)
    assert code == 2 and "holds another sweep" in err
    narrowed = yaml.safe_load((finished_sweep / "tiny.yaml").read_text())
    narrowed.update(seeds=[1], description="only seed 1")
    (finished_sweep / "narrow.yaml").write_text(yaml.safe_dump(narrowed))
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/summary.json")}
    code, stdout, _ = run_cli("sweep", finished_sweep / "narrow.yaml", "--out", out)
    assert code == 0 and "only seed 1" in stdout and "| plain20 | 1 |" in stdout and "2 of 2 runs finished" in stdout
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/summary.json")} == mtimes  # nothing retrained
    assert run_cli("sweep", finished_sweep / "tiny.yaml", "--out", out)[0] == 0  # back to the full sweep


def test_subprocess_jobs_and_a_failing_run(tiny_mnist: Path, tmp_path: Path, run_cli):
    """--jobs 2: runs as subprocesses with logs; a run that fails (batch larger than the data) is reported, the
    other finishes, the tables hold it, and the command exits 1."""
    spec = write_spec(tmp_path / "jobs.yaml", tiny_mnist, {"data.batch_size": [20, 5000]}, [0])
    code, stdout, err = run_cli("sweep", spec, "--out", tmp_path / "out", "--jobs", "2")
    assert code == 1 and stdout == ""
    assert "1 of 2 runs failed (batch_size5000_seed0)" in err
    assert "batch_size=5000 is larger than the 140 training images" in (
        tmp_path / "out" / "logs" / "batch_size5000_seed0.log").read_text()
    assert (tmp_path / "out" / "runs" / "batch_size20_seed0" / "summary.json").is_file()
    assert "1 of 2 runs finished" in (tmp_path / "out" / "results.md").read_text()
    assert (tmp_path / "out" / "error_vs_batch_size.png").read_bytes()[:8] == PNG_MAGIC


def test_lr_find_command(tiny_mnist: Path, tmp_path: Path, run_cli):
    png = tmp_path / "lr.png"
    code, out, err = run_cli("lr-find", "--recipe", "fmnist-fast", "--data", "mnist", "--data-dir", tiny_mnist,
                             "--set", "data.val_size=20", "--set", "data.batch_size=20", "--set", "train.device=cpu",
                             "--set", "train.threads=2", "--iters", "25", "--lr-min", "1e-4", "--lr-max", "3",
                             "--out", png)
    assert code == 0, err
    lines = out.splitlines()
    suggested = float(lines[0].removeprefix("suggested lr: ").split()[0])
    assert 1e-4 <= suggested <= 3 and "onecycle" in lines[1] and lines[2] == f"plot: {png}"
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert torch.get_num_threads() == 1  # train.threads=2 applied during the test only
    code, _, err = run_cli("lr-find", "--recipe", "fmnist-fast", "--iters", "3")
    assert code == 2 and "--iters must be at least 10" in err
