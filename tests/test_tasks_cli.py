"""Each task through the real CLI: both backends equal step for step, the real data sets, a sweep
on the task's objective, and bad input stopped at the door."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import SHARED_DATA, run_cli, sweep_runs, two_processes_and_one
from tests.test_errors import _assert_no_run_recorded, _assert_one_line_error

pytestmark = pytest.mark.slow
WORDS = ["film", "story", "actor", "plot", "scene", "music", "end", "start", "cast", "set"]
KEYS = {"joy": "sunny", "anger": "storm", "fear": "shadow"}
PARITY = ["model=tiny", "data=local", "trainer.max_steps=30", "trainer.batch_size=8",
          "trainer.grad_accum_steps=2", "trainer.log_every=1", "trainer.eval_every=10",
          "optimizer.lr=1e-2", "trainer.save_model=false"]  # fmt: skip


def _write(folder: Path, task: str, n: int = 200) -> Path:
    """A learnable data set: the score counts `good` words; each label has its keyword."""
    rng = random.Random(0)
    folder.mkdir(parents=True)
    for split, count in (("train", n), ("dev", 60), ("test", 60)):
        lines = ["text\tlabel"]
        for _ in range(count):
            words = [rng.choice(WORDS) for _ in range(rng.randint(3, 8))]
            if task == "regression":
                good = rng.randint(0, 4)
                words += ["good"] * good
                label = f"{good + rng.uniform(-0.3, 0.3):.3f}"
            else:
                names = [k for k in KEYS if rng.random() < 0.4] or ["joy"]
                words += [KEYS[k] for k in names]
                label = ",".join(names)
            rng.shuffle(words)
            lines.append(f"{' '.join(words)}\t{label}")
        (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def _history(client, run, name):
    return [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, name)]


@pytest.fixture(scope="module", params=["regression", "multilabel"])
def parity(request, tmp_path_factory):
    task = request.param
    workdir = tmp_path_factory.mktemp(f"parity-{task}")
    data = _write(workdir / "data", task)
    extra = ["task.threshold=auto"] if task == "multilabel" else []
    for backend in ("manual", "hf"):
        where = [f"trainer={backend}", f"hydra.run.dir=runs/{backend}"]
        proc = run_cli(*PARITY, f"task={task}", f"data.path={data}", *extra, *where, cwd=workdir)
        assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{workdir}/runs/mlflow.db")
    exp = client.get_experiment_by_name("expkit")
    runs = {r.data.tags["expkit.backend"]: r for r in client.search_runs([exp.experiment_id])}
    return task, workdir, client, runs


def test_both_backends_train_each_task_the_same(parity):
    task, workdir, client, runs = parity
    manual, hf = runs["manual"], runs["hf"]
    assert manual.data.params["task.name"] == task == manual.data.params["derived.task"]
    for name in ("loss", "grad_norm", "learning_rate"):
        a, b = _history(client, manual, name), _history(client, hf, name)
        assert [s for s, _ in a] == list(range(1, 31)), name
        assert [s for s, _ in b] == [s for s, _ in a], name
        assert [v for _, v in b] == pytest.approx([v for _, v in a], abs=1e-4), name
    evals = [m for m in manual.data.metrics if m.startswith(("eval_", "test_"))]
    objective = {"regression": "eval_pearson", "multilabel": "eval_f1_micro"}[task]
    assert objective in evals and manual.data.params["objective.metric"] == objective
    for name in evals:
        a, b = _history(client, manual, name), _history(client, hf, name)
        assert [s for s, _ in a] == ([10, 20, 30] if name.startswith("eval_") else [30]), name
        if name.endswith("_loss"):
            assert [v for _, v in b] == pytest.approx([v for _, v in a], abs=1e-4), name
        else:
            assert [v for _, v in b] == pytest.approx([v for _, v in a], abs=1e-6), name
    learned = {"regression": 0.5, "multilabel": 0.8}[task]
    assert manual.data.metrics[objective] > learned  # it learned: not a comparison of chance
    metrics = json.loads((workdir / "runs" / "manual" / "metrics.json").read_text())
    assert metrics[objective] == manual.data.metrics[objective]
    if task == "multilabel":
        _assert_threshold_and_per_label_f1(workdir, client, manual)


def _assert_threshold_and_per_label_f1(workdir, client, run):
    """A multi-label run records the threshold it chose on dev and each label's F1."""
    threshold = run.data.metrics["eval_threshold"]
    assert run.data.metrics["test_threshold"] == threshold  # chosen on dev, used on test
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"per_label_f1.json", "thresholds.json"} <= names
    local = client.download_artifacts(run.info.run_id, "per_label_f1.json", str(workdir))
    f1 = json.loads(Path(local).read_text())
    assert set(f1) == {"dev", "test"} and set(f1["test"]) == set(KEYS)


