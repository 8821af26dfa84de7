"""MLflowTracker: one MLflow run written through MlflowClient, and the run dir's pointer to it."""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any

from expkit.errors import ConfigError
from expkit.redact import redact_text
from expkit.tracking.names import (
    MAX_METRICS_PER_BATCH,
    MAX_PARAMS_PER_BATCH,
    _key,
    clean_tags,
    log_params,
)
from expkit.tracking.store import (
    RETRY_ATTEMPTS,
    check_server,
    ensure_experiment,
    mlflow_client,
    with_retries,
)

log = logging.getLogger(__name__)

FLUSH_SECONDS = 5.0  # metrics wait at most this long in the buffer (while logging goes on)
FLUSH_ATTEMPTS = 2  # while training: a short try; what fails waits for the next flush
UNSENT_FILE = "mlflow_unsent.json"  # in the run dir: what the store did not take, to replay


class MLflowTracker:
    """One MLflow run through MlflowClient (no fluent global state); metrics sent in batches.

    The store failing mid-run (SQLite locked, a server gone) never stops training: metrics stay
    buffered and are retried at the next flush, with one warning. What still cannot be written
    when the run ends is saved to `spill_path` (set by expkit.run: `<run dir>/mlflow_unsent.json`)
    for `expkit replay`; without a spill path the final error is raised.
    """

    def __init__(self, uri: str, experiment: str, artifact_location: str | None = None) -> None:
        check_server(uri)  # a server that is down fails here, before a run could open
        self.client = mlflow_client(uri)
        self.uri = uri
        self.experiment_id = ensure_experiment(self.client, uri, experiment, artifact_location)
        self.run_id: str | None = None
        self.spill_path: Path | None = None
        self._buffer: list[Any] = []
        self._pending_tags: dict[str, str] = {}
        self._pending_artifacts: list[tuple[str, str | None]] = []
        self._pending_datasets: list[dict[str, Any]] = []
        self._pending_models: list[list[Any]] = []  # [model dir, info, step]
        self._store_error: str | None = None
        self._failures = 0
        self._last_flush = time.monotonic()
        self._ended = False
        self._logged_upto: dict[str, int] = {}  # resumed run: the last step of each metric

    def open(self) -> None:
        """Nothing to do: the store was opened when the tracker was made."""

    def start(self, run_name: str | None, tags: dict[str, str]) -> None:
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=clean_tags(tags))
        self.run_id = run.info.run_id

    def resume(self, run_id: str | None, tags: dict[str, str], step: int) -> None:
        """Continue `run_id` (RUNNING again), from a checkpoint at `step`.

        A run killed after its checkpoint has values past `step` in the store already; the
        resumed training logs the same values again, so those are not sent twice.
        """
        from mlflow.exceptions import MlflowException

        if run_id is None:
            raise ConfigError(
                "the checkpoint was saved with tracking=none: resume it with tracking=none"
            )
        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            raise ConfigError(
                f"the checkpoint's MLflow run {run_id} is not in the store {redact_text(self.uri)} "
                "(resume with the tracking.uri the run was started with)"
            ) from None
        if run.info.experiment_id != self.experiment_id:
            self.experiment_id = run.info.experiment_id
        for key in run.data.metrics:
            history = self.client.get_metric_history(run_id, key)
            self._logged_upto[key] = max(m.step for m in history)
        self.run_id = run_id
        self.client.update_run(run_id, status="RUNNING")
        self.set_tags(tags)

    def log_params(self, params: dict[str, object]) -> None:
        log_params(self.client, self.run_id, params)

    def close_orphans(self, run_dir: str) -> None:
        """Other runs of `run_dir` still RUNNING whose process (on this host) is gone: a SIGKILL
        or a lost machine left them so. Each is named in a warning and marked KILLED."""
        import socket

        from expkit.procs import process_alive

        host = socket.gethostname()
        try:
            runs = self.client.search_runs(
                [self.experiment_id],
                filter_string=f"attributes.status = 'RUNNING' and tags.`expkit.run_dir` = "
                f"'{run_dir.replace(chr(39), chr(39) * 2)}'",
            )
        except Exception as exc:  # a check, never a reason to stop
            log.debug("could not look for orphaned runs: %s", exc)
            return
        for run in runs:
            if run.info.run_id == self.run_id:
                continue
            tags = run.data.tags
            pid, where = tags.get("expkit.pid"), tags.get("expkit.host")
            if where != host or not pid or process_alive(int(pid)):
                if where != host:
                    log.warning(
                        "run %s of this run dir is RUNNING in the store, started on host %s "
                        "(its process cannot be checked from here)", run.info.run_id, where,
                    )  # fmt: skip
                continue
            log.warning(
                "run %s (%s) of this run dir was left RUNNING by process %s, which is gone "
                "(killed?); marked KILLED. Its checkpoints, if any, resume with resume=auto",
                run.info.run_id, run.info.run_name, pid,
            )  # fmt: skip
            self.client.set_tag(run.info.run_id, "expkit.error", f"process {pid} was gone")
            self.client.set_terminated(run.info.run_id, "KILLED")

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Buffer the values (nan/inf included: MLflow stores them); send when due."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        done = self._logged_upto
        self._buffer.extend(
            Metric(key, float(v), now, int(step))
            for k, v in metrics.items()
            if int(step) > done.get(key := _key(k), -1)
        )
        full = len(self._buffer) >= MAX_METRICS_PER_BATCH and not self._failures
        if full or time.monotonic() - self._last_flush >= FLUSH_SECONDS:
            self.try_flush()

    def try_flush(self) -> None:
        """Send what is buffered now if the store takes it; if not, keep it and go on."""
        try:
            self._send(FLUSH_ATTEMPTS)
            self._failures = 0
        except Exception as exc:  # training goes on; the buffer is kept
            self._trouble(exc)
            # try again later, less often while the store stays down (5 s, 10 s, ... 80 s)
            self._failures += 1
            self._last_flush = time.monotonic() + FLUSH_SECONDS * (2 ** min(self._failures, 4) - 1)

    def _trouble(self, exc: BaseException) -> None:
        if self._store_error is None:
            log.warning(
                "the tracking store %s failed (%s: %s); training goes on, and what could not be "
                "written is kept to send later", redact_text(self.uri), type(exc).__name__,
                redact_text(str(exc)),
            )  # fmt: skip
        self._store_error = redact_text(f"{type(exc).__name__}: {exc}")

    def set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        clean = clean_tags(tags)
        items = [RunTag(k, v) for k, v in clean.items()]
        try:
            for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
                self.client.log_batch(self.run_id, tags=items[i : i + MAX_PARAMS_PER_BATCH])
        except Exception as exc:
            if self.spill_path is None:
                raise
            self._trouble(exc)
            self._pending_tags.update(clean)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """A file, or every file in a directory, under artifact_path."""
        path = Path(path)
        try:
            if path.is_dir():
                self.client.log_artifacts(self.run_id, str(path), artifact_path)
            else:
                self.client.log_artifact(self.run_id, str(path), artifact_path)
        except Exception as exc:
            if self.spill_path is None:
                raise
            self._trouble(exc)
            self._pending_artifacts.append((str(path.resolve()), artifact_path))

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_model(self, model_dir: Path, info: dict, step: int) -> None:
        from expkit.tracking.models import log_model

        started = time.monotonic()
        try:
            model_id = log_model(
                self.client, self.run_id, self.experiment_id, Path(model_dir), info, step
            )
        except Exception as exc:  # the model is saved in the run dir: the run is not lost
            if self.spill_path is not None:  # for `expkit replay`, with the rest
                self._trouble(exc)
                self._pending_models.append([str(Path(model_dir).resolve()), info, step])
                return
            reason = redact_text(f"{type(exc).__name__}: {exc}".splitlines()[0])
            log.warning("the model was not logged to MLflow (%s); it is saved in %s", reason,
                        model_dir)  # fmt: skip
            with contextlib.suppress(Exception):
                self.client.set_tag(self.run_id, "expkit.model_error", reason[:5000])
            return
        log.info("logged the model as MLflow Model %s (runs:/%s/model) in %.1f s", model_id,
                 self.run_id, time.monotonic() - started)  # fmt: skip

    def log_datasets(self, datasets: list[dict[str, Any]]) -> None:
        """The splits as dataset inputs of the run (the UI's Dataset column), one call."""
        if not datasets:
            return
        try:
            self.client.log_inputs(self.run_id, datasets=dataset_inputs(datasets))
        except Exception as exc:
            if self.spill_path is None:
                raise
            self._trouble(exc)
            self._pending_datasets.extend(datasets)

    def _send(self, attempts: int) -> None:
        """Send the buffered metrics; a chunk is dropped from the buffer only once sent."""
        raw = self.client.unwrapped
        while self._buffer:
            chunk = self._buffer[:MAX_METRICS_PER_BATCH]
            with_retries(lambda c=chunk: raw.log_batch(self.run_id, metrics=c), attempts)
            del self._buffer[: len(chunk)]
        self._last_flush = time.monotonic()

    def flush(self) -> None:
        """Send everything buffered now, retrying transient errors with backoff."""
        self._send(RETRY_ATTEMPTS)

    def end(self, status: str = "FINISHED") -> None:
        """Flush, then mark the run with status; never leaves it RUNNING if the store answers.

        Idempotent. What the store would not take goes to `spill_path` (with a replay command);
        without one, the error is raised after the status is set.
        """
        if self._ended or self.run_id is None:
            return
        self._ended = True
        error: BaseException | None = None
        try:
            self.flush()
        except Exception as exc:
            error = exc
        terminated = True
        try:
            self.client.set_terminated(self.run_id, status)
        except Exception as exc:
            terminated = False
            error = error or exc
        unsent = (
            self._buffer
            or self._pending_tags
            or self._pending_artifacts
            or self._pending_datasets
            or self._pending_models
            or not terminated
        )
        if not unsent:
            return
        if self.spill_path is None:
            if error is not None:
                raise error
            return
        self._spill(None if terminated else status, error)

    def _spill(self, status: str | None, error: BaseException | None) -> None:
        import json

        record = {
            "tracking_uri": self.uri,
            "run_id": self.run_id,
            "status": status,
            "error": f"{type(error).__name__}: {error}" if error else self._store_error,
            "metrics": [[m.key, m.value, m.timestamp, m.step] for m in self._buffer],
            "tags": self._pending_tags,
            "artifacts": [list(a) for a in self._pending_artifacts],
            "datasets": self._pending_datasets,
            "models": self._pending_models,
        }
        assert self.spill_path is not None
        self.spill_path.parent.mkdir(parents=True, exist_ok=True)
        self.spill_path.write_text(json.dumps(record), encoding="utf-8")
        log.warning(
            "the tracking store %s did not take %d metric values, %d tags, %d artifacts, %d "
            "dataset inputs, %d models%s; saved in %s. Once the store is back: expkit replay %s",
            redact_text(self.uri), len(self._buffer), len(self._pending_tags),
            len(self._pending_artifacts), len(self._pending_datasets), len(self._pending_models),
            "" if status is None else f" and the final status {status}",
            self.spill_path, self.spill_path,
        )  # fmt: skip


