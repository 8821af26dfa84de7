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


# -- extractive question answering: SQuAD's official exact match and F1 --------------------------
_PUNCTUATION = frozenset(__import__("string").punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD's answer normalisation: lower case, punctuation and the articles a / an / the
    removed, whitespace collapsed to single spaces."""
    import re

    text = "".join(c for c in str(text).lower() if c not in _PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def answer_exact(prediction: str, gold: str) -> int:
    return int(normalize_answer(prediction) == normalize_answer(gold))


def answer_f1(prediction: str, gold: str) -> float:
    """Token F1 of two normalised answers; an empty one scores 1 only against an empty one."""
    from collections import Counter

    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred or not ref:
        return float(pred == ref)
    same = sum((Counter(pred) & Counter(ref)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def squad_metrics(
    predictions: list[str],
    references: list[list[str]],
    no_answer_gaps: list[float] | None = None,
    threshold: float = 0.0,
) -> dict[str, float]:
    """exact_match and f1 (0-100, the best over each question's references) of SQuAD's official
    evaluation. A question with no reference answer (SQuAD v2) is right when the prediction is
    empty.

    With `no_answer_gaps` (SQuAD v2: per question, by how much the no-answer score beats the
    best span's; `predictions` are the best spans), a question is answered "" when its gap is
    above `threshold`, and the scores of the questions with and without an answer (HasAns_*,
    NoAns_*) and the best threshold and its score (best_*), as the official v2 evaluation
    computes them, come too."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} questions")
    golds = [[r for r in refs if normalize_answer(r)] or [""] for refs in references]

    def scores(preds: list[str]) -> tuple[list[int], list[float]]:
        exact = [max(answer_exact(p, g) for g in gs) for p, gs in zip(preds, golds, strict=True)]
        f1 = [max(answer_f1(p, g) for g in gs) for p, gs in zip(preds, golds, strict=True)]
        return exact, f1

    def mean(values: list[float], keep: list[int]) -> float:
        return 100.0 * sum(values[i] for i in keep) / len(keep) if keep else 0.0

    every = list(range(len(predictions)))
    if no_answer_gaps is None:
        exact, f1 = scores(predictions)
        return {"exact_match": mean(exact, every), "f1": mean(f1, every)}
    final = ["" if gap > threshold else p for p, gap in zip(predictions, no_answer_gaps,
                                                          strict=True)]  # fmt: skip
    exact, f1 = scores(final)
    out = {"exact_match": mean(exact, every), "f1": mean(f1, every)}
    has = [i for i in every if golds[i] != [""]]
    nothing = [i for i in every if golds[i] == [""]]
    out["HasAns_exact_match"], out["HasAns_f1"] = mean(exact, has), mean(f1, has)
    out["NoAns_exact_match"], out["NoAns_f1"] = mean(exact, nothing), mean(f1, nothing)
    span_exact, span_f1 = scores(predictions)
    for name, values in (("exact_match", span_exact), ("f1", span_f1)):
        best, at = _best_no_answer_threshold(predictions, values, no_answer_gaps, set(has))
        out[f"best_{name}"], out[f"best_{name}_threshold"] = best, at
    return out


def _best_no_answer_threshold(
    predictions: list[str], values: list[float], gaps: list[float], has: set[int]
) -> tuple[float, float]:
    """The official v2 search: with every question whose gap is above the threshold answered
    "", the threshold that scores best, and that score (0-100)."""
    n = len(predictions)
    current = float(n - len(has))  # all judged unanswerable: the NoAns ones are right
    best, threshold = current, 0.0
    for i in sorted(range(n), key=lambda i: gaps[i]):
        # question i is now answered with its span rather than ""
        if i in has:
            current += values[i]
        elif predictions[i]:
            current -= 1
        if current > best:
            best, threshold = current, gaps[i]
    return 100.0 * best / max(n, 1), float(threshold)
