"""Ctrl-C and SIGTERM end the run KILLED (never left RUNNING), with the usual exit codes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow


def _wait_for_training(client: MlflowClient, proc: subprocess.Popen, limit: float):
    """The run, once it has logged a training loss (polled, bounded: not a timing assertion)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and proc.poll() is None:
        exp = client.get_experiment_by_name("expkit")
        runs = client.search_runs([exp.experiment_id]) if exp else []
        if runs and client.get_metric_history(runs[0].info.run_id, "loss"):
            return runs[0]
        time.sleep(0.5)
    return None


def _signal_mid_training(tmp_path, args: list[str], sig: int):
    """`expkit <args>` in tmp_path, sent `sig` once it logs a training loss: (proc, client, the
    run seen training, stderr)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "expkit", *args],
        cwd=tmp_path, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/runs/mlflow.db")
    try:
        running = _wait_for_training(client, proc, limit=240)
        assert running is not None, proc.communicate()[1][-2000:] if proc.poll() else "no run"
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc, client, running, stderr


@pytest.mark.parametrize("backend", ["manual", "hf"])
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_marks_the_run_killed(tmp_path, sig, code, backend):
    data = tmp_path / "data"
    data.mkdir()
    rows = "".join(f"sample text number {i}\t{i % 2}\n" for i in range(64))
    (data / "train.tsv").write_text("text\tlabel\n" + rows, encoding="utf-8")
    args = ["model=tiny", "data=local", f"data.path={data}", "trainer.max_steps=1000000",
            "trainer.log_every=1", "trainer.save_model=false", f"trainer={backend}"]  # fmt: skip
    proc, client, running, stderr = _signal_mid_training(tmp_path, args, sig)
    assert running.info.status == "RUNNING"
    assert proc.returncode == code, stderr[-6000:]
    assert "run marked KILLED" in stderr and "Traceback" not in stderr
    run = client.get_run(running.info.run_id)
    assert run.info.status == "KILLED"
    # every step logged before the signal was flushed, none missing
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "loss")]
    assert steps == list(range(1, len(steps) + 1))
    assert run.data.params["trainer.max_steps"] == "1000000"
    # the step in progress finished and was saved: the run can go on from there
    saved = sorted((tmp_path / "runs").glob("*/*/checkpoints/step_*"))
    assert [p.name for p in saved] == [f"step_{steps[-1]}"]
    assert f"checkpoint at step {steps[-1]} in {saved[0]}; continue with:" in stderr


def test_ctrl_c_in_a_sweep_marks_the_parent_and_the_job_killed(tmp_path):
    args = ["-m", "model=tiny", "trainer.max_steps=1000000", "trainer.log_every=1",
            "trainer.save_model=false", "seed=1,2"]  # fmt: skip
    proc, client, _, stderr = _signal_mid_training(tmp_path, args, signal.SIGINT)
    assert proc.returncode == 130, stderr[-4000:]
    runs = client.search_runs([client.get_experiment_by_name("expkit").experiment_id])
    by_role = {r.data.tags.get("expkit.role", "job"): r for r in runs}
    assert by_role["sweep"].info.status == "KILLED"  # never left RUNNING
    assert by_role["job"].info.status == "KILLED"
    assert len(runs) == 2  # the second job never started
