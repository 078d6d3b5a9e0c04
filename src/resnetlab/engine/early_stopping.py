"""Early stopping (train.patience): end the run after N evaluations without a better validation accuracy.

The run then tests its best-validation model and writes summary.json as usual; `stopped_early` says why it ended.
The count survives a resume (the hook's state is in every checkpoint), and a run stopped at a checkpoint that was
saved before summary.json only tests when resumed (the checkpoint records the stop).
"""

from __future__ import annotations

from typing import Any

from resnetlab.engine.hooks import Hook, RunView


class EarlyStopping(Hook):
    """Stop after `patience` evaluations in a row whose validation accuracy is not above the best so far."""

    name = "early_stopping"

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.best: float | None = None
        self.bad_evals = 0

    def after_validation(self, run: RunView, val: dict[str, Any] | None) -> str | None:
        if val is None:
            return None
        if self.best is None or val["acc"] > self.best:
            self.best, self.bad_evals = float(val["acc"]), 0
            return None
        self.bad_evals += 1
        if self.bad_evals < self.patience or run.state.step >= run.total_iters:
            return None
        return (f"early stopping at step {run.state.step}: no better validation accuracy in {self.bad_evals} "
                f"evaluations (best {100 * self.best:.2f}%, train.patience={self.patience})")

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "bad_evals": self.bad_evals}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.bad_evals = state["best"], int(state["bad_evals"])
