"""Opening the MLflow store: a new SQLite file created by several processes at once, a store of
another MLflow version, and a sweep whose parent run cannot be opened."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from expkit.sweeps.sweep import SweepCallback
from tests.conftest import run_cli
from tests.test_errors import _assert_one_line_error

OPEN_AND_CREATE = """
import sys
from expkit.tracking import ensure_experiment, mlflow_client
uri = sys.argv[1]
client = mlflow_client(uri)
print(ensure_experiment(client, uri, "expkit"))
"""


@pytest.mark.parametrize("folder", ["exists", "missing"])
def test_processes_creating_one_new_store_at_once_all_open_it(tmp_path, folder):
    # MLflow alone: one of two processes creating a SQLite store fails ("table ... exists");
    # "missing": no process has made the store's folder yet (a test's client opening runs/ while
    # expkit starts), which MLflow creates itself
    root = tmp_path if folder == "exists" else tmp_path / "runs"
    uri = f"sqlite:///{root}/mlflow.db"
    procs = [
        subprocess.Popen([sys.executable, "-c", OPEN_AND_CREATE, uri], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]  # fmt: skip
    outcomes = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    assert [code for code, _, _ in outcomes] == [0, 0, 0], [err[-1500:] for _, _, err in outcomes]
    assert len({out.strip() for _, out, _ in outcomes}) == 1  # one experiment, seen by all
    assert list(root.iterdir()) == [root / "mlflow.db"]  # no lock file left behind


HOLDS_LOCK = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
except BlockingIOError:
    print("held")
else:
    print("free")
"""


def test_the_creation_lock_is_taken_on_a_folder_not_yet_made(tmp_path):
    from expkit.tracking.store import store_creation_lock

    folder = tmp_path / "new" / "runs"
    with store_creation_lock(f"sqlite:///{folder}/mlflow.db"):
        assert folder.is_dir()
        probe = subprocess.run([sys.executable, "-c", HOLDS_LOCK, str(folder)],
                               capture_output=True, text=True, check=True)  # fmt: skip
        assert probe.stdout.strip() == "held"
    probe = subprocess.run([sys.executable, "-c", HOLDS_LOCK, str(folder)],
                           capture_output=True, text=True, check=True)  # fmt: skip
    assert probe.stdout.strip() == "free"


def _store_of_another_version(root: Path) -> Path:
    """A real store whose schema version is one this MLflow does not know."""
    from mlflow.tracking import MlflowClient

    db = root / "runs" / "mlflow.db"
    db.parent.mkdir(parents=True)
    MlflowClient(f"sqlite:///{db}").search_experiments()
    with sqlite3.connect(db) as con:
        con.execute("UPDATE alembic_version SET version_num = '0123456789ab'")
    return db


def _runs_in(db: Path) -> int:
    with sqlite3.connect(db) as con:
        return con.execute("SELECT count(*) FROM runs").fetchone()[0]


@pytest.mark.slow
@pytest.mark.parametrize("sweep", [False, True], ids=["run", "sweep"])
def test_a_store_of_another_mlflow_version_is_one_line_naming_the_upgrade(tmp_path, sweep):
    db = _store_of_another_version(tmp_path)
    args = ["model=tiny", "trainer.max_steps=2", "trainer.save_model=false"]
    args = ["-m", *args, "seed=1,2"] if sweep else args
    proc = run_cli(*args, cwd=tmp_path)
    _assert_one_line_error(
        proc, "has the database schema of another MLflow version (0123456789ab;",
        f"mlflow db upgrade sqlite:///{db}", "or set tracking.uri to a new store",
    )  # fmt: skip
    assert _runs_in(db) == 0
    assert "Training" not in proc.stdout and "job #" not in proc.stderr


