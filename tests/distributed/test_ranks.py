"""DDP pieces in one process: how ranks share the data and the evaluation, and the distributed helpers' rules.

Each rank's Loader is built here for every rank in turn (no process group is needed to see what each rank would
get), so these tests are fast; tests/distributed/test_torchrun.py runs the real thing.
"""

from __future__ import annotations

import logging

import pytest
import torch
from support.ddpkit import DDP_SETTINGS
from support.enginekit import tiny_config

from resnetlab.data import ImageSet
from resnetlab.engine import builders
from resnetlab.engine.distributed import (
    DistEnv,
    all_reduce_sum,
    check_resume_world_size,
    collective_failures,
    convert_sync_batchnorm,
    in_turn,
    is_collective_failure,
)
from resnetlab.engine.evaluate import evaluate_model
from resnetlab.errors import TrainingFailed, UserError

pytestmark = pytest.mark.numeric  # also run with AVX2 kernels only by .ci/run (issue 11)

CPU = torch.device("cpu")
NORMALIZATION = {"mean": [0.5], "std": [0.25]}
GLOO_RESET = ("[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:545] Read error [127.0.0.1]:32971: Connection "
              "reset by peer. This is typically caused by a remote worker hanging or bugs in the application.")


def indexed_set(n: int) -> ImageSet:
    """n random 12x12 grey images whose label is their own index (so a batch's labels say which samples it holds)."""
    images = torch.randint(0, 256, (n, 1, 12, 12), dtype=torch.uint8, generator=torch.Generator().manual_seed(n))
    return ImageSet(images, torch.arange(n), [str(i) for i in range(n)])


def rank_loaders(imageset: ImageSet, cfg, *, train: bool, world_size: int) -> list:
    return [builders.make_loader(imageset, cfg, train=train, device=CPU, normalization=NORMALIZATION, rank=r,
                                 world_size=world_size) for r in range(world_size)]


def test_each_training_sample_is_seen_once_per_epoch_across_ranks_as_in_one_process():
    cfg = tiny_config(".", None, **DDP_SETTINGS)  # global batch 32, crop and flip on
    data = indexed_set(101)
    (whole,) = rank_loaders(data, cfg, train=True, world_size=1)
    ranks = rank_loaders(data, cfg, train=True, world_size=2)
    epochs = []
    for _epoch in range(2):
        one = list(whole)
        shards = [list(loader) for loader in ranks]
        assert len(one) == 3 and [len(s) for s in shards] == [3, 3]  # 101 // 32 full global batches
        seen = torch.cat([y for shard in shards for _, y in shard])
        assert len(seen) == 96 and len(set(seen.tolist())) == 96  # no index twice; the 5 left over are dropped
        for b, (x, y) in enumerate(one):
            assert [len(s[b][1]) for s in shards] == [16, 16]
            assert torch.equal(torch.cat([s[b][1] for s in shards]), y)  # the same samples, in the same order,
            assert torch.equal(torch.cat([s[b][0] for s in shards]), x)  # with the same augmentation
        epochs.append(torch.cat([y for _, y in one]))
    assert not torch.equal(epochs[0], epochs[1])  # each epoch has its own permutation


@pytest.mark.parametrize("world_size", [2, 4])
def test_policies_erasing_and_mixing_give_each_rank_its_slice_of_the_global_batch(world_size):
    """Issue 16's draws are per global sample; a rank computes the mixing partner before its slice itself."""
    cfg = tiny_config(".", None, **DDP_SETTINGS, data__auto_augment="randaugment", data__random_erasing=0.5,
                      data__random_erasing_value="random", data__mixup_alpha=0.2, data__cutmix_alpha=1.0)
    data = indexed_set(101)
    (whole,) = rank_loaders(data, cfg, train=True, world_size=1)
    ranks = rank_loaders(data, cfg, train=True, world_size=world_size)
    one = [(x.clone(), y.clone()) for x, y in whole]
    shards = [[(x.clone(), y.clone()) for x, y in loader] for loader in ranks]
    for b, (x, y) in enumerate(one):
        assert y.shape == (32, 101)  # class probabilities (the set labels image i with class i)
        assert torch.equal(torch.cat([s[b][1] for s in shards]), y)
        assert torch.equal(torch.cat([s[b][0] for s in shards]), x)


@pytest.mark.parametrize(("world_size", "eval_batch", "expected"), [(2, 37, 38), (3, 37, 39), (4, 20, 20)])
def test_evaluation_shards_hold_every_image_exactly_once(world_size, eval_batch, expected):
    cfg = tiny_config(".", None, eval__batch_size=eval_batch)  # eval.batch_size is global by default
    assert builders.eval_batch(cfg, world_size) == expected  # rounded up to a multiple of the world size
    data = indexed_set(101)
    seen = [y for loader in rank_loaders(data, cfg, train=False, world_size=world_size) for _, y in loader]
    assert torch.equal(torch.sort(torch.cat(seen)).values, torch.arange(101))  # none dropped, none padded in
    per_device = tiny_config(".", None, eval__batch_size=eval_batch, dist__batch_size="per_device")
    assert builders.eval_batch(per_device, world_size) == eval_batch * world_size


