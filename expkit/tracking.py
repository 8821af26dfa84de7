"""Tracker interface and its implementations: MLflow, none. The only module that imports mlflow.

mlflow is imported lazily, inside MLflowTracker, so `expkit --help` and config errors stay fast.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from expkit.errors import ConfigError

MAX_PARAMS_PER_BATCH = 100  # MLflow's limit for params in one log_batch call
MAX_METRICS_PER_BATCH = 1000
MAX_PARAM_LENGTH = 6000  # mlflow.utils.validation.MAX_PARAM_VAL_LENGTH
MAX_KEY_LENGTH = 250
MAX_TAG_LENGTH = 5000
FLUSH_SECONDS = 5.0


class Tracker(Protocol):
    run_id: str | None

    def start(self, run_name: str | None, tags: dict[str, str]) -> None: ...
    def log_params(self, params: dict[str, object]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def set_tags(self, tags: dict[str, str]) -> None: ...
    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None: ...
    def log_text(self, text: str, artifact_file: str) -> None: ...
    def flush(self) -> None: ...
    def end(self, status: str = "FINISHED") -> None: ...


def flatten(cfg: Mapping, prefix: str = "") -> dict[str, object]:
    """Nested mappings -> dotted keys; lists stay one value (their str), None -> "None"."""
    out: dict[str, object] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            if value:
                out.update(flatten(value, f"{name}."))
            else:
                out[name] = "{}"
        else:
            out[name] = "None" if value is None else value
    return out


def default_store_uri(root: str | Path) -> str:
    """The default store: a SQLite file under <root>/runs, as an absolute URI."""
    runs = Path(root).resolve() / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{runs / 'mlflow.db'}"


def _clip(value: str, limit: int) -> str:
    suffix = "...(truncated)"
    return value if len(value) <= limit else value[: limit - len(suffix)] + suffix


class NullTracker:
    """tracking=none: records nothing."""

    run_id: str | None = None

    def start(self, run_name: str | None, tags: dict[str, str]) -> None:
        pass

    def log_params(self, params: dict[str, object]) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        pass

    def set_tags(self, tags: dict[str, str]) -> None:
        pass

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        pass

    def log_text(self, text: str, artifact_file: str) -> None:
        pass

    def flush(self) -> None:
        pass

    def end(self, status: str = "FINISHED") -> None:
        pass


class MLflowTracker:
    """One MLflow run through MlflowClient (no fluent global state); metrics sent in batches."""

    def __init__(self, uri: str, experiment: str, artifact_location: str | None = None) -> None:
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        self.uri = uri
        self.experiment_id = self._experiment(experiment, artifact_location)
        self.run_id: str | None = None
        self._buffer: list[Any] = []
        self._last_flush = time.monotonic()
        self._ended = False

    def _experiment(self, name: str, artifact_location: str | None) -> str:
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        if artifact_location is None and self.uri.startswith("sqlite:///"):
            # artifacts beside the .db file, never a stray ./mlruns in the working directory
            db = Path(self.uri[len("sqlite:///") :])
            artifact_location = (db.parent / "mlartifacts").resolve().as_uri()
        try:
            return self.client.create_experiment(name, artifact_location=artifact_location)
        except MlflowException:  # another process created it in the meantime
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def start(self, run_name: str | None, tags: dict[str, str]) -> None:
        clipped = {k: _clip(str(v), MAX_TAG_LENGTH) for k, v in tags.items()}
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=clipped)
        self.run_id = run.info.run_id

    def log_params(self, params: dict[str, object]) -> None:
        from mlflow.entities import Param

        items = [
            Param(_clip(str(k), MAX_KEY_LENGTH), _clip(str(v), MAX_PARAM_LENGTH))
            for k, v in params.items()
        ]
        for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=items[i : i + MAX_PARAMS_PER_BATCH])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._buffer.extend(Metric(k, float(v), now, int(step)) for k, v in metrics.items())
        if (
            len(self._buffer) >= MAX_METRICS_PER_BATCH
            or time.monotonic() - self._last_flush >= FLUSH_SECONDS
        ):
            self.flush()

    def set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, _clip(str(v), MAX_TAG_LENGTH)) for k, v in tags.items()]
        for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, tags=items[i : i + MAX_PARAMS_PER_BATCH])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def flush(self) -> None:
        while self._buffer:
            chunk = self._buffer[:MAX_METRICS_PER_BATCH]
            self.client.log_batch(self.run_id, metrics=chunk)
            del self._buffer[: len(chunk)]
        self._last_flush = time.monotonic()

    def end(self, status: str = "FINISHED") -> None:
        """Flush what is buffered, then mark the run; a failed flush still ends the run."""
        if self._ended or self.run_id is None:
            return
        self._ended = True
        try:
            self.flush()
        except Exception:
            self.client.set_terminated(self.run_id, "FAILED")
            raise
        self.client.set_terminated(self.run_id, status)


TRACKERS: dict[str, Callable[[str | None, str], Tracker]] = {
    "mlflow": lambda uri, experiment: MLflowTracker(str(uri), experiment),
    "none": lambda uri, experiment: NullTracker(),
}


def make_tracker(backend: str, uri: str | None, experiment: str) -> Tracker:
    if backend not in TRACKERS:
        raise ConfigError(f"tracking backend {backend!r} is unknown (valid: {', '.join(TRACKERS)})")
    return TRACKERS[backend](uri, experiment)
