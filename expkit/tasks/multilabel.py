"""Multi-label classification: any number of labels per text, e.g. GoEmotions' 28 emotions.

A row's labels are a list (jsonl, parquet) or one string joined by `data.label_separator`, of
ids or names. The head has one sigmoid output per label (`problem_type=multi_label_classification`:
the model's loss is binary cross-entropy; loss=bce adds `pos_weight`). A label is predicted
where its probability reaches `task.threshold`, or, with `task.threshold=auto`, the threshold
that maximises micro-F1 on the dev split (one per label with `task.threshold_per_label=true`),
chosen at each dev evaluation and used for the test split and for predictions.
"""

from __future__ import annotations

import json
import numbers
from typing import Any, ClassVar

from omegaconf import DictConfig

from expkit.data import RawData, kind_of, preview
from expkit.errors import ConfigError, DataError
from expkit.metrics import MULTILABEL_NAMES
from expkit.tasks.base import SequenceTask, given_label_names, shown_split


def _items(value: Any, separator: str, source: str, row: int) -> list[Any]:
    """A row's labels as a list of ids or names."""
    if isinstance(value, list):
        items = value
    elif isinstance(value, (dict, bool)) or not isinstance(value, (str, numbers.Integral)):
        raise DataError(
            f"{source}: data row {row}: labels are a {kind_of(value)} ({preview(value)}); give a "
            f"list, or ids or names joined by '{separator}' (data.label_separator)"
        )
    else:
        items = [part for part in str(value).split(separator) if part.strip()]
    out = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (str, numbers.Integral)):
            raise DataError(
                f"{source}: data row {row}: label {preview(item)} is a {kind_of(item)}; a label "
                "is an id (0, 1, ...) or a name"
            )
        text = str(item).strip()
        out.append(int(text) if text.lstrip("-").isdigit() else text)
    return out


def _separator(data_cfg: DictConfig) -> str:
    return str(data_cfg.get("label_separator", ","))


