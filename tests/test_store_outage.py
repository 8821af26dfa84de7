"""A real `mlflow server` that goes away mid-run: training finishes, nothing is lost."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import run_cli

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server(root: Path, port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{root}/server.db",
         "--artifacts-destination", str(root / "artifacts"), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120  # a bound on the start, not a timing assertion
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
            return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("mlflow server did not start")


def _stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, 9)  # the server and its workers, at once
    proc.wait(timeout=30)


def test_the_server_dies_mid_run_and_the_unsent_part_is_replayed(tmp_path):
    root, port = tmp_path / "server", _free_port()
    root.mkdir()
    uri = f"http://127.0.0.1:{port}"
    server = _server(root, port)
    work = tmp_path / "work"
    work.mkdir()
    run = subprocess.Popen(
        [sys.executable, "-m", "expkit", "model=tiny", "trainer.max_steps=600",
         "trainer.log_every=1", "trainer.eval_every=200", "trainer.progress=false",
         f"tracking.uri={uri}", "hydra.run.dir=runs/outage"],
        cwd=work, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    client = MlflowClient(uri)
    try:
        deadline = time.monotonic() + 240
        run_id = None
        while time.monotonic() < deadline and run.poll() is None and run_id is None:
            exp = client.get_experiment_by_name("expkit")
            runs = client.search_runs([exp.experiment_id]) if exp else []
            if runs and client.get_metric_history(runs[0].info.run_id, "loss"):
                run_id = runs[0].info.run_id
            time.sleep(0.3)
        assert run_id is not None, "the run never logged a loss"
        _stop(server)  # the store goes away mid-run
        stdout, stderr = run.communicate(timeout=600)
    finally:
        if run.poll() is None:
            run.kill()
        if server.poll() is None:
            _stop(server)
    assert run.returncode == 0, stderr[-4000:]  # training was not killed
    output = stdout + stderr  # the run's log goes to the console and to expkit.log
    assert "the tracking store" in output and "expkit replay" in output
    unsent = work / "runs" / "outage" / "mlflow_unsent.json"
    record = json.loads(unsent.read_text())
    assert record["run_id"] == run_id and record["status"] == "FINISHED"
    assert record["metrics"] and record["artifacts"] and len(record["models"]) == 1
    assert (work / "runs" / "outage" / "model" / "model.safetensors").exists()

    server = _server(root, port)  # the store is back
    try:
        replayed = run_cli("replay", str(unsent), cwd=work)
        assert replayed.returncode == 0, replayed.stderr[-3000:]
        back = client.get_run(run_id)
        assert back.info.status == "FINISHED"
        steps = [m.step for m in client.get_metric_history(run_id, "loss")]
        assert steps == list(range(1, 601))  # every step once: nothing lost, nothing twice
        assert {"eval_accuracy", "test_accuracy", "train_runtime"} <= set(back.data.metrics)
        (output,) = client.get_run(run_id).outputs.model_outputs  # the model, logged on replay
        files = {a.path for a in client.list_logged_model_artifacts(output.model_id)}
        assert "MLmodel" in files
    finally:
        _stop(server)
