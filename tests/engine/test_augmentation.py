"""Issue 16's data options on the engine's path: each reaches the training loader (and fails its test when ignored),
the loss and the training accuracy honour mixed targets, a run resumes bit-identically with each on, bad values
exit 2 with one line, and every key shows in --print-config and config.yaml."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import yaml
from support.enginekit import read_rows, tiny_config, train_until_stopped

from resnetlab.engine import builders
from resnetlab.engine.checkpoint import read_checkpoint
from resnetlab.engine.distributed import DistEnv
from resnetlab.engine.metrics import Metrics
from resnetlab.engine.run import build_run
from resnetlab.engine.runtime import Session, StopSignals
from resnetlab.engine.trainer import train, train_step

pytestmark = pytest.mark.numeric  # also run with AVX2 kernels only by .ci/run (issue 11)

CPU = torch.device("cpu")
KEYS = ("auto_augment", "randaugment_ops", "randaugment_magnitude", "random_erasing", "random_erasing_value",
        "mixup_alpha", "cutmix_alpha", "mix_prob", "mix_switch_prob")


def _first_batches(root, count: int = 3, **overrides) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first training batches the engine's loader makes for the tiny config with these overrides."""
    cfg = tiny_config(root, None, **overrides)
    data = builders.build_data(cfg)
    loader = builders.make_loader(data.train, cfg, train=True, device=CPU, normalization=data.normalization)
    batches = []
    for x, y in loader:
        batches.append((x.clone(), y.clone()))
        if len(batches) == count:
            return batches
    return batches


def _same(a: list, b: list) -> bool:
    return all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b, strict=True))


# ---------------------------------------------------------------------------------------- each option


@pytest.mark.parametrize("policy", ["randaugment", "trivialaugment", "autoaugment"])
def test_auto_augment_reaches_the_training_loader(tiny_root, policy):
    plain = _first_batches(tiny_root)
    augmented = _first_batches(tiny_root, data__auto_augment=policy)
    assert [torch.equal(p[1], q[1]) for p, q in zip(plain, augmented, strict=True)] == [True] * 3  # same samples
    assert not _same(plain, augmented)
    assert not _same(augmented, _first_batches(tiny_root, data__auto_augment="randaugment" if policy != "randaugment"
                                               else "trivialaugment"))


def test_randaugment_ops_and_magnitude_reach_the_loader(tiny_root):
    base = _first_batches(tiny_root, data__auto_augment="randaugment")
    assert _same(_first_batches(tiny_root, data__auto_augment="randaugment", data__randaugment_ops=0),
                 _first_batches(tiny_root))  # no op at all: the plain batches
    assert not _same(base, _first_batches(tiny_root, data__auto_augment="randaugment", data__randaugment_ops=3))
    assert not _same(base, _first_batches(tiny_root, data__auto_augment="randaugment", data__randaugment_magnitude=30))


def test_random_erasing_and_its_value_reach_the_loader(tiny_root):
    plain = torch.cat([x for x, _ in _first_batches(tiny_root)])
    erased = torch.cat([x for x, _ in _first_batches(tiny_root, data__random_erasing=1.0)])
    noisy = torch.cat([x for x, _ in _first_batches(tiny_root, data__random_erasing=1.0,
                                                    data__random_erasing_value="random")])
    changed = (erased != plain).flatten(1).any(1)
    assert changed.float().mean() > 0.9  # p = 1: (nearly) every image has its rectangle
    assert (erased[erased != plain] == 0).all() and not torch.equal(noisy, erased)
    assert torch.equal(noisy != plain, erased != plain)  # the same rectangles, filled with noise


def test_mixing_options_reach_the_loader(tiny_root):
    plain = _first_batches(tiny_root)
    k = 10  # the tiny set's classes (MNIST's ten; labels 0..3 occur)
    for key, value in (("mixup_alpha", 0.4), ("cutmix_alpha", 1.0)):
        mixed = _first_batches(tiny_root, **{f"data__{key}": value})
        for (x, y), (px, py) in zip(mixed, plain, strict=True):
            assert y.shape == (len(py), k) and y.dtype == torch.float32
            assert (y.gather(1, py[:, None]) > 0).all() and torch.allclose(y.sum(1), torch.ones(len(y)))
            assert ((y > 0).sum(1) <= 2).all() and ((y > 0).sum(1) == 2).any()  # own label and the partner's
            assert not torch.equal(x, px)
    off = _first_batches(tiny_root, data__mixup_alpha=0.4, data__mix_prob=0.0)
    assert all(torch.equal(y, F.one_hot(py, k).float()) and torch.equal(x, px)
               for (x, y), (px, py) in zip(off, plain, strict=True))
    both = {"data__mixup_alpha": 0.4, "data__cutmix_alpha": 1.0}
    assert _same(_first_batches(tiny_root, data__mix_switch_prob=0.0, **both),
                 _first_batches(tiny_root, data__mixup_alpha=0.4))
    assert _same(_first_batches(tiny_root, data__mix_switch_prob=1.0, **both),
                 _first_batches(tiny_root, data__cutmix_alpha=1.0))


def test_the_loss_is_cross_entropy_on_the_mixed_targets(tiny_root):
    cfg = tiny_config(tiny_root, None, data__mixup_alpha=1.0, train__label_smoothing=0.1, optim__lr=1e-3)
    run = build_run(cfg, Session(DistEnv(), CPU, StopSignals()), None, None, with_test=False)
    x, y = next(iter(run.train_loader))
    assert y.dim() == 2 and (y.max(1).values < 1).any()  # soft targets
    run.train_net.train()
    with torch.autocast("cpu", dtype=run.amp, enabled=run.amp is not None):  # as the step (auto: bf16 on AMX)
        logits = run.train_net(x)  # before the step changes the weights
        expected = F.cross_entropy(logits, y, label_smoothing=0.1)  # in float32 under autocast, as the step's
        hard = F.cross_entropy(logits, y.argmax(1), label_smoothing=0.1)
    loss = train_step(run, x, y)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert loss.item() != pytest.approx(hard.item())


