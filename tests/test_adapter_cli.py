"""LoRA through the real CLI: a sweep over both backends (equal step for step), small
checkpoints, model/ and adapter/ in MLflow and in `expkit predict`, resume after SIGKILL, and bad
adapter settings stopped at the door."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from tests.conftest import run_cli, sweep_runs
from tests.test_errors import _assert_no_run_recorded, _assert_one_line_error
from tests.test_hf import _write_sentiment
from tests.test_resume_cli import _assert_same_training, _runs_of, _start, _wait_for

pytestmark = pytest.mark.slow
STEPS = 120
COMMON = [
    "adapter=lora", "model.init=pretrained", "data=local", f"trainer.max_steps={STEPS}",
    "trainer.batch_size=8", "trainer.grad_accum_steps=2", "trainer.log_every=1",
    "trainer.eval_every=40", "trainer.save_every=25", "trainer.keep_checkpoints=0",
    "optimizer.lr=1e-2", "trainer.progress=false",
]  # fmt: skip


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, tiny_pretrained):
    """`expkit -m trainer=manual,hf adapter=lora` on a learnable two-class set."""
    root = tmp_path_factory.mktemp("lora")
    data = _write_sentiment(root / "data")
    args = [*COMMON, f"model.name_or_path={tiny_pretrained}", f"data.path={data}"]
    proc = run_cli("-m", "trainer=manual,hf", *args, cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client, parents, children = sweep_runs(f"sqlite:///{root}/runs/mlflow.db")
    assert len(parents) == 1 and len(children) == 2
    runs = {r.data.tags["expkit.backend"]: r for r in children}
    return root, args, client, runs


def _history(client, run, name):
    return [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, name)]


def test_both_backends_train_lora_the_same(sweep):
    _, _, client, runs = sweep
    manual, hf = runs["manual"], runs["hf"]
    for name in ("loss", "grad_norm", "learning_rate"):
        a, b = _history(client, manual, name), _history(client, hf, name)
        assert [s for s, _ in a] == list(range(1, STEPS + 1)), name
        assert [s for s, _ in b] == [s for s, _ in a], name
        assert [v for _, v in b] == pytest.approx([v for _, v in a], abs=1e-4), name
    evals = {k: v for k, v in manual.data.metrics.items() if k.startswith(("eval_", "test_"))}
    assert evals == pytest.approx(
        {k: v for k, v in hf.data.metrics.items() if k in evals}, abs=1e-4
    )
    # it learned (chance is 0.5; a random 32-wide base, so not far in 120 steps)
    assert evals["test_accuracy"] > 0.6
    losses = [v for _, v in _history(client, manual, "loss")]
    assert sum(losses[-20:]) < 0.9 * sum(losses[:20])
    for run in (manual, hf):
        params = run.data.params
        assert params["adapter.name"] == "lora" and params["adapter.r"] == "8"
        assert params["derived.adapter_target_modules"] == "dense,key,query,value"
        assert params["derived.adapter_modules_to_save"] == "classifier"
        trainable, total = (
            int(params["derived.trainable_params"]),
            int(params["derived.total_params"]),
        )
        assert 0 < trainable < total / 10
    assert (
        manual.data.params["derived.trainable_params"] == hf.data.params["derived.trainable_params"]
    )


def test_checkpoints_hold_the_adapter_and_both_folders_are_logged(sweep):
    _, _, client, runs = sweep
    for run in runs.values():
        run_dir = Path(run.data.tags["expkit.run_dir"])
        checkpoint = run_dir / "checkpoints" / "step_25"
        assert (checkpoint / "adapter_model.safetensors").is_file()
        assert not (checkpoint / "model.safetensors").exists()
        full = (run_dir / "model" / "model.safetensors").stat().st_size
        assert (checkpoint / "adapter_model.safetensors").stat().st_size < 0.05 * full
        assert not (run_dir / "model" / "adapter_config.json").exists()  # merged: plain
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "adapter")}
        assert {"adapter/adapter_model.safetensors", "adapter/adapter_config.json",
                "adapter/config.json", "adapter/expkit.json"} <= artifacts  # fmt: skip
        assert client.search_logged_models([run.info.experiment_id], max_results=10)


def test_predict_takes_the_adapter_or_the_merged_model_alike(sweep, tmp_path):
    root, _, _, runs = sweep
    run = runs["manual"]
    run_dir = run.data.tags["expkit.run_dir"]
    outs = {}
    for name, source in [("merged", run_dir), ("adapter", f"{run_dir}/adapter"),
                         ("uri", f"runs:/{run.info.run_id}/adapter")]:  # fmt: skip
        out = tmp_path / f"{name}.jsonl"
        proc = run_cli("predict", source, "--out", str(out), cwd=root)
        assert proc.returncode == 0, proc.stderr[-2000:]
        outs[name] = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(outs["merged"]) == 60
    for other in ("adapter", "uri"):
        for a, b in zip(outs["merged"], outs[other], strict=True):
            assert a["label"] == b["label"]
            assert a["scores"] == pytest.approx(b["scores"], abs=1e-5)


@pytest.mark.parametrize("backend", ["manual", "hf"])
def test_sigkill_then_resume_auto_continues_a_lora_run_exactly(sweep, backend):
    root, args, client, runs = sweep
    args = [*args, f"trainer={backend}"]
    run_dir = root / "runs" / f"killed_{backend}"
    proc = _start([*args, f"hydra.run.dir={run_dir}"], root)
    try:
        _wait_for(run_dir / "checkpoints" / "step_50", proc)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    again = run_cli(*args, f"hydra.run.dir={run_dir}", "resume=auto", cwd=root)
    assert again.returncode == 0, again.stderr[-3000:]
    [after] = _runs_of(client, run_dir)
    assert after.info.status == "FINISHED" and int(after.data.tags["expkit.resumed_at_step"]) >= 50
    _assert_same_training(client, after, runs[backend])


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["adapter.target_modules=[querry,value]"], ["no module 'querry'", "close names: query"]),
        (["adapter.r=0"], ["adapter.r=0 must be at least 1"]),
        (["adapter.target_modules=[LayerNorm]"], ["adapter=lora cannot wrap"]),
    ],
)
def test_bad_adapter_settings_are_one_line_and_leave_no_run(tmp_path, tiny_pretrained, args,
                                                           needles):  # fmt: skip
    proc = run_cli("adapter=lora", f"model.name_or_path={tiny_pretrained}",
                   "model.init=pretrained", "trainer.max_steps=2", *args, cwd=tmp_path)  # fmt: skip
    _assert_one_line_error(proc, *needles)
    _assert_no_run_recorded(tmp_path)
