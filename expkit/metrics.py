"""The one metrics function both backends share (the tutorial's compute_metrics, S11)."""

from __future__ import annotations

from typing import Any


def classification_metrics(predictions: Any, labels: Any, num_labels: int) -> dict[str, float]:
    """Accuracy, precision, recall, F1: binary (positive class 1) for 2 labels, macro otherwise.

    A class never predicted or never present scores 0 for the undefined ratio (sklearn's
    zero_division=0), so the numbers match `precision_recall_fscore_support`.
    """
    import numpy as np

    preds = np.asarray(predictions).reshape(-1)
    gold = np.asarray(labels).reshape(-1)
    if preds.shape != gold.shape:
        raise ValueError(f"{preds.shape[0]} predictions for {gold.shape[0]} labels")
    if gold.size == 0:
        return {"accuracy": 0.0, "precision": 0.0, "recall": 0.0, "f1": 0.0}
    accuracy = float((preds == gold).mean())
    classes = [1] if num_labels == 2 else list(range(num_labels))
    precisions, recalls, f1s = [], [], []
    for c in classes:
        tp = float(np.sum((preds == c) & (gold == c)))
        predicted = float(np.sum(preds == c))
        actual = float(np.sum(gold == c))
        p = tp / predicted if predicted else 0.0
        r = tp / actual if actual else 0.0
        precisions.append(p)
        recalls.append(r)
        f1s.append(2 * p * r / (p + r) if p + r else 0.0)
    return {
        "accuracy": accuracy,
        "precision": float(np.mean(precisions)),
        "recall": float(np.mean(recalls)),
        "f1": float(np.mean(f1s)),
    }
