"""Which checkpoint an evaluation scored: eval_<tag>.json records its path, step and the sha256 of its bytes.

A resumed or continued run writes a new best checkpoint; the report then must not show the evaluation of the old
one. `is_current` compares the recorded hash with the checkpoint file as it is now (the file's own bytes, computed
here: nothing inside the checkpoint is trusted for it). The evaluation itself records the hash that the integrity
check computed while reading the file (`loading.load_with_digest`), so the file is read once.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

CHUNK = 1 << 20


def file_sha256(path: Path | str) -> str:
    """The sha256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_record(ckpt: Path | str, step: int | None, sha256: str | None = None) -> dict[str, Any]:
    """The keys an evaluation stores about the checkpoint it scored: checkpoint (path), step, checkpoint_sha256.

    `sha256`: the file's hash as read (by the integrity check); None computes it (a file without the seal).
    """
    return {"checkpoint": str(Path(ckpt).resolve()), "step": step,
            "checkpoint_sha256": sha256 if sha256 is not None else file_sha256(ckpt)}


def is_current(result: dict[str, Any] | None, ckpt: Path | str) -> bool:
    """Whether `result` (a read eval_<tag>.json) scored the checkpoint file `ckpt` as it is now."""
    if not result or not result.get("checkpoint_sha256") or not Path(ckpt).is_file():
        return False
    return result["checkpoint_sha256"] == file_sha256(ckpt)