def test_metrics_over_uneven_and_empty_shards_add_up_to_one_process(tiny_root):
    cfg = tiny_config(tiny_root, None, eval__batch_size=52)
    data = builders.build_data(cfg)
    test = data.test.subset(range(157))  # 3 x 52 + 1: the last global batch leaves ranks 1-3 empty
    net = builders.build_model(cfg.model, in_chans=1, num_classes=len(data.classes)).eval()
    (whole,) = rank_loaders(test, cfg, train=False, world_size=1)
    one = evaluate_model(net, whole, num_classes=4)
    # Without a process group each rank's Metrics holds its own share; the all-reduce would add these sums.
    loaders = rank_loaders(test, cfg, train=False, world_size=4)
    parts = [evaluate_model(net, loader, num_classes=4) for loader in loaders]
    assert [p["n"] for p in parts] == [40, 39, 39, 39] and sum(p["n"] for p in parts) == one["n"] == 157
    assert sum(p["acc"] * p["n"] for p in parts) / 157 == pytest.approx(one["acc"], abs=1e-12)
    assert sum(p["loss"] * p["n"] for p in parts) / 157 == pytest.approx(one["loss"], rel=1e-6)


def test_sync_batchnorm_needs_cuda_and_keeps_checkpoint_names(tiny_root):
    cfg = tiny_config(tiny_root, None)
    net = builders.build_model(cfg.model, in_chans=1, num_classes=4)
    two = DistEnv(rank=0, world_size=2, local_rank=0)
    with pytest.raises(UserError, match="dist.sync_bn=true needs CUDA GPUs.*set dist.sync_bn=false"):
        convert_sync_batchnorm(net, two, CPU, enabled=True)
    assert convert_sync_batchnorm(net, DistEnv(), CPU, enabled=True) is net  # one process: nothing to sync
    assert convert_sync_batchnorm(net, two, CPU, enabled=False) is net
    names = list(net.state_dict())
    synced = convert_sync_batchnorm(net, two, torch.device("cuda", 0), enabled=True)  # converting needs no GPU
    assert sum(isinstance(m, torch.nn.SyncBatchNorm) for m in synced.modules()) == 19  # resnet20's BatchNorms
    assert list(synced.state_dict()) == names  # a SyncBN checkpoint loads into the plain model


def test_a_per_device_batch_run_resumes_only_on_as_many_processes():
    one, four = DistEnv(), DistEnv(rank=0, world_size=4, local_rank=0)
    check_resume_world_size(4, one, "global")  # global batch: any world size
    check_resume_world_size(4, four, "per_device")
    with pytest.raises(UserError, match="used 4 process.*resume it with 4"):
        check_resume_world_size(4, one, "per_device")


def test_a_failed_collective_becomes_one_line_that_says_resume(caplog):
    assert is_collective_failure(RuntimeError(GLOO_RESET))
    assert is_collective_failure(RuntimeError("[../unbound_buffer.cc:129] Timed out waiting 5000ms for send"))
    assert is_collective_failure(RuntimeError("[../pair.cc:598] Application timeout caused pair closure"))
    assert is_collective_failure(torch.distributed.DistBackendError("NCCL watchdog: collective timed out"))
    assert not is_collective_failure(RuntimeError("CUDA out of memory"))
    assert not is_collective_failure(TrainingFailed("the loss became NaN"))
    env = DistEnv(rank=1, world_size=2, local_rank=1)
    with caplog.at_level(logging.ERROR, logger="resnetlab"), pytest.raises(TrainingFailed) as failed:
        with collective_failures(env, timeout_s=7):
            raise RuntimeError(GLOO_RESET)
    assert "rank 1 lost contact with the other processes" in str(failed.value)
    assert "--resume" in str(failed.value) and "\n" not in str(failed.value)
    assert ("rank 1: a collective operation failed (Read error [127.0.0.1]:32971: Connection reset by peer): "
            "another process died, hung for more than dist.timeout_s=7 s") in caplog.text
    with pytest.raises(RuntimeError, match="CUDA out of memory"), collective_failures(env, 7):
        raise RuntimeError("CUDA out of memory")  # not a collective failure: unchanged
    with pytest.raises(RuntimeError, match="Connection reset"), collective_failures(DistEnv(), 7):
        raise RuntimeError(GLOO_RESET)  # one process has no peers to lose


def test_helpers_are_no_ops_in_one_process():
    state = {"sums": torch.tensor([1.0, 2.0])}
    assert all_reduce_sum(state, CPU) is state
    entered = []
    with in_turn(DistEnv(), enabled=True):
        entered.append(True)
    assert entered == [True]
