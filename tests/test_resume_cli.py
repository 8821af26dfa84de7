"""Runs that die, resumed through the real CLI against a real MLflow store (both backends)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import run_cli
from tests.test_hf import _write_sentiment

COMMON = [
    "model=tiny", "data=local", "trainer.max_steps=300", "trainer.batch_size=8",
    "trainer.log_every=1", "trainer.eval_every=40", "trainer.save_every=25",
    "trainer.save_model=false", "trainer.progress=false",
]  # fmt: skip
SERIES = ("loss", "grad_norm", "learning_rate", "eval_accuracy", "eval_loss")


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "expkit", *args], cwd=cwd,
        env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _wait_for(path: Path, proc: subprocess.Popen, limit: float = 300) -> None:
    """Until `path` exists (polled and bounded: no timing assertion)."""
    deadline = time.monotonic() + limit
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def _runs_of(client: MlflowClient, run_dir: Path) -> list:
    exp = client.get_experiment_by_name("expkit")
    runs = client.search_runs([exp.experiment_id])
    return [r for r in runs if r.data.tags.get("expkit.run_dir") == str(run_dir)]


def _history(client: MlflowClient, run, name: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, name)]


def _assert_same_training(client: MlflowClient, resumed, full) -> None:
    """Every step logged once, as the uninterrupted run logged it (per-step within 1e-6)."""
    for name in SERIES:
        got, want = _history(client, resumed, name), _history(client, full, name)
        assert [s for s, _ in got] == [s for s, _ in want], name
        assert [v for _, v in got] == pytest.approx([v for _, v in want], abs=1e-6), name
    final = {k: v for k, v in resumed.data.metrics.items() if not k.startswith("train_")}
    assert final == pytest.approx(
        {k: v for k, v in full.data.metrics.items() if not k.startswith("train_")}, abs=1e-6
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """The data, and one uninterrupted run per backend to compare against."""
    root = tmp_path_factory.mktemp("resume")
    data = _write_sentiment(root / "data")
    for backend in ("manual", "hf"):
        args = [
            *COMMON,
            f"data.path={data}",
            f"trainer={backend}",
            f"hydra.run.dir=runs/full_{backend}",
        ]
        proc = run_cli(*args, cwd=root)
        assert proc.returncode == 0, proc.stderr[-3000:]
    return root, data


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["manual", "hf"])
def test_sigkill_then_resume_auto_continues_the_same_run_exactly(workdir, backend):
    root, data = workdir
    args = [*COMMON, f"data.path={data}", f"trainer={backend}"]
    run_dir = root / "runs" / f"killed_{backend}"
    proc = _start([*args, f"hydra.run.dir={run_dir}"], root)
    try:
        _wait_for(run_dir / "checkpoints" / "step_50", proc)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    client = MlflowClient(f"sqlite:///{root}/runs/mlflow.db")
    [before] = _runs_of(client, run_dir)
    assert before.info.status == "RUNNING"  # SIGKILL leaves it so: the resume takes it over

    again = run_cli(*args, f"hydra.run.dir={run_dir}", "resume=auto", cwd=root)
    assert again.returncode == 0, again.stderr[-3000:]
    [after] = _runs_of(client, run_dir)  # no second run
    assert after.info.run_id == before.info.run_id and after.info.status == "FINISHED"
    assert int(after.data.tags["expkit.resumed_at_step"]) >= 50
    [full] = _runs_of(client, root / "runs" / f"full_{backend}")
    _assert_same_training(client, after, full)
    # the newest two checkpoints are kept, none partial
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert names == ["step_250", "step_275"]


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["manual", "hf"])
def test_sigterm_saves_a_checkpoint_and_the_run_resumes_from_the_last_good_one(workdir, backend):
    root, data = workdir
    args = [*COMMON, f"data.path={data}", f"trainer={backend}"]
    run_dir = root / "runs" / f"term_{backend}"
    proc = _start([*args, f"hydra.run.dir={run_dir}"], root)
    try:
        _wait_for(run_dir / "checkpoints" / "step_25", proc)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, stderr[-3000:]
    client = MlflowClient(f"sqlite:///{root}/runs/mlflow.db")
    [killed] = _runs_of(client, run_dir)
    assert killed.info.status == "KILLED"
    steps = sorted(int(p.name[5:]) for p in (run_dir / "checkpoints").iterdir())
    stopped_at = steps[-1]
    assert stopped_at > 25
    assert _history(client, killed, "loss")[-1][0] == stopped_at  # the step it finished, saved
    assert f"checkpoint at step {stopped_at} in {run_dir}/checkpoints/step_{stopped_at}" in stderr
    assert f"hydra.run.dir={run_dir} resume=auto" in stderr  # how to go on

    # another learning rate: refused, naming the key; nothing changes in the store
    changed = run_cli(*args, f"hydra.run.dir={run_dir}", "resume=auto", "optimizer.lr=1e-3",
                      cwd=root)  # fmt: skip
    assert changed.returncode == 2
    assert "optimizer.lr (5e-05 -> 0.001)" in changed.stderr
    assert "resume.allow_changes=[optimizer.lr]" in changed.stderr
    assert client.get_run(killed.info.run_id).info.status == "KILLED"

    # the newest checkpoint damaged: named, skipped, the one before used
    newest = run_dir / "checkpoints" / f"step_{stopped_at}"
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    again = run_cli(*args, f"hydra.run.dir={run_dir}", "resume=auto", cwd=root)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"checkpoint {newest} is truncated (model.safetensors" in again.stdout + again.stderr
    [after] = _runs_of(client, run_dir)
    assert after.info.run_id == killed.info.run_id and after.info.status == "FINISHED"
    assert after.data.tags["expkit.resumed_at_step"] == str(steps[-2])
    [full] = _runs_of(client, root / "runs" / f"full_{backend}")
    _assert_same_training(client, after, full)


@pytest.mark.slow
def test_a_run_left_running_by_a_dead_process_is_named_and_closed(workdir):
    root, data = workdir
    run_dir = root / "runs" / "orphan"
    args = [*COMMON, f"data.path={data}", f"hydra.run.dir={run_dir}"]
    proc = _start([*args, "trainer.max_steps=100000", "trainer.save_every=0"], root)
    client = MlflowClient(f"sqlite:///{root}/runs/mlflow.db")
    try:
        deadline = time.monotonic() + 300
        while not any(r.data.metrics.get("loss") for r in _runs_of(client, run_dir)):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        proc.kill()
        proc.communicate()
    [orphan] = _runs_of(client, run_dir)
    # no checkpoint (save_every=0): resume=auto starts a fresh run in the killed run's dir
    fresh = run_cli(*args, "trainer.max_steps=5", "resume=auto", cwd=root)
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    output = fresh.stdout + fresh.stderr
    assert f"run {orphan.info.run_id}" in output and "which is gone" in output
    assert client.get_run(orphan.info.run_id).info.status == "KILLED"
    statuses = sorted(r.info.status for r in _runs_of(client, run_dir))
    assert statuses == ["FINISHED", "KILLED"]


def test_a_resumed_tracker_sends_each_step_once(tmp_path):
    """Values a killed run already sent past its checkpoint are not sent again."""
    from expkit.tracking import MLflowTracker

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    first = MLflowTracker(uri, "expkit")
    first.start("r", {})
    for step in range(1, 11):
        first.log_metrics({"loss": step / 10}, step=step)
    first.flush()  # then SIGKILL: never ended, RUNNING
    again = MLflowTracker(uri, "expkit")
    again.resume(first.run_id, {"expkit.resumed_at_step": "6"}, step=6)
    assert again.client.get_run(first.run_id).info.status == "RUNNING"
    for step in range(7, 13):
        again.log_metrics({"loss": step / 10, "grad_norm": 1.0}, step=step)
    again.end("FINISHED")
    history = again.client.get_metric_history(first.run_id, "loss")
    assert [m.step for m in history] == list(range(1, 13))
    assert [m.step for m in again.client.get_metric_history(first.run_id, "grad_norm")] == list(
        range(7, 13)
    )
    assert again.client.get_run(first.run_id).info.status == "FINISHED"
