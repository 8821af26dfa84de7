"""One run in several processes: real torchrun launches (gloo on this CPU), asserted on what
MLflow and the run dir recorded."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import run_cli
from tests.test_resume_cli import _wait_for

COMMON = [
    "model=tiny", "model.dropout=0", "trainer.max_steps=20", "trainer.log_every=1",
    "optimizer.lr=1e-3", "trainer.progress=false", "trainer.save_every=10",
    "trainer.save_model=false",
    # 79 dev and test examples: two processes get 40 and 39, and each counts once
    "data.max_eval_samples=79",
]  # fmt: skip


def _env() -> dict[str, str]:
    return {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}


def _torchrun(args: list[str], nproc: int = 2) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={nproc}", "-m", "expkit", *args]  # fmt: skip


def launch(args: list[str], cwd: Path, nproc: int = 2) -> subprocess.CompletedProcess:
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        _torchrun(args, nproc), cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600
    )


def only_run(cwd: Path):
    client = MlflowClient(f"sqlite:///{cwd}/runs/mlflow.db")
    [run] = client.search_runs([client.get_experiment_by_name("expkit").experiment_id])
    return client, run


def history(client: MlflowClient, run, name: str) -> list[tuple[int, float]]:
    values = client.get_metric_history(run.info.run_id, name)
    return sorted((m.step, m.value) for m in values)


def final_metrics(run) -> dict[str, float]:
    return {k: v for k, v in run.data.metrics.items() if k.startswith(("eval_", "test_"))}


def assert_same_steps(client, got, want, tolerance: float) -> None:
    a, b = history(client[0], got, "loss"), history(client[1], want, "loss")
    assert [s for s, _ in a] == list(range(1, 21))
    assert [v for _, v in a] == pytest.approx([v for _, v in b], abs=tolerance)
    # the loss moves: a wrong split of the batch would show
    assert max(v for _, v in b) - min(v for _, v in b) > 1e-3


@pytest.mark.slow
@pytest.mark.parametrize(
    ("backend", "split"),
    [("manual", ["trainer.batch_size=8"]),
     ("manual", ["trainer.batch_size=4", "trainer.grad_accum_steps=2"]),  # no_sync
     ("hf", ["trainer.batch_size=8"])],
    ids=["manual", "manual-accumulation", "hf"],
)  # fmt: skip
def test_two_processes_follow_one_process_of_twice_the_batch(tmp_path, backend, split):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    single = run_cli(*COMMON, f"trainer={backend}", "trainer.batch_size=16", cwd=one)
    assert single.returncode == 0, single.stderr[-3000:]
    pair = launch([*COMMON, f"trainer={backend}", *split], two)
    assert pair.returncode == 0, pair.stderr[-3000:]

    c1, reference = only_run(one)
    c2, run = only_run(two)  # one MLflow run for the two processes
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["derived.world_size"] == "2" and params["derived.global_batch_size"] == "16"
    assert_same_steps((c2, c1), run, reference, 1e-4)
    # the whole dev and test sets, each example once (the Trainer averages its eval loss per
    # batch, hence the looser bound there)
    want = final_metrics(reference)
    assert final_metrics(run) == pytest.approx(want, abs=1e-6 if backend == "manual" else 1e-3)
    assert {k for k in want if k.startswith("test_")} and {k for k in want if k.startswith("eval")}

    # one run dir, chosen by rank 0; written once
    [day] = (two / "runs").glob("20*")
    [run_dir] = day.iterdir()
    assert run.data.tags["expkit.run_dir"] == str(run_dir)
    assert (run_dir / ".hydra" / "config.yaml").is_file() and (run_dir / "metrics.json").is_file()
    [ckpt] = (run_dir / "checkpoints").iterdir()
    assert ckpt.name == "step_10"
    assert {"rng_state_0.pth", "rng_state_1.pth"} <= {p.name for p in ckpt.iterdir()}
    # rank 1 is quiet: each progress line once
    log = (run_dir / "expkit.log").read_text()
    output = pair.stdout + pair.stderr
    assert log.count("step 20/20 loss") == 1 and output.count("step 20/20 loss") == 1


def _process_group(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        _torchrun(args), cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def _descendants(pid: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rpartition(")")[2].split()
            parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def kill_tree(pid: int) -> None:
    """SIGKILL a process and all its descendants, as a cluster's scheduler ends a job."""
    for victim in [pid, *_descendants(pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)


@pytest.mark.slow
def test_a_killed_torchrun_job_resumes_the_same_run_exactly(tmp_path):
    args = [
        "model=tiny", "trainer.max_steps=200", "trainer.batch_size=8", "trainer.log_every=1",
        "trainer.eval_every=40", "trainer.save_every=25", "trainer.progress=false",
        "trainer.save_model=false",
    ]  # fmt: skip
    full = launch([*args, "hydra.run.dir=runs/full"], tmp_path)
    assert full.returncode == 0, full.stderr[-3000:]

    run_dir = tmp_path / "runs" / "killed"
    proc = _process_group([*args, f"hydra.run.dir={run_dir}"], tmp_path)
    try:
        _wait_for(run_dir / "checkpoints" / "step_50", proc)
    finally:
        kill_tree(proc.pid)  # the launcher and both workers (each in its own session), at once
        proc.communicate()

    client = MlflowClient(f"sqlite:///{tmp_path}/runs/mlflow.db")
    experiment = [client.get_experiment_by_name("expkit").experiment_id]
    runs = {r.data.tags["expkit.run_dir"]: r for r in client.search_runs(experiment)}
    killed = runs[str(run_dir)]
    assert killed.info.status == "RUNNING"

    # one process cannot continue a two-process checkpoint: one line, nothing touched
    alone = run_cli(*args, f"hydra.run.dir={run_dir}", "resume=auto", cwd=tmp_path)
    assert alone.returncode == 2
    assert "written by a run of 2 process(es) and this one has 1" in alone.stderr
    assert client.get_run(killed.info.run_id).info.status == "RUNNING"

    again = launch([*args, f"hydra.run.dir={run_dir}", "resume=auto"], tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    after = client.get_run(killed.info.run_id)
    assert after.info.status == "FINISHED" and int(after.data.tags["expkit.resumed_at_step"]) >= 50
    assert len(client.search_runs(experiment)) == 2  # the full run and this one: no third
    reference = runs[str(tmp_path / "runs" / "full")]
    for name in ("loss", "grad_norm", "eval_accuracy", "eval_loss"):
        got, want = history(client, after, name), history(client, reference, name)
        assert [s for s, _ in got] == [s for s, _ in want], name  # every step once
        # dropout on: each process's own RNG stream is restored too
        assert [v for _, v in got] == pytest.approx([v for _, v in want], abs=1e-5), name


def test_a_sweep_under_a_launcher_is_one_line(tmp_path):
    env = {**_env(), "WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}
    proc = subprocess.run(
        [sys.executable, "-m", "expkit", "-m", "model=tiny", "seed=1,2"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("expkit: error: -m cannot run under a distributed launcher")


def test_a_fixed_gpu_index_is_refused_with_several_processes():
    from expkit.distributed import World, check_device
    from expkit.errors import ConfigError

    check_device("cuda:1", World())  # one process: the user's choice
    check_device("cuda", World(rank=1, local_rank=1, size=2, local_size=2))
    with pytest.raises(ConfigError, match=r"use trainer\.device=cuda or auto"):
        check_device("cuda:1", World(rank=1, local_rank=1, size=2, local_size=2))


@pytest.mark.slow
def test_accelerate_launch_runs_the_trainer_as_one_run(tmp_path):
    """`accelerate launch --multi_gpu` starts its processes as torchrun does (on CPU: gloo)."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
           "--num_processes=2", "--num_machines=1", "--mixed_precision=no",
           "--dynamo_backend=no", "--main_process_port=0", "-m", "expkit", "trainer=hf",
           *COMMON, "trainer.batch_size=8"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    client, run = only_run(tmp_path)
    assert run.info.status == "FINISHED" and run.data.params["derived.world_size"] == "2"
    assert [s for s, _ in history(client, run, "loss")] == list(range(1, 21))


@pytest.mark.slow
def test_sigterm_to_torchrun_stops_every_process_at_one_step_with_one_checkpoint(tmp_path):
    """torchrun passes SIGTERM to its workers; they agree on the step to stop after (each may
    see the signal a step apart), rank 0 saves there, and the run is KILLED, resumable."""
    args = [
        "model=tiny", "trainer.max_steps=3000", "trainer.batch_size=8", "trainer.log_every=1",
        "trainer.save_every=50", "trainer.progress=false", "trainer.save_model=false",
        "hydra.run.dir=runs/term",
    ]  # fmt: skip
    run_dir = tmp_path / "runs" / "term"
    proc = _process_group(args, tmp_path)
    try:
        _wait_for(run_dir / "checkpoints" / "step_50", proc)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            kill_tree(proc.pid)
    client, run = only_run(tmp_path)
    assert run.info.status == "KILLED"
    saved = sorted(int(p.name[5:]) for p in (run_dir / "checkpoints").iterdir())
    stopped_at = saved[-1]
    assert stopped_at > 50  # the checkpoint of the step the processes agreed to stop after
    assert history(client, run, "loss")[-1][0] == stopped_at
    assert f"checkpoint at step {stopped_at}" in stderr
    assert "torchrun --nproc_per_node=2 -m expkit" in stderr  # how to go on
