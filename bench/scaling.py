"""How the cost of a training step grows with the work: depth (ResNet-20/56/110), batch (64 to 512), threads (1, 2).

Each point trains a few steps of the engine's own `train_step` (the `he2016-cifar10` recipe: batch crop + flip
on the device, SGD, channels_last, the resolved amp) on CIFAR-shaped random data, after warm-up steps, and
reports images/s, the achieved GFLOP/s (forward + backward = 3 x 2 x the multiply-accumulates per image) and
milliseconds per image. The table goes to stdout, the plot (cost per image against depth, one line per batch,
per thread count; and images/s against batch) to --png.

    python bench/scaling.py [--models resnet20 resnet56 resnet110] [--batches 64 128 256 512] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from matplotlib.figure import Figure
from throughput import engine_run, engine_step, random_data, training_gflop_per_image

from resnetlab.engine.config import load_config
from resnetlab.engine.runtime import process_settings


def measure(model: str, batch: int, threads: int, device: torch.device, steps: int, warmup: int) -> dict:
    """Images/s of `steps` timed training steps (after `warmup` ones) for one point."""
    cfg = load_config("he2016-cifar10", [f"model.name={model}", f"data.batch_size={batch}", f"train.threads={threads}",
                                         f"train.device={device.type}"])
    _, _, imageset = random_data(max(2 * batch, 1024))
    with process_settings(cfg, device):
        run = engine_run(cfg, imageset, device, total_iters=steps + warmup)
        step = engine_step(run)
        for _ in range(warmup):
            step()
        start = time.perf_counter()
        images = sum(step() for _ in range(steps))
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    rate = images / seconds
    gflop = training_gflop_per_image(cfg, imageset)
    return {"model": model, "batch": batch, "threads": threads, "images_per_s": rate, "gflops": rate * gflop,
            "ms_per_image": 1000 / rate, "gflop_per_image": gflop}


def plot(rows: list[dict], out: Path) -> Path:
    """Left: milliseconds per image against depth (one line per batch and thread count); right: images/s
    against batch size (one line per model and thread count)."""
    fig = Figure(figsize=(11, 4.2))
    left, right = fig.subplots(1, 2)
    depth = {m: int(m.removeprefix("resnet")) for m in {r["model"] for r in rows}}
    for threads in sorted({r["threads"] for r in rows}):
        style = "-" if threads == max(r["threads"] for r in rows) else "--"
        for i, batch in enumerate(sorted({r["batch"] for r in rows})):
            points = sorted((depth[r["model"]], r["ms_per_image"]) for r in rows
                            if r["batch"] == batch and r["threads"] == threads)
            left.plot(*zip(*points, strict=True), style, marker="o", color=f"C{i}",
                      label=f"batch {batch}, {threads} thread{'s' * (threads > 1)}")
        for i, model in enumerate(sorted(depth, key=depth.get)):
            points = sorted((r["batch"], r["images_per_s"]) for r in rows
                            if r["model"] == model and r["threads"] == threads)
            right.plot(*zip(*points, strict=True), style, marker="o", color=f"C{i}",
                       label=f"{model}, {threads} thread{'s' * (threads > 1)}")
    left.set(xlabel="depth (layers)", ylabel="ms per training image", title="cost per image against depth")
    right.set(xlabel="batch size", ylabel="images/s", xscale="log", title="throughput against batch size")
    right.set_xticks(sorted({r["batch"] for r in rows}), [str(b) for b in sorted({r["batch"] for r in rows})])
    right.minorticks_off()  # the log axis's minor labels would overlap the batch sizes
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet20", "resnet56", "resnet110"])
    parser.add_argument("--batches", nargs="+", type=int, default=[64, 128, 256, 512])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per point")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per point first")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--png", type=Path, default=Path("scaling.png"))
    args = parser.parse_args()
    device = torch.device(args.device)
    rows = []
    print(f"{'model':<10} {'batch':>5} {'threads':>7} {'images/s':>9} {'GFLOP/s':>8} {'ms/image':>9}")
    for threads in args.threads:
        for model in args.models:
            for batch in args.batches:
                row = measure(model, batch, threads, device, args.steps, args.warmup)
                rows.append(row)
                print(f"{model:<10} {batch:>5} {threads:>7} {row['images_per_s']:>9.1f} {row['gflops']:>8.1f} "
                      f"{row['ms_per_image']:>9.2f}", flush=True)
    print(f"plot: {plot(rows, args.png)}")


if __name__ == "__main__":
    main()
