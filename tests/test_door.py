"""Where a run writes, checked at the door: its run dir, a sweep's dir and the tracking store; a
run dir that holds an earlier run is refused, not overwritten; secrets stay out of the failure
report Hydra prints."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from expkit.config.validate import validate
from expkit.errors import ConfigError
from tests.conftest import SHARED_DATA, compose_config, run_cli
from tests.test_errors import _assert_no_run_recorded, _assert_one_line_error, good_data  # noqa: F401

TINY = [
    "model=tiny", "data=sst2", f"data.path={SHARED_DATA / 'sst2'}", "data.max_train_samples=64",
    "data.max_eval_samples=16", "trainer.max_steps=2", "trainer.progress=false",
]  # fmt: skip
SECRET = "S3cretPass"


def _tracking_cfg(*overrides: str):
    return compose_config(["model=tiny", "tracking=mlflow", *overrides])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("where", "needles"),
    [
        ("/proc/expkit-run", ["hydra.run.dir=/proc/expkit-run cannot be written", "/proc"]),
        ("{tmp}/a_file/run", ["hydra.run.dir={tmp}/a_file/run cannot be written",
                              "{tmp}/a_file is a file, not a folder"]),
    ],
)  # fmt: skip
def test_a_run_dir_that_cannot_be_written_is_one_line(tmp_path, where, needles):
    if where.startswith("/proc") and not sys.platform.startswith("linux"):
        pytest.skip("/proc is Linux's")
    (tmp_path / "a_file").write_text("in the way\n")
    where = where.format(tmp=tmp_path)
    proc = run_cli(*TINY, f"hydra.run.dir={where}", cwd=tmp_path)
    _assert_one_line_error(proc, *(n.format(tmp=tmp_path) for n in needles))
    _assert_no_run_recorded(tmp_path)
    assert not (tmp_path / "runs").exists()  # the check comes before the store is set up
    assert (tmp_path / "a_file").read_text() == "in the way\n"


@pytest.mark.slow
def test_a_sweep_dir_that_cannot_be_written_stops_the_sweep_before_any_job(tmp_path):
    (tmp_path / "a_file").write_text("")
    proc = run_cli("-m", *TINY, f"hydra.sweep.dir={tmp_path}/a_file/sweep", "seed=1,2",
                   cwd=tmp_path)  # fmt: skip
    _assert_one_line_error(proc, "hydra.sweep.dir=", "a_file is a file, not a folder")
    _assert_no_run_recorded(tmp_path)


def _no_driver(module: str) -> bool:
    return importlib.util.find_spec(module) is None


@pytest.mark.slow
@pytest.mark.parametrize(
    ("uri", "needles"),
    [
        ("sqlite:///{tmp}/notes.txt", ["{tmp}/notes.txt is not a SQLite database"]),
        ("sqlite:///{tmp}/missing/mlflow.db", ["the folder {tmp}/missing does not exist"]),
        ("sqlite:///{tmp}/a_dir", ["{tmp}/a_dir is a folder, not a SQLite file"]),
        ("{tmp}/a_dir", ["file store", "tracking.uri=sqlite:///{tmp}/a_dir/mlflow.db"]),
        ("file://{tmp}/a_dir", ["file store", "tracking.uri=sqlite:///{tmp}/a_dir/mlflow.db"]),
        pytest.param(
            f"postgresql+psycopg2://bob:{SECRET}@localhost/mlflow",
            ["postgresql+psycopg2://bob:REDACTED@localhost/mlflow", "driver 'psycopg2'",
             "pip install 'psycopg2-binary'"],
            marks=pytest.mark.skipif(not _no_driver("psycopg2"), reason="psycopg2 installed"),
        ),
        pytest.param(
            f"mysql+pymysql://bob:{SECRET}@localhost/mlflow",
            ["driver 'pymysql'", "pip install 'PyMySQL'"],
            marks=pytest.mark.skipif(not _no_driver("pymysql"), reason="pymysql installed"),
        ),
    ],
)  # fmt: skip
def test_a_tracking_store_that_cannot_open_is_one_line(tmp_path, uri, needles):
    (tmp_path / "notes.txt").write_text("not a database\n")
    (tmp_path / "a_dir").mkdir()
    uri = uri.format(tmp=tmp_path)
    proc = run_cli(*TINY, f"tracking.uri={uri}", cwd=tmp_path)
    _assert_one_line_error(proc, f"tracking.uri={uri.replace(SECRET, 'REDACTED')}",
                           *(n.format(tmp=tmp_path) for n in needles))  # fmt: skip
    assert SECRET not in proc.stdout + proc.stderr
    assert (tmp_path / "notes.txt").read_text() == "not a database\n"
    assert list((tmp_path / "a_dir").iterdir()) == []
    assert not (tmp_path / "runs").exists()  # no run dir, no store, nothing half-written


@pytest.mark.slow
@pytest.mark.parametrize("name", ["", "'  '"])
def test_an_empty_experiment_name_is_one_line_at_once(tmp_path, name):
    proc = run_cli(*TINY, f"tracking.experiment={name}", cwd=tmp_path)
    _assert_one_line_error(proc, "tracking.experiment=", "is empty", "tracking.experiment=expkit")
    _assert_no_run_recorded(tmp_path)
    assert not (tmp_path / "runs").exists()


def test_the_store_named_by_the_environment_is_checked_under_its_name(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", str(tmp_path))
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    with pytest.raises(ConfigError) as info:
        validate(_tracking_cfg())
    assert f"MLFLOW_TRACKING_URI={tmp_path} names a folder for MLflow's file store" in str(
        info.value
    )
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow's own opt-in is honoured
    validate(_tracking_cfg())
    validate(_tracking_cfg(f"tracking.uri=sqlite:///{tmp_path}/new.db"))  # tracking.uri wins


def test_a_good_sqlite_store_and_the_default_store_pass(tmp_path, monkeypatch):
    import sqlite3

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    db = tmp_path / "existing.db"
    sqlite3.connect(db).execute("create table t (x)").connection.close()
    validate(_tracking_cfg(f"tracking.uri=sqlite:///{db}"))
    validate(_tracking_cfg(f"tracking.uri=sqlite:///{tmp_path}/new.db"))
    monkeypatch.chdir(tmp_path)
    validate(_tracking_cfg())  # the default store: runs/ is created when the run starts
    assert not (tmp_path / "runs").exists()
    (tmp_path / "runs").write_text("")  # a file where the default store's folder goes
    with pytest.raises(ConfigError, match=r"the default tracking store .* is a file, not a folder"):
        validate(_tracking_cfg())


def _records(run_dir: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(run_dir)): p.read_bytes()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file() and p.name != "expkit.log"
    }


@pytest.mark.slow
def test_a_second_run_in_the_same_run_dir_is_refused_and_the_first_is_kept(
    tmp_path,
    good_data,  # noqa: F811
):
    from mlflow.tracking import MlflowClient

    local = ["model=tiny", "data=local", f"data.path={good_data}", "trainer.max_steps=2",
             "trainer.progress=false", "hydra.run.dir=runs/same"]  # fmt: skip
    run_dir = tmp_path / "runs" / "same"
    # a run stopped by bad data leaves only Hydra's .hydra/ and the log: the dir is still free
    bad = run_cli(*local, "data.label_field=topic", cwd=tmp_path)
    _assert_one_line_error(bad, "has no label column 'topic'")
    assert sorted(p.name for p in run_dir.iterdir()) == [".hydra", "expkit.log"]

    first = run_cli(*local, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    kept = _records(run_dir)
    assert {"metrics.json", "mlflow_run.json", "model/config.json"} <= set(kept)
    first_id = json.loads(kept["mlflow_run.json"])["run_id"]

    second = run_cli(*local, "seed=7", cwd=tmp_path)
    _assert_one_line_error(second, "runs/same already holds a run", "metrics.json", "model",
                           "resume=auto", "fresh dir")  # fmt: skip
    assert _records(run_dir) == kept  # the first run's files, byte for byte
    client = MlflowClient(f"sqlite:///{tmp_path}/runs/mlflow.db")
    [only] = client.search_runs([client.get_experiment_by_name("expkit").experiment_id])
    assert only.info.run_id == first_id and only.info.status == "FINISHED"
    assert only.data.tags["expkit.run_dir"] == str(run_dir)


@pytest.mark.slow
def test_a_sweep_into_the_dir_of_an_earlier_sweep_is_refused_before_any_job(tmp_path):
    sweep_dir = tmp_path / "runs" / "sweep"
    for job in ("0", "1"):  # what an earlier sweep's jobs left
        (sweep_dir / job).mkdir(parents=True)
        (sweep_dir / job / "metrics.json").write_text('{"eval_accuracy": 0.5}')
    proc = run_cli("-m", *TINY, "hydra.sweep.dir=runs/sweep", "seed=1,2", cwd=tmp_path)
    _assert_one_line_error(proc, f"the sweep dir {sweep_dir} already holds the runs of a sweep",
                           "jobs 0, 1", "resume=auto")  # fmt: skip
    _assert_no_run_recorded(tmp_path)
    assert (sweep_dir / "0" / "metrics.json").read_text() == '{"eval_accuracy": 0.5}'
    assert sorted(p.name for p in sweep_dir.iterdir()) == ["0", "1"]


def test_a_run_dir_is_free_with_only_hydras_records_or_when_resuming(tmp_path):
    from expkit.config.validate import check_run_dir

    (tmp_path / ".hydra").mkdir()
    (tmp_path / "expkit.log").write_text("")
    check_run_dir(tmp_path, None)
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(ConfigError, match=r"already holds a run \(checkpoints\)"):
        check_run_dir(tmp_path, None)
    check_run_dir(tmp_path, "auto")  # resume=auto continues it (or starts fresh if none)
    check_run_dir(tmp_path / "new" / "dir", None)


@pytest.mark.slow
def test_hydras_failure_report_keeps_secrets_out(tmp_path):
    """A real error after the run opened: Hydra's banner of overrides and its traceback."""
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / ".cache").write_text("")  # the tokenizer cache cannot be made
    name = f"postgresql://bob:{SECRET}@db.internal/mlflow"
    proc = run_cli(*TINY, "hydra.run.dir=runs/leak", f"tracking.run_name={name}", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Error executing job with overrides: [" in proc.stderr
    assert "tracking.run_name=postgresql://bob:REDACTED@db.internal/mlflow" in proc.stderr
    assert "NotADirectoryError" in proc.stderr  # Hydra's traceback is still there
    assert SECRET not in proc.stdout + proc.stderr
    for path in (tmp_path / "runs" / "leak").rglob("*"):
        if path.is_file():
            assert SECRET not in path.read_text(errors="replace"), path
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/runs/mlflow.db")
    [failed] = client.search_runs([client.get_experiment_by_name("expkit").experiment_id])
    assert failed.info.status == "FAILED"


def test_the_job_banner_is_redacted_in_process(capsys):
    from hydra.core.utils import JobReturn, JobStatus

    from expkit.cli import _install_error_reporter

    _install_error_reporter()
    failed = JobReturn(overrides=[f"+x.hub_token={SECRET}", "optimizer.lr=1e-4"])
    failed.status = JobStatus.FAILED
    failed.return_value = RuntimeError("boom")
    with pytest.raises(RuntimeError, match="boom"):
        _ = failed.return_value
    err = capsys.readouterr().err
    assert err.strip() == (
        "Error executing job with overrides: ['+x.hub_token=REDACTED', 'optimizer.lr=1e-4']"
    )
    done = JobReturn(overrides=[], status=JobStatus.COMPLETED)
    done.return_value = 0.5
    assert done.return_value == 0.5
