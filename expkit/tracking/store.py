"""Where runs are stored: store URIs, opening a store (retries, its lock, the server check),
experiments. mlflow is imported only inside the functions that talk to a store."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from expkit.errors import ExpkitError
from expkit.redact import redact_text

log = logging.getLogger(__name__)


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
        seed_new_database(uri)
        try:
            return RetryingClient(MlflowClient(tracking_uri=uri))
        except MlflowException as err:  # opening a SQL store checks its schema
            raise TrackingStoreError(_unopenable(uri, err)) from None


def blank_database() -> Path | None:
    """A SQLite file holding MLflow's tables and nothing else, made once per MLflow version
    (in ~/.cache/expkit, or $XDG_CACHE_HOME/expkit); None where it cannot be made."""
    import mlflow

    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "expkit"
    blank = cache / f"mlflow-{mlflow.__version__}-tables.db"
    if blank.is_file():
        return blank
    partial = cache / f".{blank.name}.{os.getpid()}"
    try:
        import sqlalchemy
        from mlflow.store.db.utils import _initialize_tables

        cache.mkdir(parents=True, exist_ok=True)
        engine = sqlalchemy.create_engine(f"sqlite:///{partial}")
        try:
            _initialize_tables(engine)  # every schema migration, as MLflow runs them
        finally:
            engine.dispose()
        os.replace(partial, blank)  # whole or not at all: another process may be reading it
    except Exception as err:  # no cache folder, another MLflow: MLflow builds the tables itself
        log.debug("no blank MLflow database: %s", err)
        with contextlib.suppress(OSError):
            partial.unlink()
        return None
    return blank


def seed_new_database(uri: str) -> None:
    """A SQLite store that does not exist yet starts as a copy of the blank database: MLflow
    builds a new one by running each of its schema migrations (about 2 s, every new store).
    MLflow then opens it as it opens any store of its version and adds its Default experiment
    (artifact location and time its own). Called under the store's creation lock."""
    import shutil

    database = sqlite_database(uri)
    if not database or database == ":memory:" or "?" in uri or Path(database).exists():
        return
    blank = blank_database()
    if blank is None:
        return
    target = Path(database)
    partial = target.with_name(f".{target.name}.{os.getpid()}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(blank, partial)
        os.link(partial, target)  # never over a database another program has just created
    except OSError as err:  # MLflow creates it, and reports an unusable path in its own words
        log.debug("the blank MLflow database was not copied: %s", err)
    finally:
        with contextlib.suppress(OSError):
            partial.unlink()


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
    is left behind, and a process that dies releases it. The folder is created if missing, as
    MLflow would create it."""
    database = sqlite_database(uri)
    folder = Path(database).parent if database and database != ":memory:" else None
    try:
        import fcntl
    except ImportError:  # not POSIX: MLflow's own behaviour
        folder = None
    if folder is not None:
        # MLflow creates a missing folder itself; creating it first means a client that opens
        # the store before anyone made the folder still takes the lock
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:  # MLflow reports an unusable path in its own words
            folder = None
    if folder is None:
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


def find_run(client: Any, run_id: str) -> Any | None:
    """The run `run_id` of the store, or None when the store has no run by that id."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException:
        return None


def ensure_registered_model(client: Any, name: str) -> None:
    """The Model Registry's model `name`, created when there is none yet."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name)


def file_store_path(uri: str) -> Path:
    """The folder of a file store's URI (a path, or file:///...), read as MLflow reads it."""
    from mlflow.utils.file_utils import local_file_uri_to_path

    return Path(local_file_uri_to_path(uri))


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


# opening a store that must exist already (expkit compare, rerun, replay)


def default_uri() -> str:
    """$MLFLOW_TRACKING_URI, else the default store of this directory (runs/mlflow.db)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    db = Path.cwd() / "runs" / "mlflow.db"
    if not db.is_file():
        raise ExpkitError(
            f"no MLflow store at {db}; run from the directory you launched expkit in, "
            "or pass --uri (e.g. --uri sqlite:///path/runs/mlflow.db or http://host:5000)"
        )
    return f"sqlite:///{db}"


def open_store(uri: str | None, origin: str = "--uri") -> Any:
    """A client of the existing store at `uri` (default: `default_uri()`), `origin` naming where
    the URI came from; MLflow would create an empty store where there is none."""
    if uri is None:
        origin = "$MLFLOW_TRACKING_URI" if os.environ.get("MLFLOW_TRACKING_URI") else "default"
        uri = default_uri()
    missing = missing_store(uri)
    if missing is not None:
        raise ExpkitError(
            f"no MLflow store at {missing} ({origin} {redact_text(uri)}); give the URI of an "
            "existing store, e.g. sqlite:///path/runs/mlflow.db or http://host:5000"
        )
    check_server(uri)  # a server that is down: one line, not MLflow's retries and a traceback
    return mlflow_client(uri)


def missing_store(uri: str) -> Path | None:
    """The local path a SQLite or file store at `uri` would be created at, if it is not there."""
    from urllib.parse import urlparse

    scheme = urlparse(uri).scheme
    if scheme == "sqlite":
        database = sqlite_database(uri)
        if not database or database == ":memory:":
            return None
        path = Path(database).resolve()
        return None if path.is_file() else path
    if scheme in ("", "file") or len(scheme) == 1:  # a path (C:\ too), or file:///...
        path = file_store_path(uri).resolve()
        return None if path.is_dir() else path
    return None  # a server or a database server: MLflow reports what is wrong