def test_stsb_and_goemotions_as_distributed(tmp_path):
    runs = {
        "regression": ["task=regression", "data=stsb", f"data.path={SHARED_DATA / 'stsb'}"],
        "multilabel": ["task=multilabel", "data=goemotions",
                       f"data.path={SHARED_DATA / 'goemotions'}", "task.threshold=auto",
                       "task.threshold_per_label=true"],
    }  # fmt: skip
    for task, args in runs.items():
        proc = run_cli("model=tiny", *args, "trainer.max_steps=2", "data.max_train_samples=64",
                       "data.max_eval_samples=64", "trainer.save_model=false",
                       f"hydra.run.dir=runs/{task}", cwd=tmp_path)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path}/runs/mlflow.db")
    exp = client.get_experiment_by_name("expkit")
    by_task = {r.data.params["task.name"]: r for r in client.search_runs([exp.experiment_id])}
    stsb, go = by_task["regression"], by_task["multilabel"]
    assert {"eval_pearson", "test_spearman", "test_rmse"} <= set(stsb.data.metrics)
    assert go.data.params["derived.num_labels"] == "28"
    assert go.data.params["derived.label_names"].split(",")[:3] == ["admiration", "amusement",
                                                                     "anger"]  # fmt: skip
    assert {"test_f1_micro", "test_f1_macro", "test_subset_accuracy"} <= set(go.data.metrics)
    thresholds = client.download_artifacts(go.info.run_id, "thresholds.json", str(tmp_path))
    chosen = json.loads(Path(thresholds).read_text())["threshold"]
    assert len(chosen) == 28  # one per label, chosen on dev


def test_a_regression_sweep_ranks_by_pearson(tmp_path):
    data = _write(tmp_path / "data", "regression", n=40)
    proc = run_cli("-m", "model=tiny", "task=regression", "data=local", f"data.path={data}",
                   "trainer.max_steps=3", "trainer.save_model=false", "optimizer.lr=1e-3,1e-2",
                   cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, parents, children = sweep_runs(f"sqlite:///{tmp_path}/runs/mlflow.db")
    (parent,) = parents
    assert parent.data.tags["expkit.objective"] == "eval_pearson"
    best = max(children, key=lambda r: r.data.metrics["eval_pearson"])
    assert parent.data.metrics["best_eval_pearson"] == best.data.metrics["eval_pearson"]
    table = run_cli("compare", cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    assert "eval_pearson" in table.stdout and "eval_spearman" in table.stdout
    assert "eval_accuracy" not in table.stdout


def _local(tmp_path: Path, lines: list[str]) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "train.tsv").write_text("\n".join(["text\tlabel", *lines]) + "\n", encoding="utf-8")
    return folder


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["task=regression", "loss=cross_entropy"],
         ["loss=cross_entropy does not fit task=regression", "model, mse, huber"]),
        (["task=multilabel", "task.threshold=1.5"], ["task.threshold=1.5 is not valid"]),
    ],
)  # fmt: skip
def test_a_task_option_that_does_not_fit_is_one_line(tmp_path, args, needles):
    proc = run_cli("model=tiny", *args, cwd=tmp_path)
    _assert_one_line_error(proc, *needles)
    _assert_no_run_recorded(tmp_path)


