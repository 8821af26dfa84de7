"""The run orchestration in process: a failure mid-training leaves a FAILED run that says why."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from omegaconf import open_dict

import expkit.backends as backends

pytestmark = pytest.mark.slow


def _broken_backend(job: backends.TrainJob) -> dict[str, float]:
    job.tracker.log_metrics({"loss": 0.5}, step=1)
    raise RuntimeError("the loop broke at step 2")


def test_an_exception_in_the_backend_ends_the_run_failed_with_its_error(
    make_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from expkit.run import run

    monkeypatch.setitem(backends.BACKENDS, "broken", f"{__name__}:_broken_backend")
    cfg = make_cfg("tracking=mlflow", "trainer.max_steps=3")
    with open_dict(cfg):
        cfg.trainer.backend = "broken"
    with pytest.raises(RuntimeError, match="the loop broke"):
        run(cfg, run_dir=tmp_path / "run", launch_dir=tmp_path, overrides=["model=tiny"])
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/runs/mlflow.db")
    (run_info,) = client.search_runs([client.get_experiment_by_name("expkit").experiment_id])
    assert run_info.info.status == "FAILED"
    assert run_info.data.tags["expkit.error"] == "RuntimeError: the loop broke at step 2"
    assert run_info.data.metrics["loss"] == 0.5  # what was logged before the failure is kept
    assert run_info.data.params["trainer.max_steps"] == "3"
    artifacts = {a.path for a in client.list_artifacts(run_info.info.run_id)}
    assert {"config.yaml", "overrides.yaml"} <= artifacts
