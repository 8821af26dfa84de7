"""Single-label classification: one class per text (or sentence pair), the default task.

Labels are class ids (0, 1, ...) or names; the head is AutoModelForSequenceClassification with
one output per class and cross-entropy (the model's own, or loss=cross_entropy with class
weights and label smoothing); metrics are accuracy and binary / macro precision, recall, F1.
"""

from __future__ import annotations

import logging
import numbers
import re
from typing import Any, ClassVar

from omegaconf import DictConfig

from expkit.data import RawData, kind_of, preview
from expkit.errors import DataError
from expkit.tasks.base import (
    SequenceTask,
    check_class_weights,
    given_label_names,
    shown_evaluation,
)

log = logging.getLogger(__name__)

_INT = re.compile(r"^-?\d+$")

# a number written as text: "1", " 1 ", "1.0", "-2", ".5" (no exponent: "1e3" stays a name)
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)$")


def _label_key(value: Any) -> int | float | str:
    """A label as labels are compared: numbers by value (1, 1.0 and " 1 " are one class id),
    everything else as its text with the surrounding spaces removed."""
    if isinstance(value, bool):  # a JSON true/false is a name, not the class id 1/0
        return str(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
    else:
        text = str(value).strip()
        if not _NUMBER.match(text):
            return text
        if _INT.match(text.lstrip("+")):
            return int(text)
        number = float(text)
    return int(number) if number.is_integer() else number


def _name_index(names: list[str]) -> dict[int | float | str, int]:
    """Label name -> id, keyed as `_label_key` keys values (a name "1" matches a value 1.0)."""
    return {_label_key(name): i for i, name in enumerate(names)}


def _not_whole(source: str, row: int, value: Any) -> DataError:
    return DataError(
        f"{source}: data row {row}: label '{str(value).strip()}' is not a whole number; a "
        "classification label is a class id (0, 1, 2, ...) or a name (a score to predict: "
        "task=regression)"
    )


def _warn_case(labels: list[str], source: str) -> None:
    """Labels that differ only in case are separate classes; most often that is a typo."""
    groups: dict[str, list[str]] = {}
    for name in labels:
        groups.setdefault(name.casefold(), []).append(name)
    for group in groups.values():
        if len(group) > 1:
            log.warning(
                "%s: labels %s differ only in case and are separate classes "
                "(fix the file, or set data.label_names, if they are meant to be one)",
                source,
                " and ".join(f"'{g}'" for g in group),
            )


def _label_set(train_values: list[Any], names: list[str] | None, source: str) -> list[str]:
    """The label names in id order: data.label_names, the ints 0..max, or the sorted strings."""
    keys = [_label_key(v) for v in train_values]
    index = _name_index(names) if names is not None else {}
    for row, key in enumerate(keys, start=1):
        if isinstance(key, float) and key not in index:
            raise _not_whole(source, row, train_values[row - 1])
    if names is not None and all(k in index for k in keys):
        return list(names)
    if all(isinstance(k, int) for k in keys):
        lowest = min(keys)
        if lowest < 0:
            raise DataError(f"{source}: label {lowest} is negative (integer labels are class ids)")
        if names is not None:
            return list(names)
        return [str(i) for i in range(max(keys) + 1)]
    if names is not None:
        bad = next(v for v, k in zip(train_values, keys, strict=True) if k not in index)
        raise DataError(
            f"{source}: label '{str(bad).strip()}' is not in the label set ({', '.join(names)}) "
            "given by data.label_names"
        )
    labels = sorted({str(k) for k in keys})
    _warn_case(labels, source)
    return labels


def _label_ids(values: list[Any], names: list[str], source: str) -> list[int]:
    index = _name_index(names)
    ids = []
    for row, value in enumerate(values, start=1):
        key = _label_key(value)
        if key in index:
            ids.append(index[key])
        elif isinstance(key, int) and 0 <= key < len(names):
            ids.append(key)
        elif isinstance(key, float):
            raise _not_whole(source, row, value)
        else:
            raise DataError(
                f"{source}: data row {row}: label '{str(value).strip()}' is not in the label set "
                f"({', '.join(names)})"
            )
    return ids


def _one_label_each(values: list[Any], source: str) -> None:
    for row, value in enumerate(values, start=1):
        if isinstance(value, (dict, list)):
            raise DataError(
                f"{source}: data row {row}: label is a {kind_of(value)} ({preview(value)}); a "
                "label is one class id or name (several labels per row: task=multilabel)"
            )


class ClassificationTask(SequenceTask):
    name = "classification"
    objective = "eval_accuracy"
    losses: ClassVar[tuple[str, ...]] = ("model", "cross_entropy")
    summary: ClassVar[tuple[str, ...]] = ("accuracy", "f1")
    metric_names: ClassVar[tuple[str, ...]] = ("accuracy", "precision", "recall", "f1")

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg)
        self.evaluated: dict[str, tuple[Any, Any]] = {}  # split -> (predicted ids, gold ids)

    def label_space(self, train_values: list[Any], data_cfg: DictConfig, source: str) -> list[str]:
        _one_label_each(train_values, source)
        names = _label_set(train_values, given_label_names(data_cfg), source)
        if len(names) < 2:
            raise DataError(
                f"{source}: only one label ({names[0]}); classification needs two or more"
            )
        return names

    def parse_labels(
        self, values: list[Any], names: list[str], source: str, data_cfg: DictConfig
    ) -> list[Any]:
        _one_label_each(values, source)
        return _label_ids(values, names, source)

    def check_data(self, raw: RawData, cfg: DictConfig) -> None:
        check_class_weights(raw, cfg)

    def head_config(self, raw: RawData) -> dict[str, Any]:
        return self.named_head(raw, "single_label_classification")

    def outputs(self, logits: Any) -> Any:
        return logits.argmax(-1)  # class ids, not logits, are kept across an evaluation

    def metrics(self, outputs: list[Any], labels: list[Any], split: str) -> dict[str, float]:
        import numpy as np

        from expkit.metrics import classification_metrics

        out = classification_metrics(outputs, labels, len(self.label_names))
        self.evaluated[split] = (np.asarray(outputs).reshape(-1), np.asarray(labels).reshape(-1))
        return out

    def figures(self) -> dict[str, bytes]:
        shown = shown_evaluation(self.evaluated)
        return {} if shown is None else self._confusion_matrix(*shown)

    def _confusion_matrix(self, split: str, predicted: Any, gold: Any) -> dict[str, bytes]:
        from expkit.plots import confusion_matrix_display, png

        title = f"confusion matrix ({split}, {gold.size} examples)"
        display = confusion_matrix_display(gold, predicted, self.label_names, title)
        return {f"confusion_matrix_{split}.png": png(display.figure_)}

    def scores(self, logits: Any) -> Any:
        return logits.float().softmax(-1)  # a probability per class

    def prediction(self, score: Any, inputs: list[Any]) -> dict[str, Any]:
        import numpy as np

        probs = np.asarray(score, dtype=float)
        return {
            "label": self.label_names[int(probs.argmax())],
            "scores": {n: float(p) for n, p in zip(self.label_names, probs, strict=True)},
        }
