"""Figure files (engine/figurefile.py): where a figure goes, and that it is written whole, through the atomic writer,
with the same bytes matplotlib writes itself."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from matplotlib.figure import Figure

from resnetlab.engine.figurefile import figure_path, save_figure
from resnetlab.errors import TrainingFailed, UserError


def small_figure() -> Figure:
    fig = Figure(figsize=(3, 2))
    ax = fig.subplots()
    ax.plot([1, 2, 3], [3, 1, 2], label="loss")
    ax.legend()
    fig.tight_layout()
    return fig


def test_figure_path_adds_png_names_a_folders_file_and_refuses_other_suffixes(tmp_path: Path):
    assert figure_path(tmp_path / "curves") == tmp_path / "curves.png"
    assert figure_path(tmp_path, "lr_find.png") == tmp_path / "lr_find.png"
    assert figure_path(tmp_path / "a.pdf") == tmp_path / "a.pdf"
    with pytest.raises(UserError, match=r"^--out .*x\.txt: \.txt is not an image format; use \.png \(or .*\.pdf"):
        figure_path(tmp_path / "x.txt")


@pytest.mark.parametrize("tight", [False, True])
def test_save_figure_writes_what_savefig_writes(tmp_path: Path, tight: bool):
    """Going through memory and the atomic writer changes no byte of the file (sweep figures, lr-find's plot and
    every report plot were written by savefig directly before)."""
    direct = tmp_path / "direct.png"
    small_figure().savefig(direct, dpi=90, bbox_inches="tight" if tight else None)
    assert save_figure(small_figure(), tmp_path / "sub" / "saved.png", dpi=90, tight=tight) == tmp_path / "sub" / \
        "saved.png"
    assert (tmp_path / "sub" / "saved.png").read_bytes() == direct.read_bytes()


def test_save_figure_replaces_a_file_by_renaming_and_leaves_nothing_else(tmp_path: Path):
    """A reader holding the old file (here a hard link to it) keeps it whole: the new one is written beside it and
    renamed over it, never written into it."""
    out = tmp_path / "fig.png"
    out.write_bytes(b"old figure")
    os.link(out, tmp_path / "held")
    save_figure(small_figure(), out, dpi=50)
    assert (tmp_path / "held").read_bytes() == b"old figure"
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig.png", "held"]


def test_a_failed_write_keeps_the_old_figure_and_leaves_no_partial_file(tmp_path: Path, monkeypatch):
    out = tmp_path / "fig.png"
    out.write_bytes(b"old figure")

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)  # fails after the temporary file was opened and written
    with pytest.raises(TrainingFailed, match="fig.png"):
        save_figure(small_figure(), out, dpi=50)
    assert out.read_bytes() == b"old figure"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig.png"]
