"""The Task protocol, and SequenceTask: the shared part of tasks that label whole texts.

Every method a backend or expkit.run calls is here. A task is built from its `task` config
section; reading, checking and encoding import nothing heavy until they run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from omegaconf import DictConfig

from expkit.data import RawData, text_column, text_columns
from expkit.errors import DataError

LossFn = Callable[[Any, Any], Any]


class Task:
    """One task family. Subclasses set the class attributes and implement the methods."""

    name: ClassVar[str]
    objective: ClassVar[str]  # the default objective.metric (maximized)
    losses: ClassVar[tuple[str, ...]]  # the loss options (conf/loss) this task takes
    summary: ClassVar[tuple[str, ...]]  # the metrics a sweep's table shows, without prefix
    # the scores `metrics` returns, without prefix (the loss aside); empty: not known
    metric_names: ClassVar[tuple[str, ...]] = ()
    model_class: ClassVar[str] = "AutoModelForSequenceClassification"
    peft_task_type: ClassVar[str | None] = "SEQ_CLS"  # peft's TaskType (adapter=lora)

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        self.label_names: list[str] = []
        self.seed = 0  # the run's seed: what the task draws at random from (masking)

    def bind(self, raw: RawData) -> None:
        """The data's label space, read: metrics and predictions name labels by it."""
        self.label_names = list(raw.label_names)

    # -- at the door: light, before anything heavy is imported or loaded ---------------------
    def check(self, cfg: DictConfig) -> list[str]:
        """Problems of the whole run config as this task sees them, one message each."""
        errors = []
        if cfg.loss.name not in self.losses:
            errors.append(
                f"loss={cfg.loss.name} does not fit task={self.name} (valid for {self.name}: "
                f"{', '.join(self.losses)})"
            )
        return errors

    def check_data(self, raw: RawData, cfg: DictConfig) -> None:
        """Settings that depend on the data read (e.g. one weight per class): raise ConfigError."""

    # -- data --------------------------------------------------------------------------------
    def read(
        self,
        tables: dict[str, tuple[list[str], list[dict]]],
        sources: dict[str, str],
        data_cfg: DictConfig,
        notes: list[str],
    ) -> RawData:
        """The splits' rows as examples and the label space; DataError names file and row."""
        raise NotImplementedError

    def encode_kwargs(self, data_cfg: DictConfig) -> dict[str, Any]:
        """Every argument of the tokenizer call: part of the tokenized cache's key."""
        raise NotImplementedError

    def encode(
        self, raw: RawData, split: str, tokenizer: Any, kwargs: dict[str, Any]
    ) -> dict[str, list]:
        """The model's input columns and `labels` for one split."""
        raise NotImplementedError

    def collator(self, tokenizer: Any) -> Any:
        raise NotImplementedError

    def merge(self, values: list[Any], encoded: Any) -> list[Any]:
        """Per-example values from per-feature ones, in example order. `values` follow the rows
        of `encoded` (the encoding of a split, or of inputs to predict on); a task whose encoding
        gives an example several features (windows of a long sentence) joins them here, reading
        its own bookkeeping columns of `encoded`. Default: one feature per example."""
        return values

    def encoded_notes(self, split: str, encoded: Any) -> list[str]:
        """Lines for the log about a split's encoding (long examples split into windows)."""
        return []

    def input_example(self, raw: RawData, n: int = 2) -> list[list[Any]]:
        """A few inputs of the data, as a request to the served model gives them."""
        split = next((s for s in ("test", "dev", "train") if raw.size(s)), "train")
        columns = raw.texts[split]
        return [[col[i] for col in columns] for i in range(min(n, raw.size(split)))]

    # -- model -------------------------------------------------------------------------------
    def head_config(self, raw: RawData) -> dict[str, Any]:
        """Model config fields of the head (num_labels, problem_type, id2label, label2id)."""
        raise NotImplementedError

    def loss(self, loss_cfg: DictConfig, raw: RawData) -> LossFn | None:
        """The loss: None for the model's own; else loss(logits, labels)."""
        from expkit.loss import build_loss

        return build_loss(loss_cfg, raw)

    def params(self, raw: RawData) -> dict[str, Any]:
        """What the run records about the label space (derived.* params)."""
        return {}

    # -- evaluation and predictions ----------------------------------------------------------
    def logits(self, output: Any) -> Any:
        """The tensor the task reads of a forward pass: `output` is the model's output (a
        ModelOutput) or its tensors without the loss, as the Trainer hands them over. Default:
        the first (`logits`); a task whose head gives several (start and end) joins them."""
        return model_tensors(output)[0]

    def outputs(self, logits: Any) -> Any:
        """What is kept of a batch's logits, one row per example (a tensor)."""
        raise NotImplementedError

    def batch_outputs(self, output: Any, labels: Any) -> Any:
        """What evaluation keeps of one batch, one row per feature (a tensor): `output` as for
        `logits`, `labels` the batch's labels (a task whose scores need them, per-token losses,
        reads them). Default: `outputs` of the logits."""
        return self.outputs(self.logits(output))

    def metrics(self, outputs: list[Any], labels: list[Any], split: str) -> dict[str, float]:
        """Metrics of one split from the kept outputs and gold labels, one item per example."""
        raise NotImplementedError

    def golds(self, encoded: Any) -> list[Any]:
        """The gold labels of an encoded split, one item per example (what `metrics` takes as
        `labels`). Default: its `labels` column, joined by `merge`."""
        return self.merge(list(encoded["labels"]), encoded)

    def state(self) -> dict[str, Any]:
        """What evaluation learned and later splits use (a threshold chosen on dev): saved in
        checkpoints so a resumed run uses it too."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        pass

    def report(self) -> dict[str, str]:
        """Artifacts of the last evaluations (file name -> text), logged when the run ends."""
        return {}

    def figures(self) -> dict[str, bytes]:
        """Pictures of an evaluation (file name -> PNG bytes), logged when the run ends: of the
        test split when it was evaluated, else of the last dev evaluation."""
        return {}

    # -- using the trained model: expkit predict / evaluate and the served MLflow Model -------
    def scores(self, logits: Any) -> Any:
        """What a prediction is made from, one row per example (class probabilities, a value)."""
        return self.outputs(logits)

    def predict_batch(
        self, model: Any, batch: dict[str, Any], tokenizer: Any, scoring: bool
    ) -> Any:
        """(scores, outputs) of a batch of inputs, one item per feature: what predictions are
        made from, and what `metrics` takes (`scoring`: the batch is of `encode_gold_inputs`).
        Default: one forward pass, read by `scores` and `outputs`."""
        logits = self.logits(model(**batch))
        return list(self.scores(logits).float().cpu().numpy()), list(
            self.outputs(logits).cpu().numpy()
        )

    def prediction(self, score: Any, inputs: list[Any]) -> dict[str, Any]:
        """One example's scores as the fields of its prediction record; `inputs`: its input
        values, one per input field."""
        raise NotImplementedError

    def read_inputs(
        self, columns: list[str], rows: list[dict], data_cfg: DictConfig, source: str
    ) -> list[list[str]]:
        """The model's inputs of a table to predict on (no labels needed); DataError names what
        is missing."""
        raise NotImplementedError

    def read_gold(
        self, columns: list[str], rows: list[dict], data_cfg: DictConfig, source: str
    ) -> list[Any]:
        """The labels of a table to evaluate on, in the trained label space (`label_names`)."""
        raise NotImplementedError

    def encode_inputs(
        self, texts: list[list[str]], tokenizer: Any, kwargs: dict[str, Any]
    ) -> dict[str, list]:
        """The model's input columns for the texts (as `encode`, without labels)."""
        raise NotImplementedError

    def encode_gold_inputs(
        self, texts: list[list[str]], tokenizer: Any, kwargs: dict[str, Any]
    ) -> dict[str, list]:
        """The encoding `expkit evaluate` scores (a language model's: with its labels, which
        come from the text). Default: `encode_inputs`."""
        return self.encode_inputs(texts, tokenizer, kwargs)

    def input_fields(self, data_cfg: DictConfig) -> list[str]:
        """The names of the model's inputs, as a request or a file gives them."""
        return [str(f) for f in data_cfg.text_fields]


