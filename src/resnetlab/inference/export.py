"""Export a checkpoint's network for deployment: ONNX (onnxruntime, browsers, TensorRT) or torch.export (.pt2).

By default the exported graph takes the *normalized* image batch (B, C, H, W) and returns logits, like the model
in Python; the checkpoint's normalization statistics are written next to the file (FILE.json) with the class
names, so a deployment can prepare its input exactly as `resnetlab predict` does.

With `include_preprocessing` the graph takes what a deployment has: uint8 images (B, C, S, S) at the run's stored
size S, and returns probabilities (softmax). Inside it: pixel / 255, the normalization (per-channel mean/std or
the per-pixel mean of `data.normalize=pixel`) and the on-device resize of the run (`data.resize`), computed as
the evaluation Loader computes them (`resnetlab.data.loader.BatchTransform`), so the probabilities equal those
of `resnetlab predict` for the same pixels. A run that resized images of their own size (`data.resize` without
`data.image_size`) has no fixed stored size: its graph takes square images of any side.

The batch dimension is dynamic. FILE.json says which input (dtype, shape) and which output the graph has.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from resnetlab.data.loader import BatchTransform
from resnetlab.engine.rundir import RERUN, TEMP_MARK, atomic_write, write_error, write_json
from resnetlab.errors import TrainingFailed, UserError
from resnetlab.inference.images import stored_size
from resnetlab.inference.loading import load_checkpoint

log = logging.getLogger(__name__)

FORMATS = ("onnx", "pt2")
EXAMPLE_BATCH = 2  # torch.export specialises a dimension of size 1; any other size keeps the batch dynamic
MAX_BATCH = 65536
FREE_MARGIN = 16 * 2**20  # bytes kept free beyond the file itself (the folder entry, the file system's own)
MAX_SIDE = 8192  # the largest square side a graph without a fixed stored size takes
INPUT_NAME, OUTPUT_NAME, PROBS_NAME = "images", "logits", "probabilities"
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
        with contextlib.redirect_stdout(chatter), warnings.catch_warnings():
            # Height and width share one dynamic side; the ONNX exporter warns that it names the axis once.
            warnings.filterwarnings("ignore", message=r".*The axis name: .* will not be used")
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


class Preprocessed(nn.Module):
    """uint8 images (B, C, H, W) -> class probabilities (B, K): /255, normalize, resize, the model, softmax.

    The arithmetic of the evaluation Loader (`BatchTransform.apply`): one fused multiply-add with a scale of
    1 / (255 std) and an offset of -mean / std per stored value, then a bilinear resize (align_corners=False).

    Args:
        model: the network (eval mode).
        scale: (C, H, W), or (C, 1, 1) for per-channel statistics.
        offset: the same shape as `scale`.
        resize: the side the model sees, or None for no resize.
        antialias: antialias the resize (the Loader does when it shrinks).
        mode: the run's data.resize_mode, bilinear or nearest.
    """

    def __init__(self, model: nn.Module, scale: torch.Tensor, offset: torch.Tensor, resize: int | None,
                 antialias: bool, mode: str = "bilinear") -> None:
        super().__init__()
        self.model = model
        self.register_buffer("scale", scale)
        self.register_buffer("offset", offset)
        self.resize = resize
        self.antialias = antialias
        self.mode = mode

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = torch.addcmul(self.offset, images.to(self.scale.dtype), self.scale)  # (B, C, H, W) normalized
        if self.resize is not None and self.mode == "nearest":
            x = F.interpolate(x, size=(self.resize, self.resize), mode="nearest")  # (B, C, R, R)
        elif self.resize is not None:
            x = F.interpolate(x, size=(self.resize, self.resize), mode="bilinear", align_corners=False,
                              antialias=self.antialias)  # (B, C, R, R)
        return self.model(x).softmax(dim=1)  # (B, K)


def with_preprocessing(model: nn.Module, info: dict[str, Any]) -> tuple[Preprocessed, int | None]:
    """`model` wrapped to take uint8 images as the checkpoint's run stored them, and their side (None = any).

    Without a fixed stored size the resize is always antialiased: for a shrink that is what the Loader does, and
    for an enlargement antialiased bilinear equals plain bilinear (measured within 1e-6), so one graph serves every
    side.
    """
    in_chans = int(info["in_chans"])
    side = stored_size(info)
    resize = info["config"].get("data", {}).get("resize")
    mode = info["config"].get("data", {}).get("resize_mode") or "bilinear"
    stats = info["normalization"]
    transform = BatchTransform(None, mean=torch.tensor(stats["mean"], dtype=torch.float64),
                               std=torch.tensor(stats["std"], dtype=torch.float64),
                               image_shape=(in_chans, side or 1, side or 1))  # (H, W, C) scale and offset
    scale, offset = (t.permute(2, 0, 1).contiguous() for t in (transform.scale, transform.offset))
    if side is None:
        return Preprocessed(model, scale, offset, int(resize), antialias=True, mode=mode), None
    if resize is not None and int(resize) == side:
        resize = None  # the Loader skips a resize to the same size
    antialias = resize is not None and int(resize) < side
    return Preprocessed(model, scale, offset, None if resize is None else int(resize), antialias, mode), side


def _example_input(info: dict[str, Any]) -> torch.Tensor:
    size = int(info.get("image_size") or 32)
    generator = torch.Generator().manual_seed(0)
    return torch.randn(EXAMPLE_BATCH, int(info["in_chans"]), size, size, generator=generator)


def _example_images(in_chans: int, side: int | None, resize: int | None) -> torch.Tensor:
    side = side or 2 * int(resize or 16)  # any side will do when it is dynamic; not the resize (a no-op there)
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (EXAMPLE_BATCH, in_chans, side, side), generator=generator, dtype=torch.uint8)


def check_out(out: Path | str, fmt: str, force: bool = False) -> Path:
    """`out` as a Path once it is known that a file can be written there (its folder is made if needed).

    Raises:
        UserError: `out` is a directory, lies under a file, exists (without `force`) or cannot be written.
        TrainingFailed: the disk is read-only (one line).
    """
    out = Path(out)
    if out.is_dir():
        raise UserError(f"--out {out} is a directory; give a file name, e.g. {out / ('model.' + fmt)}")
    meta = Path(f"{out}.json")
    existing = [str(p) for p in (out, meta) if p.exists()]
    if existing and not force:
        raise UserError(f"{' and '.join(existing)} already exist{'s' if len(existing) == 1 else ''}; add --force to "
                        "replace, or choose another --out")
    blocker = next((p for p in out.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise UserError(f"cannot write {out}: {blocker} is a file, not a folder; choose another --out")
    probe = out.with_name(f".{out.name}{TEMP_MARK}{os.getpid()}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        probe.touch()  # a file beside `out`, never `out` itself: what was there stays until the export is complete
    except OSError as exc:
        raise write_error(out, exc, RERUN) from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()
    return out


def _check_free_space(out: Path, size: int) -> None:
    """A TrainingFailed when the folder of `out` has not room for `size` bytes (checked before writing)."""
    with contextlib.suppress(OSError):
        free = shutil.disk_usage(out.parent).free
        if free < size + FREE_MARGIN:
            raise TrainingFailed(f"no space left on the device for {out}: it needs {size / 2**20:.1f} MiB, "
                                 f"{free / 2**20:.1f} MiB are free; free some space, then {RERUN}")


def export_model(model: nn.Module, example: torch.Tensor, fmt: str, out: Path | str, *,
                 output_name: str = OUTPUT_NAME, dynamic_side: bool = False) -> Path:
    """Export `model` (in eval mode) traced on `example` with a dynamic batch dimension.

    Args:
        model: the network.
        example: an input batch of the shape it will see (the batch size may differ later).
        fmt: "onnx" or "pt2".
        out: the file to write.
        output_name: the name of the output in the ONNX graph.
        dynamic_side: the height and width (one square side) are dynamic as well.

    Returns:
        The path written.
    """
    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    out = Path(out)
    model = model.eval()
    dims: dict[int, Any] = {0: torch.export.Dim("batch", min=1, max=MAX_BATCH)}
    if dynamic_side:
        side = torch.export.Dim("side", min=2, max=MAX_SIDE)
        dims.update({2: side, 3: side})
    if fmt == "pt2":
        with _quiet_exporter():
            program = torch.export.export(model, (example,), dynamic_shapes=(dims,))
        buffer = io.BytesIO()  # in memory: torch.export.save aborts the process on a full disk
        torch.export.save(program, buffer)
        data = buffer.getbuffer()
    else:
        _require_onnx()
        with _quiet_exporter() as chatter:  # the exporter reports progress with print(); a library logs instead
            program = torch.onnx.export(model, (example,), None, input_names=[INPUT_NAME],
                                        output_names=[output_name], dynamic_shapes=(dims,), dynamo=True)
        for line in chatter.getvalue().splitlines():
            log.debug("%s", line)
        data = program.model_proto.SerializeToString()
    _check_free_space(out, len(data))
    return atomic_write(out, data, rerun=RERUN)  # a temporary file renamed: never half a file at `out`


def export_checkpoint(ckpt: Path | str, fmt: str, out: Path | str, include_preprocessing: bool = False,
                      force: bool = False) -> Path:
    """`resnetlab export CKPT --format onnx|pt2 --out FILE [--include-preprocessing]`.

    Args:
        ckpt: a checkpoint file or a run directory (its best checkpoint).
        fmt: "onnx" (needs the `export` extra) or "pt2" (torch.export).
        out: the file to write; FILE.json next to it gets the classes, normalization and the graph's input and
            output.
        include_preprocessing: the graph takes uint8 images at the run's stored size and returns probabilities
            (division by 255, normalization and the run's resize inside); else normalized floats in, logits out.
        force: replace an existing FILE (and FILE.json); without it they are an error.

    Returns:
        The exported file's path.

    Raises:
        UserError: unknown format, missing ONNX packages, a bad checkpoint, an existing `out` without `force`, or
            an `out` that cannot be written.
        TrainingFailed: the disk is full or read-only (one line; no partial file is left).
    """

    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    if fmt == "onnx":
        _require_onnx()  # before the (slower) checkpoint load
    out = check_out(out, fmt, force)
    model, info = load_checkpoint(ckpt)
    if include_preprocessing:
        wrapped, side = with_preprocessing(model, info)
        example = _example_images(int(info["in_chans"]), side, wrapped.resize)
        out = export_model(wrapped, example, fmt, out, output_name=PROBS_NAME, dynamic_side=side is None)
    else:
        out = export_model(model, _example_input(info), fmt, out)
    meta = _metadata(info, include_preprocessing)
    try:
        write_json(Path(f"{out}.json"), meta, rerun=RERUN)
    except (UserError, TrainingFailed):
        out.unlink(missing_ok=True)  # a graph without its description would be half an export
        raise
    log.info("exported %s to %s (metadata in %s.json)", info.get("path"), out, out)
    return out


def _metadata(info: dict[str, Any], include_preprocessing: bool) -> dict[str, Any]:
    """FILE.json: what goes in and what comes out of the graph, the classes and the normalization."""
    in_chans = int(info["in_chans"])
    meta: dict[str, Any] = {"input": INPUT_NAME, "layout": "NCHW", "in_chans": in_chans}
    if include_preprocessing:
        side = stored_size(info)
        resize = info["config"].get("data", {}).get("resize")
        mode = info["config"].get("data", {}).get("resize_mode") or "bilinear"
        meta.update(
            input_dtype="uint8", image_size=side,
            input_shape=["batch", in_chans, side or "side", side or "side"],
            output=PROBS_NAME, output_kind="probabilities (softmax over the classes; each row sums to 1)",
            preprocessing="inside the graph: pixel / 255, (x - mean) / std"
                          + (f", {mode} resize to {resize}x{resize}" + (" (antialiased when shrinking)" if mode
                             == "bilinear" else "") if resize else ""),
        )
    else:
        size = info.get("image_size")
        meta.update(input_dtype="float32", image_size=size, input_shape=["batch", in_chans, size, size],
                    output=OUTPUT_NAME, output_kind="logits (apply softmax for probabilities)",
                    pixel_scale="divide uint8 by 255, then (x - mean) / std")
    meta.update(classes=info["classes"], normalization=info["normalization"], checkpoint=info.get("path"))
    return meta
