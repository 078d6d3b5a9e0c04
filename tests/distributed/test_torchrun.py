"""`resnetlab train` under torchrun: two CPU processes (gloo, loopback only) against one, resume, dead and hung ranks.

The one-process reference (conftest.reference) trains the same 16 iterations with the whole batch of 32; the
two processes take 16 images each. With BatchNorm frozen, DDP's averaged gradient is the whole batch's, so the
weights agree to rounding. Everything here trains in float64 (ddpkit's docstring says why: in float32 the
rounding of different kernels can switch a ReLU and the runs part by 1e-2 within 16 steps).
"""

from __future__ import annotations

import json

import pytest
import torch
from support.ddpkit import (
    DDP_SETTINGS,
    FIRST_EVAL_STEP,
    STOP_STEP,
    assert_same_weights,
    float64,
    launch_env,
    read_jsonl,
    relative_differences,
    torchrun,
    train_argv,
)
from support.enginekit import tiny_config, train_until_stopped

from resnetlab.engine.checkpoint import read_checkpoint
from resnetlab.engine.trainer import train
from resnetlab.inference.loading import load_checkpoint

# Each launch starts three interpreters (torchrun's agent and two workers) that import torch: ~20 s on 2 busy cores.
pytestmark = [pytest.mark.slow, pytest.mark.numeric]

TORCHRUN_GRACE_S = 30  # torchrun waits this long after SIGTERM before it SIGKILLs a worker


def _same_rows(rows: list[dict], reference: list[dict]) -> None:
    """metrics.jsonl rows equal up to rounding (validation numbers in the rows that hold an evaluation)."""
    assert [r["step"] for r in rows] == [r["step"] for r in reference]
    for row, ref in zip(rows, reference, strict=True):
        assert row["lr"] == pytest.approx(ref["lr"], rel=1e-12)
        assert (row["val_loss"] is None) == (ref["val_loss"] is None), row["step"]
        for key in ("train_loss", "val_loss"):
            if ref[key] is not None:
                assert row[key] == pytest.approx(ref[key], rel=1e-4), (row["step"], key)
        assert row["train_acc"] == pytest.approx(ref["train_acc"], abs=1.5 / 96)
        if ref["val_acc"] is not None:
            assert row["val_acc"] == pytest.approx(ref["val_acc"], abs=1.5 / 96)


@pytest.fixture(scope="module")
def ddp_run(tiny_root, tmp_path_factory):
    """A complete two-process run (downloads in turn; every evaluation's image count logged by the worker)."""
    out = tmp_path_factory.mktemp("ddp") / "run"
    counts = out.parent / "evaluations.jsonl"
    # not --quiet: the test below checks that only rank 0 writes the INFO lines
    launch = torchrun(2, train_argv(tiny_root, out, data__download=True, train__quiet=False),
                      env=launch_env(DDPKIT_EVAL_LOG=str(counts)))
    assert launch.returncode == 0, launch.stderr[-4000:]
    return out, launch, read_jsonl(counts)


def test_two_processes_train_the_same_weights_as_one_with_the_whole_batch(ddp_run, reference):
    out, _, _ = ddp_run
    final = read_checkpoint(out / "checkpoints" / "last.pt")
    assert final["step"] == reference.final["step"] == 16 and final["world_size"] == 2
    assert_same_weights(final["model"], reference.final["model"])
    moved = relative_differences(reference.final["model"], reference.at_stop["model"])
    assert max(moved.values()) > 1e-2  # training moves weights far beyond any rounding
    assert_same_weights(*(_momentum(c) for c in (final, reference.final)))  # a sum of gradients: the whole batch's
    _same_rows(read_jsonl(out / "metrics.jsonl"), reference.rows)


def _momentum(checkpoint: dict) -> dict:
    """SGD's momentum buffers of a checkpoint, by parameter index."""
    return {str(i): state["momentum_buffer"] for i, state in checkpoint["optimizer"]["state"].items()}


def _assert_same_state(saved: dict, reference: dict) -> None:
    """A checkpoint holds what the one-process run held at the same step: exactly, but for rounding in the floats."""
    assert_same_weights(saved["model"], reference["model"])
    assert_same_weights(_momentum(saved), _momentum(reference))
    for key in ("step", "loader", "scheduler", "best", "classes", "normalization"):
        assert saved[key] == reference[key], key
    progress = ("step", "lr", "best_val_acc", "best_step", "images_seen", "final_train_acc")
    assert {k: saved["progress"][k] for k in progress} == {k: reference["progress"][k] for k in progress}
    assert torch.equal(saved["rng"]["torch"], reference["rng"]["torch"])


