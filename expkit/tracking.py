"""Tracker interface and its implementations: MLflow, none. The only module that imports mlflow.

mlflow is imported lazily, inside MLflowTracker, so `expkit --help` and config errors stay fast.
"""

from __future__ import annotations

import contextlib
import logging
import os
import posixpath
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from expkit.errors import ConfigError, ExpkitError
from expkit.redact import redact_text

log = logging.getLogger(__name__)

# MLflow's limits (mlflow.utils.validation); copied so importing this module stays mlflow-free.
MAX_PARAMS_PER_BATCH = 100  # MAX_PARAMS_TAGS_PER_BATCH
MAX_METRICS_PER_BATCH = 1000  # MAX_METRICS_PER_BATCH
MAX_PARAM_LENGTH = 6000  # MAX_PARAM_VAL_LENGTH
MAX_KEY_LENGTH = 250  # MAX_ENTITY_KEY_LENGTH
MAX_TAG_LENGTH = 5000  # below MLflow's 8000, so older servers accept them too
FLUSH_SECONDS = 5.0  # metrics wait at most this long in the buffer (while logging goes on)
TRUNCATED = "...(truncated)"
_BAD_KEY_CHARS = re.compile(r"[^/\w.\- :]")  # MLflow rejects names with anything else


class Tracker(Protocol):
    """What a training run reports to; see MLflowTracker and NullTracker."""

    run_id: str | None

    def start(self, run_name: str | None, tags: dict[str, str]) -> None: ...
    def resume(self, run_id: str | None, tags: dict[str, str], step: int) -> None: ...
    def log_params(self, params: dict[str, object]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def set_tags(self, tags: dict[str, str]) -> None: ...
    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None: ...
    def log_text(self, text: str, artifact_file: str) -> None: ...
    def flush(self) -> None: ...
    def try_flush(self) -> None: ...
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
                out[name] = "{}"  # keep the key: an empty section is still a setting
        elif value is None:
            out[name] = "None"
        elif isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
            out[name] = str(value)  # lists (ListConfig too): one readable value, not one per item
        else:
            out[name] = value
    return out


def sqlite_database(uri: str) -> str | None:
    """The database part of a `sqlite:///` URI (a path, relative or absolute; `:memory:`; or
    empty), without its query; None for any other URI."""
    if not uri.startswith("sqlite:///"):
        return None
    return uri[len("sqlite:///") :].split("?", 1)[0]


def default_store_path(root: str | Path) -> Path:
    """The default store's SQLite file, <root>/runs/mlflow.db (absolute; not created here)."""
    return Path(root).resolve() / "runs" / "mlflow.db"


def default_store_uri(root: str | Path) -> str:
    """The default store: a SQLite file under <root>/runs, as an absolute URI."""
    db = default_store_path(root)
    db.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{db}"


def _clip(value: str, limit: int) -> str:
    """Keep the start of an over-long value and say it was cut, so MLflow never rejects it."""
    return value if len(value) <= limit else value[: limit - len(TRUNCATED)] + TRUNCATED


def _key(name: object) -> str:
    """A name MLflow accepts: bad characters -> "_", no path tricks ("a/../b", "/x"), <= 250."""
    key = _BAD_KEY_CHARS.sub("_", str(name)) or "_"
    norm = posixpath.normpath(key)
    if norm != key or norm == "." or norm.startswith(("..", "/")):
        key = key.replace("/", "_").replace("..", "__")
    return _clip(key, MAX_KEY_LENGTH)


class NullTracker:
    """tracking=none: records nothing."""

    run_id: str | None = None

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

    def flush(self) -> None:
        pass

    def try_flush(self) -> None:
        pass

    def end(self, status: str = "FINISHED") -> None:
        pass


RETRY_ATTEMPTS = 10  # with doubling delays from 0.1 s (capped at 5 s): about 30 s in all
_TRANSIENT = ("database is locked", "database table is locked", "busy", "temporarily unavailable",
              "too many requests", "connection reset", "connection aborted")  # fmt: skip


def _transient(exc: BaseException) -> bool:
    """A store error worth retrying: SQLite locked by a parallel job, a server briefly away."""
    text = f"{type(exc).__name__}: {exc}".lower()
    return any(marker in text for marker in _TRANSIENT)


def with_retries(call: Callable[[], Any], attempts: int = RETRY_ATTEMPTS) -> Any:
    """Run `call`, retrying transient store errors with jittered exponential backoff."""
    import random

    for attempt in range(attempts):
        try:
            return call()
        except Exception as exc:
            if attempt == attempts - 1 or not _transient(exc):
                raise
            time.sleep(min(5.0, 0.1 * 2**attempt) * (0.5 + random.random()))
    raise AssertionError("unreachable")


class RetryingClient:
    """An MlflowClient whose every call retries transient errors (parallel jobs, one SQLite file).

    A failed SQLite write is rolled back, so a retried call never records anything twice.
    """

    def __init__(self, client: Any) -> None:
        self._client = client

    @property
    def unwrapped(self) -> Any:
        """The MlflowClient itself, for calls that choose their own retries."""
        return self._client

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            return with_retries(lambda: attr(*args, **kwargs))

        return call


# MLflow's own HTTP retries (7, backoff factor 2, 120 s timeout) take minutes against a server
# that is gone; expkit retries itself, so each request gets a short budget. Set with setdefault
# wherever mlflow is used (the tracker process, a sweep's launcher): a user's own value wins.
HTTP_RETRY_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",  # seconds per request (connect, and each read)
}
PROBE_SECONDS = 10.0  # the tracking server's /health must answer within this
_ERRNO = re.compile(r"\[Errno -?\d+\] ([^'\")\]]+)")


