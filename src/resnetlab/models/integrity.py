"""The integrity check of saved files: a SHA-256 of what `torch.save` wrote, kept in the zip archive's comment.

`seal(payload)` returns the bytes of `torch.save` with the comment `resnetlab-sha256:<hex>` added to the zip's
end-of-central-directory record; `torch.load` ignores a zip comment, so a sealed checkpoint loads anywhere.
`verify(path)` recomputes the digest over the file without its comment and compares: any changed byte (in the
tensors, the pickle, the zip headers or the digest itself) fails the check. Files without the comment (checkpoints
written before the check existed, torchvision's or anyone's state dicts) are zip archives whose every member
carries a CRC-32 that `torch.save` writes: those are checked instead, which also catches a flipped byte in the
data; a legacy (non-zip) pickle has no checksum and is loaded as before, with `weights_only=True` either way.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

from resnetlab.errors import UserError

MARK = b"resnetlab-sha256:"
_EOCD = b"PK\x05\x06"  # zip end-of-central-directory signature; the record is 22 bytes plus the comment
_EOCD_SIZE = 22
_CHUNK = 1 << 20


def seal(payload: bytes | memoryview) -> bytes:
    """`payload` (the bytes of torch.save, a zip archive without a comment) with its SHA-256 as the zip comment."""
    data = bytes(payload)
    if len(data) < _EOCD_SIZE or data[-_EOCD_SIZE:-_EOCD_SIZE + 4] != _EOCD or data[-2:] != b"\x00\x00":
        raise ValueError("not a zip archive without a comment (torch.save's format)")
    comment = MARK + hashlib.sha256(data).hexdigest().encode()
    return data[:-2] + len(comment).to_bytes(2, "little") + comment


def _sealed_digest(path: Path, size: int) -> tuple[str, int] | None:
    """(the hex digest in the zip comment, where the comment starts), or None when the file carries none."""
    with path.open("rb") as f:
        tail_size = min(size, _EOCD_SIZE + len(MARK) + 64)
        f.seek(size - tail_size)
        tail = f.read()
    at = tail.rfind(MARK)
    if at < _EOCD_SIZE or tail[at - _EOCD_SIZE:at - _EOCD_SIZE + 4] != _EOCD:
        return None
    return tail[at + len(MARK):].decode("ascii", errors="replace"), size - tail_size + at


def verify(path: str | Path, what: str = "checkpoint", instead: str = "use another one or retrain") -> str | None:
    """Check `path` against the SHA-256 sealed in it, or, without one, the CRC-32 of every zip member.

    Args:
        path: the file.
        what: what it is, for the message ("checkpoint", "weights file").
        instead: what to do when it is corrupt, for the message.

    Returns:
        The SHA-256 of the whole file's bytes (hex) for a sealed file, computed in the same pass as the check (the
        two digests share all but the last bytes), so that a caller recording which file it read need not hash it
        again; None for a file without the seal (checked by its CRC-32s, or a legacy pickle or not a zip, which
        the loader then names).

    Raises:
        UserError: the file does not match its checksum (one line naming it).
    """
    path = Path(path)
    size = path.stat().st_size
    sealed = _sealed_digest(path, size)
    if sealed is None:
        _verify_crc(path, what, instead)
        return None
    expected, comment_at = sealed
    payload = hashlib.sha256()
    with path.open("rb") as f:
        left = comment_at - 2  # the archive as torch.save wrote it: up to the comment length, which was 0
        while left > 0:
            chunk = f.read(min(_CHUNK, left))
            if not chunk:
                break
            payload.update(chunk)
            left -= len(chunk)
        whole = payload.copy()  # the bytes so far are both digests' prefix: hashed once
        whole.update(f.read())  # the comment's length and the comment: the rest of the file
    payload.update(b"\x00\x00")
    if payload.hexdigest() != expected:
        raise UserError(_corrupt(path, what, "its SHA-256 does not match the one saved with it", instead))
    return whole.hexdigest()


def _verify_crc(path: Path, what: str, instead: str) -> None:
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
        raise UserError(_corrupt(path, what, f"its zip archive is damaged: {exc}", instead)) from None
    if bad is not None:
        raise UserError(_corrupt(path, what, f"the CRC-32 of {bad} does not match", instead))


def _corrupt(path: Path, what: str, why: str, instead: str) -> str:
    return f"{what} {path} is corrupt ({why}); nothing was loaded from it: {instead}"