def dataset_inputs(datasets: list[dict[str, Any]]) -> list[Any]:
    """MLflow DatasetInputs from expkit's plain records (expkit.data.dataset_records): the source
    parsed by MLflow's source registry, the row count as the profile, the split as the
    `mlflow.data.context` input tag."""
    import json

    from mlflow.data.dataset_source_registry import get_dataset_source_from_json
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    out = []
    for record in datasets:
        source = get_dataset_source_from_json(
            json.dumps(record["source"]), str(record["source_type"])
        )
        meta = MetaDataset(source, name=str(record["name"]), digest=str(record["digest"]))
        fields = meta.to_dict()
        entity = Dataset(
            name=fields["name"],
            digest=fields["digest"],
            source_type=fields["source_type"],
            source=fields["source"],
            profile=json.dumps({"num_rows": int(record["rows"])}),
        )
        tags = [InputTag(MLFLOW_DATASET_CONTEXT, str(record["context"]))]
        out.append(DatasetInput(entity, tags))
    return out


RUN_POINTER = "mlflow_run.json"  # in every run dir: its MLflow run


def write_run_pointer(run_dir: Path, run_id: str | None, uri: str | None, **extra: Any) -> None:
    """`<run dir>/mlflow_run.json`: which MLflow run this directory belongs to."""
    import json

    if run_id is None:
        return
    data = {"run_id": run_id, "tracking_uri": uri, **extra}
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RUN_POINTER).write_text(json.dumps(data, indent=2), encoding="utf-8")
