"""Figure files: where a figure goes (`figure_path`) and writing it whole (`save_figure`).

Figures are drawn with matplotlib's object API (`Figure` + the Agg canvas, never `pyplot`) by `reports/` and by
lr-find (`experiments/`); both write them through here, so every PNG goes through the one atomic writer
(`rundir.atomic_write`): drawn in memory, then written whole, and a full or read-only disk leaves no partial file.
"""

from __future__ import annotations

import io
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from resnetlab.engine.rundir import RERUN, atomic_write
from resnetlab.errors import UserError


def figure_path(out: Path | str, default_name: str = "curves.png") -> Path:
    """The file a figure goes to: `out`, a folder's `default_name`, or `out` + .png without a suffix.

    Raises:
        UserError: a suffix matplotlib cannot write (x.txt), before anything is computed or drawn.
    """
    out = Path(out)
    if out.is_dir():
        return out / default_name
    if not out.suffix:
        return out.with_name(out.name + ".png")
    supported = FigureCanvasAgg(Figure()).get_supported_filetypes()
    if out.suffix[1:].lower() not in supported:
        others = ", ".join(f".{f}" for f in sorted(supported) if f in ("pdf", "svg", "jpg", "webp"))
        raise UserError(f"--out {out}: {out.suffix} is not an image format; use .png (or {others})")
    return out


def save_figure(fig: Figure, out: Path, *, dpi: int, tight: bool = False) -> Path:
    """Write `fig` to `out` atomically, in the format of its suffix (PNG without one); `tight` crops it to what is
    drawn (`bbox_inches="tight"`). Returns `out`.

    Raises:
        TrainingFailed: the disk is full or read-only (an old file is kept).
        UserError: the file cannot be written (a parent that is a file, no permission).
    """
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=dpi, bbox_inches="tight" if tight else None, format=out.suffix[1:].lower() or "png")
    return atomic_write(out, buffer.getbuffer(), rerun=RERUN)
