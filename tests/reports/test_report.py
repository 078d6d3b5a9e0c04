"""`resnetlab report RUN_DIR`: one self-contained HTML file that renders in a real browser."""

from __future__ import annotations

import base64
import json
import re
import shutil
from pathlib import Path

import pytest
from support.evalkit import TINY_RUN_OVERRIDES, write_image_folder

from resnetlab.engine.config import dump_config, load_config
from resnetlab.engine.trainer import train
from resnetlab.reports.explain import captum_available
from resnetlab.reports.report import write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MIN_IMAGES, MIN_WIDTH_PX = 5, 100


@pytest.fixture(scope="module")
def report_run(tiny_run, tmp_path_factory) -> Path:
    """A copy of the tiny run without any evaluation or plot, then its report."""
    run = tmp_path_factory.mktemp("report") / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("eval_*", "confusion_*", "plots", "report.html"))
    write_report(run)
    return run


def _data_uris(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def test_report_inlines_everything_and_generates_the_missing_pieces(report_run) -> None:
    page = (report_run / "report.html").read_text()
    assert "://" not in page  # no external URL of any kind
    assert not re.search(r'(?:src|href)\s*=\s*"(?!data:)', page)  # every resource is a data URI
    images = _data_uris(page)
    assert len(images) >= 6 and all(img.startswith(PNG_MAGIC) for img in images)
    for name in ("curves", "lr", "confusion_test", "wrong_test", "per_class_test", "train_samples"):
        assert (report_run / "plots" / f"{name}.png").is_file(), name
    result = json.loads((report_run / "eval_test.json").read_text())
    summary = json.loads((report_run / "summary.json").read_text())
    assert result["acc"] == summary["test_acc"]
    assert f"top-1 accuracy {100 * result['acc']:.2f}%" in page
    for row in result["per_class"]:  # the per-class table
        assert f'<td class="k">{row["class"]}</td><td>{row["precision"]:.4f}</td>' in page
    assert "resnet20" in page and "description: resolved config" in page  # the config


def test_report_shows_grad_cam_of_the_most_confidently_wrong_test_images(report_run) -> None:
    page = (report_run / "report.html").read_text()
    assert "Where the model looked in its most confident mistakes (Grad-CAM)" in page
    if captum_available():  # `make test` installs it (the dev extra)
        assert (report_run / "plots" / "gradcam_wrong_test.png").read_bytes().startswith(PNG_MAGIC)
        assert len(_data_uris(page)) >= 7
    else:
        assert "pip install &#x27;resnetlab[explain]&#x27;" in page


def test_report_again_reuses_the_evaluation(report_run, run_cli) -> None:
    before = (report_run / "eval_test.json").stat().st_mtime_ns
    code, out, err = run_cli("report", report_run)
    assert code == 0 and out.strip() == str(report_run / "report.html")
    assert (report_run / "eval_test.json").stat().st_mtime_ns == before


def test_report_without_checkpoint_or_data_still_shows_the_curves(tmp_path, run_cli) -> None:
    run = tmp_path / "run"
    run.mkdir()
    cfg = load_config(None, [f"data.name=imagefolder:{tmp_path / 'gone'}"])
    (run / "config.yaml").write_text(dump_config(cfg))
    (run / "metrics.jsonl").write_text(json.dumps({"step": 10, "lr": 0.1, "train_loss": 1.0, "train_acc": 0.5,
                                                   "val_loss": 1.1, "val_acc": 0.4}) + "\n")
    code, out, err = run_cli("report", run)
    assert code == 0
    page = (run / "report.html").read_text()
    assert "No test-set evaluation" in page and "No training-image grid" in page
    assert len(_data_uris(page)) == 2  # curves and learning rate


def test_report_of_a_non_run_is_exit_2(tmp_path, run_cli) -> None:
    code, _, err = run_cli("report", tmp_path)
    assert code == 2 and err.count("\n") == 1 and "config.yaml" in err


def test_report_renders_in_chromium(report_run, chromium, tmp_path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    shot = tmp_path / "report.png"
    requests: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("request", lambda request: requests.append(request.url))
            page.goto((report_run / "report.html").as_uri(), wait_until="load")
            images = page.evaluate("""Array.from(document.images).map(img => ({
                complete: img.complete, natural: img.naturalWidth, shown: img.getBoundingClientRect().width}))""")
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    print(f"report screenshot: {shot}")
    loaded = [img for img in images if img["complete"] and img["natural"] > 0]
    assert len(loaded) >= MIN_IMAGES, images
    assert all(img["shown"] >= MIN_WIDTH_PX for img in loaded), images
    assert all(url.startswith(("file:", "data:")) for url in requests), requests
    assert shot.read_bytes().startswith(PNG_MAGIC)


def test_report_says_where_it_ran_in_words_and_in_one_unit(report_run) -> None:
    page = (report_run / "report.html").read_text()
    summary = json.loads((report_run / "summary.json").read_text())
    prov = summary["provenance"]
    assert "Where it ran" in page and prov["torch"] in page and prov["cpu_capability"] in page
    assert html_escape(prov["cpu"]) in page and prov["date"] in page and "command" in page
    assert "test accuracy, final model" in page and ">test_acc_final<" not in page  # keys in words
    cards = re.findall(r'<div class="l">([^<]*)</div>', page)
    assert cards and all("acc" not in label for label in cards)  # rates as errors only
    assert "best validation error" in cards


def test_report_explains_a_training_loss_above_the_validation_loss(report_run, tmp_path) -> None:
    run = tmp_path / "run"
    shutil.copytree(report_run, run)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    last = next(r for r in reversed(rows) if r["val_loss"] is not None)
    last["train_loss"] = last["val_loss"] + 0.3  # label smoothing 0.1 and crop + flip in this run's recipe
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    page = write_report(run).read_text()
    assert "label smoothing 0.1 and augmentation apply to the training loss only" in page


def html_escape(text: str) -> str:
    import html

    return html.escape(text)


LONG_COMMAND = ("resnetlab train --recipe he2016-cifar10 --model resnet110 --data cifar10 --data-dir "
                "/home/someone/datasets/cifar-10-python-extracted-here/for-the-long-path --set optim.lr=0.05 --set "
                "schedule.milestones=[0.5,0.75] --set train.eval_every=2000 --out runs/resnet110_lr0.05_seed3_"
                "a_very_long_run_directory_name_without_any_space_in_it_at_all")


def test_where_it_ran_wraps_a_long_command_at_1280_px(report_run, chromium, tmp_path) -> None:
    """A 300-character command (one 120-character word in it) once pushed every value off the right edge."""
    sync_api = pytest.importorskip("playwright.sync_api")
    run = tmp_path / "run"
    shutil.copytree(report_run, run)
    summary = json.loads((run / "summary.json").read_text())
    summary["provenance"]["command"] = LONG_COMMAND
    summary["stopped_early"] = None
    (run / "summary.json").write_text(json.dumps(summary))
    page_html = write_report(run).read_text()
    assert "stopped early" not in page_html  # a None is left out, not shown as "None"
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto((run / "report.html").as_uri(), wait_until="load")
            layout = page.evaluate("""() => {
                const section = [...document.querySelectorAll('section')].find(
                    s => s.querySelector('h2').textContent === 'Where it ran');
                const edge = section.getBoundingClientRect().right;
                const cells = [...section.querySelectorAll('td:not(.k)')].map(td => {
                    const r = td.getBoundingClientRect();
                    return {text: td.textContent, left: r.left, right: r.right, width: r.width};
                });
                return {edge, cells, scroll: document.documentElement.scrollWidth,
                        client: document.documentElement.clientWidth};
            }""")
        finally:
            browser.close()
    assert layout["scroll"] <= layout["client"], layout  # no horizontal scrollbar
    cells = layout["cells"]
    assert any(c["text"] == LONG_COMMAND for c in cells)
    for cell in cells:  # every value inside its section and visible (torch, CPU, threads, ... were blank)
        assert cell["width"] > 20 and cell["right"] <= layout["edge"] + 0.5, (cell, layout["edge"])


def test_report_scores_with_the_runs_own_test_time_augmentation(tmp_path) -> None:
    """A run tested with eval.tta: the report scores best.pt the same way, so its numbers are summary.json's."""
    data = write_image_folder(tmp_path / "shapes", {"train": 40, "test": 12})
    cfg = load_config("fmnist-resnet20", [*TINY_RUN_OVERRIDES, f"data.name=imagefolder:{data}", "eval.tta=flip",
                                          f"train.out_dir={tmp_path / 'run'}"])
    run = train(cfg).run_dir
    write_report(run)
    result = json.loads((run / "eval_test_tta.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    assert result["tta"] == "flip" and result["acc"] == summary["test_acc"]
    assert not (run / "eval_test.json").exists()
    for name in ("confusion_test_tta", "wrong_test_tta", "per_class_test_tta"):
        assert (run / "plots" / f"{name}.png").is_file(), name
    page = (run / "report.html").read_text()
    assert f"top-1 accuracy {100 * result['acc']:.2f}%" in page and "with test-time augmentation (flip)" in page
