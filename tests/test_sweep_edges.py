"""Sweep edges: a sweep of no job, stores and files that are not there, every job failing, and
values escaped for Hydra's grammar recorded plain."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser

from expkit.sweeps.summary import Row, Sweep, _overrides, figure, split_overrides
from tests.conftest import run_cli, sweep_runs
from tests.test_errors import _assert_no_run_recorded, _assert_one_line_error

TINY = ["model=tiny", "trainer.max_steps=2", "trainer.progress=false", "trainer.save_model=false"]
VALID_UNSENT = "give a run dir's mlflow_unsent.json"


def _assert_subcommand_error(proc, command: str, *needles: str) -> None:
    """`expkit <command>` refused: exit 2, one line on stderr (so no traceback, no MLflow log)."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"expkit {command}: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]


def _store_with_a_sweep(tmp_path: Path) -> str:
    """A SQLite store holding one sweep parent and one finished child."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/store/mlflow.db"
    (tmp_path / "store").mkdir()
    client = MlflowClient(uri)
    exp = client.create_experiment("expkit")
    parent = client.create_run(exp, tags={"expkit.role": "sweep", "expkit.sweep_id": "s1"})
    child = client.create_run(
        exp,
        tags={
            "mlflow.parentRunId": parent.info.run_id,
            "expkit.job_num": "0",
            "expkit.overrides": "seed=1",
        },
    )
    client.log_metric(child.info.run_id, "eval_accuracy", 0.5, step=1)
    client.set_terminated(child.info.run_id, "FINISHED")
    client.set_terminated(parent.info.run_id, "FINISHED")
    return uri


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["seed=range(5,1)"], "the sweep launches no job: seed=range(5,1) yields no value"),
        (["freeze=glob(nothing*)"], "freeze=glob(nothing*) yields no value"),
        (
            ["hydra/sweeper=optuna", "hydra.sweeper.n_trials=0", "optimizer.lr=interval(1e-4,1)"],
            "the sweep launches no job: hydra.sweeper.n_trials=0 (it must be at least 1)",
        ),
    ],
)
def test_a_sweep_of_no_job_is_one_line_and_opens_no_parent(tmp_path, args, needle):
    proc = run_cli("-m", *TINY, *args, cwd=tmp_path)
    _assert_one_line_error(proc, needle)
    _assert_no_run_recorded(tmp_path)
    assert not (tmp_path / "runs").exists()  # no store, no sweep dir: nothing half-written


@pytest.mark.slow
@pytest.mark.parametrize("command", [["compare"], ["rerun", "0123abcd"]])
def test_compare_and_rerun_never_create_a_store_that_is_not_there(tmp_path, command):
    proc = run_cli(*command, "--uri", "sqlite:///missing/dir/x.db", cwd=tmp_path)
    missing = tmp_path / "missing" / "dir" / "x.db"
    _assert_subcommand_error(proc, command[0], f"no MLflow store at {missing}")
    assert not (tmp_path / "missing").exists()
    folder = run_cli(*command, "--uri", f"file://{tmp_path}/mlruns", cwd=tmp_path)
    _assert_subcommand_error(folder, command[0], f"no MLflow store at {tmp_path / 'mlruns'}")
    assert not (tmp_path / "mlruns").exists()


@pytest.mark.slow
def test_compare_writes_its_files_where_it_can_and_says_so_where_it_cannot(tmp_path):
    uri = _store_with_a_sweep(tmp_path)
    (tmp_path / "out").mkdir()
    for flag in ("--csv", "--plot"):
        proc = run_cli("compare", "--uri", uri, flag, "out", cwd=tmp_path)
        _assert_subcommand_error(proc, "compare", f"{flag} out is a directory; give a file")
    proc = run_cli("compare", "--uri", uri, "--csv", "new/dir/table.csv", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    header, row = (tmp_path / "new/dir/table.csv").read_text().splitlines()
    assert header.startswith("rank,job,run_name,status,eval_accuracy") and ",FINISHED,0.5," in row


def _unsent(folder: Path, **record: object) -> Path:
    path = folder / "mlflow_unsent.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    base = {"run_id": "0123abcd", "status": "FINISHED", "error": None}
    base.update({"metrics": [], "tags": {}, "artifacts": []})
    path.write_text(json.dumps({**base, **record}), encoding="utf-8")
    return path


@pytest.mark.slow
def test_replay_reads_only_a_run_dirs_unsent_file(tmp_path):
    no_uri = _unsent(tmp_path / "run1")
    proc = run_cli("replay", str(no_uri), cwd=tmp_path)
    _assert_subcommand_error(proc, "replay", str(no_uri), "no 'tracking_uri' key", VALID_UNSENT)
    assert no_uri.exists()  # not renamed: nothing was replayed

    not_json = tmp_path / "notes.txt"
    not_json.write_text("loss went down\n")
    for path, needle in [
        (not_json, "is not JSON"),
        (tmp_path / "gone.json", "No such file or directory"),
        (tmp_path / "run1", "is a directory"),
    ]:
        proc = run_cli("replay", str(path), cwd=tmp_path)
        _assert_subcommand_error(proc, "replay", str(path), needle, VALID_UNSENT)

    gone = _unsent(tmp_path / "run2", tracking_uri=f"sqlite:///{tmp_path}/gone/mlflow.db")
    proc = run_cli("replay", str(gone), cwd=tmp_path)
    _assert_subcommand_error(proc, "replay", f"no MLflow store at {tmp_path}/gone/mlflow.db")
    assert not (tmp_path / "gone").exists()


@pytest.mark.slow
def test_a_sweep_where_every_job_fails_has_no_best_and_no_legend_warning(tmp_path):
    proc = run_cli("-m", *TINY, "optimizer.lr=1e10,2e10", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "expkit: error: 2 of 2 jobs of the sweep failed:" in proc.stderr
    assert "No artists with labels" not in proc.stderr and "UserWarning" not in proc.stderr
    client, (parent,), children = sweep_runs(f"sqlite:///{tmp_path}/runs/mlflow.db")
    assert parent.info.status == "FAILED"
    assert [r.info.status for r in children] == ["FAILED", "FAILED"]
    assert not [k for k in parent.data.params if k.startswith("best.")]
    assert "expkit.best_run_id" not in parent.data.tags
    assert not [k for k in parent.data.metrics if k.startswith("best_")]
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert artifacts == {"summary.csv", "summary.md", "summary.png"}


class _NoHistory:
    def get_metric_history(self, run_id: str, key: str) -> list:
        return []


class _Point:
    def __init__(self, step: int, value: float) -> None:
        self.step, self.value = step, value


class _History:
    def get_metric_history(self, run_id: str, key: str) -> list:
        return [_Point(1, 0.4), _Point(2, 0.6)] if run_id == "a" else []


def _row(run_id: str, job: int, status: str, lr: str, **metrics: float) -> Row:
    return Row(run_id, job, f"lr={lr}", status, {"optimizer.lr": lr}, dict(metrics))


def _texts(fig) -> list[str]:
    from matplotlib.text import Text

    return [t.get_text() for t in fig.findobj(Text)]


def test_the_plot_of_a_sweep_with_no_finished_job_says_so_without_a_legend():
    failed = [_row("a", 0, "FAILED", "1e10"), _row("b", 1, "FAILED", "2e10")]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib's empty-legend warning would raise
        fig = figure(_NoHistory(), Sweep(None, failed, "eval_accuracy", "maximize"))
    assert all(ax.get_legend() is None for ax in fig.axes)
    texts = _texts(fig)
    assert "no job finished: no eval_accuracy to plot" in texts
    assert "no run recorded eval_accuracy" in texts
    assert any("2 runs over optimizer.lr, no job finished" in t for t in texts)

    mixed = [_row("a", 0, "FINISHED", "1e-3", eval_accuracy=0.6), failed[1]]
    fig = figure(_History(), Sweep(None, mixed, "eval_accuracy", "maximize"))
    (legend,) = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    assert [t.get_text() for t in legend.get_texts()] == ["lr=1e-3"]  # the run with a curve
    assert any("2 runs over optimizer.lr, 1 finished" in t for t in _texts(fig))


def test_job_overrides_escaped_for_hydras_grammar_read_back_plain():
    typed = {
        "tracking.uri": ("sqlite:////tmp/runs/mlflow.db", "sqlite:////tmp/runs/mlflow.db"),
        "a": ("'x: y=1, z'", "x: y=1, z"),
        "b": ("hello world", "hello world"),
        "c": ('"it\'s"', "it's"),
        "d": ("'q\\'t'", "q't"),
        "e": ("a\\\\", "a\\"),
        "f": ("'(x)'", "(x)"),
        "g": ("two  spaces", "two  spaces"),
        "h": ("1e-3", "0.001"),  # numbers as Hydra writes them for the job
        "i": ("True", "True"),
    }
    items = [f"{k}={raw}" for k, (raw, _) in typed.items()]
    parsed = OverridesParser.create().parse_overrides(items)
    (job,) = BasicSweeper.split_arguments(parsed, None)[0]  # what a sweep's job gets
    assert "tracking.uri=sqlite\\:////tmp/runs/mlflow.db" in job  # escaped for the grammar
    text = " ".join(job)  # the child's expkit.overrides tag
    assert split_overrides(text) == job
    assert _overrides(text) == {k: plain for k, (_, plain) in typed.items()}
    assert _overrides(" ".join(items)) == {  # a single run's tag holds what the user typed
        **{k: plain for k, (_, plain) in typed.items()},
        "h": "1e-3",
    }


@pytest.mark.slow
def test_a_sweeps_best_params_and_run_names_hold_plain_values(tmp_path):
    uri = f"sqlite:///{tmp_path}/store.db"  # sqlite:////...: Hydra escapes the ':' for each job
    hub = [str(tmp_path / "hub a: b=1"), str(tmp_path / "hub c")]
    proc = run_cli(
        "-m", *TINY, f"tracking.uri={uri}", f"model.cache_dir='{hub[0]}','{hub[1]}'", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, (parent,), children = sweep_runs(uri)
    params = parent.data.params
    assert params["best.tracking.uri"] == uri
    assert params["best.model.cache_dir"] in hub
    assert params["best.trainer.max_steps"] == "2"
    assert params["overrides.tracking.uri"] == uri
    assert sorted(r.info.run_name for r in children) == [f"cache_dir={h}" for h in hub]
    best = parent.data.tags["expkit.best_run_name"]
    assert best == f"cache_dir={params['best.model.cache_dir']}"
    table = proc.stdout.split("rank  job", 1)[1]  # the summary table's column: plain too
    assert hub[0] in table and f"'{hub[0]}" not in table