def bound_http_retries() -> None:
    """MLflow's HTTP retries bounded to seconds, unless the environment says otherwise."""
    for name, value in HTTP_RETRY_DEFAULTS.items():
        os.environ.setdefault(name, value)
    # one message of ours names a store that is down, not one line per connection retry
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)


class TrackingServerError(ExpkitError):
    """The MLflow tracking server at tracking.uri does not answer."""


def check_server(uri: str, timeout: float = PROBE_SECONDS) -> None:
    """One GET of an http(s) tracking server's /health: a server that is down, or a wrong
    address, is one clear error at once instead of MLflow's retries and a traceback."""
    if not uri.startswith(("http://", "https://")):
        return
    import threading

    outcome: list[str | None] = []
    # a thread, so a resolver that hangs (not bounded by the request's timeout) is bounded too
    probe = threading.Thread(target=lambda: outcome.append(_probe(uri, timeout)), daemon=True)
    probe.start()
    probe.join(timeout + 1)
    failure = outcome[0] if outcome else f"no answer within {timeout:g} s"
    if failure is not None:
        raise TrackingServerError(
            f"cannot reach the MLflow tracking server at {redact_text(uri)} ({failure}); is it "
            "running? Start one with `mlflow server --host 0.0.0.0 --port 5000 ...`, or set "
            "tracking.uri (or MLFLOW_TRACKING_URI) to its address"
        )


def _probe(uri: str, timeout: float) -> str | None:
    """None if the server answered, else what failed, in a few words."""
    import requests  # mlflow's HTTP client: the same proxy settings (HTTPS_PROXY, NO_PROXY)

    # the TLS settings MLflow's own requests use
    verify: bool | str = os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() != "true"
    verify = os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or verify
    cert = os.environ.get("MLFLOW_TRACKING_CLIENT_CERT_PATH") or None
    try:
        answer = requests.get(
            f"{uri.rstrip('/')}/health", timeout=timeout, verify=verify, cert=cert
        )
    except requests.exceptions.SSLError as exc:
        return f"TLS error: {_first_line(exc)}"
    except requests.exceptions.Timeout:
        return f"no answer within {timeout:g} s"
    except requests.exceptions.ConnectionError as exc:
        text = str(exc)
        if "NameResolutionError" in text or "Failed to resolve" in text:
            return "host name not found"
        errno = _ERRNO.search(text)  # "[Errno 111] Connection refused" -> "connection refused"
        return errno.group(1).strip().lower() if errno else _first_line(exc)
    except requests.exceptions.RequestException as exc:  # a malformed URI
        return f"{type(exc).__name__}: {_first_line(exc)}"
    # MLflow serves /health (with --static-prefix too) to anyone; 404: not an MLflow server;
    # 5xx: a gateway with nothing behind it. Other answers (an auth proxy's 401) count as up.
    if answer.status_code == 404 or answer.status_code >= 500:
        return f"/health answered {answer.status_code} {answer.reason}: not an MLflow server?"
    return None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def mlflow_client(uri: str) -> Any:
    """A retrying MlflowClient for `uri` (imports mlflow)."""
    bound_http_retries()
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    with store_creation_lock(uri):
        try:
            return RetryingClient(MlflowClient(tracking_uri=uri))
        except MlflowException as err:  # opening a SQL store checks its schema
            raise TrackingStoreError(_unopenable(uri, err)) from None


