"""Export a checkpoint's network for deployment: ONNX (onnxruntime, browsers, TensorRT) or torch.export (.pt2).

The exported graph takes the *normalized* image batch (B, C, H, W), like the model in Python; the checkpoint's
normalization statistics are written next to the file (FILE.json) with the class names, so a deployment can
prepare its input exactly as `resnetlab predict` does. The batch dimension is dynamic.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from resnetlab.engine.checkpoint import load_checkpoint
from resnetlab.errors import UserError

log = logging.getLogger(__name__)

FORMATS = ("onnx", "pt2")
EXAMPLE_BATCH = 2  # torch.export specialises a dimension of size 1; any other size keeps the batch dynamic
MAX_BATCH = 65536
INPUT_NAME, OUTPUT_NAME = "images", "logits"
# The ONNX exporter's libraries log every rewrite at INFO; under the CLI (INFO on stderr) that is noise.
_CHATTY_LOGGERS = ("onnxscript", "onnx_ir", "torch.onnx", "torch.export", "torch._export")


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[io.StringIO]:
    """Collect the exporter's print() output and raise its loggers to WARNING, restoring both afterwards."""
    loggers = [logging.getLogger(name) for name in _CHATTY_LOGGERS]
    levels = [logger.level for logger in loggers]
    chatter = io.StringIO()
    try:
        for logger in loggers:
            logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
        with contextlib.redirect_stdout(chatter):
            yield chatter
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise UserError(f"ONNX export needs the onnx and onnxscript packages ({exc.name} is missing): "
                        "pip install 'resnetlab[export]'") from None


def _example_input(info: dict[str, Any]) -> torch.Tensor:
    size = int(info.get("image_size") or 32)
    generator = torch.Generator().manual_seed(0)
    return torch.randn(EXAMPLE_BATCH, int(info["in_chans"]), size, size, generator=generator)


def export_model(model: nn.Module, example: torch.Tensor, fmt: str, out: Path | str) -> Path:
    """Export `model` (in eval mode) traced on `example` with a dynamic batch dimension.

    Args:
        model: the network.
        example: an input batch of the shape it will see (the batch size may differ later).
        fmt: "onnx" or "pt2".
        out: the file to write.

    Returns:
        The path written.
    """
    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    if fmt == "pt2":
        with _quiet_exporter():
            program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
        torch.export.save(program, out)
        return out
    _require_onnx()
    with _quiet_exporter() as chatter:  # the exporter reports progress with print(); a library logs instead
        torch.onnx.export(model, (example,), out, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_shapes=({0: batch},), external_data=False, dynamo=True)
    for line in chatter.getvalue().splitlines():
        log.debug("%s", line)
    return out


def export_checkpoint(ckpt: Path | str, fmt: str, out: Path | str) -> Path:
    """`resnetlab export CKPT --format onnx|pt2 --out FILE`.

    Args:
        ckpt: a checkpoint file or a run directory (its best.pt).
        fmt: "onnx" (needs the `export` extra) or "pt2" (torch.export).
        out: the file to write; FILE.json next to it gets the classes and normalization.

    Returns:
        The exported file's path.
    """

    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    if fmt == "onnx":
        _require_onnx()  # before the (slower) checkpoint load
    model, info = load_checkpoint(ckpt)
    out = export_model(model, _example_input(info), fmt, out)
    meta = {"input": INPUT_NAME, "output": OUTPUT_NAME, "layout": "NCHW",
            "in_chans": info["in_chans"], "image_size": info.get("image_size"), "classes": info["classes"],
            "normalization": info["normalization"], "pixel_scale": "divide uint8 by 255, then (x - mean) / std",
            "checkpoint": info.get("path")}
    Path(f"{out}.json").write_text(json.dumps(meta, indent=2) + "\n")
    log.info("exported %s to %s (metadata in %s.json)", info.get("path"), out, out)
    return out
