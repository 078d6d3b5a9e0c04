"""`summarize`: the per-layer table (output shapes, parameters) and the totals, parameters and MACs (torchinfo)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from resnetlab.errors import UserError


@dataclass(frozen=True)
class ModelSummary:
    """The printable table and its totals: trainable + frozen parameters, multiply-accumulates per input."""

    text: str
    params: int
    macs: int


def summarize(model: nn.Module, input_size: tuple[int, int, int, int] = (1, 3, 32, 32)) -> ModelSummary:
    """Run one forward pass of `model` in eval mode on `input_size` and tabulate it (training mode is restored).

    Args:
        model: any module; it stays on its device and keeps its BN statistics.
        input_size: (B, C, H, W) of the dummy input; MACs are for the whole batch B.

    Returns:
        ModelSummary whose text has the table and the totals, e.g. "Total params: 269,722" and "MACs: 40.55 M".

    Raises:
        UserError: if the model cannot run on that input (e.g. an image too small for its downsampling).
    """
    import torchinfo  # imported here: the CLI's other commands need not pay for it

    if len(input_size) != 4 or any(int(d) < 1 for d in input_size):
        raise UserError(f"input size must be (batch, channels, height, width) of positive sizes, got {input_size}")
    param = next(model.parameters())
    try:
        stats = torchinfo.summary(model, input_size=tuple(input_size), device=param.device, dtypes=[param.dtype],
                                  mode="eval", verbose=0, col_names=("output_size", "num_params"), depth=3)
    except RuntimeError as exc:
        raise UserError(f"the model cannot run on an input of size {tuple(input_size)} ({_root_cause(exc)}); "
                        "try a larger image size or the matching channel count") from exc
    params = int(stats.total_params)
    macs = int(stats.total_mult_adds)
    return ModelSummary(text=_with_macs_line(str(stats), macs), params=params, macs=macs)


def format_count(n: float) -> str:
    """`40.55 M`, `1.82 G`: two decimals with an SI prefix."""
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= factor:
            return f"{n / factor:.2f} {prefix}"
    return f"{n:.0f}"


def _with_macs_line(table: str, macs: int) -> str:
    # torchinfo prints "Total mult-adds (Units.MEGABYTES): 40.55"; say "MACs: 40.55 M" instead.
    macs_line = f"MACs: {format_count(macs)}"
    lines = [macs_line if line.startswith("Total mult-adds") else line for line in table.splitlines()]
    if macs_line not in lines:
        lines.append(macs_line)
    return "\n".join(lines)


def _root_cause(exc: BaseException) -> str:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
