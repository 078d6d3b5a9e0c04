"""Metrics against a hand-computed confusion matrix, precision, recall and F1."""

from __future__ import annotations

import math
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from resnetlab.engine.evaluate import evaluate_model, predict_batches
from resnetlab.engine.metrics import Metrics, format_metrics

# 8 images, 3 classes. Rows of the confusion matrix are the true class:
#   true 0 -> predicted 0, 0, 1      [2, 1, 0]
#   true 1 -> predicted 1, 1         [0, 2, 0]
#   true 2 -> predicted 2, 2, 0      [1, 0, 2]
TARGET = [0, 0, 0, 1, 1, 2, 2, 2]
PRED = [0, 0, 1, 1, 1, 2, 2, 0]
CLASSES = ["cat", "dog", "eel"]
CONFUSION = [[2, 1, 0], [0, 2, 0], [1, 0, 2]]
# precision = tp / column sum, recall = tp / row sum, f1 = 2pr / (p + r)
PRECISION = [2 / 3, 2 / 3, 2 / 2]
RECALL = [2 / 3, 2 / 2, 2 / 3]
F1 = [2 / 3, 4 / 5, 4 / 5]
SUPPORT = [3, 2, 3]


def _logits(pred: list[int], k: int) -> torch.Tensor:
    return F.one_hot(torch.tensor(pred), k).float() * 5 + torch.linspace(0, 0.1, k)


def _hand_metrics() -> dict:
    metrics = Metrics(3, per_class=True, classes=CLASSES)
    logits, target = _logits(PRED, 3), torch.tensor(TARGET)
    # two batches of different sizes: batch-mean losses 1.0 (3 images) and 4.0 (5 images)
    metrics.update(logits[:3], target[:3], torch.tensor(1.0))
    metrics.update(logits[3:], target[3:], torch.tensor(4.0))
    return metrics.compute()


def test_hand_computed_confusion_precision_recall_f1() -> None:
    result = _hand_metrics()
    assert result["n"] == 8
    assert result["acc"] == pytest.approx(6 / 8)
    assert result["acc5"] == pytest.approx(1.0)  # k = min(5, 3) = 3 covers every class
    assert result["top_k"] == 3
    assert result["loss"] == pytest.approx((3 * 1.0 + 5 * 4.0) / 8)
    assert result["confusion_matrix"] == CONFUSION
    rows = result["per_class"]
    assert [r["class"] for r in rows] == CLASSES
    assert [r["support"] for r in rows] == SUPPORT
    assert [r["precision"] for r in rows] == pytest.approx(PRECISION)
    assert [r["recall"] for r in rows] == pytest.approx(RECALL)
    assert [r["f1"] for r in rows] == pytest.approx(F1)
    assert result["macro"]["precision"] == pytest.approx(7 / 9)
    assert result["macro"]["recall"] == pytest.approx(7 / 9)
    assert result["macro"]["f1"] == pytest.approx(34 / 45)
    assert result["weighted"]["precision"] == pytest.approx(19 / 24)
    assert result["weighted"]["recall"] == pytest.approx(6 / 8)  # weighted recall is the accuracy
    assert result["weighted"]["f1"] == pytest.approx(6 / 8)
    assert result["weighted"]["support"] == 8


