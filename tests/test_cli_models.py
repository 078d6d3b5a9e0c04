"""`resnetlab models` and `resnetlab summary`, run in-process (and in a subprocess where the process matters)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import resnetlab
from resnetlab.models import list_models

SRC = Path(resnetlab.__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    """os.environ with this checkout's src/ first on PYTHONPATH (the subprocess imports the same package)."""
    path = os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path}


def test_models_lists_all(run_cli) -> None:
    code, out, err = run_cli("models")
    assert code == 0
    assert out.splitlines() == list_models()
    assert len(out.splitlines()) == 28


def test_models_does_not_import_torch() -> None:
    """`resnetlab models` reads the name tables of models/catalog.py only (importing torch took ~2.4 s)."""
    probe = ("import sys\nfrom resnetlab.cli import main\ncode = main(['models'])\n"
             "print(f'exit={code} torch={\"torch\" in sys.modules}', file=sys.stderr)\n")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, env=_env())
    assert proc.stdout.splitlines() == list_models()
    assert proc.stderr.strip() == "exit=0 torch=False"


def test_models_with_an_unknown_pattern_exits_2_with_one_line(run_cli) -> None:
    code, out, err = run_cli("models", "vgg*")
    assert (code, out) == (2, "")
    assert err == "resnetlab: error: no model matches 'vgg*'; 'resnetlab models' lists them all\n"


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
    assert err.startswith("resnetlab: error: unknown model 'nosuchnet'; known models: airbench plain20")
    assert "Traceback" not in err


def test_unknown_option_exits_2(run_cli) -> None:
    code, _, err = run_cli("summary", "resnet18", "--option", "shortcut=A")
    assert code == 2
    assert err.strip() == ("resnetlab: error: unknown option 'shortcut' for resnet18; "
                           "valid options: stem, zero_init_residual")


def test_summary_of_an_imagenet_net_has_1000_classes_by_default(run_cli) -> None:
    code, out, _ = run_cli("summary", "resnet18", "--image-size", "64")
    assert code == 0
    assert "Total params: 11,689,512" in out  # torchvision's resnet18(): 1000 classes
    code, out, _ = run_cli("summary", "resnet20")
    assert "Total params: 269,722" in out  # the CIFAR nets keep 10


@pytest.mark.parametrize("flag", ["--image-size", "--in-chans", "--num-classes"])
@pytest.mark.parametrize("value", ["0", "-1", "x"])
def test_summary_refuses_sizes_below_1(run_cli, flag: str, value: str) -> None:
    code, out, err = run_cli("summary", "resnet20", flag, value)
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and err.startswith(f"resnetlab: error: argument {flag}: ")
    assert "positive integer" in err or "at least 1" in err


def test_a_closed_stdout_ends_quietly() -> None:
    """`resnetlab summary resnet20 | head`: the reader is gone before the table is written; no traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "resnetlab", "summary", "resnet20"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=_env())
    proc.stdout.close()  # before the child (still importing torch) writes a byte: every write meets a closed pipe
    _, err = proc.communicate(timeout=120)
    assert err.decode() == ""
    assert proc.returncode == 141  # 128 + SIGPIPE, as a shell reports `yes | head`
