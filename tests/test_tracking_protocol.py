"""Every tracker has the whole Tracker protocol, so expkit.run calls each method on any of them
(tracking=none, mlflow, a TensorBoard sink around either), with nothing found by hasattr."""

from __future__ import annotations

import inspect
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from expkit.tracking import (
    MLflowTracker,
    NullTracker,
    TensorBoardSink,
    Tracker,
    ensure_registered_model,
    file_store_path,
    find_run,
    mlflow_client,
)
from expkit.tracking.process import TrackerProcess
from tests.conftest import ROOT, run_cli
from tests.test_hf import _write_sentiment
from tests.test_resume_cli import COMMON, _runs_of, _start, _wait_for

METHODS = sorted(
    name for name, value in vars(Tracker).items() if inspect.isfunction(value) and name[0] != "_"
)
ATTRIBUTES = sorted(Tracker.__annotations__)


def test_the_protocol_has_the_calls_run_makes() -> None:
    assert {"open", "close_orphans", "start", "resume", "end", "log_metrics"} <= set(METHODS)
    assert ATTRIBUTES == ["run_id", "spill_path"]


@pytest.fixture
def trackers(tmp_path: Path):
    """One of each implementation, on a real SQLite store; ended afterwards."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    made = {
        "NullTracker": NullTracker(),
        "MLflowTracker": MLflowTracker(uri, "protocol"),
        "TrackerProcess": TrackerProcess(uri, "protocol"),
    }
    made["TensorBoardSink"] = TensorBoardSink(NullTracker(), tmp_path / "tensorboard")
    yield made
    for tracker in made.values():
        tracker.end()


def test_every_tracker_has_every_protocol_method_and_attribute(trackers) -> None:
    for kind, tracker in trackers.items():
        for name in ATTRIBUTES:
            assert hasattr(tracker, name), f"{kind} has no {name}"
        for name in METHODS:
            method = getattr(tracker, name, None)
            assert callable(method), f"{kind} has no {name}()"
            want = list(inspect.signature(getattr(Tracker, name)).parameters)[1:]  # no self
            assert list(inspect.signature(method).parameters) == want, f"{kind}.{name}"


class _Inner(NullTracker):
    """A NullTracker that notes the calls it gets."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def open(self) -> None:
        self.calls.append(("open",))

    def close_orphans(self, run_dir: str) -> None:
        self.calls.append(("close_orphans", run_dir))


def test_the_tensorboard_sink_forwards_the_optional_calls(tmp_path: Path) -> None:
    inner = _Inner()
    sink = TensorBoardSink(inner, tmp_path / "tensorboard")
    sink.open()
    sink.spill_path = tmp_path / "mlflow_unsent.json"
    sink.close_orphans("runs/x")
    sink.end()
    assert inner.calls == [("open",), ("close_orphans", "runs/x")]
    assert inner.spill_path == tmp_path / "mlflow_unsent.json"
    assert sink.spill_path == inner.spill_path


def test_the_store_helpers_other_modules_use_instead_of_mlflow(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = MLflowTracker(uri, "helpers")
    tracker.start("r", {})
    tracker.end()
    client = mlflow_client(uri)
    assert find_run(client, tracker.run_id).info.run_name == "r"
    assert find_run(client, "0123abcd") is None
    ensure_registered_model(client, "best")
    ensure_registered_model(client, "best")  # already there: kept
    assert [m.name for m in client.search_registered_models()] == ["best"]
    assert file_store_path(f"file://{tmp_path}/mlruns") == tmp_path / "mlruns"
    assert file_store_path(str(tmp_path / "mlruns")) == tmp_path / "mlruns"


@pytest.mark.slow
def test_with_tensorboard_a_run_left_running_by_a_dead_process_is_closed(tmp_path: Path) -> None:
    """The orphan case of test_resume_cli with tracking.tensorboard=true on both runs."""
    data = _write_sentiment(tmp_path / "data")
    run_dir = tmp_path / "runs" / "orphan"
    args = [*COMMON, f"data.path={data}", f"hydra.run.dir={run_dir}", "tracking.tensorboard=true"]
    proc = _start([*args, "trainer.max_steps=100000", "trainer.save_every=0"], tmp_path)
    try:
        _wait_for(run_dir / "mlflow_run.json", proc)  # the run made the store: open it now
        client = MlflowClient(f"sqlite:///{tmp_path}/runs/mlflow.db")
        deadline = time.monotonic() + 300
        while not any(r.data.metrics.get("loss") for r in _runs_of(client, run_dir)):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        proc.kill()
        proc.communicate()
    [orphan] = _runs_of(client, run_dir)
    assert orphan.info.status == "RUNNING"
    fresh = run_cli(*args, "trainer.max_steps=5", "resume=auto", cwd=tmp_path)
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    output = fresh.stdout + fresh.stderr
    assert f"run {orphan.info.run_id}" in output and "which is gone" in output
    assert client.get_run(orphan.info.run_id).info.status == "KILLED"
    statuses = sorted(r.info.status for r in _runs_of(client, run_dir))
    assert statuses == ["FINISHED", "KILLED"]
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))  # the sink was on


def test_importing_the_package_loads_no_mlflow_and_no_torch() -> None:
    code = (
        "import sys, expkit.tracking, expkit.tracking.process, expkit.tracking.replay\n"
        "assert not {'mlflow', 'torch'} & set(sys.modules), sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)
