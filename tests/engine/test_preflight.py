"""Simple mistakes fail before torch is imported (a second, not a minute): engine/preflight.py through the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from resnetlab.engine.config import load_config
from resnetlab.engine.preflight import check_memory, format_bytes
from resnetlab.errors import UserError

SRC = Path(__file__).resolve().parents[2] / "src"
PROBE = ("import sys; from resnetlab.cli import main; code = main(sys.argv[1:]); "
         "print('exit', code, 'torch imported' if 'torch' in sys.modules else 'no torch')")


def _cli_without_torch_check(tmp_path: Path, *argv: str) -> tuple[str, str]:
    """Run the CLI in a fresh interpreter; returns (the probe's last line, stderr)."""
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=120)
    return proc.stdout.strip().splitlines()[-1], proc.stderr


@pytest.mark.parametrize(("argv", "message"), [
    (["--out", "taken"], "taken already exists; choose a new --out, or add --resume"),
    (["--model", "resnet2O", "--out", "new"], "unknown model 'resnet2O'; did you mean resnet20?"),
    (["--data-dir", "/nonexistent/data", "--out", "new"], "--data-dir /nonexistent/data does not exist"),
    (["--data", "imagefolder:no/such/folder", "--out", "new"], "image folder 'no/such/folder'"),
    (["--set", "data.image_size=100000", "--out", "new"], "data.image_size=100000 keeps 70,000 images"),
])
def test_mistakes_fail_before_torch_is_imported(tmp_path, argv, message):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "metrics.jsonl").write_text("{}\n")
    last, err = _cli_without_torch_check(tmp_path, "train", *argv)
    assert last == "exit 2 no torch", err
    assert message in err.strip().splitlines()[-1] and "Traceback" not in err, err
    assert not (tmp_path / "new").exists()


def test_memory_estimate_names_the_figure():
    cfg = load_config("fmnist-fast", ["data.image_size=1000"])
    with pytest.raises(UserError, match=r"data.image_size=1000 keeps 70,000 images of 1x1000x1000 pixels in memory: "
                                        r"70.0 GB, more than the 8.0 GB available"):
        check_memory(cfg, available=8_000_000_000)
    check_memory(cfg, available=80_000_000_000)  # fits: no error
    cfg = load_config("fmnist-fast", ["data.resize=4096"])
    with pytest.raises(UserError, match=r"data.resize=4096 makes one batch of 512 images"):
        check_memory(cfg, available=8_000_000_000)
    assert format_bytes(999) == "999 B" and format_bytes(1.5e12) == "1.5 TB"
