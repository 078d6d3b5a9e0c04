"""What a run reports while it trains: metrics.jsonl rows, TensorBoard scalars, a progress bar or log lines.

In a terminal (or a notebook, through tqdm.auto) a bar advances every step with its rate and ETA, and shows the
latest loss, accuracy, lr and images/s; every metrics row and evaluation is printed above it. Elsewhere (a log
file, a batch job) a line is written at every metrics row (`train.log_every` steps) and at least every 30 s.
Only the main process (rank 0) of a run with a directory gets a RunLogger that writes; the other ranks and lr-find
get a silent one (`RunLogger.silent()`, or a `run_dir` of None).
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from resnetlab.engine.rundir import append_metrics

log = logging.getLogger(__name__)

MESSAGE_EVERY_S = 30.0  # without a bar, a progress line at least this often


def interactive_stderr() -> bool:
    """Whether a progress bar can be drawn: stderr is a terminal, or this runs in a Jupyter kernel."""
    return sys.stderr.isatty() or "ipykernel" in sys.modules


class RunLogger:
    """metrics.jsonl and TensorBoard (RUN_DIR/tb) rows, and a bar (or plain log lines).

    Args:
        run_dir: the run directory; None for a silent logger (ranks other than 0).
        total_iters: the length of the bar.
        start_step: where the bar starts (the resumed step).
        quiet: no bar and no progress lines (files are still written).
    """

    def __init__(self, run_dir: Path | None, total_iters: int, start_step: int, quiet: bool) -> None:
        self.run_dir = run_dir
        self.total_iters = total_iters
        self.quiet = quiet or run_dir is None
        self.interactive = not self.quiet and interactive_stderr()
        self._writer = None
        self._bar = None
        self._pace = (time.perf_counter(), start_step)  # for the ETA of log lines
        if run_dir is None:
            return
        from torch.utils.tensorboard import SummaryWriter  # tensorboard: heavy, and only the main process needs it

        # purge_step drops events a previous attempt logged after the checkpoint we resume from.
        self._writer = SummaryWriter(str(run_dir / "tb"), purge_step=start_step or None)
        if self.interactive:
            self._bar = tqdm(total=total_iters, initial=start_step, unit="it", dynamic_ncols=True, leave=True,
                             file=sys.stderr)

    @classmethod
    def silent(cls) -> RunLogger:
        """A logger that writes nothing: no file, no bar, no message (lr-find, and the default of a `Run`)."""
        return cls(None, total_iters=0, start_step=0, quiet=True)

    # ------------------------------------------------------------------------------------ progress

    def step(self, step: int) -> None:
        """Advance the bar to `step` (called after every step; no host sync)."""
        if self._bar is not None:
            self._bar.update(step - self._bar.n)

    def wants_message(self, seconds_since_last: float) -> bool:
        """Whether a progress line is due between rows (no bar, and 30 s since the last line)."""
        return not self.quiet and self._bar is None and seconds_since_last >= MESSAGE_EVERY_S

    def progress(self, stats: dict[str, Any]) -> None:
        """Show the running loss, accuracy, lr and images/s: on the bar, or as a log line with an ETA."""
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.set_postfix(loss=f"{stats['train_loss']:.4f}", acc=f"{100 * stats['train_acc']:.2f}%",
                                  lr=f"{stats['lr']:.3g}", img_s=f"{stats['images_per_s']:.0f}")
            return
        log.info("step %d/%d  loss %.4f  acc %.2f%%  lr %.3g  %.0f img/s  ETA %s", stats["step"], self.total_iters,
                 stats["train_loss"], 100 * stats["train_acc"], stats["lr"], stats["images_per_s"],
                 _duration(self._eta(stats["step"])))

    def _eta(self, step: int) -> float:
        now = time.perf_counter()
        start, first = self._pace
        return (self.total_iters - step) * (now - start) / max(1, step - first)

    # ------------------------------------------------------------------------------------ rows

    def row(self, row: dict[str, Any]) -> None:
        """Append a metrics row to metrics.jsonl and TensorBoard; print it when it holds an evaluation."""
        if self.run_dir is None:
            return
        append_metrics(self.run_dir, row)
        assert self._writer is not None
        for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "images_per_s"):
            if row.get(key) is not None:
                self._writer.add_scalar(key.replace("_", "/", 1) if key.startswith(("train", "val")) else key,
                                        row[key], row["step"])
        for group, norm in (row.get("grad_norm") or {}).items():  # train.grad_norms
            self._writer.add_scalar(f"grad_norm/{group}", norm, row["step"])
        self._writer.flush()
        if row.get("val_acc") is None:
            self.progress(row)
            return
        if self.quiet:
            return
        message = (f"step {row['step']}/{self.total_iters} (epoch {row['epoch']:.2f})  train loss "
                   f"{row['train_loss']:.4f} acc {100 * row['train_acc']:.2f}%  val loss {row['val_loss']:.4f} acc "
                   f"{100 * row['val_acc']:.2f}%  lr {row['lr']:.3g}  {row['images_per_s']:.0f} img/s")
        self.info("%s", message)

    def info(self, message: str, *args: Any) -> None:
        """A log message that respects quiet mode and does not break the bar."""
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.write(message % args if args else message, file=sys.stderr)
        else:
            log.info(message, *args)

    def close(self) -> None:
        """Close the bar (it stays on screen at its last state) and the TensorBoard writer."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def running_window(current: tuple[float, float], previous: tuple[float, float] | None, steps: int,
                   window: int) -> tuple[float, float]:
    """(loss, accuracy) over about the last `window` steps for a progress line between metrics rows: the `steps`
    since the last row (`current`) and the rest of the window from that row (`previous`), weighted by steps.

    The accumulator starts over at every row; shown alone, its first few steps made the accuracy jump at each
    row (a handful of batches, then a whole window).
    """
    if previous is None or steps >= window:
        return current
    share = max(0, steps) / window
    return (share * current[0] + (1 - share) * previous[0], share * current[1] + (1 - share) * previous[1])


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