def test_a_regression_label_that_is_not_a_number_names_file_and_row(tmp_path):
    data = _local(tmp_path, ["a fine film\t4.5", "a dull film\tlow", "ok\t3"])
    proc = run_cli("model=tiny", "task=regression", "data=local", f"data.path={data}", cwd=tmp_path)
    _assert_one_line_error(proc, f"{data / 'train.tsv'}: data row 2: label 'low' is not a number")
    _assert_no_run_recorded(tmp_path)


def test_a_multilabel_id_outside_labels_txt_is_one_line(tmp_path):
    data = _local(tmp_path, ["a\t0,1", "b\t2", "c\t1,7"])
    (data / "labels.txt").write_text("joy\nanger\nfear\n", encoding="utf-8")
    proc = run_cli("model=tiny", "task=multilabel", "data=local", f"data.path={data}",
                   "data.label_names_file=labels.txt", cwd=tmp_path)  # fmt: skip
    _assert_one_line_error(proc, "data row 3: label id 7 is outside the label set (3 labels")
    _assert_no_run_recorded(tmp_path)


def test_columns_that_do_not_match_the_fields_are_one_line(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "train.tsv").write_text("a\t1\textra\nb\t0\tmore\n", encoding="utf-8")
    proc = run_cli("model=tiny", "data=local", f"data.path={folder}", "data.header=false",
                   "data.columns=[text,label]", cwd=tmp_path)  # fmt: skip
    expected = "train.tsv:1: expected 2 fields (data.columns has 2 names), found 3"
    _assert_one_line_error(proc, expected)
    _assert_no_run_recorded(tmp_path)


def test_a_multilabel_run_resumed_from_its_checkpoint_ends_as_the_whole_run(tmp_path):
    data = _write(tmp_path / "data", "multilabel", n=64)
    args = ["model=tiny", "task=multilabel", "task.threshold=auto", "data=local",
            f"data.path={data}", "trainer.max_steps=6", "trainer.batch_size=8",
            "trainer.eval_every=3", "trainer.save_every=3", "trainer.keep_checkpoints=0",
            "optimizer.lr=1e-2", "trainer.save_model=false"]  # fmt: skip
    whole = run_cli(*args, "hydra.run.dir=runs/whole", cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr[-3000:]
    checkpoint = tmp_path / "runs" / "whole" / "checkpoints" / "step_3"
    state = json.loads((checkpoint / "expkit_state.json").read_text())
    assert state["task_state"]["threshold"] is not None  # chosen at step 3's dev evaluation
    again = run_cli(*args, f"resume={checkpoint}", "hydra.run.dir=runs/again", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    first = json.loads((tmp_path / "runs" / "whole" / "metrics.json").read_text())
    second = json.loads((tmp_path / "runs" / "again" / "metrics.json").read_text())
    timings = {"train_runtime", "train_samples_per_second"}
    assert {k: v for k, v in second.items() if k not in timings} == pytest.approx(
        {k: v for k, v in first.items() if k not in timings}, abs=1e-6
    )


def test_two_processes_evaluate_a_regression_as_one(tmp_path):

    data = _write(tmp_path / "data", "regression", n=64)
    args = ["model=tiny", "model.dropout=0", "task=regression", "data=local",
            f"data.path={data}", "trainer.max_steps=4", "trainer.save_model=false",
            "optimizer.lr=1e-3", "trainer.progress=false"]  # fmt: skip
    a, b = two_processes_and_one(*args, cwd=tmp_path)
    # 60 dev and test examples split 30 / 30 between the processes, each counted once
    for name in ("eval_pearson", "eval_mse", "test_pearson", "test_spearman", "test_rmse"):
        assert a[name] == pytest.approx(b[name], abs=1e-4), name
