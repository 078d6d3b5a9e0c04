"""The paper's CIFAR-10 schedule as `resnetlab train` runs it: ResNet-20, 64k iterations of batch 128 (He et al.
2016, sec. 4.2; the `he2016-cifar10` recipe), timed end to end on CIFAR-shaped data.

CIFAR-10 cannot be downloaded on a machine without internet, so this writes CIFAR-shaped data in the official
format (`cifar-10-batches-py/`: 50,000 + 10,000 random 3x32x32 images) and trains on it: the cost per iteration
does not depend on the pixels. The wall time is measured around the whole command (start-up, data loading,
compilation, the 32 validations and the final test included), as a user would see it.

    python bench/paper_schedule.py [--iters 64000] [--device cuda] [--set train.compile=true ...]

`--recipe cifar10-fast --iters 0` times another CIFAR-10 recipe on the same data, for its own length.
"""

from __future__ import annotations

import argparse
import json
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_cifar10_shaped(root: Path, train: int, test: int, seed: int = 0) -> Path:
    """ROOT/cifar-10-batches-py/ with 5 training batches, a test batch and batches.meta (random images)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    per_batch = train // 5
    for name, n in [*((f"data_batch_{i}", per_batch) for i in range(1, 6)), ("test_batch", test)]:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"labels": rng.integers(0, 10, n).tolist()}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=4))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [n.encode() for n in NAMES]}, protocol=4))
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="he2016-cifar10")
    parser.add_argument("--iters", type=int, default=64000, help="0 = the recipe's own length")
    parser.add_argument("--images", type=int, default=50000, help="training images (the test split has 1/5)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = write_cifar10_shaped(Path(tmp) / "data", args.images, args.images // 5)
        out = Path(tmp) / "run"
        command = [sys.executable, "-m", "resnetlab", "train", "--recipe", args.recipe, "--data-dir", str(root),
                   "--device", args.device, "--out", str(out),
                   "--set", "train.log_every=2000"]  # progress lines at the evaluations and every 30 s
        if args.iters:
            command += ["--iters", str(args.iters)]
        for item in args.overrides:
            command += ["--set", item]
        start = time.perf_counter()
        done = subprocess.run(command)  # its log lines go to this process's stderr as they come
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"the run failed (exit {done.returncode})")
        summary = json.loads((out / "summary.json").read_text())
    print(f"{summary['model']} ({summary['recipe']}) on CIFAR-shaped data, {summary['steps']} iterations "
          f"({summary['epochs']:g} epochs) on "
          f"{summary['device']} ({summary['provenance'].get('gpu') or summary['provenance']['cpu']}), amp "
          f"{summary['amp']}, compile {summary['compile']}")
    print(f"training loop {summary['train_time_s']:.1f} s ({summary['images_per_s']:,.0f} images/s in the steps); "
          f"wall time of the command {wall:.1f} s ({wall / 60:.2f} min)")


if __name__ == "__main__":
    main()
