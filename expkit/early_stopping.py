"""Early stopping and the best evaluation's weights, the same for every backend.

After each dev evaluation a backend calls `update`: it keeps the best value of the watched
`eval_*` metric, its step, its metrics and (with `trainer.load_best`) a CPU copy of the weights,
and counts the evaluations since the best one. `state()` and the weights go into every
checkpoint, so a resumed run stops where the uninterrupted one stops, with the same best model.
Nothing heavy is imported at module level: the config checks use it before torch loads.
"""

from __future__ import annotations

import math
from typing import Any

from omegaconf import DictConfig

# metrics that are better lower, whatever objective.direction says of the objective's metric
LOWER_IS_BETTER = ("loss", "mse", "rmse")


def watched(cfg: DictConfig) -> tuple[str, str]:
    """(metric, direction) early stopping and load_best judge by.

    The metric is trainer.early_stopping.metric, or objective.metric when null. The direction
    is trainer.early_stopping.direction; when null, objective.direction for the objective's own
    metric, else minimize for loss / mse / rmse and maximize for the others.
    """
    e = cfg.trainer.early_stopping
    objective = str(cfg.objective.metric)
    metric = str(e.metric) if e.metric is not None else objective
    if e.direction is not None:
        return metric, str(e.direction)
    if metric == objective:
        return metric, str(cfg.objective.direction)
    name = metric.partition("_")[2]
    return metric, "minimize" if name in LOWER_IS_BETTER else "maximize"


def keeps_best(cfg: DictConfig) -> bool:
    """trainer.load_best, where null means: on when early stopping is."""
    t = cfg.trainer
    return bool(t.load_best) if t.load_best is not None else t.early_stopping.patience > 0


class EarlyStopping:
    """The best evaluation so far and the patience counter; `update` says when to stop."""

    def __init__(
        self,
        metric: str,
        direction: str = "maximize",
        patience: int = 0,
        min_delta: float = 0.0,
        keep_best: bool = True,
    ) -> None:
        self.metric = metric
        self.direction = direction
        self.patience = patience  # 0: never stops (only keeps the best)
        self.min_delta = min_delta
        self.keep_best = keep_best
        self.best: float | None = None
        self.best_step: int | None = None
        self.best_metrics: dict[str, float] = {}  # the best evaluation's eval_* metrics
        # what the task chose at the best evaluation (a threshold), used with its weights
        self.best_task_state: dict[str, Any] = {}
        self.bad_evaluations = 0  # evaluations in a row without improvement
        self.stopped_at: int | None = None
        self.weights: dict[str, Any] | None = None  # the best step's state_dict, on the CPU

    @classmethod
    def from_config(cls, cfg: DictConfig) -> EarlyStopping | None:
        """The run's early stopping, or None when neither it nor load_best is on."""
        e = cfg.trainer.early_stopping
        keep = keeps_best(cfg)
        if e.patience <= 0 and not keep:
            return None
        metric, direction = watched(cfg)
        return cls(metric, direction, int(e.patience), float(e.min_delta), keep)

    @property
    def stopped(self) -> bool:
        return self.stopped_at is not None

    def improves(self, value: float) -> bool:
        """`value` beats the best by more than min_delta (NaN never does)."""
        if math.isnan(value):
            return False
        if self.best is None:
            return True
        if self.direction == "minimize":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def update(
        self,
        step: int,
        metrics: dict[str, float],
        model: Any = None,
        task_state: dict[str, Any] | None = None,
    ) -> bool:
        """Take the evaluation at `step` (its eval_* metrics); True when training should stop.

        An improvement keeps `model`'s weights (with keep_best) and the task's state after that
        evaluation, and resets the counter.
        """
        if self.metric not in metrics:
            raise KeyError(
                f"early stopping watches {self.metric}, which the evaluation did not produce "
                f"(it has {', '.join(sorted(metrics))})"
            )
        value = float(metrics[self.metric])
        if self.improves(value):
            self.best, self.best_step = value, step
            self.best_metrics = dict(metrics)
            self.best_task_state = dict(task_state or {})
            self.bad_evaluations = 0
            if self.keep_best and model is not None:
                self.weights = copy_weights(model)
        else:
            self.bad_evaluations += 1
        if self.patience > 0 and self.bad_evaluations >= self.patience:
            self.stopped_at = step
            return True
        return False

    def message(self) -> str:
        """The log line of the stop."""
        return (
            f"early stopping at step {self.stopped_at}: {self.metric} did not improve on "
            f"{self.best:.6g} (step {self.best_step}) for {self.bad_evaluations} evaluations"
        )

    def restore(self, model: Any) -> bool:
        """Put the best step's weights back into `model`; False when none were kept."""
        if not self.keep_best or self.weights is None:
            return False
        result = model.load_state_dict(self.weights, strict=False)
        if result.unexpected_keys:  # missing ones are frozen: copy_weights leaves them out
            extra = ", ".join(result.unexpected_keys[:5])
            raise KeyError(f"the best weights have some this model lacks: {extra}")
        return True

    def state(self) -> dict[str, Any]:
        """The counters as JSON (the weights travel separately, as tensors)."""
        return {
            "metric": self.metric,
            "best": self.best,
            "best_step": self.best_step,
            "best_metrics": self.best_metrics,
            "best_task_state": self.best_task_state,
            "bad_evaluations": self.bad_evaluations,
            "stopped_at": self.stopped_at,
        }

    def load_state(self, state: dict[str, Any], weights: dict[str, Any] | None = None) -> None:
        """What `state()` returned (and the weights kept with it), as a checkpoint holds them."""
        if not state or state.get("metric") != self.metric:
            return  # none kept, or another metric's: start counting afresh
        self.best = state["best"]
        self.best_step = state["best_step"]
        self.best_metrics = {k: float(v) for k, v in (state.get("best_metrics") or {}).items()}
        self.best_task_state = dict(state.get("best_task_state") or {})
        self.bad_evaluations = int(state["bad_evaluations"])
        self.stopped_at = state["stopped_at"]
        self.weights = weights


def copy_weights(model: Any) -> dict[str, Any]:
    """What training changes of the model's state_dict (its trainable parameters and its
    buffers) as CPU tensors of their own (tied ones copied apart). Frozen weights never change:
    left out, an adapter's best weights are as small as its checkpoint."""
    trainable = {n for n, p in model.named_parameters(remove_duplicate=False) if p.requires_grad}
    kept = trainable | {n for n, _ in model.named_buffers(remove_duplicate=False)}
    return {
        k: v.detach().to("cpu", copy=True).contiguous()
        for k, v in model.state_dict().items()
        if k in kept
    }
