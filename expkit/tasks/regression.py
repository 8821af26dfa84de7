"""Regression: one score per text (or sentence pair), e.g. STS-B's similarity from 0 to 5.

The head has one output (`problem_type=regression`: the model's loss is MSE; loss=mse or
loss=huber computes it in expkit); metrics are Pearson and Spearman correlation, MSE and RMSE.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, ClassVar

from omegaconf import DictConfig

from expkit.data import RawData, kind_of, preview
from expkit.errors import DataError
from expkit.tasks.base import SequenceTask, shown_evaluation


def _score(value: Any, source: str, row: int) -> float:
    if isinstance(value, (bool, dict, list)):
        what = kind_of(value) if not isinstance(value, bool) else "boolean"
        raise DataError(
            f"{source}: data row {row}: label is a {what} ({preview(value)}), not a number; a "
            "regression label is a number (e.g. 3.8)"
        )
    if isinstance(value, numbers.Real):
        number = float(value)
    else:
        try:
            number = float(str(value).strip())
        except ValueError:
            raise DataError(
                f"{source}: data row {row}: label '{str(value).strip()}' is not a number; a "
                "regression label is a number (e.g. 3.8)"
            ) from None
    if not math.isfinite(number):
        raise DataError(f"{source}: data row {row}: label {value!r} is not a finite number")
    return number


class RegressionTask(SequenceTask):
    name = "regression"
    objective = "eval_pearson"
    losses: ClassVar[tuple[str, ...]] = ("model", "mse", "huber")
    summary: ClassVar[tuple[str, ...]] = ("pearson", "spearman", "rmse")
    metric_names: ClassVar[tuple[str, ...]] = ("pearson", "spearman", "mse", "rmse")

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg)
        self.evaluated: dict[str, tuple[Any, Any]] = {}  # split -> (predicted, gold scores)

    def label_space(self, train_values: list[Any], data_cfg: DictConfig, source: str) -> list[str]:
        return []  # a score: no label names

    def parse_labels(
        self, values: list[Any], names: list[str], source: str, data_cfg: DictConfig
    ) -> list[Any]:
        return [_score(v, source, row) for row, v in enumerate(values, start=1)]

    def head_config(self, raw: RawData) -> dict[str, Any]:
        return {"num_labels": 1, "problem_type": "regression"}

    def outputs(self, logits: Any) -> Any:
        return logits.float().squeeze(-1)

    def metrics(self, outputs: list[Any], labels: list[Any], split: str) -> dict[str, float]:
        import numpy as np

        from expkit.metrics import regression_metrics

        out = regression_metrics(outputs, labels)
        self.evaluated[split] = (
            np.asarray(outputs, dtype=float).reshape(-1),
            np.asarray(labels, dtype=float).reshape(-1),
        )
        return out

    def figures(self) -> dict[str, bytes]:
        shown = shown_evaluation(self.evaluated)
        return {} if shown is None else self._scatter(*shown)

    def _scatter(self, split: str, predicted: Any, gold: Any) -> dict[str, bytes]:
        from expkit.plots import png, scatter

        figure = scatter(predicted, gold, f"predicted vs gold ({split}, {gold.size} examples)")
        return {f"predicted_vs_gold_{split}.png": png(figure)}

    def prediction(self, score: Any, inputs: list[Any]) -> dict[str, Any]:
        return {"value": float(score)}
