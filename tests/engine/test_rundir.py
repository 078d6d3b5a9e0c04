"""engine/rundir.py owns the names of a run's checkpoints (BEST, LAST) and the one lookup "run directory ->
its best checkpoint"; no other module of the package spells those file names in its code."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from resnetlab.engine.rundir import BEST, CHECKPOINTS, LAST, best_checkpoint, checkpoint_file, last_checkpoint
from resnetlab.errors import UserError

SRC = Path(__file__).resolve().parents[2] / "src" / "resnetlab"


def spelled_names(source: str) -> list[int]:
    """Lines of the string literals (docstrings aside) that spell a checkpoint's file name."""
    tree = ast.parse(source)
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and id(node) not in docstrings and (BEST in node.value or LAST in node.value)]


def test_only_rundir_spells_the_checkpoint_names():
    found = {str(path.relative_to(SRC)): lines for path in sorted(SRC.rglob("*.py"))
             if path.name != "rundir.py" and (lines := spelled_names(path.read_text()))}
    assert found == {}, f"use rundir.BEST / LAST / best_checkpoint / last_checkpoint instead: {found}"


def test_the_checker_finds_a_spelled_name_but_not_a_docstring():
    source = ('"""Module about best.pt."""\n\ndef f(run):\n    """Its last.pt."""\n'
              '    return run / "checkpoints" / "last.pt"\n')
    assert spelled_names(source) == [5]


def test_a_run_directory_means_its_best_checkpoint_and_a_file_itself(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(UserError, match=f"has no {CHECKPOINTS}/{BEST}; pass the --out"):
        checkpoint_file(run.parent)
    best_checkpoint(run).parent.mkdir(parents=True)
    best_checkpoint(run).write_bytes(b"x")
    last_checkpoint(run).write_bytes(b"y")
    assert checkpoint_file(run) == run / CHECKPOINTS / BEST
    assert checkpoint_file(last_checkpoint(run)) == run / CHECKPOINTS / LAST
    with pytest.raises(UserError, match="does not exist; pass a run directory or a checkpoint file"):
        checkpoint_file(run / "nope.pt")