def _probability(value: Any) -> float | None:
    """A threshold given as a number strictly between 0 and 1, else None."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, str)):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if 0.0 < number < 1.0 else None


class MultiLabelTask(SequenceTask):
    name = "multilabel"
    objective = "eval_f1_micro"
    losses: ClassVar[tuple[str, ...]] = ("model", "bce")
    summary: ClassVar[tuple[str, ...]] = ("f1_micro", "f1_macro", "subset_accuracy")
    metric_names: ClassVar[tuple[str, ...]] = MULTILABEL_NAMES

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg)
        self.auto = cfg.threshold == "auto"
        self.per_label = bool(cfg.threshold_per_label)
        # a number, a list (one per label, chosen on dev), or None (auto, not chosen yet)
        self.threshold: Any = None if self.auto else _probability(cfg.threshold)
        self.per_label_f1: dict[str, list[float]] = {}

    def check(self, cfg: DictConfig) -> list[str]:
        errors = super().check(cfg)
        t = cfg.task.threshold
        if t != "auto" and _probability(t) is None:
            errors.append(
                f"task.threshold={t!r} is not valid (valid: a probability between 0 and 1, "
                "exclusive, e.g. 0.5; or auto: chosen on the dev split)"
            )
        if cfg.task.threshold_per_label and t != "auto":
            errors.append("task.threshold_per_label=true needs task.threshold=auto")
        return errors

    def check_data(self, raw: RawData, cfg: DictConfig) -> None:
        if self.auto and "dev" not in raw.labels:
            raise ConfigError(
                "task.threshold=auto is chosen on the dev split, and the data has none (add a "
                "dev file, set data.dev_fraction, or give task.threshold a number)"
            )
        weights = cfg.loss.get("pos_weight")
        if weights is not None and weights != "auto" and len(weights) != raw.num_labels:
            raise ConfigError(
                f"loss.pos_weight has {len(weights)} values but the data has {raw.num_labels} "
                "labels"
            )

    def label_space(self, train_values: list[Any], data_cfg: DictConfig, source: str) -> list[str]:
        given = given_label_names(data_cfg)
        if given is not None:
            return given
        items = [i for row, v in enumerate(train_values, 1)
                 for i in _items(v, _separator(data_cfg), source, row)]  # fmt: skip
        if items and all(isinstance(i, int) for i in items):
            if min(items) < 0:
                raise DataError(f"{source}: label id {min(items)} is negative")
            names = [str(i) for i in range(max(items) + 1)]
        else:
            names = sorted({str(i) for i in items})
        if len(names) < 2:
            raise DataError(f"{source}: {len(names)} label(s) in the train split; need two or more")
        return names

    def parse_labels(
        self, values: list[Any], names: list[str], source: str, data_cfg: DictConfig
    ) -> list[Any]:
        index = {name: i for i, name in enumerate(names)}
        separator = _separator(data_cfg)
        rows = []
        for row, value in enumerate(values, start=1):
            hot = [0.0] * len(names)
            for item in _items(value, separator, source, row):
                if isinstance(item, int) and str(item) not in index:
                    if not 0 <= item < len(names):
                        raise DataError(
                            f"{source}: data row {row}: label id {item} is outside the label "
                            f"set ({len(names)} labels: ids 0 to {len(names) - 1})"
                        )
                    hot[item] = 1.0
                elif str(item) in index:
                    hot[index[str(item)]] = 1.0
                else:
                    raise DataError(
                        f"{source}: data row {row}: label '{item}' is not in the label set "
                        f"({', '.join(names[:10])}{', ...' if len(names) > 10 else ''})"
                    )
            rows.append(hot)
        return rows

    def head_config(self, raw: RawData) -> dict[str, Any]:
        return self.named_head(raw, "multi_label_classification")

    def outputs(self, logits: Any) -> Any:
        import torch

        return torch.sigmoid(logits.float())  # probabilities: a threshold may be chosen later

    def metrics(self, outputs: list[Any], labels: list[Any], split: str) -> dict[str, float]:
        import numpy as np

        from expkit.metrics import best_threshold, multilabel_metrics, per_label_f1

        probs, gold = np.stack(outputs), np.stack(labels)
        if self.auto and split == "dev":
            self.threshold = best_threshold(probs, gold, self.per_label)
        threshold = self.chosen_threshold()
        predicted = probs >= np.asarray(threshold)
        out = multilabel_metrics(predicted, gold)
        if self.auto and not self.per_label:
            out["threshold"] = float(threshold)
        self.per_label_f1[split] = per_label_f1(predicted, gold)
        return out

    def state(self) -> dict[str, Any]:
        return {"threshold": self.threshold}

    def load_state(self, state: dict[str, Any]) -> None:
        if self.auto and state.get("threshold") is not None:
            self.threshold = state["threshold"]

    def report(self) -> dict[str, str]:
        f1 = {
            split: dict(zip(self.label_names, values, strict=True))
            for split, values in self.per_label_f1.items()
        }
        out = {"per_label_f1.json": json.dumps(f1, indent=2)}
        if self.auto:
            chosen = self.threshold
            if isinstance(chosen, list):
                chosen = dict(zip(self.label_names, chosen, strict=True))
            out["thresholds.json"] = json.dumps({"chosen_on": "dev", "threshold": chosen}, indent=2)
        return out

    def figures(self) -> dict[str, bytes]:
        from expkit.plots import bars, png

        split = shown_split(self.per_label_f1)
        if split is None:
            return {}
        figure = bars(self.label_names, self.per_label_f1[split], f"F1 per label ({split})")
        return {f"per_label_f1_{split}.png": png(figure)}

    def chosen_threshold(self) -> Any:
        """The threshold in use: the number given, the one chosen on dev, else 0.5."""
        return self.threshold if self.threshold is not None else 0.5

    def prediction(self, score: Any, inputs: list[Any]) -> dict[str, Any]:
        import numpy as np

        probs = np.asarray(score, dtype=float)
        chosen = np.nonzero(probs >= np.asarray(self.chosen_threshold()))[0]
        return {
            "labels": [self.label_names[i] for i in chosen],
            "scores": {n: float(p) for n, p in zip(self.label_names, probs, strict=True)},
        }
