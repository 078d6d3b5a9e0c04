"""Many `resnetlab train` runs at once on one machine, then one table: how the recipe choices here were measured.

A run list is YAML: `common:` (arguments every run gets) and `runs:` (name -> its own arguments); `{data}` in
an argument is replaced by --data-dir. Runs start as `--jobs` subprocesses at a time (a GPU holds several small
ones at once), each into OUT/<name>. With `--val-tta MODE` each finished run is also scored on its validation
split with that test-time augmentation, so a choice involving TTA is made on validation, never on test.

    python bench/parallel_runs.py bench/explore/fmnist_techniques.yaml --out /tmp/x --jobs 8 --data-dir DATA
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, help="the YAML run list")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--data-dir", default="")
    parser.add_argument("--val-tta", default=None, help="also score each run's validation split with this TTA")
    args = parser.parse_args()
    spec = yaml.safe_load(args.runs.read_text())
    common = [str(a).format(data=args.data_dir) for a in spec.get("common", [])]
    todo = [(name, [*common, *(str(a).format(data=args.data_dir) for a in own)]) for name, own in spec["runs"].items()]
    started, running, finished = time.perf_counter(), {}, {}
    while todo or running:
        while todo and len(running) < args.jobs:
            name, argv = todo.pop(0)
            log = (args.out / f"{name}.log")
            log.parent.mkdir(parents=True, exist_ok=True)
            command = [sys.executable, "-m", "resnetlab", "train", *argv, "--out", str(args.out / name)]
            running[name] = (subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT),
                             time.perf_counter())
        time.sleep(1)
        for name, (proc, t0) in list(running.items()):
            if proc.poll() is not None:
                finished[name] = (proc.returncode, time.perf_counter() - t0)
                del running[name]
    print(f"{len(finished)} runs in {time.perf_counter() - started:.0f} s, {args.jobs} at a time")
    print(f"{'run':<24} {'val acc':>8} {'val tta':>8} {'test':>7} {'test fin':>8} {'train':>7} {'train s':>8} "
          f"{'wall s':>7}")
    for name in spec["runs"]:
        code, wall = finished[name]
        summary_path = args.out / name / "summary.json"
        if code != 0 or not summary_path.is_file():
            print(f"{name:<24} failed (exit {code}); see {args.out / name}.log")
            continue
        s = json.loads(summary_path.read_text())
        tta = _val_tta(args.out / name, args.val_tta) if args.val_tta else None
        print(f"{name:<24} {_pct(s['best_val_acc']):>8} {_pct(tta):>8} {_pct(s['test_acc']):>7} "
              f"{_pct(s['test_acc_final']):>8} {_pct(s['final_train_acc']):>7} {s['train_time_s']:>8.1f} {wall:>7.1f}")


def _val_tta(run_dir: Path, mode: str) -> float | None:
    done = subprocess.run([sys.executable, "-m", "resnetlab", "evaluate", str(run_dir), "--split", "val", "--tta",
                           mode], capture_output=True, text=True)
    path = run_dir / f"eval_val_tta{'' if mode == 'flip' else '-' + mode}.json"
    return json.loads(path.read_text())["acc"] if done.returncode == 0 and path.is_file() else None


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}"


if __name__ == "__main__":
    main()
