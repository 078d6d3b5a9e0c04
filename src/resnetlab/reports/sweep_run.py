"""A whole sweep, as `resnetlab sweep` runs it: the experiments train its runs, then the reports write its tables.

`experiments/` never imports `reports/` (the layers go one way), so the step that joins the two lives here, above
both: `experiments.sweep.train_sweep` trains every run that is not finished and returns the failed ones, then
`sweep_tables.aggregate` writes DIR/results.csv, DIR/results.md and the figures from whatever finished.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from resnetlab.experiments.sweep import train_sweep
from resnetlab.reports.sweep_tables import aggregate


def run_sweep(spec: str | Path | Mapping[str, Any], out_dir: str | Path, jobs: int = 1) -> Path:
    """Run (or complete) every point x seed of a sweep, then aggregate.

    Args:
        spec: a shipped sweep name (`resnetlab/sweeps/NAME.yaml`), the path of a spec YAML file, or the spec
            as a mapping (see `experiments.spec.load_spec`).
        out_dir: the sweep directory; re-running with the same one skips finished runs and resumes the others.
        jobs: runs at once (1 = one after another in this process; N > 1 = N subprocesses).

    Returns:
        The path of DIR/results.md.

    Raises:
        UserError: a bad spec (unknown recipe or key, empty grid), or `out_dir` holds a different sweep.
        TrainingFailed: some runs failed (the tables still hold the finished ones); re-run to retry them.
    """
    outcome = train_sweep(spec, out_dir, jobs)
    table = aggregate(outcome.out)
    outcome.check()  # raised after the tables, so they hold the runs that did finish
    return table
