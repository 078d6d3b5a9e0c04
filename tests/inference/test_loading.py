"""load_checkpoint: a run directory (its best checkpoint) or a checkpoint file as a model for inference, built from
the zoo as the checkpoint's config names it."""

from __future__ import annotations

import pytest
import torch
from support.evalkit import CLASSES

from resnetlab.engine.checkpoint import read_checkpoint
from resnetlab.engine.rundir import best_checkpoint, last_checkpoint
from resnetlab.errors import UserError
from resnetlab.inference.loading import load_checkpoint, output_dir


def test_load_checkpoint_gives_an_inference_model_and_its_info(tiny_run):
    model, info = load_checkpoint(tiny_run)  # a run directory means its best checkpoint
    assert not model.training and next(model.parameters()).device.type == "cpu"
    assert info["classes"] == CLASSES and info["in_chans"] == 1 and info["image_size"] == 16
    assert len(info["normalization"]["mean"]) == 1 and info["config"]["model"]["name"] == "resnet20"
    assert info["path"] == str(best_checkpoint(tiny_run))
    best = read_checkpoint(best_checkpoint(tiny_run))
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, best["model"][name])
    assert load_checkpoint(last_checkpoint(tiny_run))[1]["path"] == str(last_checkpoint(tiny_run))
    assert output_dir(last_checkpoint(tiny_run)) == tiny_run.resolve()  # an evaluation's files go beside the run


def test_a_folder_without_a_best_checkpoint_is_one_line(tmp_path):
    with pytest.raises(UserError, match="has no checkpoints/best.pt; pass the --out of 'resnetlab train'"):
        load_checkpoint(tmp_path)
