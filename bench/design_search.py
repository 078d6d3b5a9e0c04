"""The design search behind `fmnist-fast`: a few nets, widths, epochs and batch sizes, chosen on validation only.

Each candidate is one `resnetlab train` run in a fresh process (as `make demo` runs it), `--jobs` at a time with
`--threads` threads each. Before the runs, the same process measures the CPU's float32 and bfloat16 matmul peak
(GFLOP/s of a large `torch.mm` on `--threads` threads), so that each candidate's achieved rate can be read as a
share of what this CPU can do: achieved GFLOP/s = images/s x 3 (forward + backward) x 2 FLOP per MAC x MACs per
image (summary.json's `macs`, from torchinfo).

Selection uses the validation split only (summary.json's `best_val_acc`): among the candidates whose training
time fits `--budget` (or whose work, epochs x MACs, fits `--max-work`: the budget for a shared machine), the one
with the highest validation accuracy; ties go to the one with less work. The test
accuracy (final model, with the recipe's eval.tta) is printed for the record and never used to choose. On a
shared machine the times are not valid (accuracy does not depend on the load): compare `CPU s` or rerun idle.

    python bench/design_search.py [--spec bench/explore/fast_search.yaml] [--jobs 2] [--threads 1]
        [--budget 180] [--out runs/search] [--only NAME ...] [--set KEY=VALUE ...]

A spec is YAML: `recipe:` (the base recipe), `common:` (overrides for every candidate) and `candidates:`, a
mapping from a name to its list of `key=value` overrides (`recipe=NAME` among them trains another recipe).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
import yaml

DEFAULT_SPEC = Path(__file__).with_name("explore") / "fast_search.yaml"
BACKWARD_FACTOR = 3  # a training step costs about 3 forward passes (forward, grad of inputs, grad of weights)


def matmul_peak(dtype: torch.dtype, threads: int, n: int = 1536, seconds: float = 3.0) -> float:
    """GFLOP/s of an n x n x n matmul in `dtype` on `threads` threads (the best of repeated timings)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    for _ in range(3):  # warm-up: thread pool, oneDNN kernel selection
        torch.mm(a, b)
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * n**3 / (time.perf_counter() - start) / 1e9)
    return best


def run_candidate(name: str, recipe: str, overrides: list[str], out: Path, threads: int) -> dict[str, Any]:
    """Train one candidate in a subprocess; summary.json plus wall and CPU seconds (or an `error`)."""
    run_dir = out / name
    cli = Path(sys.executable).with_name("resnetlab")
    recipe = next((item.partition("=")[2] for item in overrides if item.startswith("recipe=")), recipe)
    command = [str(cli), "train", "--recipe", recipe, "--out", str(run_dir), "--quiet", "--set",
               f"train.threads={threads}"]
    for item in overrides:
        if not item.startswith("recipe="):
            command += ["--set", item]
    if (run_dir / "summary.json").is_file():  # rerunning the search reuses finished candidates
        return {**json.loads((run_dir / "summary.json").read_text()), "name": name, "wall_s": None, "cpu_s": None}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # with --jobs > 1 this mixes the parallel runs' CPU time
    if done.returncode != 0:
        return {"name": name, "error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
    summary = json.loads((run_dir / "summary.json").read_text())
    return {**summary, "name": name, "wall_s": wall,
            "cpu_s": after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime}


def work(row: dict[str, Any]) -> float:
    """Training work of a finished candidate in MMAC-epochs: epochs x forward MACs per image / 1e6 (each epoch sees
    the same training images, so this is proportional to the FLOPs of the run whatever the machine or its load)."""
    return row["epochs"] * (row["macs"] or 0) / 1e6


def choose(rows: list[dict[str, Any]], budget_s: float, max_work: float | None = None) -> dict[str, Any] | None:
    """The candidate with the best validation accuracy among those within the budget (less work on ties).

    The budget is `max_work` MMAC-epochs when given (for a shared machine, whose times mean nothing), else
    `budget_s` seconds of training.
    """
    fit = [r for r in rows if "error" not in r and
           (work(r) <= max_work if max_work is not None else r["train_time_s"] <= budget_s)]
    return max(fit, key=lambda r: (round(r["best_val_acc"], 4), -work(r)), default=None)


def table(rows: list[dict[str, Any]], peaks: dict[str, float]) -> str:
    """One line per candidate: time, images/s, MACs, GFLOP/s and its share of the matmul peaks, val and test."""
    head = (f"{'candidate':<18} {'train s':>8} {'images/s':>9} {'MMACs':>7} {'work':>6} {'GFLOP/s':>8} {'%fp32':>6} "
            f"{'%bf16':>6} {'amp':>4} {'val %':>6} {'test %':>7}")
    lines = [head]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['name']:<18} failed: {r['error']}")
            continue
        gflops = r["images_per_s"] * BACKWARD_FACTOR * 2 * (r["macs"] or 0) / 1e9
        mmacs = (r["macs"] or 0) / 1e6
        lines.append(f"{r['name']:<18} {r['train_time_s']:>8.1f} {r['images_per_s']:>9.0f} {mmacs:>7.1f} "
                     f"{work(r):>6.1f} {gflops:>8.1f} {100 * gflops / peaks['fp32']:>5.0f}% "
                     f"{100 * gflops / peaks['bf16']:>5.0f}% "
                     f"{str(r.get('amp')):>4} {100 * r['best_val_acc']:>6.2f} {100 * r['test_acc_final']:>7.2f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=DEFAULT_SPEC)
    parser.add_argument("--jobs", type=int, default=1, help="candidates trained at once")
    parser.add_argument("--threads", type=int, default=2, help="threads per candidate (train.threads)")
    parser.add_argument("--budget", type=float, default=180.0, help="training seconds a candidate may take")
    parser.add_argument("--max-work", type=float, default=None,
                        help="budget in MMAC-epochs instead of seconds (epochs x MACs per image / 1e6), for a shared "
                             "machine whose times mean nothing; e.g. 47 = airbench 32/64/128 for 4 epochs")
    parser.add_argument("--out", type=Path, default=Path("runs/search"), help="run directories (reused if finished)")
    parser.add_argument("--only", nargs="*", default=None, help="train only these candidates")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="added to every candidate (e.g. train.amp=off, train.seed=1)")
    args = parser.parse_args()
    spec = yaml.safe_load(args.spec.read_text())
    candidates = {k: list(v) for k, v in spec["candidates"].items() if args.only is None or k in args.only}
    peaks = {"fp32": matmul_peak(torch.float32, args.threads), "bf16": matmul_peak(torch.bfloat16, args.threads)}
    print(f"matmul peak on {args.threads} thread(s): fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} "
          f"GFLOP/s (cpu kernels {torch.backends.cpu.get_cpu_capability()})", flush=True)
    common = [*spec.get("common", []), *args.overrides]
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = [pool.submit(run_candidate, name, spec["recipe"], [*common, *extra], args.out, args.threads)
                   for name, extra in candidates.items()]
        rows = []
        for future in futures:
            rows.append(future.result())
            r = rows[-1]
            status = r.get("error") or f"val {100 * r['best_val_acc']:.2f}% in {r['train_time_s']:.0f} s"
            print(f"{r['name']}: {status}", flush=True)
    print(table(rows, peaks))
    best = choose(rows, args.budget, args.max_work)
    within = f"{args.max_work:g} MMAC-epochs" if args.max_work is not None else f"{args.budget:.0f} s of training"
    print(f"chosen on validation within {within}: {best['name'] if best else 'none'}")


if __name__ == "__main__":
    main()
