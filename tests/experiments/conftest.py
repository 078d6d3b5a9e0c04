"""Fixtures for the experiments tests: fake sweep directories in the run-directory format of DESIGN.md, and a
tiny generated IDX dataset for real end-to-end sweeps."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from resnetlab.experiments.spec import parse_spec


def write_fake_run(run_dir: Path, summary: dict[str, Any] | None, curve: list[dict[str, Any]]) -> None:
    """A run directory as the engine leaves it: metrics.jsonl, and summary.json when `summary` is given."""
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in curve))
    if summary is not None:
        (run_dir / "summary.json").write_text(json.dumps(summary))


def fake_summary(test_acc_final: float, best_val_acc: float, final_train_acc: float, **extra: Any) -> dict:
    return {"best_val_acc": best_val_acc, "best_step": 40, "test_acc": test_acc_final - 0.01, "test_loss": 0.5,
            "test_acc_final": test_acc_final, "final_train_acc": final_train_acc, "params": 270_000, "macs": 4.1e7,
            "steps": 40, "train_time_s": 10.0, "wall_time_s": 12.0, "images_per_s": 300.0, **extra}


def fake_curve(train: list[float], val: list[float | None], every: int = 10) -> list[dict[str, Any]]:
    return [{"step": every * (i + 1), "epoch": i + 1, "lr": 0.1, "train_loss": 1.0, "train_acc": t, "val_loss": 1.0,
             "val_acc": v, "images_per_s": 300.0, "time_s": float(i)} for i, (t, v) in enumerate(zip(train, val,
                                                                                                 strict=True))]


@pytest.fixture
def fake_sweep_dir(tmp_path: Path):
    """make(raw_spec) -> sweep DIR with DIR/sweep.yaml written (runs are added by the test)."""

    def make(raw: dict[str, Any]) -> Path:
        out = tmp_path / "sweep"
        (out / "runs").mkdir(parents=True)
        spec = parse_spec(raw, name="fake")
        (out / "sweep.yaml").write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False))
        return out

    return make


def _write_idx(path: Path, tensor: torch.Tensor) -> None:
    """An IDX file as the MNIST originals are: magic (0, 0, 0x08 = ubyte, ndim), big-endian sizes, bytes."""
    header = struct.pack(">BBBB", 0, 0, 0x08, tensor.dim()) + struct.pack(f">{tensor.dim()}I", *tensor.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + tensor.to(torch.uint8).contiguous().numpy().tobytes())


@pytest.fixture(scope="session")
def tiny_mnist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root holding mnist/ with the four IDX files: 10 classes of 16x16 images, each class a bright
    square at its own place plus noise (learnable in a few iterations); 160 train, 40 test images."""
    root = tmp_path_factory.mktemp("data")
    folder = root / "mnist"
    folder.mkdir()
    gen = torch.Generator().manual_seed(0)
    for split, n in (("train", 160), ("t10k", 40)):
        labels = torch.arange(n) % 10
        images = torch.randint(0, 60, (n, 16, 16), generator=gen)
        for i, label in enumerate(labels.tolist()):
            r, c = divmod(label, 4)
            images[i, 1 + 4 * r: 4 + 4 * r, 1 + 4 * c: 4 + 4 * c] = 250
        _write_idx(folder / f"{split}-images-idx3-ubyte.gz", images)
        _write_idx(folder / f"{split}-labels-idx1-ubyte.gz", labels)
    return root


@pytest.fixture(autouse=True)
def one_thread():
    """These tests train tiny nets: one intra-op thread is faster than two fighting over shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
