"""What a run reports while it trains: metrics.jsonl, TensorBoard scalars, a progress bar or log lines.

Only the main process (rank 0) creates a RunLogger that writes; the others get a silent one, so the
trainer never asks who it is before logging.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from resnetlab.engine.rundir import METRIC_KEYS, append_metrics

log = logging.getLogger(__name__)


class RunLogger:
    """metrics.jsonl, TensorBoard (RUN_DIR/tb) and a tqdm bar (or plain log lines when stderr is no terminal).

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
        self._writer = None
        self._bar = None
        if run_dir is None:
            return
        from torch.utils.tensorboard import SummaryWriter

        # purge_step drops events a previous attempt logged after the checkpoint we resume from.
        self._writer = SummaryWriter(str(run_dir / "tb"), purge_step=start_step or None)
        if not self.quiet and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total_iters, initial=start_step, unit="it", dynamic_ncols=True, leave=True)

    # ------------------------------------------------------------------------------------ progress

    def progress(self, step: int, stats: dict[str, float]) -> None:
        """Update the bar (or write a log line) with loss, acc, lr and images/s at a logging point."""
        if self._writer is not None:
            self._writer.add_scalar("train/loss_running", stats["loss"], step)
            self._writer.add_scalar("lr", stats["lr"], step)
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.set_postfix(loss=f"{stats['loss']:.4f}", acc=f"{100 * stats['acc']:.2f}%",
                                  lr=f"{stats['lr']:.3g}", img_s=f"{stats['images_per_s']:.0f}", refresh=False)
            self._bar.update(step - self._bar.n)
            return
        eta = (self.total_iters - step) * stats["s_per_step"]
        log.info("step %d/%d  loss %.4f  acc %.2f%%  lr %.3g  %.0f img/s  ETA %s", step, self.total_iters,
                 stats["loss"], 100 * stats["acc"], stats["lr"], stats["images_per_s"], _duration(eta))

    # ------------------------------------------------------------------------------------ evaluations

    def evaluation(self, row: dict[str, Any]) -> None:
        """Append one evaluation row to metrics.jsonl and TensorBoard, and say it on the bar/log."""
        if self.run_dir is None:
            return
        append_metrics(self.run_dir, row)
        row = {key: row.get(key) for key in METRIC_KEYS}
        step = row["step"]
        assert self._writer is not None
        for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "images_per_s"):
            if row[key] is not None:
                self._writer.add_scalar(key.replace("_", "/", 1) if key.startswith(("train", "val")) else key,
                                        row[key], step)
        self._writer.flush()
        if self.quiet:
            return
        val = f"  val loss {row['val_loss']:.4f} acc {100 * row['val_acc']:.2f}%" if row["val_acc"] is not None else ""
        message = (f"step {step}/{self.total_iters} (epoch {row['epoch']:.2f})  train loss {row['train_loss']:.4f} "
                   f"acc {100 * row['train_acc']:.2f}%{val}  lr {row['lr']:.3g}  {row['images_per_s']:.0f} img/s")
        if self._bar is not None:
            self._bar.update(step - self._bar.n)
            self._bar.write(message, file=sys.stderr)
        else:
            log.info("%s", message)

    def info(self, message: str, *args: Any) -> None:
        """A log message that respects quiet mode and does not break the bar."""
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.write(message % args if args else message, file=sys.stderr)
        else:
            log.info(message, *args)

    def close(self) -> None:
        """Close the bar and the TensorBoard writer."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
