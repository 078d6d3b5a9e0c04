"""`resnetlab models` and `resnetlab summary`, run in-process."""

from __future__ import annotations

import re

import pytest

from resnetlab.models import list_models


def test_models_lists_all(run_cli) -> None:
    code, out, err = run_cli("models")
    assert code == 0
    assert out.splitlines() == list_models()
    assert len(out.splitlines()) == 18


def test_models_with_pattern(run_cli) -> None:
    code, out, _ = run_cli("models", "plain*")
    assert code == 0
    assert out == "plain20\nplain32\nplain44\nplain56\nplain110\n"


def test_summary_resnet20(run_cli) -> None:
    code, out, err = run_cli("summary", "resnet20")
    assert code == 0
    assert "269,722" in out
    macs = re.search(r"^MACs: ([\d.]+) M$", out, re.MULTILINE)
    assert macs is not None and float(macs.group(1)) == pytest.approx(40.55, rel=0.01)


def test_summary_options(run_cli) -> None:
    code, out, _ = run_cli("summary", "resnet20", "--in-chans", "1", "--image-size", "28", "--num-classes", "100",
                           "--option", "shortcut=B")
    assert code == 0
    assert "Total params: 269,722" not in out
    assert f"Total params: {269_722 + 2_752 - 16 * 9 * 2 + 65 * 90:,}" in out  # 1 input channel, 100 classes
    assert "[1, 64, 7, 7]" in out


def test_unknown_model_exits_2_with_one_line(run_cli) -> None:
    code, out, err = run_cli("summary", "nosuchnet")
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("resnetlab: error: unknown model 'nosuchnet'; known models: plain20")
    assert "Traceback" not in err


def test_unknown_option_exits_2(run_cli) -> None:
    code, _, err = run_cli("summary", "resnet18", "--option", "shortcut=A")
    assert code == 2
    assert err.strip() == ("resnetlab: error: unknown option 'shortcut' for resnet18; "
                           "valid options: stem, zero_init_residual")