def model_tensors(output: Any) -> tuple[Any, ...]:
    """The output tensors of a forward pass in the model's order, the loss left out: from a
    ModelOutput, a tuple of tensors, or one tensor."""
    if hasattr(output, "items"):
        return tuple(v for k, v in output.items() if k != "loss")
    return tuple(output) if isinstance(output, (tuple, list)) else (output,)


def check_fast_tokenizer(tokenizer: Any, task: str, why: str) -> None:
    """A task that maps sub-tokens back to words or characters needs a fast (Rust) tokenizer."""
    from expkit.errors import ConfigError

    if not tokenizer.is_fast:
        raise ConfigError(
            f"task={task} needs a fast tokenizer ({why}); {type(tokenizer).__name__} is not one"
        )


def check_class_weights(raw: RawData, cfg: DictConfig, what: str = "labels") -> None:
    """loss.class_weights, where given, has one weight per class of the data read."""
    from expkit.errors import ConfigError

    weights = cfg.loss.get("class_weights")
    if weights is not None and len(weights) != raw.num_labels:
        raise ConfigError(
            f"loss.class_weights has {len(weights)} values but the data has "
            f"{raw.num_labels} {what} ({', '.join(raw.label_names)})"
        )


def shown_split(evaluated: dict[str, Any]) -> str | None:
    """The split a task's figures show: test when it was evaluated, else dev, else none."""
    return next((s for s in ("test", "dev") if s in evaluated), None)