class TrackingStoreError(ExpkitError):
    """The MLflow store at tracking.uri cannot be opened (a schema of another MLflow version)."""


_SCHEMA = re.compile(r"found version (\w+), but expected (\w+)")


def _unopenable(uri: str, err: BaseException) -> str:
    where = redact_text(uri)
    schema = _SCHEMA.search(str(err))
    if schema:
        found, expected = schema.groups()
        return (
            f"the MLflow store {where} has the database schema of another MLflow version "
            f"({found}; this MLflow needs {expected}): back it up and run `mlflow db upgrade "
            f"{where}`, or set tracking.uri to a new store"
        )
    return f"cannot open the MLflow store {where}: {_first_line(err)}"


@contextlib.contextmanager
def store_creation_lock(uri: str) -> Iterator[None]:
    """Held while MLflow opens a SQLite store: two processes creating a new database at once
    (a run and `expkit compare`, two terminals) race in MLflow's table creation and one fails
    with "table ... already exists". The lock is the database folder's own flock: no lock file
    is left behind, and a process that dies releases it."""
    database = sqlite_database(uri)
    folder = Path(database).parent if database and database != ":memory:" else None
    try:
        import fcntl
    except ImportError:  # not POSIX: MLflow's own behaviour
        folder = None
    if folder is None or not folder.is_dir():
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def ensure_experiment(
    client: Any, uri: str, name: str, artifact_location: str | None = None
) -> str:
    """Get the experiment by name or create it (another process may create it first)."""
    from mlflow.exceptions import MlflowException

    try:
        found = client.get_experiment_by_name(name)
    except MlflowException as err:  # the store's first request: a server that says no
        if not uri.startswith(("http://", "https://")):
            raise
        raise TrackingServerError(_refusal(uri, err)) from None
    if found is None:
        database = sqlite_database(uri)
        if artifact_location is None and database is not None:
            # artifacts beside the .db file: MLflow's default is ./mlruns in the cwd
            artifact_location = (Path(database).parent.resolve() / "mlartifacts").as_uri()
        try:
            return client.create_experiment(name, artifact_location=artifact_location)
        except MlflowException as err:
            found = client.get_experiment_by_name(name)
            if found is None or err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
    if found.lifecycle_stage == "deleted":  # deleted in the UI: runs could not be created
        client.restore_experiment(found.experiment_id)
    return found.experiment_id


def _refusal(uri: str, err: BaseException) -> str:
    """One line for a tracking server that answers but refuses the first request."""
    full = str(err)
    if "Invalid Host header" in full:  # MLflow 3's servers accept localhost and private IPs only
        hint = "start the server with --allowed-hosts naming the host in tracking.uri"
    elif "error code 401" in full or "error code 403" in full:
        hint = "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or MLFLOW_TRACKING_TOKEN"
    else:
        hint = "see the server's log"
    where, what = redact_text(uri), _first_line(err)
    return f"the MLflow tracking server at {where} refused the first request ({what}); {hint}"


def log_params(client: Any, run_id: str, params: dict[str, object]) -> None:
    """Params in batches, names and values made acceptable to MLflow."""
    from mlflow.entities import Param

    # a dict: two keys that clean up to the same name must not clash in one batch
    clean = {_key(k): _clip(str(v), MAX_PARAM_LENGTH) for k, v in params.items()}
    items = [Param(k, v) for k, v in clean.items()]
    for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
        client.log_batch(run_id, params=items[i : i + MAX_PARAMS_PER_BATCH])


