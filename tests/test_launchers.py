"""The submitit launcher presets: a SLURM preset that keeps the plugin's typed schema, and a real
sweep through submitit's local executor, recorded as one parent run with its children."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from expkit.cli import config_dir
from expkit.config.schema import register_configs
from tests.conftest import run_cli

TINY = ["model=tiny", "trainer.max_steps=3", "trainer.progress=false", "trainer.save_model=false"]


def _hydra_config(*overrides: str):
    register_configs()
    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir())):
        return compose("config", overrides=list(overrides), return_hydra_config=True).hydra


def test_the_slurm_preset_extends_the_plugins_schema():
    launcher = _hydra_config(
        "hydra/launcher=submitit_slurm", "hydra.launcher.partition=gpu", "hydra.launcher.qos=high",
        "hydra.launcher.additional_parameters.mail-type=END",  # any sbatch option, without "+"
    ).launcher  # fmt: skip
    assert OmegaConf.get_type(launcher).__name__ == "SlurmQueueConf"
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.partition, launcher.qos) == ("gpu", "high")
    assert launcher.additional_parameters == {"mail-type": "END"}
    assert (launcher.gpus_per_node, launcher.tasks_per_node) == (1, 1)
    assert launcher.array_parallelism == 16
    # submitit's files go inside the sweep dir, one folder per SLURM job
    assert OmegaConf.to_container(launcher)["submitit_folder"] == "${hydra.sweep.dir}/.submitit/%j"


def test_the_local_preset_runs_on_the_cpu_with_the_plugins_schema():
    launcher = _hydra_config("hydra/launcher=submitit_local").launcher
    assert OmegaConf.get_type(launcher).__name__ == "LocalQueueConf"
    assert launcher._target_.endswith("submitit_launcher.LocalLauncher")
    assert launcher.gpus_per_node == 0 and launcher.tasks_per_node == 1


@pytest.mark.parametrize(
    ("launcher", "override", "message"),
    [
        ("submitit_slurm", "hydra.launcher.partiton=gpu",
         "expkit: config error: unknown config key 'hydra.launcher.partiton' (valid keys: "),
        ("submitit_slurm", "hydra.launcher.mem_gb=lots",
         "expkit: config error: invalid value for 'hydra.launcher.mem_gb': "),
        ("submitit_local", "hydra.launcher.partition=gpu",  # a SLURM key: not for local jobs
         "expkit: config error: unknown config key 'hydra.launcher.partition' (valid keys: "),
    ],
)  # fmt: skip
def test_a_wrong_launcher_key_is_a_one_line_config_error(launcher, override, message, tmp_path):
    proc = run_cli("-m", f"hydra/launcher={launcher}", override, "seed=1,2", cwd=tmp_path)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(message), line
    assert not (tmp_path / "runs").exists()  # nothing launched, nothing recorded


@pytest.mark.slow
def test_a_sweep_through_submitit_local_is_one_parent_with_its_children(tmp_path):
    from mlflow.tracking import MlflowClient

    proc = run_cli("-m", "hydra/launcher=submitit_local", *TINY, "trainer.log_every=1",
                   "seed=1,2", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path}/runs/mlflow.db")
    exp = client.get_experiment_by_name("expkit")
    runs = client.search_runs([exp.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("expkit.role") == "sweep"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["expkit.launcher"].endswith("submitit_launcher.LocalLauncher")
    assert len(children) == 2 and {r.info.status for r in children} == {"FINISHED"}
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert sorted(r.info.run_name for r in children) == ["seed=1", "seed=2"]
    for run in children:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "loss")]
        assert steps == [1, 2, 3]
        assert {"eval_accuracy", "eval_f1", "test_accuracy", "train_runtime"} <= set(
            run.data.metrics
        )
        # each job ran in a process of its own, its output in submitit's folder of the sweep
        run_dir = Path(run.data.tags["expkit.run_dir"])
        assert json.loads((run_dir / "mlflow_run.json").read_text())["run_id"] == run.info.run_id
    sweep_dir = Path(parent.data.tags["expkit.sweep_dir"])
    outputs = [p.read_text() for p in (sweep_dir / ".submitit").glob("*/*_log.out")]
    assert len(outputs) == 2
    for run in children:
        assert sum(f"(mlflow run {run.info.run_id})" in text for text in outputs) == 1
    assert len({r.data.tags["expkit.pid"] for r in children}) == 2


@pytest.mark.slow
def test_a_job_of_two_submitit_tasks_is_one_distributed_run(tmp_path):
    """tasks_per_node=2: each job's two tasks train one run together (gloo here, nccl on GPUs)."""
    from mlflow.tracking import MlflowClient

    proc = run_cli("-m", "hydra/launcher=submitit_local", "hydra.launcher.tasks_per_node=2",
                   *TINY, "trainer.log_every=1", "seed=1,2", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path}/runs/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("expkit").experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 2 and {r.info.status for r in children} == {"FINISHED"}
    for run in children:  # one run per job, written by rank 0, every step once
        assert run.data.params["derived.world_size"] == "2"
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "loss")]
        assert steps == [1, 2, 3]
