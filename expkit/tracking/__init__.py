"""Where a run is recorded: the Tracker interface, its implementations, the MLflow store.

The only package that imports mlflow, and only inside the functions that need it, so
`expkit --help` and config errors stay fast. Its modules: `store` (store URIs, opening a store,
retries, experiments), `names` (names and values MLflow accepts), `mlflow_writer`
(MLflowTracker), `process` (MLflowTracker in a child process: what tracking=mlflow runs),
`tensorboard` (TensorBoardSink), `replay` (`expkit replay`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from expkit.errors import ConfigError
from expkit.tracking.mlflow_writer import (
    FLUSH_ATTEMPTS,
    FLUSH_SECONDS,
    RUN_POINTER,
    UNSENT_FILE,
    MLflowTracker,
    write_run_pointer,
)
from expkit.tracking.names import (
    MAX_KEY_LENGTH,
    MAX_METRICS_PER_BATCH,
    MAX_PARAM_LENGTH,
    MAX_PARAMS_PER_BATCH,
    MAX_TAG_LENGTH,
    TRUNCATED,
    clean_tags,
    flatten,
    log_params,
)
from expkit.tracking.store import (
    HTTP_RETRY_DEFAULTS,
    PROBE_SECONDS,
    RETRY_ATTEMPTS,
    RetryingClient,
    TrackingServerError,
    TrackingStoreError,
    bound_http_retries,
    check_server,
    configured_store,
    default_store_path,
    default_store_uri,
    ensure_experiment,
    ensure_registered_model,
    file_store_path,
    find_run,
    missing_store,
    mlflow_client,
    open_store,
    sqlite_database,
    store_creation_lock,
    store_uri,
    with_retries,
)
from expkit.tracking.tensorboard import TensorBoardSink

__all__ = [
    "FLUSH_ATTEMPTS",
    "FLUSH_SECONDS",
    "HTTP_RETRY_DEFAULTS",
    "MAX_KEY_LENGTH",
    "MAX_METRICS_PER_BATCH",
    "MAX_PARAMS_PER_BATCH",
    "MAX_PARAM_LENGTH",
    "MAX_TAG_LENGTH",
    "PROBE_SECONDS",
    "RETRY_ATTEMPTS",
    "RUN_POINTER",
    "TRACKERS",
    "TRUNCATED",
    "UNSENT_FILE",
    "MLflowTracker",
    "NullTracker",
    "RetryingClient",
    "TensorBoardSink",
    "Tracker",
    "TrackingServerError",
    "TrackingStoreError",
    "bound_http_retries",
    "check_server",
    "clean_tags",
    "configured_store",
    "default_store_path",
    "default_store_uri",
    "ensure_experiment",
    "ensure_registered_model",
    "file_store_path",
    "find_run",
    "flatten",
    "log_params",
    "make_tracker",
    "missing_store",
    "mlflow_client",
    "open_store",
    "sqlite_database",
    "store_creation_lock",
    "store_uri",
    "with_retries",
    "write_run_pointer",
]


class Tracker(Protocol):
    """What a training run reports to; see NullTracker, MLflowTracker, TrackerProcess and
    TensorBoardSink (which wraps another)."""

    run_id: str | None
    spill_path: Path | None  # where what the store would not take is saved, for `expkit replay`

    def open(self) -> None:
        """Open the store now (the config checks have passed), ahead of the first call."""

    def start(self, run_name: str | None, tags: dict[str, str]) -> None: ...
    def resume(self, run_id: str | None, tags: dict[str, str], step: int) -> None: ...
    def log_params(self, params: dict[str, object]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def set_tags(self, tags: dict[str, str]) -> None: ...
    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None: ...
    def log_text(self, text: str, artifact_file: str) -> None: ...

    def log_model(self, model_dir: Path, info: dict, step: int) -> None:
        """The saved model folder as the run's MLflow Model (`runs:/RUN_ID/model`); a failure
        is a warning and a tag, never the run's end."""

    def log_datasets(self, datasets: list[dict[str, object]]) -> None:
        """The splits the run reads, as MLflow dataset inputs: plain dicts (expkit.data's
        `dataset_records`: name, source, source_type, digest, rows, context)."""

    def flush(self) -> None: ...
    def try_flush(self) -> None: ...
    def end(self, status: str = "FINISHED") -> None: ...

    def close_orphans(self, run_dir: str) -> None:
        """Mark KILLED the other runs of `run_dir` left RUNNING by a process that is gone."""


class NullTracker:
    """tracking=none: records nothing."""

    run_id: str | None = None
    spill_path: Path | None = None

    def open(self) -> None:
        pass

    def start(self, run_name: str | None, tags: dict[str, str]) -> None:
        pass

    def resume(self, run_id: str | None, tags: dict[str, str], step: int) -> None:
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

    def log_model(self, model_dir: Path, info: dict, step: int) -> None:
        pass

    def log_datasets(self, datasets: list[dict[str, object]]) -> None:
        pass

    def flush(self) -> None:
        pass

    def try_flush(self) -> None:
        pass

    def end(self, status: str = "FINISHED") -> None:
        pass

    def close_orphans(self, run_dir: str) -> None:
        pass


def _mlflow(uri: str | None, experiment: str) -> Tracker:
    """MLflow, written from a child process (expkit.tracking.process): mlflow stays out of the
    training process, and its set-up overlaps the parent's."""
    from expkit.tracking.process import TrackerProcess

    return TrackerProcess(store_uri(uri, Path.cwd()), experiment)


TRACKERS: dict[str, Callable[[str | None, str], Tracker]] = {
    "mlflow": _mlflow,
    "none": lambda uri, experiment: NullTracker(),
}


def make_tracker(backend: str, uri: str | None, experiment: str) -> Tracker:
    """The tracker named by tracking.backend."""
    if backend not in TRACKERS:
        raise ConfigError(f"tracking backend {backend!r} is unknown (valid: {', '.join(TRACKERS)})")
    return TRACKERS[backend](uri, experiment)