def test_a_sweep_parent_that_cannot_be_opened_launches_no_job(monkeypatch, capsys):
    # Hydra turns a callback's exception into a warning and would launch the jobs anyway
    callback = SweepCallback()
    aborted: list[str] = []

    def fails(config):
        callback.uri, callback.parent_id = "sqlite:///x.db", "abc"  # created, then a failure
        raise RuntimeError("disk I/O error\nmore detail")

    monkeypatch.setattr(callback, "_open_parent", fails)
    monkeypatch.setattr(callback, "abort", aborted.append)
    with pytest.raises(SystemExit) as stop:
        callback.on_multirun_start(config=None)
    assert stop.value.code == 2
    assert capsys.readouterr().err == (
        "expkit: error: could not open the sweep's parent run in sqlite:///x.db "
        "(RuntimeError: disk I/O error); no job was launched\n"
    )
    assert aborted == ["FAILED"]  # the parent created before the failure is not left RUNNING


def _schema(db: Path) -> tuple[set, list, list]:
    """The tables, indexes and columns of a SQLite store (each CREATE statement's lines as a
    set: MLflow's migrations write a table's constraints in no fixed order), its schema version
    and its experiments."""
    with sqlite3.connect(db) as con:
        statements = {
            (kind, name, frozenset(line.strip(" ,") for line in (sql or "").splitlines()))
            for kind, name, sql in con.execute("SELECT type, name, sql FROM sqlite_master")
        }
        version = con.execute("SELECT version_num FROM alembic_version").fetchall()
        experiments = con.execute(
            "SELECT experiment_id, name, artifact_location, lifecycle_stage FROM experiments"
        ).fetchall()
    return statements, version, experiments


def test_a_new_store_starts_as_a_copy_of_mlflows_own_tables(tmp_path, monkeypatch):
    """A new SQLite store is a copy of the blank database made once (MLflow's migrations take
    seconds, every new store): the same tables, indexes and schema version as a store MLflow
    creates itself, and MLflow's own Default experiment."""
    import mlflow.store.db.utils as db_utils
    from mlflow.tracking import MlflowClient

    from expkit.tracking.store import blank_database, mlflow_client

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    mlflow_client(f"sqlite:///{tmp_path}/first/mlflow.db")  # makes the blank database
    blank = blank_database()
    assert blank is not None and blank.parent == tmp_path / "cache" / "expkit"
    calls = []
    monkeypatch.setattr(db_utils, "_initialize_tables", lambda engine: calls.append(engine))
    seeded = tmp_path / "runs" / "mlflow.db"
    client = mlflow_client(f"sqlite:///{seeded}")
    assert calls == []  # no migration ran: the tables were there
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    MlflowClient(f"sqlite:///{tmp_path}/own.db").search_experiments()  # MLflow, from nothing
    assert _schema(seeded) == _schema(tmp_path / "own.db")
    experiment = client.create_experiment("expkit")
    run = client.create_run(experiment)
    client.log_metric(run.info.run_id, "loss", 0.5)
    assert client.get_run(run.info.run_id).data.metrics == {"loss": 0.5}
    assert sorted(p.name for p in seeded.parent.iterdir()) == ["mlflow.db"]  # no copy left


def test_an_existing_store_is_never_replaced_by_the_blank_one(tmp_path, monkeypatch):
    from expkit.tracking.store import mlflow_client, seed_new_database

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    db = tmp_path / "runs" / "mlflow.db"
    client = mlflow_client(f"sqlite:///{db}")
    experiment = client.create_experiment("kept")
    before = db.read_bytes()
    seed_new_database(f"sqlite:///{db}")
    assert db.read_bytes() == before
    assert mlflow_client(f"sqlite:///{db}").get_experiment(experiment).name == "kept"


def test_without_a_cache_folder_mlflow_creates_the_store_itself(tmp_path, monkeypatch):
    from expkit.tracking.store import blank_database, mlflow_client

    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "a-file"))  # no folder can be made
    assert blank_database() is None
    client = mlflow_client(f"sqlite:///{tmp_path}/runs/mlflow.db")
    assert [e.name for e in client.search_experiments()] == ["Default"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "runs"]
