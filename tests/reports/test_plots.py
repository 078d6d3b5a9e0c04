"""Plots: Figure-6 style curves, overlays of several runs, image grids that show what the loader feeds."""

from __future__ import annotations

import json

import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from resnetlab.data import ImageSet
from resnetlab.engine.builders import make_loader
from resnetlab.engine.config import load_config
from resnetlab.engine.rundir import read_metrics
from resnetlab.errors import UserError
from resnetlab.reports.plots import _draw_runs, most_confident_wrong, plot_runs, plot_samples, unnormalize


def _write_metrics(run_dir, rows) -> None:
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _rows(scale: float) -> list[dict]:
    return [{"step": 100 * i, "epoch": i, "lr": 0.1, "train_loss": scale / i, "train_acc": 1 - 0.5 / i,
             "val_loss": 1.2 * scale / i, "val_acc": 1 - 0.6 / i} for i in range(1, 6)]


def test_curves_draw_train_thin_and_validation_bold_as_error_percent() -> None:
    axes = Figure().subplots(1, 2)
    _draw_runs(axes, [("a", _rows(1.0)), ("b", _rows(2.0))])
    loss_lines, err_lines = axes[0].get_lines(), axes[1].get_lines()
    assert [line.get_label() for line in err_lines] == ["a train", "a validation", "b train", "b validation"]
    train, val = err_lines[0], err_lines[1]
    assert train.get_linewidth() < val.get_linewidth() and train.get_linestyle() == "--"
    assert list(val.get_xdata()) == [100, 200, 300, 400, 500]
    assert list(val.get_ydata()) == pytest.approx([60.0, 30.0, 20.0, 15.0, 12.0])  # error in percent
    assert list(loss_lines[3].get_ydata()) == pytest.approx([2.4 / i for i in range(1, 6)])
    assert err_lines[0].get_color() == err_lines[1].get_color() != err_lines[2].get_color()


def test_plot_runs_overlays_runs_and_skips_a_torn_last_line(tmp_path, run_cli) -> None:
    _write_metrics(tmp_path / "r1", _rows(1.0))
    _write_metrics(tmp_path / "r2", _rows(2.0))
    with open(tmp_path / "r2" / "metrics.jsonl", "a") as f:
        f.write('{"step": 600, "train_lo')  # a row being written while we read
    assert len(read_metrics(tmp_path / "r2")) == 5
    code, out, err = run_cli("plot", tmp_path / "r1", tmp_path / "r2", "--out", tmp_path / "both.png")
    assert code == 0 and out.strip() == str(tmp_path / "both.png")
    width, height = Image.open(tmp_path / "both.png").size
    assert width > 2 * height > 600  # two panels side by side


def test_plot_of_a_folder_without_metrics_is_exit_2(tmp_path, run_cli) -> None:
    code, _, err = run_cli("plot", tmp_path, "--out", tmp_path / "x.png")
    assert code == 2 and err.count("\n") == 1 and "metrics.jsonl" in err
    with pytest.raises(UserError):
        plot_runs([], tmp_path / "x.png")


def test_most_confident_wrong_orders_mistakes_by_probability() -> None:
    targets = torch.tensor([0, 1, 2, 0, 1])
    scores = torch.tensor([[5.0, 0, 0],  # right
                           [3.0, 0, 0],  # wrong, p(0) high
                           [0, 9.0, 0],  # wrong, most confident
                           [0, 0, 1.0],  # wrong, least confident
                           [0, 4.0, 0]])  # right
    order, pred, confidence = most_confident_wrong(targets, scores, count=2)
    assert order.tolist() == [2, 1]
    assert pred.tolist() == [0, 0, 1, 2, 1]
    assert confidence[2] > confidence[1] > confidence[3]


@pytest.mark.parametrize("normalize", ["channel", "pixel"])
def test_unnormalize_inverts_the_loaders_normalization(normalize) -> None:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8, generator=gen)
    if normalize == "channel":
        normalization = {"mean": [0.2, 0.5, 0.7], "std": [0.3, 0.25, 0.2]}
    else:
        normalization = {"mean": (torch.rand(3, 8, 8, generator=gen)).tolist(), "std": [1.0, 1.0, 1.0]}
    cfg = load_config(None, ["eval.batch_size=6"])
    loader = make_loader(ImageSet(images, torch.zeros(6, dtype=torch.long), ["a"]), cfg, train=False,
                         device=torch.device("cpu"), normalization=normalization)
    x, _ = next(iter(loader))
    back = (unnormalize(x, normalization) * 255).round().to(torch.uint8)
    assert torch.equal(back, images)


def test_plot_samples_draws_a_seeded_grid_captioned_with_classes(tmp_path) -> None:
    images = torch.arange(12, dtype=torch.uint8).view(12, 1, 1, 1).expand(12, 1, 8, 8).contiguous() * 20
    imageset = ImageSet(images, torch.arange(12) % 3, ["a", "b", "c"])
    out = plot_samples(imageset, tmp_path / "samples.png", count=6, seed=1, ncols=3, title="six")
    assert out == tmp_path / "samples.png" and Image.open(out).size[0] > 200
    again = plot_samples(imageset, tmp_path / "again.png", count=6, seed=1, ncols=3, title="six")
    assert again.read_bytes() == out.read_bytes()  # the same seed draws the same images
    whole = plot_samples(imageset, tmp_path / "all.png", count=50)  # more than there are: every image once
    assert Image.open(whole).size[0] > Image.open(out).size[0]


def test_plot_refuses_an_unknown_image_format_before_reading_runs(tmp_path, run_cli):
    code, _, err = run_cli("plot", tmp_path / "no-run", "--out", tmp_path / "x.txt")
    assert code == 2 and err.strip().splitlines() == [f"resnetlab: error: --out {tmp_path / 'x.txt'}: .txt is not an "
                                                      "image format; use .png (or .jpg, .pdf, .svg, .webp)"]


def test_a_narrow_loss_axis_is_labelled_in_plain_numbers():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from resnetlab.reports.plots import _draw_runs

    rows = [{"step": s, "train_loss": 3.0 - s / 100, "val_loss": 2.9 - s / 110 if s % 50 == 0 else None}
            for s in range(10, 160, 10)]
    fig = Figure()
    axes = fig.subplots(1, 2)
    _draw_runs(axes, [("run", rows)])
    FigureCanvasAgg(fig).draw()
    labels = [t.get_text() for t in (*axes[0].get_yticklabels(), *axes[0].get_yticklabels(minor=True))
              if t.get_text()]
    assert labels and all("times" not in t and "10^" not in t for t in labels), labels
    assert "2" in labels or "1.5" in labels or "3" in labels, labels
