import numpy as np
import pytest

from expkit.metrics import classification_metrics


def test_binary_matches_hand_computed_counts():
    preds = np.array([1, 1, 0, 0, 1, 0])
    gold = np.array([1, 0, 0, 1, 1, 0])
    m = classification_metrics(preds, gold, num_labels=2)
    # tp=2, fp=1, fn=1
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)


def test_macro_for_more_than_two_classes_and_zero_division():
    preds = np.array([0, 1, 1, 1])
    gold = np.array([0, 1, 2, 2])
    m = classification_metrics(preds, gold, num_labels=3)
    # class 0: p=1 r=1; class 1: p=1/3 r=1; class 2: never predicted -> p=0 r=0
    assert m["precision"] == pytest.approx((1 + 1 / 3 + 0) / 3)
    assert m["recall"] == pytest.approx((1 + 1 + 0) / 3)
    assert m["f1"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert m["accuracy"] == pytest.approx(0.5)


def test_agrees_with_sklearn_when_available():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for k in (2, 4):
        preds, gold = rng.integers(0, k, 200), rng.integers(0, k, 200)
        avg = "binary" if k == 2 else "macro"
        p, r, f, _ = sk.precision_recall_fscore_support(gold, preds, average=avg, zero_division=0)
        m = classification_metrics(preds, gold, num_labels=k)
        assert (m["precision"], m["recall"], m["f1"]) == pytest.approx((p, r, f))