def test_training_accuracy_counts_the_share_of_the_predicted_class():
    metrics = Metrics(3)
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [0.0, 0.0, 1.0]])
    soft = torch.tensor([[0.7, 0.3, 0.0], [0.6, 0.0, 0.4], [0.0, 0.0, 1.0]])  # predicted: 0, 1, 2
    metrics.update(logits, soft)
    result = metrics.compute()
    assert result["acc"] == pytest.approx((0.7 + 0.0 + 1.0) / 3)
    assert result["acc5"] == pytest.approx(1.0)  # top-3 of 3 classes holds all of each target
    hard = Metrics(3)
    hard.update(logits, torch.tensor([0, 0, 2]))
    one_hot = Metrics(3)
    one_hot.update(logits, F.one_hot(torch.tensor([0, 0, 2]), 3).float())
    assert one_hot.compute()["acc"] == hard.compute()["acc"] == pytest.approx(2 / 3)  # unmixed: plain accuracy


# -------------------------------------------------------------------------------------------- resume

STOP_AT = 7  # mid-epoch (12 steps per epoch), between the evaluations at 5 and 10
OPTION_SETS = {
    "randaugment+mixup+cutmix+erasing": {"data__auto_augment": "randaugment", "data__mixup_alpha": 0.2,
                                         "data__cutmix_alpha": 1.0, "data__random_erasing": 0.5,
                                         "data__random_erasing_value": "random"},
    "trivialaugment+mixup": {"data__auto_augment": "trivialaugment", "data__mixup_alpha": 0.4, "data__mix_prob": 0.7},
    "autoaugment+cutmix+erasing": {"data__auto_augment": "autoaugment", "data__cutmix_alpha": 1.0,
                                   "data__random_erasing": 0.25},
    "alternate-flip+mixup+accumulate+ema": {"data__flip": "alternate", "data__mixup_alpha": 0.2,
                                            "train__accumulate": 2, "train__ema_decay": 0.9},
}


@pytest.mark.parametrize("options", list(OPTION_SETS.values()), ids=list(OPTION_SETS))
def test_sigterm_then_resume_is_bit_identical_with_each_option(tiny_root, tmp_path, options):
    settings = {"data__crop_padding": 2, "data__flip": True, "train__label_smoothing": 0.1, "train__iters": 16,
                "train__eval_every": 5, "schedule__name": "onecycle", **options}
    straight = train(tiny_config(tiny_root, tmp_path / "straight", **settings))
    train_until_stopped(tiny_config(tiny_root, tmp_path / "run", **settings), STOP_AT)
    assert read_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["loader"] == {"epoch": 0, "batch": STOP_AT}
    resumed = train(tiny_config(tiny_root, tmp_path / "run", **settings), resume=True)
    a = read_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["model"]
    b = read_checkpoint(straight.run_dir / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    timing = ("time_s", "images_per_s")
    assert [{k: v for k, v in r.items() if k not in timing} for r in read_rows(resumed.run_dir)] == \
        [{k: v for k, v in r.items() if k not in timing} for r in read_rows(straight.run_dir)]


# --------------------------------------------------------------------------------------- the command line


def test_every_key_is_in_print_config_and_config_yaml(tiny_root, tmp_path, run_cli):
    code, out, _ = run_cli("train", "--print-config", "--set", "data.auto_augment=trivialaugment",
                           "--set", "data.mixup_alpha=0.2")
    assert code == 0
    for key in KEYS:
        assert f"data.{key} = " in out
    assert "data.auto_augment = trivialaugment" in out and "data.mixup_alpha = 0.2" in out
    train(tiny_config(tiny_root, tmp_path / "run", train__iters=1, data__auto_augment="autoaugment",
                      data__cutmix_alpha=1.0, data__random_erasing=0.25))
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["data"]
    assert set(KEYS) <= set(saved)
    assert (saved["auto_augment"], saved["cutmix_alpha"], saved["random_erasing"]) == ("autoaugment", 1.0, 0.25)


@pytest.mark.parametrize(("setting", "words"), [
    ("data.mixup_alpha=-0.2", "data.mixup_alpha must be >= 0"),
    ("data.cutmix_alpha=-1", "data.cutmix_alpha must be >= 0"),
    ("data.mix_prob=1.5", "data.mix_prob is a probability"),
    ("data.mix_switch_prob=-0.5", "data.mix_switch_prob is a probability"),
    ("data.random_erasing=2", "data.random_erasing is a probability"),
    ("data.random_erasing_value=mean", "data.random_erasing_value must be one of zero, random"),
    ("data.auto_augment=augmix", "data.auto_augment must be randaugment | trivialaugment | autoaugment or null"),
    ("data.randaugment_magnitude=31", "data.randaugment_magnitude must be in 0..30"),
    ("data.randaugment_ops=-1", "data.randaugment_ops must be >= 0"),
])
def test_bad_values_exit_2_with_one_line(tiny_root, tmp_path, run_cli, setting, words):
    code, out, err = run_cli("train", "--data-dir", tiny_root, "--out", tmp_path / "run", "--set", setting)
    assert code == 2 and words in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "run").exists()
