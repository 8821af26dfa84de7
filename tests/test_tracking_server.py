"""A shared `mlflow server` as the store (tracking.uri=http://...): a sweep recorded through its
REST API, artifacts through its proxy; and a server that is not there: one line, exit 2."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

from expkit.tracking import HTTP_RETRY_DEFAULTS, TrackingServerError, bound_http_retries
from expkit.tracking import check_server as probe
from tests.conftest import run_cli, sweep_runs

TINY = ["model=tiny", "trainer.max_steps=3", "trainer.log_every=1", "trainer.progress=false",
        "trainer.save_model=false"]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """`mlflow server` on a free port: a SQLite backend, artifacts proxied to a folder."""
    root = tmp_path_factory.mktemp("mlflow_server")
    port = _free_port()
    log = (root / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{root}/server.db",
         "--artifacts-destination", str(root / "artifacts"), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,  # its own process group
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        while not _healthy(url):
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited: {(root / 'server.log').read_text()[-3000:]}")
            threading.Event().wait(0.5)
        yield url, root
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and its workers
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def server_sweep(mlflow_server, tmp_path_factory):
    url, root = mlflow_server
    workdir = tmp_path_factory.mktemp("server_sweep")
    proc = run_cli("-m", *TINY, "seed=1,2", f"tracking.uri={url}", cwd=workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return url, root, workdir


@pytest.mark.slow
def test_a_sweep_is_recorded_on_the_server(server_sweep):
    url, _root, workdir = server_sweep
    client, (parent,), children = sweep_runs(url)
    assert parent.info.status == "FINISHED"
    assert len(children) == 2 and {r.info.status for r in children} == {"FINISHED"}
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert sorted(r.info.run_name for r in children) == ["seed=1", "seed=2"]
    for run in children:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "loss")]
        assert steps == [1, 2, 3]
        assert {"eval_loss", "eval_accuracy", "eval_f1", "test_accuracy", "train_runtime"} <= set(
            run.data.metrics
        )
        params = run.data.params
        assert params["tracking.uri"] == url and params["model.arch.num_hidden_layers"] == "2"
        assert params["seed"] == run.info.run_name.removeprefix("seed=")
    assert not (workdir / "runs" / "mlflow.db").exists()  # the server is the only store


@pytest.mark.slow
def test_artifacts_go_through_the_servers_proxy(server_sweep, tmp_path):
    url, root, _workdir = server_sweep
    client, (parent,), children = sweep_runs(url)
    summary = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert summary == {"summary.csv", "summary.md", "summary.png"}
    for run in children:
        run_id = run.info.run_id
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # proxied, not a local path
        names = {a.path for a in client.list_artifacts(run_id)}
        assert {"config.yaml", "overrides.yaml", "metrics.json", "expkit.log"} <= names
        local = Path(client.download_artifacts(run_id, "", str(tmp_path / run_id)))
        metrics = json.loads((local / "metrics.json").read_text())
        assert metrics["eval_accuracy"] == pytest.approx(run.data.metrics["eval_accuracy"])
        run_dir = Path(run.data.tags["expkit.run_dir"])
        assert (local / "config.yaml").read_text() == (run_dir / "config.yaml").read_text()
        # the files are where the server keeps them
        assert list((root / "artifacts").rglob(f"{run_id}/artifacts/metrics.json"))


@pytest.mark.slow
@pytest.mark.parametrize("reason", ["connection refused", "host name not found"])
@pytest.mark.parametrize("sweep", [False, True], ids=["run", "sweep"])
def test_a_server_that_is_not_there_is_one_line_and_exit_2(reason, sweep, tmp_path):
    uri = (
        f"http://127.0.0.1:{_free_port()}"  # a free port: nothing listens there
        if reason == "connection refused"
        else "http://nowhere.invalid:5000"  # .invalid never resolves (RFC 2606)
    )
    args = ["-m", *TINY, "seed=1,2"] if sweep else [*TINY, "hydra.run.dir=runs/one"]
    proc = run_cli(*args, f"tracking.uri={uri}", cwd=tmp_path)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(
        f"expkit: error: cannot reach the MLflow tracking server at {uri} ({reason}); "
    )
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not list(tmp_path.rglob("mlflow_run.json"))  # no run was opened
    assert not (tmp_path / "runs" / "mlflow.db").exists()
    if sweep:  # stopped before any job: no sweep dir
        assert not (tmp_path / "runs" / "multirun").exists()
    else:  # stopped before the model was built
        log = (tmp_path / "runs" / "one" / "expkit.log").read_text()
        assert "parameters trainable" not in log and "run dir:" not in proc.stdout


class _Answer(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def _web_server(status: int):
    handler = type("Handler", (_Answer,), {"status": status})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def test_the_probe_takes_any_mlflow_like_answer_and_names_what_failed():
    for status in (200, 401):  # up (an auth proxy's 401 too: MLflow reports the credentials)
        with _web_server(status) as url:
            probe(url)
    with _web_server(404) as url, pytest.raises(TrackingServerError) as err:
        probe(url)
    assert f"at {url} (/health answered 404 Not Found: not an MLflow server?)" in str(err.value)
    port = _free_port()
    with pytest.raises(TrackingServerError, match=r"\(connection refused\)"):
        probe(f"http://127.0.0.1:{port}")
    probe("sqlite:///nowhere/mlflow.db")  # not a server: nothing to probe


def test_the_retry_bounds_give_way_to_the_users_own(monkeypatch):
    for name in HTTP_RETRY_DEFAULTS:  # unset now, and unset again after the test
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "7")
    bound_http_retries()
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "7"
    for name in ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        assert os.environ[name] == HTTP_RETRY_DEFAULTS[name]
