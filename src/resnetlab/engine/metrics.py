"""The one metrics accumulator shared by training and evaluation.

`Metrics.update()` only adds device tensors (no `.item()`, so a GPU step never waits for the host);
`compute()` reduces across DDP ranks and converts to plain Python numbers. Top-1 / top-5 error are the
numbers the paper reports (He et al. 2016, Tables 3-6); the per-class table and the confusion matrix are
what the tutorials print with scikit-learn's `classification_report`, computed here from a confusion
matrix of counts (one `bincount` per batch, all-reduced across ranks in `compute()`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

TOP_K = 5  # the paper's "top-5 error" (ImageNet, Table 4); clipped to the class count for small data sets

# The running sums are one tensor [sum of loss * B, top-1 correct, top-k correct, count], so that DDP needs a
# single all-reduce; _COUNT is the index of the count.
_COUNT = 3


class Metrics:
    """Accumulates loss, top-1 and top-k accuracy and (optionally) a confusion matrix over batches.

    Args:
        num_classes: number of classes K of the logits.
        device: where the running sums live (the device of the logits).
        per_class: also accumulate a K x K confusion matrix for the per-class table.
        classes: optional class names used in `compute()`'s per-class rows.
    """

    def __init__(
        self,
        num_classes: int,
        device: torch.device | str = "cpu",
        per_class: bool = False,
        classes: Sequence[str] | None = None,
    ) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.top_k = min(TOP_K, num_classes)
        self.device = torch.device(device)
        self.per_class = per_class
        self.classes = list(classes) if classes is not None else None
        # MPS has no float64; everywhere else float64 keeps a long sum of losses exact enough.
        self._dtype = torch.float32 if self.device.type == "mps" else torch.float64
        self._confusion: torch.Tensor | None = None  # (K, K) int64 counts, rows = true class (with per_class)
        self.reset()

    def reset(self) -> None:
        """Start a new accumulation (e.g. at each evaluation interval)."""
        self._sums = torch.zeros(4, dtype=self._dtype, device=self.device)
        if self.per_class:
            k = self.num_classes
            self._confusion = torch.zeros(k, k, dtype=torch.int64, device=self.device)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The running sums (and confusion counts) on the CPU, e.g. for a checkpoint taken mid-interval."""
        state = {"sums": self._sums.detach().cpu().clone()}
        if self._confusion is not None:
            state["confusion"] = self._confusion.cpu().clone()
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Continue from `state_dict()` (bit-exact resume of a partly accumulated interval)."""
        self._sums.copy_(state["sums"].to(self._sums))
        if self._confusion is not None and "confusion" in state:
            self._confusion.copy_(state["confusion"].to(self._confusion))

    @torch.no_grad()
    def update(self, logits: torch.Tensor, target: torch.Tensor, loss: torch.Tensor | None = None) -> None:
        """Add one batch.

        Args:
            logits: (B, K) scores (logits, log-probabilities or probabilities: only their order matters).
            target: (B,) int64 class indices, or (B, K) class probabilities (Mixup/CutMix targets). With
                probabilities a prediction counts by the probability its class has in the target: lam when it is
                the image's own label, 1 - lam when it is the partner's, 0 otherwise (top-k: the target's mass
                within the k best classes); for one-hot targets this is plain accuracy.
            loss: the batch's mean loss (a 0-d tensor); weighted by B so `compute()` gives the mean per image.
        """
        n = target.shape[0]
        if n == 0:
            return
        logits = logits.detach()
        pred = logits.argmax(dim=1)  # (B,)
        topk = logits.topk(self.top_k, dim=1).indices  # (B, k)
        if target.dim() == 2:  # class probabilities
            correct1 = target.gather(1, pred[:, None]).sum()
            correctk = target.gather(1, topk).sum()
            target = target.argmax(dim=1)  # the dominant label, for the confusion matrix
        else:
            correct1 = (pred == target).sum()
            correctk = (topk == target.unsqueeze(1)).any(dim=1).sum()
        zero = torch.zeros((), dtype=self._dtype, device=logits.device)
        batch = torch.stack(
            [
                loss.detach().to(self._dtype) * n if loss is not None else zero,
                correct1.to(self._dtype),
                correctk.to(self._dtype),
            ]
        )
        self._sums[:_COUNT] += batch.to(self.device)
        self._sums[_COUNT] += n  # a Python int: no host sync
        if self._confusion is not None:  # one bincount over true * K + predicted: no host sync
            k = self.num_classes
            self._confusion += torch.bincount(target * k + pred, minlength=k * k).view(k, k).to(self.device)

    def compute(self, classes: Sequence[str] | None = None) -> dict[str, Any]:
        """Reduce across ranks (when torch.distributed is initialised) and return plain numbers.

        Args:
            classes: class names for the per-class rows (default: the constructor's, else the indices).

        Returns:
            `loss`, `acc`, `acc5` (top-k accuracy, k = min(5, K)), `n`; with `per_class` also `per_class`
            (rows of class, index, precision, recall, f1, support), `macro`, `weighted` and
            `confusion_matrix` (list of lists of ints, rows = true class, columns = predicted class).
        """
        sums = self._sums.clone()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(sums)
        loss, correct1, correctk, count = sums.tolist()
        n = int(round(count))
        result: dict[str, Any] = {
            "loss": loss / n if n else float("nan"),
            "acc": correct1 / n if n else float("nan"),
            "acc5": correctk / n if n else float("nan"),
            "top_k": self.top_k,
            "n": n,
        }
        if self._confusion is not None:
            confusion = self._confusion.clone()
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.all_reduce(confusion)
            confusion = confusion.cpu()
            names = list(classes) if classes is not None else self.classes
            result.update(classification_report(confusion, names))
        return result


def _safe_div(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """num / den with 0 where den == 0 (scikit-learn's zero_division=0); `den` may be any non-negative number."""
    positive = den > 0
    return torch.where(positive, num / torch.where(positive, den, torch.ones_like(den)), torch.zeros_like(num))


def classification_report(confusion: torch.Tensor, classes: Sequence[str] | None = None) -> dict[str, Any]:
    """Per-class precision, recall, F1 and support from a confusion matrix (rows = true class).

    Args:
        confusion: (K, K) integer counts.
        classes: K class names (default: "0" ... "K-1").

    Returns:
        `per_class` rows, `macro` and `weighted` averages of precision/recall/f1 (with support), and the
        `confusion_matrix` as a list of lists of ints.
    """
    k = confusion.shape[0]
    names = [str(c) for c in classes] if classes is not None else [str(i) for i in range(k)]
    if len(names) != k:
        raise ValueError(f"{len(names)} class names for a {k}-class confusion matrix")
    cm = confusion.double()
    tp = cm.diagonal()
    support = cm.sum(dim=1)  # true instances per class
    predicted = cm.sum(dim=0)
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    total = support.sum()
    rows = [
        {"class": names[i], "index": i, "precision": float(precision[i]), "recall": float(recall[i]),
         "f1": float(f1[i]), "support": int(support[i])}
        for i in range(k)
    ]

    def average(weights: torch.Tensor) -> dict[str, Any]:
        w = weights / weights.sum() if weights.sum() > 0 else weights
        return {"precision": float((precision * w).sum()), "recall": float((recall * w).sum()),
                "f1": float((f1 * w).sum()), "support": int(total)}

    return {
        "per_class": rows,
        "macro": average(torch.ones(k, dtype=torch.float64)),
        "weighted": average(support),
        "confusion_matrix": confusion.long().tolist(),
    }


def format_metrics(result: dict[str, Any], max_matrix_classes: int = 20) -> str:
    """The text `resnetlab evaluate` prints: accuracy, loss, per-class table, confusion matrix.

    Args:
        result: a `Metrics.compute()` / `evaluate_run()` dict.
        max_matrix_classes: print the confusion matrix only up to this many classes (it is always in the files).
    """
    k = result.get("top_k", TOP_K)
    lines = [
        f"top-1 accuracy  {100 * result['acc']:6.2f}%   (error {100 * (1 - result['acc']):.2f}%, n = {result['n']})",
        f"top-{k} accuracy  {100 * result['acc5']:6.2f}%",
        f"loss            {result['loss']:.4f}",
    ]
    if result.get("tta"):
        views = "horizontal flip and 1-pixel shifts (6 views)" if result["tta"] == "shift" else "horizontal flip"
        lines.append(f"test-time augmentation: {views}")
    if "per_class" in result:
        lines += ["", _format_table(result)]
        matrix = result["confusion_matrix"]
        if len(matrix) <= max_matrix_classes:
            names = [row["class"][:16] for row in result["per_class"]]
            lines += ["", "confusion matrix (rows = true class, columns = predicted class):",
                      _format_matrix(matrix, names)]
    for label, path in result.get("files", {}).items():
        lines.append(f"{label}: {path}")
    return "\n".join(lines)


def _format_table(result: dict[str, Any]) -> str:
    """A scikit-learn style classification report."""
    width = max([len("weighted avg")] + [len(row["class"]) for row in result["per_class"]])
    header = f"{'':>{width}}  {'precision':>9}  {'recall':>9}  {'f1-score':>9}  {'support':>9}"

    def line(name: str, row: dict[str, Any]) -> str:
        return (f"{name:>{width}}  {row['precision']:9.4f}  {row['recall']:9.4f}  {row['f1']:9.4f}"
                f"  {row['support']:9d}")

    body = [line(row["class"], row) for row in result["per_class"]]
    return "\n".join([header, "", *body, "", line("macro avg", result["macro"]),
                      line("weighted avg", result["weighted"])])


def _format_matrix(matrix: list[list[int]], names: Sequence[str]) -> str:
    width = max(3, *(len(str(v)) for row in matrix for v in row))
    label = max(len(n) for n in names)
    head = " " * (label + 5) + " ".join(f"{j:>{width}}" for j in range(len(matrix)))
    rows = [f"{i:>3} {names[i]:<{label}} " + " ".join(f"{v:>{width}}" for v in row) for i, row in enumerate(matrix)]
    return "\n".join([head, *rows])
