"""MLflow written from a child process: the same records, mlflow kept out of the trainer."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient

from expkit.tracking.process import TrackerProcess
from tests.conftest import ROOT


def test_a_run_written_through_the_child_process(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = TrackerProcess(uri, "expkit")
    tracker.spill_path = tmp_path / "unsent.json"
    tracker.start("child", {"a": "1"})
    tracker.log_params({"optimizer.lr": 0.1})
    for step in range(1, 6):
        tracker.log_metrics({"loss": 1.0 / step}, step=step)
    tracker.set_tags({"b": "2"})
    (tmp_path / "f.txt").write_text("x")
    tracker.log_artifact(tmp_path / "f.txt")
    tracker.end("FINISHED")
    client = MlflowClient(uri)
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "child"
    assert run.data.params == {"optimizer.lr": "0.1"}
    assert {"a": "1", "b": "2"}.items() <= run.data.tags.items()
    assert [m.step for m in client.get_metric_history(tracker.run_id, "loss")] == [1, 2, 3, 4, 5]
    assert [a.path for a in client.list_artifacts(tracker.run_id)] == ["f.txt"]
    assert tracker._proc.poll() is not None


def test_errors_cross_back_as_they_are(tmp_path):
    from expkit.errors import ConfigError

    tracker = TrackerProcess(f"sqlite:///{tmp_path}/mlflow.db", "expkit")
    with pytest.raises(ConfigError, match="is not in the store"):
        tracker.resume("0" * 32, {}, step=3)
    tracker.end("FAILED")
    assert tracker._proc.poll() is not None


def test_when_the_trainer_dies_the_child_sends_what_it_has(tmp_path):
    """SIGKILL of the training process: the values it logged reach the store, the run stays
    RUNNING (for resume=auto to take over), and the child does not linger."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    script = (
        "import sys, time\n"
        "from expkit.tracking.process import TrackerProcess\n"
        f"t = TrackerProcess({uri!r}, 'expkit')\n"
        "t.start('doomed', {})\n"
        "for s in range(1, 51): t.log_metrics({'loss': s}, step=s)\n"
        "t._send_pending()\n"  # in the child's hands, not yet in the store
        "print(t.run_id, t._proc.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True)  # fmt: skip
    run_id, child = proc.stdout.readline().split()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            os.kill(int(child), 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the tracker process outlived its trainer")
    client = MlflowClient(uri)
    assert client.get_run(run_id).info.status == "RUNNING"
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == list(range(1, 51))


@pytest.mark.slow
def test_the_training_process_never_imports_mlflow(tmp_path):
    probe = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('MLFLOW=' + str('mlflow' in sys.modules)))\n"
        "sys.argv = ['expkit', 'model=tiny', 'trainer.max_steps=3', 'trainer.progress=false']\n"
        "from expkit.cli import main\n"
        "main()\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "MLFLOW=False" in proc.stdout
    assert (tmp_path / "runs" / "mlflow.db").is_file()  # while the run was recorded
