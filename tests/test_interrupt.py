"""Ctrl-C and SIGTERM end the run KILLED (never left RUNNING), with the usual exit codes."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time

import pytest
from mlflow.tracking import MlflowClient

from expkit.tracking import mlflow_client
from tests.conftest import run_cli

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
    # expkit's client: it takes the store's creation lock, since expkit may be creating it now
    client = mlflow_client(f"sqlite:///{tmp_path}/runs/mlflow.db").unwrapped
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


def _signal_at_line(cwd, args: list[str], sig: int, line: str) -> tuple[subprocess.Popen, str, str]:
    """`expkit <args>` in cwd, sent `sig` once its log (on stdout) has `line`: (proc, stdout,
    stderr). Waits are bounded; nothing is timed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "expkit", *args],
        cwd=cwd, env={**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    seen: list[str] = []
    reached = threading.Event()

    def read() -> None:
        for text in proc.stdout:
            seen.append(text)
            if line in text:
                reached.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert reached.wait(timeout=300), "".join(seen)[-3000:]
        proc.send_signal(sig)
        stderr = proc.stderr.read()
        proc.wait(timeout=120)
        reader.join(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc, "".join(seen), stderr


@pytest.mark.parametrize(
    ("backend", "sig", "code"), [("manual", signal.SIGINT, 130), ("hf", signal.SIGTERM, 143)]
)
def test_a_signal_in_the_final_evaluation_keeps_the_trained_model(tmp_path, backend, sig, code):
    from expkit.checkpoint import verify

    data = tmp_path / "data"
    data.mkdir()
    rows = "".join(f"sample text number {i}\t{i % 2}\n" for i in range(64))
    (data / "train.tsv").write_text("text\tlabel\n" + rows, encoding="utf-8")
    # a test split long enough that the signal lands while it is evaluated
    rows = "".join(f"a longer test sentence, number {i}, goes on\t{i % 2}\n" for i in range(8000))
    (data / "test.tsv").write_text("text\tlabel\n" + rows, encoding="utf-8")
    run_dir = tmp_path / "run"
    args = ["model=tiny", "data=local", f"data.path={data}", "trainer.max_steps=3",
            "trainer.progress=false", f"trainer={backend}", f"hydra.run.dir={run_dir}"]  # fmt: skip
    started = "final evaluation on the test split"
    proc, stdout, stderr = _signal_at_line(tmp_path, args, sig, started)
    assert proc.returncode == code, stderr[-4000:]
    assert "run marked KILLED" in stderr and "Traceback" not in stderr
    assert "stopped during the final evaluation: saving the trained model (step 3)" in stdout
    # the trained steps are on disk, and said where, with the command that finishes the run
    saved = run_dir / "checkpoints" / "step_3"
    assert verify(saved)["step"] == 3
    assert not (run_dir / "model").exists()
    hint = f"expkit: checkpoint at step 3 in {saved}; continue with:\n"
    assert hint in stderr
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/runs/mlflow.db")
    (killed,) = client.search_runs([client.get_experiment_by_name("expkit").experiment_id])
    assert killed.info.status == "KILLED"
    assert "test_accuracy" not in killed.data.metrics

    # the printed command resumes it: only the final evaluation runs, in the same MLflow run
    command = shlex.split(stderr.split(hint, 1)[1].splitlines()[0])
    assert command[0] == "expkit"
    done = run_cli(*command[1:], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    run = client.get_run(killed.info.run_id)
    assert run.info.status == "FINISHED"
    assert 0.0 <= run.data.metrics["test_accuracy"] <= 1.0
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [3]
    assert (run_dir / "model" / "model.safetensors").is_file()