def clean_tags(tags: dict[str, str]) -> dict[str, str]:
    return {_key(k): _clip(str(v), MAX_TAG_LENGTH) for k, v in tags.items()}


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
        self._store_error: str | None = None
        self._failures = 0
        self._last_flush = time.monotonic()
        self._ended = False
        self._logged_upto: dict[str, int] = {}  # resumed run: the last step of each metric

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
        unsent = self._buffer or self._pending_tags or self._pending_artifacts or not terminated
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
        }
        assert self.spill_path is not None
        self.spill_path.parent.mkdir(parents=True, exist_ok=True)
        self.spill_path.write_text(json.dumps(record), encoding="utf-8")
        log.warning(
            "the tracking store %s did not take %d metric values, %d tags, %d artifacts%s; "
            "saved in %s. Once the store is back: expkit replay %s",
            redact_text(self.uri), len(self._buffer), len(self._pending_tags),
            len(self._pending_artifacts),
            "" if status is None else f" and the final status {status}",
            self.spill_path, self.spill_path,
        )  # fmt: skip


class TensorBoardSink:
    """An optional second sink beside MLflow: every metric the wrapped tracker gets also goes to
    TensorBoard.

    Event files go to `log_dir` (the run dir's `tensorboard/`), under the metric names and steps
    the tracker records, so both backends write the same tags.
    """

    def __init__(self, inner: Tracker, log_dir: str | Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.inner = inner
        self.log_dir = Path(log_dir)
        self.writer = SummaryWriter(log_dir=str(self.log_dir))

    @property
    def run_id(self) -> str | None:
        return self.inner.run_id

    def start(self, run_name: str | None, tags: dict[str, str]) -> None:
        self.inner.start(run_name, tags)

    def resume(self, run_id: str | None, tags: dict[str, str], step: int) -> None:
        """Events past `step` (written before a kill) are purged: each step shows once."""
        from torch.utils.tensorboard import SummaryWriter

        self.inner.resume(run_id, tags, step)
        self.writer.close()
        self.writer = SummaryWriter(log_dir=str(self.log_dir), purge_step=step + 1)

    def log_params(self, params: dict[str, object]) -> None:
        self.inner.log_params(params)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.inner.log_metrics(metrics, step)
        for name, value in metrics.items():
            self.writer.add_scalar(name, float(value), int(step))

    def set_tags(self, tags: dict[str, str]) -> None:
        self.inner.set_tags(tags)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.inner.log_artifact(path, artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.inner.log_text(text, artifact_file)

    def flush(self) -> None:
        self.writer.flush()
        self.inner.flush()

    def try_flush(self) -> None:
        self.writer.flush()
        self.inner.try_flush()

    def end(self, status: str = "FINISHED") -> None:
        try:
            self.writer.close()
        finally:
            self.inner.end(status)


RUN_POINTER = "mlflow_run.json"  # in every run dir: its MLflow run


def write_run_pointer(run_dir: Path, run_id: str | None, uri: str | None, **extra: Any) -> None:
    """`<run dir>/mlflow_run.json`: which MLflow run this directory belongs to."""
    import json

    if run_id is None:
        return
    data = {"run_id": run_id, "tracking_uri": uri, **extra}
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RUN_POINTER).write_text(json.dumps(data, indent=2), encoding="utf-8")


def configured_store(uri: str | None) -> tuple[str, str] | None:
    """(URI, where it is set): tracking.uri, else MLflow's own MLFLOW_TRACKING_URI; None when
    neither is, for the default store."""
    if uri:
        return str(uri), "tracking.uri"
    env = os.environ.get("MLFLOW_TRACKING_URI")
    return (env, "MLFLOW_TRACKING_URI") if env else None


def store_uri(uri: str | None, launch_dir: str | Path) -> str:
    """tracking.uri, else MLflow's own MLFLOW_TRACKING_URI, else the SQLite store in launch_dir."""
    configured = configured_store(uri)
    return configured[0] if configured else default_store_uri(launch_dir)


def _mlflow(uri: str | None, experiment: str) -> Tracker:
    """MLflow, written from a child process (expkit.tracker_process): mlflow stays out of the
    training process, and its set-up overlaps the parent's."""
    from expkit.tracker_process import TrackerProcess

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