def test_checkpoints_hold_the_unwrapped_model_and_rank_0_alone_writes(ddp_run, reference):
    out, launch, _ = ddp_run
    final = read_checkpoint(out / "checkpoints" / "last.pt")
    assert list(final["model"]) == list(reference.final["model"])  # no DDP "module." prefix
    model, info = load_checkpoint(out)  # best.pt into a plain model, on the CPU
    assert info["step"] in (4, 8, 12, 16) and not isinstance(model, torch.nn.parallel.DistributedDataParallel)
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.parent.name != "tb")
    assert files == [".lock", "checkpoints/best.pt", "checkpoints/last.pt", "config.yaml", "metrics.jsonl",
                     "summary.json"]
    assert len(list((out / "tb").iterdir())) == 1  # one TensorBoard event file
    rows = read_jsonl(out / "metrics.jsonl")  # a row every 3 steps (log_every) and at every evaluation, not per rank
    assert [r["step"] for r in rows] == [3, 4, 6, 8, 9, 12, 15, 16]
    assert [r["step"] for r in rows if r["val_acc"] is not None] == [4, 8, 12, 16]
    assert launch.stderr.count("mnist train: 480 images") == 1  # INFO messages from rank 0 only
    assert launch.stderr.count("process group: gloo, 2 processes") == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 16
    assert summary["test_acc_final"] == pytest.approx(reference.summary["test_acc_final"], abs=1.5 / 160)
    assert summary["best_val_acc"] == pytest.approx(reference.summary["best_val_acc"], abs=1.5 / 96)


def test_evaluations_count_every_image_once_over_both_ranks(ddp_run):
    _, _, counts = ddp_run
    per_rank = {rank: [c["n"] for c in counts if c["rank"] == rank] for rank in (0, 1)}
    assert per_rank[0] == per_rank[1]  # the reduced metrics, the same on both ranks
    val, test = per_rank[0][:4], per_rank[0][4:]
    assert val == [96] * 4  # 4 validations of the 96 validation images: not 2 x 96, no padding
    assert test in ([160], [160, 160])  # the final model (and best.pt when it is another one) on 160 test images


# Issue 16's options: a policy, random erasing with noise and both mixings, all drawn per global sample.
AUGMENTATIONS = {"data__auto_augment": "trivialaugment", "data__random_erasing": 0.5,
                 "data__random_erasing_value": "random", "data__mixup_alpha": 0.4, "data__cutmix_alpha": 1.0}


@pytest.fixture(scope="module")
def augmented_reference(tiny_root, tmp_path_factory) -> dict:
    """One process with AUGMENTATIONS in float64: last.pt of a run stopped by SIGTERM after STOP_STEP steps, and
    last.pt and metrics.jsonl of the same run trained to the end without a stop."""
    base = tmp_path_factory.mktemp("augmented-reference")
    with float64():
        train_until_stopped(tiny_config(tiny_root, base / "stopped", **DDP_SETTINGS, **AUGMENTATIONS), STOP_STEP)
        straight = train(tiny_config(tiny_root, base / "straight", **DDP_SETTINGS, **AUGMENTATIONS))
    return {"at_stop": read_checkpoint(base / "stopped" / "checkpoints" / "last.pt"),
            "final": read_checkpoint(straight.run_dir / "checkpoints" / "last.pt"),
            "rows": read_jsonl(straight.run_dir / "metrics.jsonl")}


