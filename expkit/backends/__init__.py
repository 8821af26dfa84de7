"""Backend registry: `trainer.backend` name -> the function that trains an already-built job.

Backends build nothing themselves: they get the model (freeze applied), tokenized splits, collator,
optimizer, scheduler, loss and metrics function from the shared builders, and the tracker.
Adding a backend is one module with a `train(job) -> metrics` function (and, optionally, a
`check(cfg, device)` that rejects what the backend cannot run, before the tracking run opens),
one line here, one YAML file in conf/trainer/.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

log = logging.getLogger(__name__)

# name -> "module:function", imported only when chosen (the hf backend pulls in accelerate)
BACKENDS: dict[str, str] = {
    "manual": "expkit.backends.manual:train",
    "hf": "expkit.backends.hf:train",
}


@dataclass
class TrainJob:
    """Everything a backend needs, built once by expkit.run."""

    cfg: DictConfig
    model: Any
    tokenizer: Any
    datasets: dict[str, Any]  # "train", and "dev" / "test" when present
    collator: Any
    optimizer: Any
    scheduler: Any
    loss_fn: Callable[[Any, Any], Any] | None  # None: the model's own loss
    compute_metrics: Callable[[Any, Any], dict[str, float]]  # (predictions, labels) -> metrics
    total_steps: int
    tracker: Any
    run_dir: Path
    device: Any  # torch.device, resolved and checked against trainer.precision by expkit.run


def get_backend(name: str) -> Callable[[TrainJob], dict[str, float]]:
    module, _, func = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module), func)


def check_backend(cfg: DictConfig, device: Any) -> None:
    """The backend's own checks of the run config, if it has any (raise ConfigError)."""
    module = importlib.import_module(BACKENDS[str(cfg.trainer.backend)].partition(":")[0])
    check = getattr(module, "check", None)
    if check is not None:
        check(cfg, device)


def log_progress(step: int, total: int, loss: float, lr: float, train_seconds: float) -> None:
    """A logging step as a log line, where no progress bar shows (a log file, CI)."""
    rate = step / train_seconds if train_seconds > 0 else 0.0
    log.info("step %d/%d loss %.4f lr %.2e %.2f steps/s", step, total, loss, lr, rate)


def log_evaluation(step: int, metrics: dict[str, float]) -> None:
    log.info("step %d: %s", step, ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
