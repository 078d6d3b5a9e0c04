"""The sweep directory: the one owner of its format (the sweep writes it, `reports/` reads it).

```
DIR/sweep.yaml          write_sweep_spec / read_sweep_spec: the spec the sweep was started with, so that
                        `--aggregate DIR` and `--status DIR` need nothing but the directory
DIR/runs/<name>/        point_dir: one ordinary run directory per grid point and seed (engine/rundir.py's format)
DIR/logs/<name>.log     output of the runs `--jobs N` starts as subprocesses (`--launcher slurm`: DIR/slurm/)
DIR/results.csv         written by reports/sweep_tables.py: one row per finished run
DIR/results.md          written by reports/sweep_tables.py: mean ± std per grid point, then the figures
DIR/*.png               written by reports/sweep_figures.py
DIR/.lock               held (engine/runlock.lock_run_dir) by the one sweep that runs in the directory
```
"""

from __future__ import annotations

from pathlib import Path

import yaml

from resnetlab.engine.rundir import atomic_write
from resnetlab.errors import UserError
from resnetlab.experiments.spec import RunPoint, SweepSpec, parse_spec

SPEC_FILE = "sweep.yaml"
RUNS_DIR = "runs"
LOGS_DIR = "logs"
RESULTS_MD = "results.md"
RESULTS_CSV = "results.csv"


def point_dir(out_dir: str | Path, point: RunPoint) -> Path:
    """The run directory of one grid point and seed: DIR/runs/<name>."""
    return Path(out_dir) / RUNS_DIR / point.name


def read_sweep_spec(out_dir: str | Path, *, name: str | None = None) -> SweepSpec:
    """The spec a sweep directory was started with (DIR/sweep.yaml), named after the directory unless `name` is given.

    Raises:
        UserError: `out_dir` holds no sweep.yaml.
    """
    path = Path(out_dir) / SPEC_FILE
    if not path.is_file():
        raise UserError(f"{out_dir} is not a sweep directory (no {SPEC_FILE}); give the --out DIR of a sweep")
    return parse_spec(yaml.safe_load(path.read_text()), name=Path(out_dir).name if name is None else name)


def write_sweep_spec(out_dir: str | Path, spec: SweepSpec) -> Path:
    """Write DIR/sweep.yaml atomically and make DIR/runs/; returns the spec file."""
    path = atomic_write(Path(out_dir) / SPEC_FILE, yaml.safe_dump(spec.to_dict(), sort_keys=False))
    (Path(out_dir) / RUNS_DIR).mkdir(parents=True, exist_ok=True)
    return path