def test_class_never_seen_nor_predicted_scores_zero() -> None:
    metrics = Metrics(4, per_class=True)
    metrics.update(_logits(PRED, 4), torch.tensor(TARGET), torch.tensor(0.5))
    result = metrics.compute()
    unseen = result["per_class"][3]
    assert unseen == {"class": "3", "index": 3, "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert result["macro"]["precision"] == pytest.approx((7 / 9) * 3 / 4)
    assert result["confusion_matrix"][3] == [0, 0, 0, 0]


def test_top5_counts_target_among_five_best() -> None:
    # class scores 9, 8, ..., 0: rank r (0-based) of the target decides top-1 / top-5
    logits = torch.arange(9.0, -1.0, -1.0).repeat(4, 1)  # (4, 10), class 0 best
    target = torch.tensor([0, 3, 4, 5])  # ranks 0, 3, 4, 5
    metrics = Metrics(10)
    metrics.update(logits, target, torch.tensor(2.0))
    result = metrics.compute()
    assert result["acc"] == pytest.approx(1 / 4)
    assert result["acc5"] == pytest.approx(3 / 4)
    assert "per_class" not in result
    metrics.reset()
    metrics.update(logits[:1], target[:1], torch.tensor(0.25))
    assert metrics.compute() == {"loss": 0.25, "acc": 1.0, "acc5": 1.0, "top_k": 5, "n": 1}


def test_format_metrics_prints_classification_report() -> None:
    text = format_metrics(_hand_metrics())
    lines = text.splitlines()
    assert lines[0].startswith("top-1 accuracy   75.00%")
    assert any(line.split() == ["precision", "recall", "f1-score", "support"] for line in lines)
    assert ["dog", "0.6667", "1.0000", "0.8000", "2"] in [line.split() for line in lines]
    assert ["macro", "avg", "0.7778", "0.7778", "0.7556", "8"] in [line.split() for line in lines]
    assert ["weighted", "avg", "0.7917", "0.7500", "0.7500", "8"] in [line.split() for line in lines]
    assert ["1", "dog", "0", "2", "0"] in [line.split() for line in lines]  # confusion matrix row of class 1


class _Asymmetric(nn.Module):
    """A linear classifier on raw pixels: its prediction changes when the image is mirrored."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(2 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def test_evaluate_with_tta_averages_softmax_with_flip() -> None:
    model = _Asymmetric().train()
    gen = torch.Generator().manual_seed(1)
    batches = [(torch.randn(6, 2, 4, 4, generator=gen), torch.randint(0, 5, (6,), generator=gen)) for _ in range(3)]
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    with torch.no_grad():
        probs = (model(x).softmax(1) + model(x.flip(3)).softmax(1)) / 2
        plain = model(x)
    tta = evaluate_model(model, batches, num_classes=5, tta=True)
    assert model.training  # mode restored
    assert tta["n"] == 18
    assert tta["acc"] == pytest.approx((probs.argmax(1) == y).float().mean().item())
    assert tta["loss"] == pytest.approx(F.nll_loss(probs.log(), y).item(), rel=1e-5)
    no_tta = evaluate_model(model, batches, num_classes=5)
    assert no_tta["loss"] == pytest.approx(F.cross_entropy(plain, y).item(), rel=1e-5)
    assert no_tta["acc"] == pytest.approx((plain.argmax(1) == y).float().mean().item())
    assert tta["loss"] != pytest.approx(no_tta["loss"], rel=1e-3)  # the flip really changed the prediction
    scores, targets = predict_batches(model.eval(), batches, tta=True)
    assert torch.equal(targets, y)
    torch.testing.assert_close(scores, probs.log(), rtol=1e-5, atol=1e-6)
    assert not model.training


def _ddp_worker(rank: int, world: int, init_file: str, queue) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        metrics = Metrics(3, per_class=True)
        half = slice(0, 3) if rank == 0 else slice(3, 8)
        metrics.update(_logits(PRED, 3)[half], torch.tensor(TARGET)[half], torch.tensor(1.0 if rank == 0 else 4.0))
        queue.put((rank, metrics.compute()))
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow  # spawns two Python processes that import torch (~10 s on 2 cores)
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")
def test_compute_reduces_across_ddp_ranks(tmp_path) -> None:
    ctx = torch.multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    init_file = os.fspath(tmp_path / "pg")
    procs = [ctx.Process(target=_ddp_worker, args=(r, 2, init_file, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    for result in results.values():  # both ranks see the totals of both halves
        assert result["n"] == 8
        assert result["confusion_matrix"] == CONFUSION
        assert math.isclose(result["loss"], 23 / 8)
        assert math.isclose(result["acc"], 6 / 8)


def test_state_dict_resumes_a_partial_accumulation() -> None:
    logits, target = _logits(PRED, 3), torch.tensor(TARGET)
    first = Metrics(3, per_class=True)
    first.update(logits[:3], target[:3], torch.tensor(1.0))
    state = first.state_dict()
    assert state["sums"].device.type == "cpu"
    resumed = Metrics(3, per_class=True, classes=CLASSES)
    resumed.load_state_dict(state)
    resumed.update(logits[3:], target[3:], torch.tensor(4.0))
    assert resumed.compute() == _hand_metrics()


def test_evaluate_under_bf16_autocast_returns_float_scores_close_to_fp32() -> None:
    model = _Asymmetric()
    gen = torch.Generator().manual_seed(2)
    batches = [(torch.randn(8, 2, 4, 4, generator=gen), torch.randint(0, 5, (8,), generator=gen))]
    exact = evaluate_model(model, batches, num_classes=5)
    mixed = evaluate_model(model, batches, num_classes=5, amp_dtype=torch.bfloat16)
    assert mixed["loss"] == pytest.approx(exact["loss"], rel=0.05)  # bf16 keeps ~3 significant digits
    assert mixed["n"] == 8
    scores, _ = predict_batches(model, batches, amp_dtype=torch.bfloat16)
    assert scores.dtype == torch.float32


# ------------------------------------------------------------------------- against scikit-learn (the oracle)


def _random_predictions(kind: str, n: int, k: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(targets, predictions) of a weak or strong classifier, or one that never predicts some classes, or data
    where some classes have no example at all."""
    target = torch.randint(0, k, (n,), generator=gen)
    if kind == "no support":
        target = target % (k - 3)  # the last 3 classes never occur
    right = torch.rand(n, generator=gen) < {"weak": 0.15, "strong": 0.9}.get(kind, 0.5)
    pred = torch.where(right, target, torch.randint(0, k, (n,), generator=gen))
    if kind == "never predicted":
        pred = pred % (k - 2)  # the last 2 classes are never predicted
    return target, pred


@pytest.mark.parametrize("kind", ["weak", "strong", "never predicted", "no support"])
def test_per_class_and_averaged_scores_equal_scikit_learn(kind: str) -> None:
    metrics_sk = pytest.importorskip("sklearn.metrics")
    k, gen = 10, torch.Generator().manual_seed(len(kind))
    target, pred = _random_predictions(kind, 700, k, gen)
    metrics = Metrics(k, per_class=True)
    metrics.update(F.one_hot(pred, k).float(), target)
    ours = metrics.compute()
    oracle = metrics_sk.classification_report(target.numpy(), pred.numpy(), labels=list(range(k)), output_dict=True,
                                              zero_division=0)
    if kind == "weak":  # precision + recall < 1: where F1 was once wrong (2PR / max(P + R, 1))
        assert all(0 < row["precision"] + row["recall"] < 1 for row in ours["per_class"])
    for row in ours["per_class"]:
        expected = oracle[str(row["index"])]
        for key, sk_key in (("precision", "precision"), ("recall", "recall"), ("f1", "f1-score")):
            assert row[key] == pytest.approx(expected[sk_key], abs=1e-12), (row["class"], key)
        assert row["support"] == expected["support"]
    for ours_key, sk_key in (("macro", "macro avg"), ("weighted", "weighted avg")):
        for key, sk in (("precision", "precision"), ("recall", "recall"), ("f1", "f1-score")):
            assert ours[ours_key][key] == pytest.approx(oracle[sk_key][sk], abs=1e-12), (ours_key, key)
    assert ours["acc"] == pytest.approx(metrics_sk.accuracy_score(target.numpy(), pred.numpy()), abs=1e-12)
    assert ours["confusion_matrix"] == metrics_sk.confusion_matrix(target.numpy(), pred.numpy(),
                                                                   labels=list(range(k))).tolist()
