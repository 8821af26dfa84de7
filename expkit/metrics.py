"""Metrics of each task family, from the libraries made for them (scikit-learn, scipy).

Every function takes the predictions and the gold labels of a whole split, one item per example,
and returns plain floats; both backends and every task call them the same way.
"""

from __future__ import annotations

import logging
import math
from typing import Any

log = logging.getLogger(__name__)


def _arrays(predictions: Any, labels: Any) -> tuple[Any, Any]:
    import numpy as np

    preds, gold = np.asarray(predictions), np.asarray(labels)
    if preds.shape[0] != gold.shape[0]:
        raise ValueError(f"{preds.shape[0]} predictions for {gold.shape[0]} labels")
    return preds, gold


def classification_metrics(predictions: Any, labels: Any, num_labels: int) -> dict[str, float]:
    """Accuracy, precision, recall, F1: binary (positive class 1) for 2 labels, macro over every
    class otherwise. An undefined ratio (a class never predicted or never present) scores 0."""
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    preds, gold = _arrays(predictions, labels)
    preds, gold = preds.reshape(-1), gold.reshape(-1)
    if gold.size == 0:
        return {"accuracy": 0.0, "precision": 0.0, "recall": 0.0, "f1": 0.0}
    if num_labels == 2:
        average, classes = "binary", None
    else:  # every class counts, also one absent from this split
        average, classes = "macro", list(range(num_labels))
    p, r, f, _ = precision_recall_fscore_support(
        gold, preds, average=average, labels=classes, zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(gold, preds)),
        "precision": float(p),
        "recall": float(r),
        "f1": float(f),
    }


def regression_metrics(predictions: Any, labels: Any) -> dict[str, float]:
    """Pearson and Spearman correlation, mean squared error and its root.

    A correlation is undefined when the predictions (or labels) are all one value, as an
    untrained model's can be: it is reported as 0 (no relation), with a warning, so a sweep
    can still rank the run.
    """
    import numpy as np
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import mean_squared_error

    preds, gold = _arrays(predictions, labels)
    preds, gold = preds.reshape(-1).astype(np.float64), gold.reshape(-1).astype(np.float64)
    if gold.size == 0:
        return {"pearson": 0.0, "spearman": 0.0, "mse": 0.0, "rmse": 0.0}
    mse = float(mean_squared_error(gold, preds))
    if gold.size < 2 or np.ptp(preds) == 0 or np.ptp(gold) == 0:
        log.warning("the predictions or labels are all one value: correlations reported as 0")
        pearson = spearman = 0.0
    else:
        pearson = float(pearsonr(preds, gold).statistic)
        spearman = float(spearmanr(preds, gold).statistic)
    return {"pearson": pearson, "spearman": spearman, "mse": mse, "rmse": math.sqrt(mse)}


def multilabel_metrics(predicted: Any, labels: Any) -> dict[str, float]:
    """Micro and macro F1, micro precision and recall, subset accuracy (every label right), on
    0/1 arrays of shape (examples, labels)."""
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

    preds, gold = _arrays(predicted, labels)
    preds, gold = preds.astype(int), gold.astype(int)
    if gold.size == 0:
        return dict.fromkeys(MULTILABEL_NAMES, 0.0)
    return {
        "f1_micro": float(f1_score(gold, preds, average="micro", zero_division=0)),
        "f1_macro": float(f1_score(gold, preds, average="macro", zero_division=0)),
        "precision_micro": float(precision_score(gold, preds, average="micro", zero_division=0)),
        "recall_micro": float(recall_score(gold, preds, average="micro", zero_division=0)),
        "subset_accuracy": float(accuracy_score(gold, preds)),
    }


MULTILABEL_NAMES = ("f1_micro", "f1_macro", "precision_micro", "recall_micro", "subset_accuracy")


def per_label_f1(predicted: Any, labels: Any) -> list[float]:
    """Each label's F1 (0 where it is never predicted and never present)."""
    from sklearn.metrics import f1_score

    preds, gold = _arrays(predicted, labels)
    return [float(v) for v in f1_score(gold.astype(int), preds.astype(int), average=None,
                                        zero_division=0)]  # fmt: skip


THRESHOLD_GRID = tuple(round(0.05 * i, 2) for i in range(1, 20))  # 0.05, 0.10, ..., 0.95


def best_threshold(probabilities: Any, labels: Any, per_label: bool) -> Any:
    """The threshold(s) from THRESHOLD_GRID that maximise micro-F1 (one for all labels) or each
    label's own F1 (per_label: a list, one per label); ties go to the lower threshold."""
    import numpy as np
    from sklearn.metrics import f1_score

    probs, gold = _arrays(probabilities, labels)
    gold = gold.astype(int)
    if not per_label:
        scores = [
            f1_score(gold, (probs >= t).astype(int), average="micro", zero_division=0)
            for t in THRESHOLD_GRID
        ]
        return THRESHOLD_GRID[int(np.argmax(scores))]
    chosen = []
    for j in range(gold.shape[1]):
        scores = [
            f1_score(gold[:, j], (probs[:, j] >= t).astype(int), zero_division=0)
            for t in THRESHOLD_GRID
        ]
        chosen.append(THRESHOLD_GRID[int(np.argmax(scores))])
    return chosen


SEQEVAL_SCHEMES = {"IOB1": "IOB1", "IOB2": "IOB2", "BIOES": "IOBES"}  # expkit's -> seqeval's


def entity_metrics(
    predicted: list[list[str]], gold: list[list[str]], scheme: str, strict: bool
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """seqeval's entity precision, recall and F1 (micro over entities) and its token accuracy,
    on the tags of whole sentences, one tag per word; and its report per entity type (with the
    micro, macro and weighted averages). strict: an entity counts only when its tags are exactly
    the scheme's (seqeval's strict mode); else entities are read as conlleval reads them."""
    from seqeval import scheme as schemes
    from seqeval.metrics import accuracy_score, classification_report

    if len(predicted) != len(gold):
        raise ValueError(f"{len(predicted)} predicted sentences for {len(gold)} gold ones")
    mode = {"mode": "strict", "scheme": getattr(schemes, SEQEVAL_SCHEMES[scheme])} if strict else {}
    words = sum(len(s) for s in gold)
    report = classification_report(gold, predicted, output_dict=True, zero_division=0, **mode)
    per_type = {
        str(kind): {k: float(v) for k, v in scores.items()} for kind, scores in report.items()
    }
    for scores in per_type.values():
        scores["f1"] = scores.pop("f1-score")
    micro = per_type.get("micro avg", {"precision": 0.0, "recall": 0.0, "f1": 0.0})
    return {
        "precision": micro["precision"],
        "recall": micro["recall"],
        "f1": micro["f1"],
        "accuracy": float(accuracy_score(gold, predicted)) if words else 0.0,
    }, per_type
