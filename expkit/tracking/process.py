"""The MLflow tracker in a process of its own: the training process never imports mlflow.

mlflow and its SQLAlchemy store take about 1.5 s to import and set up and about 170 MB of
memory, and each batch of metrics holds whoever writes it. In a child process the set-up runs
while the parent reads the data and imports torch, its memory is not the trainer's, and writes
overlap training steps on another core. The child runs an ordinary `MLflowTracker`, so buffering,
retries and the replay file behave as in process.

Calls that answer (start, resume, flush, end, ...) wait for the child; metrics are sent without
waiting. The child ignores Ctrl-C and SIGTERM (the parent decides how the run ends and tells it);
if the parent dies (SIGKILL), the child sends what it has and leaves the run RUNNING, for
`resume=auto` to take over.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import pickle
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# calls the parent waits for; the others (metrics, params, tags, artifacts, datasets) are sent
# and the parent goes on: an error in one of those is raised at the next call that waits
_ANSWERED = {"start", "resume", "flush", "try_flush", "end", "close_orphans", "log_model"}
_NICE = 10  # while a run trains, the writer yields the CPU to the trainer
SEND_SECONDS = 1.0  # metrics go to the child in one message about this often
_JOIN_SECONDS = 120  # the child's last flush may retry a struggling store for a while


class TrackerProcess:
    """A Tracker whose calls run in a spawned child process (see the module docstring)."""

    def __init__(self, uri: str, experiment: str) -> None:
        # a plain child process over a socket pair: no multiprocessing start method to inherit
        # (a joblib/loky worker's would not resolve in the child), nothing of the parent shared
        ours, theirs = socket.socketpair()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "expkit.tracking.process", str(theirs.fileno()), uri,
             experiment],
            pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
        )  # fmt: skip
        theirs.close()
        self._conn = Connection(ours.detach())
        self._pending: list[tuple[dict[str, float], int]] = []
        self._last_send = time.monotonic()
        self.uri = uri
        self.run_id: str | None = None
        self._closed = False
        atexit.register(self._abandon)

    # -- the Tracker interface ---------------------------------------------------------------
    def start(self, run_name: str | None, tags: dict[str, str]) -> None:
        self.run_id = self._call("start", run_name, tags)

    def resume(self, run_id: str | None, tags: dict[str, str], step: int) -> None:
        self.run_id = self._call("resume", run_id, tags, step)

    def log_params(self, params: dict[str, object]) -> None:
        self._send("log_params", params)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Kept here and sent about once a second: one message, not one per step."""
        self._pending.append(({k: float(v) for k, v in metrics.items()}, int(step)))
        if time.monotonic() - self._last_send >= SEND_SECONDS:
            self._send_pending()

    def _send_pending(self) -> None:
        self._last_send = time.monotonic()
        if self._pending:
            batch, self._pending = self._pending, []
            self._send("log_many", batch)

    def set_tags(self, tags: dict[str, str]) -> None:
        self._send("set_tags", tags)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._send("log_artifact", str(path), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        self._send("log_text", text, artifact_file)

    def log_model(self, model_dir: Path, info: dict, step: int) -> None:
        self._call("log_model", model_dir, info, step)

    def log_datasets(self, datasets: list[dict[str, object]]) -> None:
        self._send("log_datasets", datasets)

    def flush(self) -> None:
        self._call("flush")

    def try_flush(self) -> None:
        self._call("try_flush")

    def open(self) -> None:
        """Open the store now (without waiting), ahead of the first call that needs it."""
        self._send("open")

    def close_orphans(self, run_dir: str) -> None:
        self._call("close_orphans", run_dir)

    @property
    def spill_path(self) -> Path | None:
        return None

    @spill_path.setter
    def spill_path(self, path: Path | None) -> None:
        self._send("set_spill_path", None if path is None else str(path))

    def end(self, status: str = "FINISHED") -> None:
        """End the run (if one was opened) with `status`, and the child with it."""
        if self._closed:
            return
        try:
            self._call("end", status)
        finally:
            self._shut()

    # -- the plumbing -------------------------------------------------------------------------
    def _send(self, name: str, *args: Any) -> None:
        """A call that does not answer; the child's pending log messages are passed on."""
        self._post(name, *args)
        self._drain()

    def _post(self, name: str, *args: Any) -> None:
        if self._closed:
            raise RuntimeError("the tracker process has ended")
        self._conn.send((name, args))

    def _call(self, name: str, *args: Any) -> Any:
        """A call that answers: its log messages, then its reply (or its exception)."""
        self._send_pending()  # the metrics logged before it go first
        self._post(name, *args)
        while True:
            try:
                kind, *payload = self._conn.recv()
            except EOFError:
                self._shut()
                code = self._proc.returncode
                raise RuntimeError(f"the tracker process ended (exit {code})") from None
            if kind == "log":
                log.log(*payload)
                continue
            ok, value = payload
            if ok:
                return value
            raise value

    def _drain(self) -> None:
        """Forward the child's log messages (its warnings about the store) to our log."""
        while self._conn.poll():
            kind, *payload = self._conn.recv()
            if kind == "log":
                log.log(*payload)

    def _shut(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._conn.close()
        try:
            self._proc.wait(_JOIN_SECONDS)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()

    def _abandon(self) -> None:
        """At exit without `end` (should not happen): the child gets EOF, sends what it has."""
        self._shut()


class _PipeLog(logging.Handler):
    """In the child: log records go to the parent, which logs them as its own."""

    def __init__(self, send: Any) -> None:
        super().__init__(logging.INFO)
        self.send = send

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):  # the parent is gone: nothing to tell
            self.send(("log", record.levelno, self.format(record)))


def _serve(conn: Any, uri: str, experiment: str) -> None:
    """The child: a reader thread takes calls off the pipe at once (the parent never blocks on
    a full pipe while the store is slow); this thread runs them in order on an MLflowTracker."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    send_lock = threading.Lock()

    def send(message: Any) -> None:
        with send_lock:
            conn.send(message)

    expkit_log = logging.getLogger("expkit")
    expkit_log.addHandler(_PipeLog(send))
    expkit_log.setLevel(logging.INFO)
    expkit_log.propagate = False  # the parent prints them
    calls: queue.SimpleQueue = queue.SimpleQueue()

    def read() -> None:
        while True:
            try:
                calls.put(conn.recv())
            except (EOFError, OSError):
                calls.put(None)  # the parent is gone
                return

    threading.Thread(target=read, daemon=True).start()
    from expkit.tracking.mlflow_writer import MLflowTracker
    from expkit.tracking.store import bound_http_retries

    bound_http_retries()  # before mlflow reads them: a server that is gone costs seconds
    # mlflow is imported at once (the slow part, overlapping the parent's work); the store is
    # opened at the first call, which the parent makes only once its checks have passed, so a
    # config error touches no store (and a server that is down fails the run before it opens)
    import mlflow.entities
    import mlflow.tracking  # noqa: F401

    tracker: Any = None
    setup_error: BaseException | None = None
    deferred: BaseException | None = None
    while True:
        call = calls.get()
        if call is not None and tracker is None and setup_error is None and call[0] != "end":
            try:
                tracker = MLflowTracker(uri, experiment)
            except BaseException as exc:  # told to the parent at its first call that answers
                setup_error = exc
        if call is None:  # the parent died: keep what was logged, leave the run as it is
            if tracker is not None:
                with contextlib.suppress(Exception):
                    tracker.flush()
            return
        name, args = call
        try:
            if setup_error is not None and name != "end":
                raise setup_error
            if deferred is not None and name in _ANSWERED and name != "end":
                error, deferred = deferred, None
                raise error
            if name == "set_spill_path":
                if tracker is not None:
                    tracker.spill_path = None if args[0] is None else Path(args[0])
                value = None
            elif name == "end":
                if tracker is not None:
                    tracker.end(*args)
                if deferred is not None:  # the status is set; now the error is told
                    raise deferred
                value = None
            elif name == "open":
                value = None
            elif name == "log_many":
                for metrics, step in args[0]:
                    tracker.log_metrics(metrics, step)
                value = None
            else:
                value = getattr(tracker, name)(*args)
                if name in ("start", "resume"):
                    value = tracker.run_id
            reply = ("reply", True, value)
            if name in ("start", "resume"):
                with contextlib.suppress(OSError):
                    os.nice(_NICE)  # set-up done: from now on the trainer comes first
        except BaseException as exc:
            reply = ("reply", False, _picklable(exc))
            # the set-up error is told at every call that answers: not again at the end
            if name not in _ANSWERED and deferred is None and exc is not setup_error:
                deferred = exc
        if name in _ANSWERED:
            send(reply)
        if name == "end":
            return


def _picklable(exc: BaseException) -> BaseException:
    """The exception itself when it crosses the pipe intact, else its type and message."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")


if __name__ == "__main__":  # the child: python -m expkit.tracking.process FD URI EXPERIMENT
    _serve(Connection(int(sys.argv[1])), sys.argv[2], sys.argv[3])
    # everything is written (the run ended, or what a dead parent had sent is flushed): the
    # interpreter's teardown of mlflow and SQLAlchemy is skipped, as it takes seconds (many
    # more at nice 10 on a busy machine) while the parent waits for this process to exit
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
