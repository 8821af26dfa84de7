"""MLflowTracker on a real SQLite store: what MLflow recorded, read back via MlflowClient."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from expkit.errors import ConfigError
from expkit.tracking import (
    TRUNCATED,
    MLflowTracker,
    NullTracker,
    default_store_uri,
    flatten,
    make_tracker,
    store_uri,
)
from expkit.tracking.process import TrackerProcess

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite store for the module: creating one runs migrations (seconds)."""
    root = tmp_path_factory.mktemp("store")
    MlflowClient(tracking_uri=f"sqlite:///{root}/mlflow.db").search_experiments()
    return root


@pytest.fixture
def uri(store: Path) -> str:
    return f"sqlite:///{store}/mlflow.db"


@pytest.fixture
def client(uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=uri)


@pytest.fixture
def tracker(uri: str, request: pytest.FixtureRequest) -> MLflowTracker:
    """A started run in an experiment of its own (named after the test), so tests stay apart."""
    t = MLflowTracker(uri, request.node.name)
    t.start("run", {"purpose": "test"})
    return t


def test_flatten_nested_dicts_lists_none() -> None:
    cfg = {
        "optimizer": {"lr": 1e-5, "no_decay": ["bias", "x"], "betas": {"b1": 0.9}},
        "seed": 3,
        "name": None,
        "empty": {},
    }
    assert flatten(cfg) == {
        "optimizer.lr": 1e-5,
        "optimizer.no_decay": "['bias', 'x']",
        "optimizer.betas.b1": 0.9,
        "seed": 3,
        "name": "None",
        "empty": "{}",
    }
    assert flatten({"a": 1}, prefix="cfg.") == {"cfg.a": 1}


def test_default_store_uri_is_absolute_and_creates_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert default_store_uri(".") == f"sqlite:///{tmp_path.resolve()}/runs/mlflow.db"
    assert (tmp_path / "runs").is_dir()


def test_store_uri_prefers_the_config_then_mlflows_variable_then_the_launch_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert store_uri(None, tmp_path) == f"sqlite:///{tmp_path.resolve()}/runs/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert store_uri(None, tmp_path) == "http://127.0.0.1:5999"
    assert store_uri("sqlite:////x/y.db", tmp_path) == "sqlite:////x/y.db"


def test_params_batched_truncated_and_cleaned(tracker: MLflowTracker, client: MlflowClient) -> None:
    params: dict[str, object] = {f"group{i % 7}.sub.key{i}": i * 0.5 for i in range(250)}
    params["long.value"] = "x" * 10_000
    params["odd key+[0]"] = True  # characters MLflow rejects in names
    tracker.log_params(params)
    recorded = client.get_run(tracker.run_id).data.params
    assert len(recorded) == 252
    assert all(recorded[f"group{i % 7}.sub.key{i}"] == str(i * 0.5) for i in range(250))
    long = recorded["long.value"]
    assert len(long) <= 6000 and long.startswith("x" * 5000) and long.endswith(TRUNCATED)
    assert recorded["odd key__0_"] == "True"


def test_long_tag_truncated(tracker: MLflowTracker, client: MlflowClient) -> None:
    tracker.set_tags({"note": "y" * 9000, "short": "ok"})
    tags = client.get_run(tracker.run_id).data.tags
    assert len(tags["note"]) == 5000 and tags["note"].endswith(TRUNCATED)
    assert tags["short"] == "ok" and tags["purpose"] == "test"


def test_metrics_history_complete_and_run_finished(
    tracker: MLflowTracker, client: MlflowClient
) -> None:
    for step in range(1, 51):
        tracker.log_metrics({"loss": 1.0 / step, "acc": step / 100}, step=step)
    tracker.end()
    for name, value in (("loss", lambda s: 1.0 / s), ("acc", lambda s: s / 100)):
        history = sorted(client.get_metric_history(tracker.run_id, name), key=lambda m: m.step)
        assert [m.step for m in history] == list(range(1, 51))
        assert [m.value for m in history] == pytest.approx([value(s) for s in range(1, 51)])
    assert client.get_run(tracker.run_id).info.status == "FINISHED"


def test_non_finite_metrics_are_kept(tracker: MLflowTracker, client: MlflowClient) -> None:
    tracker.log_metrics({"loss": float("nan"), "grad_norm": float("inf")}, step=1)
    tracker.end()
    [loss] = client.get_metric_history(tracker.run_id, "loss")
    [grad] = client.get_metric_history(tracker.run_id, "grad_norm")
    assert math.isnan(loss.value)
    assert grad.value > 1e300  # +inf (SQL stores may keep it as the largest float)


def test_metrics_sent_when_buffer_full_or_stale(
    tracker: MLflowTracker, client: MlflowClient
) -> None:
    for step in range(500):  # 1000 entries: the buffer is full and goes out before end()
        tracker.log_metrics({"a": step, "b": step}, step=step)
    assert len(client.get_metric_history(tracker.run_id, "a")) == 500
    tracker._last_flush -= 10  # as if the last flush were 10 s ago
    tracker.log_metrics({"c": 1.0}, step=1)
    assert len(client.get_metric_history(tracker.run_id, "c")) == 1


@pytest.mark.parametrize("status", ["FAILED", "KILLED"])
def test_end_status_recorded_and_idempotent(
    status: str, tracker: MLflowTracker, client: MlflowClient
) -> None:
    tracker.log_metrics({"loss": 0.5}, step=1)
    tracker.end(status)
    tracker.end("FINISHED")  # a second end changes nothing
    run = client.get_run(tracker.run_id)
    assert run.info.status == status
    assert run.data.metrics == {"loss": 0.5}


