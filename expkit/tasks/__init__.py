"""Task registry: `task.name` -> the class that owns everything one task family does differently.

A task turns table rows into examples and their label space, encodes them with the tokenizer,
names the model head and its config, the collator, the losses it accepts, what is kept of the
model's outputs per example, the metrics and the default objective, and how predictions are
written. expkit.run and both backends only call these methods; none of them names a task.

Adding a task is one module here (a `Task` subclass), one line in TASKS, and one YAML file in
conf/task/ (with its schema in expkit.config.schema).
"""

from __future__ import annotations

import importlib

from omegaconf import DictConfig

from expkit.tasks.base import Task

# name -> "module:class", imported only when chosen
TASKS: dict[str, str] = {
    "classification": "expkit.tasks.classification:ClassificationTask",
    "regression": "expkit.tasks.regression:RegressionTask",
    "multilabel": "expkit.tasks.multilabel:MultiLabelTask",
    "token_classification": "expkit.tasks.token_classification:TokenClassificationTask",
    "question_answering": "expkit.tasks.question_answering:QuestionAnsweringTask",
    "masked_lm": "expkit.tasks.language_modeling:MaskedLMTask",
    "causal_lm": "expkit.tasks.language_modeling:CausalLMTask",
}


def task_class(name: str) -> type[Task]:
    module, _, cls = TASKS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def build_task(cfg: DictConfig) -> Task:
    """The task of a run config (its `task` section), with the run's seed."""
    task = task_class(str(cfg.task.name))(cfg.task)
    task.seed = int(cfg.seed)
    return task


__all__ = ["TASKS", "Task", "build_task", "task_class"]