def test_a_stopped_two_process_run_with_policies_erasing_and_mixing_resumes_on_one_process(
        tiny_root, tmp_path, augmented_reference):
    """Stopped after 6 steps on two processes (SIGTERM on rank 1), it holds what one process held at step 6;
    finished on one process, it has the weights of one process that never stopped."""
    out = tmp_path / "run"
    launch = torchrun(2, train_argv(tiny_root, out, **AUGMENTATIONS), fault=("stop", STOP_STEP - 1, 1))
    assert launch.returncode != 0, launch.stderr
    assert "interrupted by signal 15 at step 6; checkpoint saved" in launch.stderr, launch.stderr[-4000:]
    stopped = read_checkpoint(out / "checkpoints" / "last.pt")
    assert stopped["step"] == STOP_STEP and stopped["world_size"] == 2  # the ranks agreed at the next log point
    _assert_same_state(stopped, augmented_reference["at_stop"])  # the loader's position counts global batches
    # The ranks agree on a stop at a logging point, right after a metrics row: no partial interval is pending.
    assert torch.equal(stopped["metrics"]["sums"], torch.zeros(4, dtype=torch.float64))

    with float64():  # this pytest process: one rank
        result = train(tiny_config(tiny_root, out, **DDP_SETTINGS, **AUGMENTATIONS), resume=True)
    assert result.summary["world_size"] == 1 and result.summary["steps"] == 16
    final = read_checkpoint(out / "checkpoints" / "last.pt")
    assert_same_weights(final["model"], augmented_reference["final"]["model"])
    _same_rows(read_jsonl(out / "metrics.jsonl"), augmented_reference["rows"])


def test_a_killed_rank_ends_the_job_with_a_message_and_resume_continues(tiny_root, tmp_path, reference, run_cli):
    out, struck, timeout_s = tmp_path / "run", tmp_path / "struck", 5
    argv = train_argv(tiny_root, out, dist__timeout_s=timeout_s)
    launch = torchrun(2, argv, fault=("kill", 5, 1), env=launch_env(DDPKIT_FAULT_FILE=str(struck)))
    assert launch.returncode != 0
    assert launch.ended - float(struck.read_text()) < timeout_s + TORCHRUN_GRACE_S
    assert "Signal 9 (SIGKILL) received" in launch.stderr  # torchrun's summary names the dead rank
    assert "rank 0: a collective operation failed" in launch.stderr, launch.stderr
    assert "rank 0 lost contact with the other processes" in launch.stderr and "--resume" in launch.stderr
    assert not (out / "summary.json").exists()
    _assert_same_state(read_checkpoint(out / "checkpoints" / "last.pt"), reference.at_first_eval)

    with float64():
        code, _, err = run_cli(*argv, "--resume")  # the same command, now on one process
    assert code == 0, err
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl") if r["val_acc"] is not None] == [4, 8, 12, 16]
    assert_same_weights(read_checkpoint(out / "checkpoints" / "last.pt")["model"], reference.final["model"])


def test_a_hung_rank_ends_the_job_after_the_timeout(tiny_root, tmp_path):
    out, struck, timeout_s = tmp_path / "run", tmp_path / "struck", 5
    launch = torchrun(2, train_argv(tiny_root, out, dist__timeout_s=timeout_s), fault=("hang", 5, 1),
                      env=launch_env(DDPKIT_FAULT_FILE=str(struck)))
    assert launch.returncode != 0
    assert launch.ended - float(struck.read_text()) < timeout_s + TORCHRUN_GRACE_S
    # gloo says "Timed out waiting 5000ms for recv operation" or "Application timeout caused pair closure".
    assert "rank 0: a collective operation failed" in launch.stderr, launch.stderr
    assert "dist.timeout_s=5 s" in launch.stderr and "timeout" in launch.stderr.lower()
    assert read_checkpoint(out / "checkpoints" / "last.pt")["step"] == FIRST_EVAL_STEP


@pytest.mark.cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="SyncBatchNorm over NCCL needs two CUDA GPUs")
def test_sync_batchnorm_on_two_gpus_trains_the_same_weights_as_one_gpu(tiny_root, tmp_path):
    # BatchNorm in training mode: only SyncBatchNorm makes two half batches normalize like the whole one.
    settings = {"train__device": "cuda", "train__freeze_bn": False, "dist__sync_bn": True, "train__amp": "off",
                "train__compile": False}  # full precision, eager: only the split of the batch differs
    env = launch_env(NVIDIA_TF32_OVERRIDE="0")  # TF32 would round convolutions to 10-bit mantissas
    one = torchrun(1, train_argv(tiny_root, tmp_path / "one", **settings), env=env)
    two = torchrun(2, train_argv(tiny_root, tmp_path / "two", **settings), env=env)
    assert one.returncode == 0 and two.returncode == 0, one.stderr[-2000:] + two.stderr[-2000:]
    assert_same_weights(read_checkpoint(tmp_path / "two" / "checkpoints" / "last.pt")["model"],
                        read_checkpoint(tmp_path / "one" / "checkpoints" / "last.pt")["model"])