def test_end_terminates_even_when_flush_fails(
    tracker: MLflowTracker, client: MlflowClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    tracker.log_metrics({"loss": 0.5}, step=1)

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("store down")

    monkeypatch.setattr(tracker.client.unwrapped, "log_batch", broken)
    with pytest.raises(RuntimeError, match="store down"):
        tracker.end("KILLED")  # no spill path: the error is raised, after the status is set
    assert client.get_run(tracker.run_id).info.status == "KILLED"


def test_a_store_failing_mid_run_never_stops_training_and_is_replayed(
    tracker: MLflowTracker, client: MlflowClient, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    from expkit.tracking.replay import replay

    tracker.spill_path = tmp_path / "mlflow_unsent.json"
    tracker.log_metrics({"loss": 1.0}, step=1)
    tracker.flush()  # the store takes step 1

    def down(*args: object, **kwargs: object) -> None:
        raise ConnectionError("connection refused")

    raw = tracker.client.unwrapped
    for name in ("log_batch", "log_artifact", "set_terminated"):
        monkeypatch.setattr(raw, name, down)
    for step in range(2, 6):
        tracker._last_flush -= 10  # every call is due to flush, and every flush fails
        tracker.log_metrics({"loss": 1.0 / step}, step=step)  # no exception reaches training
    artifact = tmp_path / "metrics.json"
    artifact.write_text("{}")
    tracker.log_artifact(artifact)
    tracker.set_tags({"expkit.note": "late"})
    tracker.end("FINISHED")  # nothing raised: saved for replay instead
    assert "the tracking store" in caplog.text and "expkit replay" in caplog.text
    assert client.get_run(tracker.run_id).info.status == "RUNNING"
    monkeypatch.undo()  # the store is back

    print(replay(tracker.spill_path))
    run = client.get_run(tracker.run_id)
    assert [m.step for m in client.get_metric_history(tracker.run_id, "loss")] == [1, 2, 3, 4, 5]
    assert run.info.status == "FINISHED" and run.data.tags["expkit.note"] == "late"
    assert "metrics.json" in {a.path for a in client.list_artifacts(tracker.run_id)}
    assert not tracker.spill_path.exists()
    assert (tmp_path / "mlflow_unsent.replayed.json").exists()


def test_artifacts_beside_db_and_no_mlruns_in_cwd(
    store: Path, uri: str, client: MlflowClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    src = tmp_path / "src"
    (src / "model" / "sub").mkdir(parents=True)
    (src / "config.yaml").write_text("seed: 1\n")
    (src / "model" / "weights.bin").write_bytes(b"\0" * 10)
    (src / "model" / "sub" / "tok.json").write_text("{}")

    t = MLflowTracker(uri, "artifacts-experiment")
    t.start(None, {})
    t.log_artifact(src / "config.yaml")
    t.log_artifact(str(src / "model"), "model")
    t.log_text("hello", "notes/readme.txt")
    t.end()

    top = {f.path for f in client.list_artifacts(t.run_id)}
    assert top == {"config.yaml", "model", "notes"}
    assert {f.path for f in client.list_artifacts(t.run_id, "model")} == {
        "model/weights.bin",
        "model/sub",
    }
    assert [f.path for f in client.list_artifacts(t.run_id, "model/sub")] == ["model/sub/tok.json"]
    assert not (cwd / "mlruns").exists() and list(cwd.iterdir()) == []
    files = {p.name for p in (store / "mlartifacts").rglob("*") if p.is_file()}
    assert {"config.yaml", "weights.bin", "tok.json", "readme.txt"} <= files


def test_two_trackers_share_experiment(uri: str, client: MlflowClient) -> None:
    first = MLflowTracker(uri, "shared")
    second = MLflowTracker(uri, "shared")
    assert first.experiment_id == second.experiment_id
    first.start("a", {})
    second.start("b", {})
    runs = client.search_runs([first.experiment_id])
    assert {r.info.run_name for r in runs} == {"a", "b"}


def test_experiment_created_by_someone_else_meanwhile(
    uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    existing = MLflowTracker(uri, "race")
    real = MlflowClient.get_experiment_by_name
    calls = []

    def not_yet(self: MlflowClient, name: str):  # the first look-up misses, as in a race
        calls.append(name)
        return None if len(calls) == 1 else real(self, name)

    monkeypatch.setattr(MlflowClient, "get_experiment_by_name", not_yet)
    assert MLflowTracker(uri, "race").experiment_id == existing.experiment_id
    assert len(calls) == 2


def test_deleted_experiment_is_restored(uri: str, client: MlflowClient) -> None:
    first = MLflowTracker(uri, "deleted")
    client.delete_experiment(first.experiment_id)
    again = MLflowTracker(uri, "deleted")
    again.start("after-delete", {})
    again.end()
    assert again.experiment_id == first.experiment_id
    assert client.get_run(again.run_id).info.status == "FINISHED"


def test_make_tracker_registry(uri: str) -> None:
    none = make_tracker("none", None, "x")
    assert isinstance(none, NullTracker) and none.run_id is None
    none.start("r", {})
    none.log_metrics({"a": 1.0}, step=1)
    none.end()
    assert none.run_id is None
    mlflow = make_tracker("mlflow", uri, "via-registry")  # written from a child process
    assert isinstance(mlflow, TrackerProcess)
    mlflow.end()
    with pytest.raises(ConfigError) as err:
        make_tracker("wandb", None, "x")
    message = str(err.value)
    assert "\n" not in message and "wandb" in message
    assert "mlflow" in message and "none" in message


def test_import_does_not_load_mlflow() -> None:
    code = "import expkit.tracking, sys; assert 'mlflow' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)
