"""A trained model, loaded with what its run recorded, turning texts into prediction records.

The model folder a run saves (`<run dir>/model`, the MLflow Model's data) holds the
save_pretrained files and `expkit.json`: the task, its label names and what evaluation chose (a
threshold), and the run's resolved config (text fields, max_length, how files are read). So
`expkit predict`, `expkit evaluate` and the served MLflow Model rebuild exactly the tokenizer,
encoding and label map the run used. The records are the task's (`Task.prediction`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from expkit.errors import ExpkitError

log = logging.getLogger(__name__)

SPEC_FILE = "expkit.json"
SPEC_FORMAT = 1
PRECISIONS = ("fp32", "bf16", "fp16")


class ModelSourceError(ExpkitError):
    """A model source (run id, URI, folder) that names no model expkit can load."""


def model_spec(task: Any, config: dict[str, Any], run_id: str | None, example: list) -> dict:
    """What `expkit.json` records about a trained model (written into its folder by the run)."""
    data = config["data"]
    return {
        "format": SPEC_FORMAT,
        "task": task.name,
        "label_names": list(task.label_names),
        "task_state": task.state(),
        "input_fields": task.input_fields(OmegaConf.create(data)),
        "input_example": example,
        "run_id": run_id,
        "config": config,
    }


def read_spec(model_dir: Path) -> dict[str, Any]:
    path = Path(model_dir) / SPEC_FILE
    if not path.is_file():
        raise ModelSourceError(
            f"{model_dir} has no {SPEC_FILE}: not a model folder saved by an expkit run"
        )
    spec = json.loads(path.read_text(encoding="utf-8"))
    if spec.get("format") != SPEC_FORMAT:
        raise ModelSourceError(
            f"{path} has format {spec.get('format')!r}; this expkit reads format {SPEC_FORMAT}"
        )
    return spec


def task_from_spec(spec: dict[str, Any]) -> Any:
    """The model's task with its label names and what evaluation chose (nothing heavy)."""
    from expkit.tasks import task_class

    task = task_class(spec["task"])(OmegaConf.create(spec["config"]["task"]))
    task.label_names = list(spec["label_names"])
    task.load_state(spec["task_state"] or {})
    task.seed = int(spec["config"].get("seed", 0))
    return task


class Predictor:
    """The model of one folder, ready to predict: `records(texts)` -> one dict per input."""

    def __init__(
        self,
        model_dir: Path,
        data: DictConfig | None = None,
        device: str = "auto",
        precision: str = "fp32",
        batch_size: int = 64,
        progress: bool = False,
    ) -> None:
        import transformers

        from expkit.device import check_precision, resolve_device
        from expkit.model import quiet_transformers

        self.model_dir = Path(model_dir)
        self.spec = read_spec(self.model_dir)
        # the run's data settings, with the caller's (a new file, other column names) on top
        self.data = data if data is not None else OmegaConf.create(self.spec["config"]["data"])
        self.task = task_from_spec(self.spec)
        self.fields = self.task.input_fields(self.data)
        self.device = resolve_device(device)
        check_precision(precision, self.device)
        self.precision = precision
        self.batch_size = int(batch_size)
        self.progress = progress
        from expkit.adapter import load_trained

        with quiet_transformers():
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(self.model_dir)
            self.model = load_trained(self.model_dir, self.task.model_class)  # model/ or adapter/
        self.model.to(self.device).eval()
        self.collator = self.task.collator(self.tokenizer)

    def _batches(self, encoded: dict[str, list]) -> Any:
        """Index lists of at most batch_size, longest first: similar lengths pad little."""
        lengths = [len(ids) for ids in encoded["input_ids"]]
        order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
        for start in range(0, len(order), self.batch_size):
            yield order[start : start + self.batch_size]

    def run(self, texts: list[list[str]], scoring: bool = False) -> tuple[list[Any], list[Any]]:
        """(scores, outputs) per example, in input order: what predictions are made from, and
        what the task's metrics take (`scoring`: the inputs are encoded to be scored, as
        `expkit evaluate` does)."""
        import contextlib

        import torch
        from tqdm.auto import tqdm

        n = len(texts[0]) if texts else 0
        if n == 0:
            return [], []
        encode = self.task.encode_gold_inputs if scoring else self.task.encode_inputs
        encoded = encode(texts, self.tokenizer, self.task.encode_kwargs(self.data))
        count = len(encoded["input_ids"])  # features: an example may have several (windows)
        scores: list[Any] = [None] * count
        outputs: list[Any] = [None] * count
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        autocast = (
            (lambda: torch.autocast(device_type=self.device.type, dtype=dtype))
            if dtype is not None
            else contextlib.nullcontext
        )
        bar = tqdm(total=count, desc="predict", unit="ex", disable=not self.progress or None)
        with torch.inference_mode():
            for index in self._batches(encoded):
                features = [{k: v[i] for k, v in encoded.items()} for i in index]
                batch = {k: v.to(self.device) for k, v in self.collator(features).items()}
                with autocast():
                    batch_scores, batch_outputs = self.task.predict_batch(
                        self.model, batch, self.tokenizer, scoring
                    )
                for j, i in enumerate(index):
                    scores[i] = batch_scores[j]
                    outputs[i] = batch_outputs[j] if batch_outputs is not None else None
                bar.update(len(index))
        bar.close()
        return self.task.merge(scores, encoded), self.task.merge(outputs, encoded)

    def records(self, texts: list[list[str]], ids: list[Any] | None = None) -> list[dict]:
        """One record per input: its id, its text fields, then the task's prediction fields."""
        scores, _ = self.run(texts)
        return self.to_records(texts, scores, ids)

    def to_records(
        self, texts: list[list[str]], scores: list[Any], ids: list[Any] | None = None
    ) -> list[dict]:
        out = []
        for i, score in enumerate(scores):
            record: dict[str, Any] = {"id": ids[i] if ids is not None else i}
            inputs = [texts[c][i] for c in range(len(self.fields))]
            record.update(dict(zip(self.fields, inputs, strict=True)))
            record.update(self.task.prediction(score, inputs))
            out.append(record)
        return out
