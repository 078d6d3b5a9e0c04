"""The engine on a CUDA GPU: bf16 chosen by default, compiled training, exact resume in deterministic mode, and
evaluation on the GPU equal to the CPU's (skipped without a GPU; bench/gpu_check.sh runs these)."""

from __future__ import annotations

import pytest
import torch
from support.enginekit import tiny_config, train_until_stopped

import resnetlab
from resnetlab.engine import devices
from resnetlab.engine.checkpoint import read_checkpoint
from resnetlab.engine.trainer import train

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
CUDA = {"train__device": "cuda", "train__deterministic": True}


def test_auto_amp_is_bf16_and_compile_is_on_by_default_on_cuda(tiny_root, tmp_path):
    assert devices.amp_dtype("auto", torch.device("cuda")) in (torch.bfloat16, torch.float16)
    summary = train(tiny_config(tiny_root, tmp_path / "run", train__iters=12, train__device="cuda")).summary
    assert summary["device"].startswith("cuda") and summary["amp"] in ("bf16", "fp16") and summary["compile"] is True
    assert summary["provenance"]["gpu"] == torch.cuda.get_device_name(0)
    assert summary["test_acc"] > 0.25  # chance is 0.25 on this 4-class set


def test_a_stopped_gpu_run_resumes_to_the_same_weights(tiny_root, tmp_path):
    settings = {**CUDA, "train__iters": 16, "train__eval_every": 8, "train__compile": False,
                "data__crop_padding": 2, "data__flip": True}
    train(tiny_config(tiny_root, tmp_path / "straight", **settings))
    train_until_stopped(tiny_config(tiny_root, tmp_path / "resumed", **settings), 5)
    train(tiny_config(tiny_root, tmp_path / "resumed", **settings), resume=True)
    a, b = (read_checkpoint(tmp_path / name / "checkpoints" / "last.pt")["model"] for name in ("straight", "resumed"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_gpu_evaluation_equals_the_cpu_one(tiny_root, tmp_path):
    run = train(tiny_config(tiny_root, tmp_path / "run", train__iters=6)).run_dir  # trained on the CPU
    on_cpu = resnetlab.evaluate(run, device="cpu")
    on_gpu = resnetlab.evaluate(run, device="cuda")
    assert on_gpu["device"].startswith("cuda") and on_gpu["n"] == on_cpu["n"]
    assert on_gpu["acc"] == pytest.approx(on_cpu["acc"], abs=1.5 / on_cpu["n"])
    assert on_gpu["loss"] == pytest.approx(on_cpu["loss"], rel=1e-3)  # TF32 may round the convolutions
