"""Sweeps: one parent run with named children, parallel jobs, failures, Optuna, compare, rerun."""

from __future__ import annotations

import csv
import io
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from expkit.overrides import value_string as hydra_value
from expkit.sweeps.summary import Row, Sweep, ranked
from expkit.sweeps.sweep import job_key
from tests.conftest import run_cli, sweep_runs

TINY = ["model=tiny", "trainer.max_steps=3", "trainer.progress=false", "trainer.save_model=false"]


def _client(workdir: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{workdir}/runs/mlflow.db")


def _runs(workdir: Path):
    return sweep_runs(f"sqlite:///{workdir}/runs/mlflow.db")


@pytest.fixture(scope="module")
def basic_sweep(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("sweep")
    proc = run_cli(  # the models are saved: the best one is registered
        "-m", *TINY[:3], "optimizer.lr=1e-3,3e-3", "freeze=none,base_model",
        "tracking.register_best=tiny_best", cwd=workdir,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir, proc


@pytest.mark.slow
def test_a_sweep_is_one_parent_with_named_children(basic_sweep):
    workdir, _proc = basic_sweep
    _, (parent,), children = _runs(workdir)
    tags = parent.data.tags
    assert parent.info.status == "FINISHED"
    assert tags["expkit.launcher"].endswith("BasicLauncher")
    assert tags["expkit.sweeper"].endswith("BasicSweeper")
    assert parent.data.params["overrides.optimizer.lr"] == "1e-3,3e-3"
    assert parent.data.params["overrides.freeze"] == "none,base_model"
    assert len(children) == 4
    assert {r.info.status for r in children} == {"FINISHED"}
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert {r.data.tags["expkit.sweep_id"] for r in children} == {tags["expkit.sweep_id"]}
    assert sorted(r.data.tags["expkit.job_num"] for r in children) == ["0", "1", "2", "3"]
    names = {r.info.run_name for r in children}
    assert names == {
        f"lr={lr} freeze={f}" for lr in ("0.001", "0.003") for f in ("none", "base_model")
    }
    for run in children:  # Hydra's job dir and MLflow point at each other
        run_dir = Path(run.data.tags["expkit.run_dir"])
        assert run_dir.parent == Path(tags["expkit.sweep_dir"])
        pointer = json.loads((run_dir / "mlflow_run.json").read_text())
        assert pointer["run_id"] == run.info.run_id
    sweep_file = json.loads((Path(tags["expkit.sweep_dir"]) / "expkit_sweep.json").read_text())
    assert sweep_file["parent_run_id"] == parent.info.run_id


@pytest.mark.slow
def test_the_summary_is_printed_and_logged_on_the_parent(basic_sweep, tmp_path):
    workdir, proc = basic_sweep
    client, (parent,), _children = _runs(workdir)
    assert "rank  job  status" in proc.stdout
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert artifacts == {"summary.csv", "summary.md", "summary.png"}
    local = Path(client.download_artifacts(parent.info.run_id, "", str(tmp_path)))
    rows = list(csv.DictReader(io.StringIO((local / "summary.csv").read_text())))
    assert len(rows) == 4 and {r["status"] for r in rows} == {"FINISHED"}
    values = [float(r["eval_accuracy"]) for r in rows]
    assert values == sorted(values, reverse=True)  # best first
    assert {"optimizer.lr", "freeze", "eval_f1", "test_accuracy", "train_runtime"} <= set(rows[0])
    assert (local / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| rank | job |" in (local / "summary.md").read_text()
    best = parent.data.tags["expkit.best_run_id"]
    assert rows[0]["run_id"] == best
    assert parent.data.params["best.optimizer.lr"] in ("0.001", "0.003")
    (version,) = client.search_model_versions("name='tiny_best'")
    assert version.run_id == best and "eval_accuracy=" in version.description
    # the registered version is the best run's MLflow Model: pyfunc loads it by name
    code = (
        "import json, sys, mlflow; mlflow.set_tracking_uri(sys.argv[1]); "
        "print(json.dumps(mlflow.pyfunc.load_model('models:/tiny_best/1').predict(['fine'])))"
    )
    uri = f"sqlite:///{workdir}/runs/mlflow.db"
    loaded = subprocess.run([sys.executable, "-c", code, uri], capture_output=True, text=True)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    (record,) = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert record["text"] == "fine" and record["label"] in record["scores"]


@pytest.mark.slow
def test_compare_reads_the_sweep_from_the_store(basic_sweep, tmp_path):
    workdir, _ = basic_sweep
    _, (parent,), children = _runs(workdir)
    uri = f"sqlite:///{workdir}/runs/mlflow.db"
    plot = tmp_path / "curves.png"
    proc = run_cli("compare", "--uri", uri, "--plot", str(plot), cwd=tmp_path)  # elsewhere
    assert proc.returncode == 0, proc.stderr
    assert parent.info.run_id in proc.stdout and "objective eval_accuracy (maximize)" in proc.stdout
    assert proc.stdout.count("FINISHED") == 5  # the sweep's line and its 4 children
    assert plot.read_bytes()[:4] == b"\x89PNG"
    by_child = run_cli("compare", children[0].info.run_id, "--uri", uri, cwd=tmp_path)
    assert by_child.returncode == 0 and parent.info.run_id in by_child.stdout
    missing = run_cli("compare", "nope", "--uri", uri, cwd=tmp_path)
    assert missing.returncode == 2
    assert missing.stderr.strip() == (
        "expkit compare: error: no run and no sweep with the id 'nope' in this store"
    )


@pytest.mark.slow
def test_parallel_jobs_on_one_sqlite_store_lose_nothing(tmp_path):
    proc = run_cli(
        "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=4", "model=tiny",
        "trainer.max_steps=10", "trainer.log_every=1", "trainer.progress=false",
        "trainer.save_model=false", "seed=1,2,3,4,5,6,7,8", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "database is locked" not in proc.stderr
    client, (parent,), children = _runs(tmp_path)
    assert parent.data.tags["expkit.launcher"].endswith("JoblibLauncher")
    assert parent.info.status == "FINISHED"
    assert len(children) == 8 and {r.info.status for r in children} == {"FINISHED"}
    assert sorted(r.info.run_name for r in children) == [f"seed={i}" for i in range(1, 9)]
    for run in children:
        for name in ("loss", "learning_rate", "grad_norm"):
            steps = [m.step for m in client.get_metric_history(run.info.run_id, name)]
            assert steps == list(range(1, 11)), (run.info.run_name, name)
        assert {"eval_f1", "test_accuracy", "train_runtime"} <= set(run.data.metrics)
    assert len({r.data.tags["expkit.run_dir"] for r in children}) == 8


@pytest.mark.slow
def test_failed_jobs_are_recorded_named_and_the_rest_run(tmp_path):
    args = ["-m", *TINY, "optimizer.lr=1e-3,-1,1e10"]
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("expkit:")]
    assert errors[0] == "expkit: error: 2 of 3 jobs of the sweep failed:"
    assert errors[1].startswith("expkit: job #1 (lr=-1) failed: optimizer.lr=-1.0 must be positive")
    assert errors[2].startswith("expkit: job #2 (lr=10000000000.0) failed: TrainingDiverged: ")
    assert "loss is nan at step" in errors[2]
    _, (parent,), children = _runs(tmp_path)
    assert parent.info.status == "FAILED"
    status = {r.data.tags["expkit.job_num"]: r for r in children}
    assert status["0"].info.status == "FINISHED"
    assert status["1"].info.status == status["2"].info.status == "FAILED"
    assert "must be positive" in status["1"].data.tags["expkit.error"]  # failed before it opened
    assert "nan" in status["2"].data.tags["expkit.error"]

    # the same command with resume=auto: the finished job is skipped, under the same parent
    again = run_cli(*args, "resume=auto", cwd=tmp_path)
    assert again.returncode == 1
    assert re.search(r"job #0 \(.*optimizer.lr=0.001.*\): skipped, FINISHED in run", again.stdout)
    _, parents, children = _runs(tmp_path)
    assert [p.info.run_id for p in parents] == [parent.info.run_id]
    assert sum(r.data.tags["expkit.job_num"] == "0" for r in children) == 1
    assert sum(r.data.tags["expkit.job_num"] == "2" for r in children) == 2


@pytest.mark.slow
def test_an_optuna_sweep_records_trials_and_the_best_params(tmp_path):
    proc = run_cli(
        "-m", *TINY, "hydra/sweeper=optuna", "hydra.sweeper.n_trials=3",
        "hydra.sweeper.sampler.seed=7", "hydra.sweeper.direction=minimize",
        "objective.metric=eval_loss", "objective.direction=minimize",
        "optimizer.lr=tag(log, interval(1e-4, 1e-2))", "freeze=choice(none, base_model)",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, (parent,), children = _runs(tmp_path)
    assert parent.data.tags["expkit.sweeper"].endswith("OptunaSweeper")
    assert parent.data.params["overrides.optimizer.lr"] == "tag(log, interval(1e-4, 1e-2))"
    assert len(children) == 3 and {r.info.status for r in children} == {"FINISHED"}
    best = min(children, key=lambda r: r.data.metrics["eval_loss"])
    assert parent.data.tags["expkit.best_run_id"] == best.info.run_id
    results = yaml.safe_load(
        (Path(parent.data.tags["expkit.sweep_dir"]) / "optimization_results.yaml").read_text()
    )
    assert results["best_value"] == pytest.approx(best.data.metrics["eval_loss"])
    assert float(parent.data.params["best.optimizer.lr"]) == pytest.approx(
        results["best_params"]["optimizer.lr"]
    )
    assert parent.data.params["best.freeze"] == results["best_params"]["freeze"]


@pytest.mark.slow
def test_rerun_reproduces_a_recorded_run(tmp_path):
    first = run_cli(*TINY, "optimizer=sgd", "optimizer.lr=0.05", "trainer.log_every=1",
                    "hydra.run.dir=runs/source", cwd=tmp_path)  # fmt: skip
    assert first.returncode == 0, first.stderr[-3000:]
    source = json.loads((tmp_path / "runs/source/mlflow_run.json").read_text())["run_id"]
    again = run_cli("rerun", source, "hydra.run.dir=runs/again", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    changed = run_cli("rerun", source, "trainer.max_steps=4", "hydra.run.dir=runs/longer",
                      cwd=tmp_path)  # fmt: skip
    assert changed.returncode == 0, changed.stderr[-3000:]
    client = _client(tmp_path)
    ids = {d: json.loads((tmp_path / f"runs/{d}/mlflow_run.json").read_text())["run_id"]
           for d in ("source", "again", "longer")}  # fmt: skip
    src, rerun, longer = (client.get_run(ids[d]) for d in ("source", "again", "longer"))
    assert rerun.data.tags["expkit.rerun_of"] == longer.data.tags["expkit.rerun_of"] == source
    a, b = src.data.params, rerun.data.params
    assert {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)} == {"tracking.run_name"}
    assert rerun.info.run_name.startswith("rerun of ")

    def losses(run):
        return [m.value for m in client.get_metric_history(run.info.run_id, "loss")]

    assert losses(rerun) == losses(src)  # the same seed and data: the same numbers
    timings = {"train_runtime", "train_samples_per_second"}
    for name in set(src.data.metrics) - timings:
        assert rerun.data.metrics[name] == src.data.metrics[name], name
    assert longer.data.params["trainer.max_steps"] == "4" and len(losses(longer)) == 4


@pytest.mark.slow
def test_runs_started_in_the_same_second_get_their_own_dirs(tmp_path):
    cmd = [sys.executable, "-m", "expkit", *TINY, "tracking=none", "trainer.max_steps=1"]
    procs = [subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(2)]  # fmt: skip
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
    dirs = [p.parent for p in (tmp_path / "runs").rglob("config.yaml") if p.parent.name != ".hydra"]
    assert len(dirs) == 2 and dirs[0] != dirs[1]


def test_override_values_survive_hydras_grammar():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for value in [
        None,
        True,
        3,
        2.5e-05,
        "it's a \\ path",
        "ends in \\",
        "a \\'quote",
        "42",
        [1, "a b"],
        {"x": 1},
        {},
        math.inf,
    ]:
        (parsed,) = parser.parse_overrides([f"++k={hydra_value(value)}"])
        assert parsed.value() == value


def test_job_keys_ignore_order_and_resume():
    assert job_key(["a=1", "b=2"]) == job_key(["b=2", "a=1", "resume=auto"])
    assert job_key(["a=1"]) != job_key(["a=2"])


def test_ranking_follows_the_direction_and_puts_failures_last():
    def row(job, status, value):
        metrics = {} if value is None else {"eval_loss": value}
        return Row(run_id=str(job), job=job, name=str(job), status=status, overrides={},
                   metrics=metrics)  # fmt: skip

    rows = [row(0, "FINISHED", 0.5), row(1, "FAILED", None), row(2, "FINISHED", 0.2)]
    assert [r.job for r in ranked(Sweep(None, rows, "eval_loss", "minimize"))] == [2, 0, 1]
    assert [r.job for r in ranked(Sweep(None, rows, "eval_loss", "maximize"))] == [0, 2, 1]
