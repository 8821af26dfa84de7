"""Early stopping and the best weights: the shared module, then both backends through the CLI."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from expkit.early_stopping import EarlyStopping, keeps_best, watched
from tests.conftest import run_cli
from tests.test_errors import _assert_no_run_recorded, _assert_one_line_error
from tests.test_hf import _write_sentiment
from tests.test_resume_cli import _history, _runs_of, _start, _wait_for

# -- the module ----------------------------------------------------------------------------------


def _feed(early: EarlyStopping, values: list[float], every: int = 2) -> int | None:
    """Evaluations at steps every, 2*every, ...: the step it stops at (None: never)."""
    for i, value in enumerate(values, start=1):
        if early.update(i * every, {"eval_loss": 1.0, early.metric: value}):
            return i * every
    return None


def test_an_improvement_resets_the_count_and_a_plateau_stops_after_patience():
    early = EarlyStopping("eval_accuracy", "maximize", patience=2)
    assert _feed(early, [0.5, 0.6, 0.6, 0.7, 0.65, 0.7, 0.9]) == 12
    assert (early.best, early.best_step, early.bad_evaluations) == (0.7, 8, 2)
    assert early.stopped_at == 12
    assert early.best_metrics == {"eval_accuracy": 0.7, "eval_loss": 1.0}
    assert "early stopping at step 12: eval_accuracy did not improve on 0.7 (step 8) for 2 " in (
        early.message()
    )


def test_min_delta_an_improvement_must_beat_the_best_by_more():
    early = EarlyStopping("eval_accuracy", "maximize", patience=2, min_delta=0.05)
    # +0.04 and +0.05 are not improvements; +0.06 over the best (0.5) would have been
    assert _feed(early, [0.5, 0.54, 0.55]) == 6
    assert (early.best, early.best_step) == (0.5, 2)
    early = EarlyStopping("eval_accuracy", "maximize", patience=2, min_delta=0.05)
    assert _feed(early, [0.5, 0.56, 0.62]) is None  # +0.06 each time: both improve
    assert (early.best, early.best_step, early.bad_evaluations) == (0.62, 6, 0)


def test_minimize_lower_is_better_and_nan_never_improves():
    early = EarlyStopping("eval_loss", "minimize", patience=3)
    assert _feed(early, [0.9, 0.7, 0.8, float("nan"), 0.7]) == 10
    assert (early.best, early.best_step) == (0.7, 4)


def test_patience_zero_never_stops_but_keeps_the_best():
    early = EarlyStopping("eval_f1", "maximize", patience=0)
    assert _feed(early, [0.3, 0.2, 0.1, 0.1, 0.1, 0.1]) is None
    assert (early.best_step, early.stopped) == (2, False)


def test_a_metric_the_evaluation_lacks_is_named():
    early = EarlyStopping("eval_f1", "maximize", patience=1)
    with pytest.raises(KeyError, match=r"eval_f1.*eval_accuracy"):
        early.update(2, {"eval_accuracy": 0.5})


def test_state_roundtrip_through_json_continues_exactly():
    whole = EarlyStopping("eval_accuracy", "maximize", patience=3)
    values = [0.5, 0.7, 0.6, 0.7, 0.8, 0.75, 0.7, 0.79, 0.9]
    expected = _feed(whole, values)
    first = EarlyStopping("eval_accuracy", "maximize", patience=3)
    assert _feed(first, values[:6]) is None
    saved = json.loads(json.dumps(first.state()))
    second = EarlyStopping("eval_accuracy", "maximize", patience=3)
    second.load_state(saved)
    stop = next(
        (i * 2 for i, v in enumerate(values[6:], start=7) if second.update(i * 2, {
            "eval_accuracy": v, "eval_loss": 1.0})),
        None,
    )  # fmt: skip
    assert stop == expected == 16
    assert second.state() == whole.state()


def test_the_task_state_of_the_best_evaluation_is_kept_and_travels():
    early = EarlyStopping("eval_f1_micro", "maximize", patience=3)
    early.update(2, {"eval_f1_micro": 0.4}, task_state={"threshold": 0.3})
    early.update(4, {"eval_f1_micro": 0.3}, task_state={"threshold": 0.6})
    assert early.best_task_state == {"threshold": 0.3}
    again = EarlyStopping("eval_f1_micro", "maximize", patience=3)
    again.load_state(json.loads(json.dumps(early.state())))
    assert (again.best_task_state, again.best_step, again.bad_evaluations) == (
        {"threshold": 0.3}, 2, 1,
    )  # fmt: skip


def test_state_of_another_metric_is_not_taken():
    early = EarlyStopping("eval_f1", "maximize", patience=2)
    early.load_state({"metric": "eval_accuracy", "best": 0.9, "best_step": 4,
                      "bad_evaluations": 1, "stopped_at": None})  # fmt: skip
    assert (early.best, early.best_step, early.bad_evaluations) == (None, None, 0)


def test_best_weights_are_a_copy_and_restored():
    import torch

    model = torch.nn.Linear(3, 2)
    early = EarlyStopping("eval_accuracy", "maximize", patience=5)
    early.update(1, {"eval_accuracy": 0.8}, model)
    kept = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.weight.add_(1.0)
    early.update(2, {"eval_accuracy": 0.7}, model)  # worse: the copy stays step 1's
    assert not torch.equal(model.weight, kept["weight"])
    assert early.restore(model)
    for key, value in model.state_dict().items():
        assert torch.equal(value, kept[key])
    assert not EarlyStopping("eval_accuracy", keep_best=False).restore(model)


def _cfg(**trainer) -> object:
    es = {"patience": 0, "metric": None, "min_delta": 0.0, "direction": None}
    es.update(trainer.pop("early_stopping", {}))
    return OmegaConf.create({
        "trainer": {"early_stopping": es, "load_best": None, **trainer},
        "objective": {"metric": "eval_accuracy", "direction": "maximize"},
    })  # fmt: skip


def test_the_metric_and_direction_default_to_the_objective_and_the_metric_name():
    assert watched(_cfg()) == ("eval_accuracy", "maximize")
    assert watched(_cfg(early_stopping={"metric": "eval_loss"})) == ("eval_loss", "minimize")
    assert watched(_cfg(early_stopping={"metric": "eval_f1"})) == ("eval_f1", "maximize")
    given = _cfg(early_stopping={"metric": "eval_loss", "direction": "maximize"})
    assert watched(given) == ("eval_loss", "maximize")
    assert not keeps_best(_cfg())
    assert keeps_best(_cfg(early_stopping={"patience": 2}))
    assert not keeps_best(_cfg(early_stopping={"patience": 2}, load_best=False))
    assert keeps_best(_cfg(load_best=True))
    assert EarlyStopping.from_config(_cfg()) is None


# -- both backends through the CLI ---------------------------------------------------------------

# evaluations at 4, 8, 12, 16; min_delta=1 makes every one after the first no improvement, so
# the run stops at 16 (of 40) whatever it learns, with the weights of step 4
BEST, STOP = 4, 16
COMMON = [
    "model=tiny", "data=local", "trainer.max_steps=40", "trainer.batch_size=8",
    "trainer.log_every=2", "trainer.eval_every=4", "trainer.save_every=4",
    "trainer.keep_checkpoints=0", "trainer.progress=false", "scheduler=constant",
    "trainer.early_stopping.patience=3", "trainer.early_stopping.min_delta=1.0",
]  # fmt: skip


def _weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


@pytest.fixture(scope="module")
def es_runs(tmp_path_factory):
    """One early-stopped run per backend, and a run of BEST steps without early stopping."""
    root = tmp_path_factory.mktemp("early_stopping")
    data = _write_sentiment(root / "data")
    for backend in ("manual", "hf"):
        args = [*COMMON, f"data.path={data}", f"trainer={backend}", f"hydra.run.dir=runs/{backend}"]
        proc = run_cli(*args, cwd=root)
        assert proc.returncode == 0, proc.stderr[-3000:]
    short = [a for a in COMMON if "early_stopping" not in a and "max_steps" not in a]
    proc = run_cli(*short, f"data.path={data}", f"trainer.max_steps={BEST}",
                   "hydra.run.dir=runs/short", cwd=root)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root, data, MlflowClient(f"sqlite:///{root}/runs/mlflow.db")


def _run(client: MlflowClient, run_dir: Path):
    [run] = _runs_of(client, run_dir)
    return run


@pytest.mark.slow
def test_both_backends_stop_at_the_same_step_with_the_same_numbers(es_runs):
    root, _, client = es_runs
    runs = {b: _run(client, root / "runs" / b) for b in ("manual", "hf")}
    for backend, run in runs.items():
        assert run.info.status == "FINISHED"
        tags = run.data.tags
        assert tags["expkit.stopped_early_at"] == str(STOP), backend
        assert tags["expkit.best_step"] == str(BEST)
        assert tags["expkit.best_metric"] == "eval_accuracy"
        assert float(tags["expkit.best_value"]) == pytest.approx(
            dict(_history(client, run, "eval_accuracy"))[BEST]
        )
        assert run.data.metrics["best_step"] == BEST
        # evaluated at 4..16 and no step after the stop; the best evaluation logged again last
        steps = [s for s, _ in _history(client, run, "eval_accuracy")]
        assert steps == [4, 8, 12, 16, 16], backend
        assert [s for s, _ in _history(client, run, "loss")][-1] == STOP
        assert [s for s, _ in _history(client, run, "test_accuracy")] == [STOP]
        assert sorted(p.name for p in (root / "runs" / backend / "checkpoints").iterdir()) == [
            "step_12", "step_16", "step_4", "step_8",
        ]  # fmt: skip
    manual, hf = runs["manual"].data.metrics, runs["hf"].data.metrics
    timing = ("train_runtime", "train_samples_per_second")
    assert {k: v for k, v in hf.items() if k not in timing} == pytest.approx(
        {k: v for k, v in manual.items() if k not in timing}, abs=1e-6
    )
    for backend in ("manual", "hf"):  # the latest eval_* in the store are the best evaluation's
        run = runs[backend]
        best = dict(_history(client, run, "eval_loss"))[BEST]
        assert run.data.metrics["eval_loss"] == pytest.approx(best, abs=1e-9)
        saved = json.loads((root / "runs" / backend / "metrics.json").read_text())
        assert saved["eval_loss"] == pytest.approx(best, abs=1e-9)
        assert saved["best_step"] == BEST
        assert saved["train_samples_per_second"] * saved["train_runtime"] == pytest.approx(
            STOP * 8, rel=1e-6
        )  # the samples of 16 steps, not 40


@pytest.mark.slow
def test_the_test_metrics_and_saved_model_are_the_best_steps(es_runs):
    root, _, client = es_runs
    short = _run(client, root / "runs" / "short")
    want = {k: v for k, v in short.data.metrics.items() if k.startswith("test_")}
    short_model = _weights(root / "runs" / "short" / "model" / "model.safetensors")
    for backend in ("manual", "hf"):
        run_dir = root / "runs" / backend
        got = {k: v for k, v in _run(client, run_dir).data.metrics.items() if k.startswith("test_")}
        assert got == pytest.approx(want, abs=1e-6), backend  # trained 4 steps, tested
        saved = _weights(run_dir / "model" / "model.safetensors")
        at_best = _weights(run_dir / "checkpoints" / f"step_{BEST}" / "model.safetensors")
        at_stop = _weights(run_dir / "checkpoints" / f"step_{STOP}" / "model.safetensors")
        assert saved.keys() == at_best.keys()
        assert all((saved[k] == at_best[k]).all() for k in saved), backend
        assert any((saved[k] != at_stop[k]).any() for k in saved), backend
        for key, value in short_model.items():
            assert (value - saved[key]).abs().max() < 1e-6, (backend, key)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["manual", "hf"])
def test_sigkill_then_resume_stops_at_the_same_step_with_the_same_numbers(es_runs, backend):
    root, data, client = es_runs
    args = [*COMMON, f"data.path={data}", f"trainer={backend}"]
    run_dir = root / "runs" / f"killed_{backend}"
    proc = _start([*args, f"hydra.run.dir={run_dir}"], root)
    try:  # the checkpoint at 8: best step 4, one evaluation without improvement, step 4's weights
        _wait_for(run_dir / "checkpoints" / "step_8", proc)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    for name in ("step_12", "step_16"):  # killed before it could stop: the resume must
        shutil.rmtree(run_dir / "checkpoints" / name, ignore_errors=True)
    state = json.loads((run_dir / "checkpoints" / "step_8" / "expkit_state.json").read_text())
    assert state["early_stopping"]["best_step"] == BEST
    assert state["early_stopping"]["bad_evaluations"] == 1
    assert (run_dir / "checkpoints" / "step_8" / "best_model.safetensors").is_file()

    again = run_cli(*args, f"hydra.run.dir={run_dir}", "resume=auto", cwd=root)
    assert again.returncode == 0, again.stderr[-3000:]
    resumed, full = _run(client, run_dir), _run(client, root / "runs" / backend)
    assert resumed.info.status == "FINISHED"
    assert resumed.data.tags["expkit.resumed_at_step"] == "8"
    assert resumed.data.tags["expkit.stopped_early_at"] == str(STOP)
    assert resumed.data.tags["expkit.best_step"] == str(BEST)
    for name in ("eval_accuracy", "eval_loss", "loss", "test_accuracy", "test_loss"):
        got, want = _history(client, resumed, name), _history(client, full, name)
        assert [s for s, _ in got] == [s for s, _ in want], name
        assert [v for _, v in got] == pytest.approx([v for _, v in want], abs=1e-6), name
    timing = ("train_runtime", "train_samples_per_second")
    assert {k: v for k, v in resumed.data.metrics.items() if k not in timing} == pytest.approx(
        {k: v for k, v in full.data.metrics.items() if k not in timing}, abs=1e-6
    )
    saved = _weights(run_dir / "model" / "model.safetensors")
    at_best = _weights(root / "runs" / backend / "model" / "model.safetensors")
    assert all((saved[k] - at_best[k]).abs().max() < 1e-6 for k in saved)


def _no_dev(root: Path) -> Path:
    data = root / "nodev"
    if not data.is_dir():
        _write_sentiment(data)
        (data / "dev.csv").unlink()
    return data


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["trainer.early_stopping.patience=-1"], ["trainer.early_stopping.patience=-1 must be"]),
        (
            ["trainer.early_stopping.min_delta=-0.1"],
            ["trainer.early_stopping.min_delta=-0.1 must be >= 0"],
        ),
        (
            ["trainer.early_stopping.patience=2", "trainer.early_stopping.metric=test_accuracy"],
            ["trainer.early_stopping.metric=test_accuracy is not one", "eval_accuracy"],
        ),
        (
            ["trainer.early_stopping.patience=2", "objective.metric=test_f1"],
            ["objective.metric=test_f1 (trainer.early_stopping.metric=null)", "eval_*"],
        ),
        (
            ["trainer.early_stopping.patience=2", "trainer.early_stopping.metric=eval_pearson"],
            ["eval_pearson is not a metric of task=classification", "eval_loss, eval_accuracy"],
        ),
        (
            ["trainer.early_stopping.patience=2", "trainer.early_stopping.direction=up"],
            ["trainer.early_stopping.direction='up' is not valid", "maximize, minimize"],
        ),
        (
            ["trainer.early_stopping.patience=2", "NODEV"],
            ["patience=2 judges by the dev split", "data.dev_fraction", "dev file"],
        ),
        (["trainer.load_best=true", "NODEV"], ["trainer.load_best=true judges by the dev split"]),
        (
            ["trainer.early_stopping.patience=2", "trainer.eval_every=10"],
            ["trainer.eval_every=10 evaluates only once in 6 steps", "below 6"],
        ),
        (
            ["trainer=hf", "trainer.hf_args.load_best_model_at_end=true"],
            ["hf_args.load_best_model_at_end is set by expkit from trainer.load_best"],
        ),
    ],
)
def test_bad_early_stopping_settings_are_one_line_before_any_run(tmp_path, args, needles):
    data = _no_dev(tmp_path) if "NODEV" in args else _write_sentiment(tmp_path / "data")
    args = [a for a in args if a != "NODEV"]
    proc = run_cli("model=tiny", "data=local", f"data.path={data}", "trainer.max_steps=6",
                   *args, cwd=tmp_path)  # fmt: skip
    _assert_one_line_error(proc, *needles)
    _assert_no_run_recorded(tmp_path)
