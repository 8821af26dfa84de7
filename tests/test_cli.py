"""The real `expkit` command, end to end, on the tiny model with a real SQLite MLflow store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import SHARED_DATA, run_cli

pytestmark = pytest.mark.slow


def _client(workdir: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{workdir}/runs/mlflow.db")


def _runs(workdir: Path) -> list:
    client = _client(workdir)
    exp = client.get_experiment_by_name("expkit")
    return client.search_runs([exp.experiment_id]) if exp else []


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One real run of the tiny model on the demo data, shared by the assertions below."""
    workdir = tmp_path_factory.mktemp("work")
    proc = run_cli(
        "model=tiny",
        "trainer.max_steps=12",
        "trainer.log_every=2",
        "trainer.eval_every=5",
        "trainer.batch_size=8",
        "optimizer.lr=1e-3",
        cwd=workdir,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir, proc


def test_run_is_finished_with_the_resolved_config_as_params(tiny_run):
    workdir, _ = tiny_run
    (run,) = _runs(workdir)
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["optimizer.lr"] == "0.001"
    assert params["trainer.max_steps"] == "12"
    assert params["seed"] == "42"
    assert params["model.init"] == "random"
    assert params["data.name"] == "demo"
    assert params["tracking.uri"] == f"sqlite:///{workdir}/runs/mlflow.db"
    assert int(params["derived.trainable_params"]) == int(params["derived.total_params"]) > 0
    assert params["derived.num_labels"] == "4"
    tags = run.data.tags
    assert tags["expkit.backend"] == "manual"
    assert "model=tiny" in tags["expkit.overrides"]
    assert tags["versions.torch"]


def test_metrics_are_logged_at_the_contract_steps(tiny_run):
    workdir, _ = tiny_run
    (run,) = _runs(workdir)
    client = _client(workdir)
    for name in ("loss", "learning_rate", "grad_norm"):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, name)]
        assert steps == [2, 4, 6, 8, 10, 12], name
    for name in ("eval_loss", "eval_accuracy", "eval_precision", "eval_recall", "eval_f1"):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, name)]
        assert steps == [5, 10, 12], name
    for name in ("test_loss", "test_accuracy", "test_precision", "test_recall", "test_f1"):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, name)]
        assert steps == [12], name
    final = run.data.metrics
    assert final["train_runtime"] > 0 and final["train_samples_per_second"] > 0
    assert 0.0 <= final["test_accuracy"] <= 1.0
    # linear schedule without warmup: the rate each logged step used, 1e-3 * (12 - (s - 1)) / 12
    # (as the Trainer logs it), reaching 0 only after the last step
    lrs = [m.value for m in client.get_metric_history(run.info.run_id, "learning_rate")]
    assert lrs == pytest.approx([1e-3 * (13 - s) / 12 for s in (2, 4, 6, 8, 10, 12)])


def test_artifacts_hold_config_overrides_metrics_and_a_loadable_model(
    tiny_run, tmp_path, monkeypatch
):
    import mlflow.artifacts

    workdir, _ = tiny_run
    # runs:/ finds the run's LoggedModel through the default store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{workdir}/runs/mlflow.db")
    (run,) = _runs(workdir)
    client = _client(workdir)
    top = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "overrides.yaml", "metrics.json", "expkit.log"} <= top
    local = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path)))
    metrics = json.loads((local / "metrics.json").read_text())
    assert metrics["test_accuracy"] == pytest.approx(run.data.metrics["test_accuracy"])
    assert "model=tiny" in (local / "overrides.yaml").read_text()
    # the model is the run's MLflow Model (runs:/RUN_ID/model); its save_pretrained files are
    # the pyfunc model's data
    served = Path(
        mlflow.artifacts.download_artifacts(
            f"runs:/{run.info.run_id}/model", dst_path=str(tmp_path / "m"),
            tracking_uri=f"sqlite:///{workdir}/runs/mlflow.db",
        )
    )  # fmt: skip
    assert (served / "MLmodel").is_file()
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(served / "data" / "model")
    AutoTokenizer.from_pretrained(served / "data" / "model")
    assert set(model.config.id2label.values()) == {"food", "sports", "technology", "travel"}
    assert not (workdir / "mlruns").exists()  # artifacts live beside the store, not in the cwd


def test_run_dir_is_under_runs_in_the_launch_dir(tiny_run):
    workdir, proc = tiny_run
    (run,) = _runs(workdir)
    run_dir = Path(run.data.tags["expkit.run_dir"])
    assert run_dir.is_relative_to(workdir / "runs")
    assert (run_dir / "model" / "config.json").is_file()
    assert "test_accuracy" in proc.stdout  # the final summary table


def test_pairs_from_mrpc_train_with_a_frozen_encoder(tmp_path):
    if not (SHARED_DATA / "mrpc").is_dir():
        pytest.skip("shared MRPC data not present")
    proc = run_cli(
        "model=tiny",
        "data=mrpc",
        f"data.path={SHARED_DATA / 'mrpc'}",
        "data.max_eval_samples=64",
        "freeze=base_model",
        "trainer.max_steps=3",
        "trainer.save_model=false",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = _runs(tmp_path)
    assert run.info.status == "FINISHED"
    assert run.data.params["derived.train_examples"] == "3668"
    assert run.data.params["derived.dev_examples"] == "64"
    assert int(run.data.params["derived.trainable_params"]) < int(
        run.data.params["derived.total_params"]
    )
    assert "eval_f1" in run.data.metrics and "test_f1" not in run.data.metrics


def test_tracking_none_runs_without_a_store(tmp_path):
    proc = run_cli(
        "model=tiny",
        "tracking=none",
        "trainer.max_steps=2",
        "trainer.save_model=false",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (tmp_path / "runs" / "mlflow.db").exists()
    assert list(tmp_path.glob("runs/*/*/metrics.json"))


def test_the_pretrained_default_learns_the_demo_set(tmp_path):
    """The main job's model and data (shortened): pretrained MiniLM gets far above chance (0.25)."""
    proc = run_cli(
        "trainer.max_steps=30",
        "optimizer.lr=1e-4",
        "trainer.log_every=5",
        "trainer.save_model=false",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = _runs(tmp_path)
    assert run.info.status == "FINISHED"
    assert run.data.params["model.init"] == "pretrained"
    assert run.data.params["data.name"] == "demo"
    assert run.data.metrics["test_accuracy"] >= 0.8
    losses = [m.value for m in _client(tmp_path).get_metric_history(run.info.run_id, "loss")]
    assert len(losses) == 6 and losses[-1] < losses[0]


def test_help_lists_every_group_and_the_composed_config(tmp_path):
    proc = run_cli("model=tiny", "trainer=hf", "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith("expkit: config-driven fine-tuning")
    assert "trainer: hf, manual" in out and "hparams_search: optuna_sst2" in out
    assert "expkit compare [SWEEP_OR_RUN_ID]" in out and "expkit rerun RUN_ID" in out
    assert "  init: random" in out and "  backend: hf" in out  # the overrides applied
    assert "hydra:" not in out
    bad = run_cli("model=nope", "--help", cwd=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.strip().startswith("expkit: config error: unknown option 'nope'")