def shown_evaluation(evaluated: dict[str, tuple[Any, Any]]) -> tuple[str, Any, Any] | None:
    """(split, predicted, gold) of the evaluation a figure shows, or None (none yet)."""
    split = shown_split(evaluated)
    return None if split is None else (split, *evaluated[split])


def given_label_names(data_cfg: DictConfig) -> list[str] | None:
    """The label set the config gives: data.label_names, or data.label_names_file (a name per
    line, in id order, relative to data.path); None: the labels come from the train split."""
    if data_cfg.label_names is not None:
        return [str(n) for n in data_cfg.label_names]
    from expkit.tables import label_names_path, read_label_names

    path = label_names_path(data_cfg)
    return read_label_names(path) if path is not None else None


class SequenceTask(Task):
    """Tasks that label a whole text (or sentence pair): one label item per row."""

    def read(
        self,
        tables: dict[str, tuple[list[str], list[dict]]],
        sources: dict[str, str],
        data_cfg: DictConfig,
        notes: list[str],
    ) -> RawData:
        texts, values = {}, {}
        for split, (columns, rows) in tables.items():
            texts[split], values[split] = text_columns(
                rows, columns, data_cfg, sources[split], notes
            )
        space = self.label_space(values["train"], data_cfg, sources["train"])
        labels = {
            split: self.parse_labels(vals, space, sources[split], data_cfg)
            for split, vals in values.items()
        }
        return RawData(texts, labels, space, sources, notes, list(data_cfg.text_fields))

    def label_space(self, train_values: list[Any], data_cfg: DictConfig, source: str) -> list[str]:
        """The label names in id order (empty for a score)."""
        raise NotImplementedError

    def parse_labels(
        self, values: list[Any], names: list[str], source: str, data_cfg: DictConfig
    ) -> list[Any]:
        """The label column's values as the model's labels."""
        raise NotImplementedError

    def read_inputs(
        self, columns: list[str], rows: list[dict], data_cfg: DictConfig, source: str
    ) -> list[list[str]]:
        missing = [f for f in self.input_fields(data_cfg) if f not in columns]
        if missing:
            raise DataError(
                f"{source} has no text column {', '.join(map(repr, missing))}, which the model "
                f"was trained on (data.text_fields); its columns are: {', '.join(columns)}"
            )
        return [
            text_column([r[f] for r in rows], f, source, []) for f in self.input_fields(data_cfg)
        ]

    def read_gold(
        self, columns: list[str], rows: list[dict], data_cfg: DictConfig, source: str
    ) -> list[Any]:
        _texts, values = text_columns(rows, columns, data_cfg, source, [])
        return self.parse_labels(values, self.label_names, source, data_cfg)

    def encode_kwargs(self, data_cfg: DictConfig) -> dict[str, Any]:
        return {"truncation": True, "max_length": int(data_cfg.max_length)}

    def params(self, raw: RawData) -> dict[str, Any]:
        if not raw.label_names:
            return {}
        return {"num_labels": raw.num_labels, "label_names": ",".join(raw.label_names)}

    @staticmethod
    def named_head(raw: RawData, problem_type: str) -> dict[str, Any]:
        """A head of one output per named label, the names in the model config."""
        return {
            "num_labels": raw.num_labels,
            "problem_type": problem_type,
            "id2label": dict(enumerate(raw.label_names)),
            "label2id": {name: i for i, name in enumerate(raw.label_names)},
        }

    def encode(
        self, raw: RawData, split: str, tokenizer: Any, kwargs: dict[str, Any]
    ) -> dict[str, list]:
        encoded = self.encode_inputs(raw.texts[split], tokenizer, kwargs)
        return {**encoded, "labels": raw.labels[split]}

    def encode_inputs(
        self, texts: list[list[str]], tokenizer: Any, kwargs: dict[str, Any]
    ) -> dict[str, list]:
        # sentence pairs go in as pairs (token_type_ids 0/1), as in the tutorial
        second = texts[1] if len(texts) == 2 else None
        return dict(tokenizer(texts[0], second, **kwargs))

    def collator(self, tokenizer: Any) -> Any:
        """Dynamic padding per batch (pads to the longest sequence in the batch)."""
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(tokenizer)
