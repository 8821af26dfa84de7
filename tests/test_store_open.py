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
