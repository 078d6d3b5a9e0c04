"""What the training loop counts: `TrainState` (saved in every checkpoint) and `Clock` (its timing, never saved).

Both sit below `run.py` and `hooks.py` so that a hook's view of the run (`hooks.RunView`) can name them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class TrainState:
    """The loop's counters and the model selection, saved in every checkpoint as plain values."""

    step: int = 0
    lr: float = 0.0
    best_val_acc: float | None = None
    best_step: int = 0
    top_k: list[list[float]] = field(default_factory=list)  # [val_acc, step] of the kept top-k checkpoints
    train_time_s: float = 0.0  # the training loop, summed over resumed attempts
    step_time_s: float = 0.0  # the part of it spent in training steps (for images/s)
    images_seen: int = 0
    final_train_acc: float | None = None


@dataclass
class Clock:
    """The training loop's timing, in `time.perf_counter()` seconds; a resumed attempt starts its own.

    A period is the steps since the previous metrics row: its time and images give the row's images/s (and, added
    up, TrainState.step_time_s and images_seen).
    """

    loop_start: float = 0.0  # when this attempt's loop started
    loop_base: float = 0.0  # the loop time of earlier attempts (TrainState.train_time_s at the start)
    period_start: float = 0.0
    period_step: int = 0  # the step the period started at
    period_images: int = 0  # images trained on in the period, over all processes
    last_message: float = 0.0  # when the last metrics row or progress line was written
    last_row: tuple[float, float] | None = None  # (train loss, accuracy) of the last row, for progress lines

    def start(self, train_time_s: float, step: int) -> None:
        """Start the loop (and its first period) at `step`, after `train_time_s` seconds of earlier attempts."""
        now = time.perf_counter()
        self.loop_start, self.loop_base, self.last_message = now, train_time_s, now
        self.start_period(step)

    def start_period(self, step: int) -> None:
        """Start a period at `step` (after a metrics row)."""
        self.period_start, self.period_step, self.period_images = time.perf_counter(), step, 0

    def period_seconds(self) -> float:
        return time.perf_counter() - self.period_start

    def loop_time(self) -> float:
        """Seconds of training loop, this attempt's and the earlier ones'."""
        return self.loop_base + time.perf_counter() - self.loop_start
