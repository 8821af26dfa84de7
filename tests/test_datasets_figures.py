"""The splits a run reads as MLflow dataset inputs, and each task's pictures of its evaluation."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

import expkit.plots
from expkit.data import RawData, dataset_records, split_digest
from expkit.tasks import task_class
from expkit.tracking import MLflowTracker
from tests.conftest import SHARED_DATA, run_cli

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _raw(labels: list[Any] | None = None, texts: list[str] | None = None) -> RawData:
    texts = texts or ["a fine film", "dull", "bright and lovely"]
    return RawData(
        texts={"train": [texts], "dev": [["so so", "grim"]]},
        labels={"train": labels if labels is not None else [1, 0, 1], "dev": [0, 0]},
        label_names=["negative", "positive"],
        sources={"train": "/data/train.tsv", "dev": "/data/dev.tsv"},
    )


def _data_cfg(**extra: Any) -> Any:
    return OmegaConf.create({"name": "toy", "path": "/data", "hub_id": None, "hub_config": None,
                             **extra})  # fmt: skip


# -- the digest and the records ----------------------------------------------------------------


def test_the_same_examples_give_the_same_digest_and_a_changed_label_or_text_another() -> None:
    digest = split_digest(_raw(), "train")
    assert split_digest(_raw(), "train") == digest  # computed again, from equal data
    assert len(digest) == 16 and int(digest, 16) >= 0
    assert split_digest(_raw(labels=[1, 0, 0]), "train") != digest
    edited = _raw(texts=["a fine film", "dull", "bright and lovely!"])
    assert split_digest(edited, "train") != digest
    # a row fewer (max_train_samples) is other data
    fewer = _raw()
    fewer.texts["train"] = [col[:2] for col in fewer.texts["train"]]
    fewer.labels["train"] = fewer.labels["train"][:2]
    assert split_digest(fewer, "train") != digest
    # the boundary between texts is part of the content: ["ab", "c"] is not ["a", "bc"]
    assert split_digest(_raw(texts=["ab", "c", "d"]), "train") != split_digest(
        _raw(texts=["a", "bc", "d"]), "train"
    )
    # multi-hot and score labels hash too
    multi = _raw(labels=[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert split_digest(multi, "train") != split_digest(
        _raw(labels=[[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]), "train"
    )


def test_one_plain_record_per_split_with_its_source_rows_and_context() -> None:
    raw = _raw()
    records = dataset_records(raw, _data_cfg())
    assert records == [
        {"name": "toy-train", "source_type": "local", "source": {"uri": "/data/train.tsv"},
         "digest": split_digest(raw, "train"), "rows": 3, "context": "train"},
        {"name": "toy-dev", "source_type": "local", "source": {"uri": "/data/dev.tsv"},
         "digest": split_digest(raw, "dev"), "rows": 2, "context": "dev"},
    ]  # fmt: skip
    json.dumps(records)  # plain values: they cross to the tracker process and into the spill file


def test_a_hub_data_set_is_a_hugging_face_source_with_its_own_split_name() -> None:
    raw = _raw()
    raw.sources = {"train": "glue[train]", "dev": "glue[validation]"}
    cfg = _data_cfg(path=None, hub_id="glue", hub_config="sst2")
    dev = dataset_records(raw, cfg)[1]
    assert dev["source_type"] == "hugging_face" and dev["context"] == "dev"
    assert dev["source"] == {"path": "glue", "config_name": "sst2", "split": "validation"}


# -- the tracker -------------------------------------------------------------------------------


@pytest.fixture
def tracker(tmp_path: Path):
    t = MLflowTracker(f"sqlite:///{tmp_path}/mlflow.db", "datasets")
    t.start("r", {})
    yield t
    t.end()


def test_mlflow_tracker_logs_dataset_inputs_the_ui_shows(tracker: MLflowTracker) -> None:
    raw = _raw()
    raw.sources = {"train": "/data/train.tsv", "dev": "glue[validation]"}
    records = dataset_records(raw, _data_cfg())
    records[1] = dataset_records(raw, _data_cfg(path=None, hub_id="glue"))[1]
    tracker.log_datasets(records)
    run = tracker.client.get_run(tracker.run_id)
    got = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert sorted(got) == ["toy-dev", "toy-train"]
    train, dev = got["toy-train"], got["toy-dev"]
    assert train.dataset.digest == split_digest(raw, "train")
    assert train.dataset.source_type == "local"
    assert json.loads(train.dataset.source) == {"uri": "/data/train.tsv"}
    assert json.loads(train.dataset.profile) == {"num_rows": 3}
    assert [(t.key, t.value) for t in train.tags] == [("mlflow.data.context", "train")]
    assert dev.dataset.source_type == "hugging_face"
    assert json.loads(dev.dataset.source)["split"] == "validation"
    assert [(t.key, t.value) for t in dev.tags] == [("mlflow.data.context", "dev")]


def test_a_store_refusing_the_inputs_never_stops_training_and_replay_sends_them(
    tracker: MLflowTracker, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    from expkit.tracking.replay import replay

    tracker.spill_path = tmp_path / "mlflow_unsent.json"
    records = dataset_records(_raw(), _data_cfg())

    def down(*args: object, **kwargs: object) -> None:
        raise ConnectionError("connection refused")

    monkeypatch.setattr(tracker.client.unwrapped, "log_inputs", down)
    tracker.log_datasets(records)  # nothing raised
    tracker.end("FINISHED")
    assert "the tracking store" in caplog.text and "2 dataset inputs" in caplog.text
    assert json.loads(tracker.spill_path.read_text())["datasets"] == records
    monkeypatch.undo()  # the store is back
    assert "2 dataset inputs" in replay(tracker.spill_path)
    run = tracker.client.get_run(tracker.run_id)
    assert sorted(d.dataset.name for d in run.inputs.dataset_inputs) == ["toy-dev", "toy-train"]


def test_without_a_spill_path_a_refused_input_is_raised(
    tracker: MLflowTracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(*args: object, **kwargs: object) -> None:
        raise ConnectionError("connection refused")

    monkeypatch.setattr(tracker.client.unwrapped, "log_inputs", down)
    with pytest.raises(ConnectionError):
        tracker.log_datasets(dataset_records(_raw(), _data_cfg()))


def test_the_tensorboard_sink_and_the_tracker_process_pass_the_records_on(tmp_path: Path) -> None:
    from expkit.tracking import NullTracker, TensorBoardSink
    from expkit.tracking.process import TrackerProcess

    records = dataset_records(_raw(), _data_cfg())

    class Inner(NullTracker):
        def __init__(self) -> None:
            self.got: list[Any] = []

        def log_datasets(self, datasets: list[dict[str, object]]) -> None:
            self.got.append(datasets)

    inner = Inner()
    sink = TensorBoardSink(inner, tmp_path / "tensorboard")
    sink.log_datasets(records)
    sink.end()
    assert inner.got == [records]

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    child = TrackerProcess(uri, "datasets")
    child.start("r", {})
    child.log_datasets(records)  # sent without waiting; the end waits for it
    child.end()
    run = MlflowClient(uri).get_run(child.run_id)
    assert _inputs(run) == {r["name"]: (r["context"], r["digest"], r["rows"]) for r in records}


# -- figures -----------------------------------------------------------------------------------


def _task(name: str, label_names: list[str], **cfg: Any) -> Any:
    task = task_class(name)(OmegaConf.create({"name": name, **cfg}))
    task.label_names = label_names
    return task


def _capture(monkeypatch: pytest.MonkeyPatch, name: str) -> list[Any]:
    """What expkit.plots.<name> returned while the task drew its figure."""
    made: list[Any] = []
    real = getattr(expkit.plots, name)

    def spy(*args: Any, **kwargs: Any) -> Any:
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(expkit.plots, name, spy)
    return made


def test_classification_draws_the_confusion_matrix_of_the_test_split(monkeypatch) -> None:
    task = _task("classification", ["neg", "neutral", "pos"])
    made = _capture(monkeypatch, "confusion_matrix_display")
    assert task.figures() == {}  # nothing evaluated yet
    task.metrics([np.int64(0), np.int64(0), np.int64(1)], [np.int64(0)] * 3, "dev")
    gold = [0, 0, 0, 2, 2, 2, 2]
    predicted = [0, 2, 0, 2, 2, 0, 2]
    task.metrics([np.int64(p) for p in predicted], [np.int64(g) for g in gold], "test")
    figures = task.figures()
    assert list(figures) == ["confusion_matrix_test.png"]  # test wins over dev
    assert figures["confusion_matrix_test.png"].startswith(PNG_MAGIC)
    [display] = made
    # rows gold, columns predicted; the class absent from the split keeps its row and column
    assert display.confusion_matrix.tolist() == [[2, 0, 1], [0, 0, 0], [1, 0, 3]]
    assert [t.get_text() for t in display.ax_.get_xticklabels()] == ["neg", "neutral", "pos"]
    assert [t.get_text() for t in display.ax_.get_yticklabels()] == ["neg", "neutral", "pos"]


def test_classification_without_a_test_split_draws_the_last_dev_evaluation(monkeypatch) -> None:
    task = _task("classification", ["a", "b"])
    made = _capture(monkeypatch, "confusion_matrix_display")
    task.metrics([np.int64(0)] * 2, [np.int64(1)] * 2, "dev")
    task.metrics([np.int64(1), np.int64(0)], [np.int64(1), np.int64(1)], "dev")  # the last
    assert list(task.figures()) == ["confusion_matrix_dev.png"]
    assert made[-1].confusion_matrix.tolist() == [[0, 0], [1, 1]]


def test_regression_draws_predicted_against_gold_with_the_diagonal(monkeypatch) -> None:
    task = _task("regression", [])
    made = _capture(monkeypatch, "scatter")
    predicted, gold = [0.5, 2.0, 4.5], [1.0, 2.0, 5.0]
    task.metrics([np.float32(p) for p in predicted], [np.float32(g) for g in gold], "test")
    figures = task.figures()
    assert list(figures) == ["predicted_vs_gold_test.png"]
    assert figures["predicted_vs_gold_test.png"].startswith(PNG_MAGIC)
    [figure] = made
    ax = figure.axes[0]
    points = ax.collections[0].get_offsets()
    assert np.asarray(points).tolist() == [[1.0, 0.5], [2.0, 2.0], [5.0, 4.5]]  # (gold, pred)
    [line] = ax.lines
    assert list(line.get_xdata()) == list(line.get_ydata()) == [0.5, 5.0]  # y = x over the range
    assert ax.get_xlabel() == "gold" and ax.get_ylabel() == "predicted"


def test_multilabel_draws_the_f1_of_each_label(monkeypatch) -> None:
    task = _task("multilabel", ["joy", "fear", "anger"], threshold=0.5, threshold_per_label=False)
    made = _capture(monkeypatch, "bars")
    probs = [np.array(p) for p in ([0.9, 0.1, 0.2], [0.8, 0.7, 0.1], [0.2, 0.1, 0.9])]
    gold = [np.array(g) for g in ([1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 1.0])]
    task.metrics(probs, gold, "dev")
    figures = task.figures()
    assert list(figures) == ["per_label_f1_dev.png"]
    assert figures["per_label_f1_dev.png"].startswith(PNG_MAGIC)
    ax = made[0].axes[0]
    heights = [patch.get_width() for patch in ax.patches]  # horizontal bars
    assert heights == pytest.approx(task.per_label_f1["dev"]) and heights == pytest.approx(
        [1.0, 0.0, 1.0]
    )
    assert [t.get_text() for t in ax.get_yticklabels()] == ["joy", "fear", "anger"]


def test_a_figure_that_cannot_be_drawn_is_a_warning_not_a_failed_run(tmp_path, caplog) -> None:
    from expkit.run import _log_figures

    class Broken:
        def figures(self) -> dict[str, bytes]:
            raise ValueError("no axes today")

    class Kept:
        def __init__(self) -> None:
            self.artifacts: list[tuple[Path, str | None]] = []

        def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
            self.artifacts.append((Path(path), artifact_path))

    tracker = Kept()
    with caplog.at_level(logging.WARNING):
        _log_figures(Broken(), tracker, tmp_path)
    assert "figures not drawn (ValueError: no axes today)" in caplog.text
    assert tracker.artifacts == [] and not (tmp_path / "figures").exists()

    class Drawn:
        def figures(self) -> dict[str, bytes]:
            return {"x.png": PNG_MAGIC}

    _log_figures(Drawn(), tracker, tmp_path)
    assert tracker.artifacts == [(tmp_path / "figures" / "x.png", "figures")]
    assert (tmp_path / "figures" / "x.png").read_bytes() == PNG_MAGIC


# -- through the CLI, on the real data and a real store ----------------------------------------

SST2 = ["model=tiny", "data=sst2", f"data.path={SHARED_DATA / 'sst2'}", "data.max_eval_samples=50",
        "trainer.save_model=false", "trainer.progress=false", "trainer.save_every=2"]  # fmt: skip


def _run(client: MlflowClient, run_dir: Path) -> Any:
    return client.get_run(json.loads((run_dir / "mlflow_run.json").read_text())["run_id"])


def _inputs(run: Any) -> dict[str, tuple[str, str, int]]:
    """name -> (context, digest, rows) of a run's dataset inputs."""
    out = {}
    for d in run.inputs.dataset_inputs:
        [context] = [t.value for t in d.tags if t.key == "mlflow.data.context"]
        out[d.dataset.name] = (context, d.dataset.digest, json.loads(d.dataset.profile)["num_rows"])
    return out


@pytest.mark.slow
def test_classification_runs_record_their_splits_and_confusion_matrix(tmp_path: Path) -> None:
    a = run_cli(*SST2, "data.max_train_samples=200", "trainer.max_steps=4", "hydra.run.dir=runs/a",
                cwd=tmp_path)  # fmt: skip
    assert a.returncode == 0, a.stderr[-3000:]
    b = run_cli(*SST2, "data.max_train_samples=100", "trainer.max_steps=2", "hydra.run.dir=runs/b",
                cwd=tmp_path)  # fmt: skip
    assert b.returncode == 0, b.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path}/runs/mlflow.db")
    run_a, run_b = _run(client, tmp_path / "runs" / "a"), _run(client, tmp_path / "runs" / "b")
    got_a, got_b = _inputs(run_a), _inputs(run_b)
    assert sorted(got_a) == ["sst2-dev", "sst2-test", "sst2-train"]
    params = run_a.data.params
    for split in ("train", "dev", "test"):
        context, _, rows = got_a[f"sst2-{split}"]
        assert context == split and rows == int(params[f"derived.{split}_examples"])
    assert [got_a[f"sst2-{s}"][2] for s in ("train", "dev", "test")] == [200, 50, 50]
    # the same dev and test examples: the same digests; a shorter train split: another
    assert got_b["sst2-dev"] == got_a["sst2-dev"] and got_b["sst2-test"] == got_a["sst2-test"]
    assert got_b["sst2-train"][1] != got_a["sst2-train"][1] and got_b["sst2-train"][2] == 100
    sources = {d.dataset.name: json.loads(d.dataset.source) for d in run_a.inputs.dataset_inputs}
    assert sources["sst2-train"] == {"uri": str((SHARED_DATA / "sst2" / "train.tsv").resolve())}
    # the picture: in the run dir and among the run's artifacts
    png = tmp_path / "runs" / "a" / "figures" / "confusion_matrix_test.png"
    assert png.read_bytes().startswith(PNG_MAGIC)
    logged = client.list_artifacts(run_a.info.run_id, "figures")
    assert [f.path for f in logged] == ["figures/confusion_matrix_test.png"]

    # resumed, with fewer eval examples allowed: the same run, its inputs as first logged, once
    again = run_cli(*SST2, "data.max_train_samples=200", "trainer.max_steps=6",
                    "data.max_eval_samples=40", "hydra.run.dir=runs/a", "resume=auto",
                    "resume.allow_changes=[trainer.max_steps,data.max_eval_samples]",
                    cwd=tmp_path)  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    resumed = _run(client, tmp_path / "runs" / "a")
    assert resumed.info.run_id == run_a.info.run_id
    assert "expkit.resumed_at_step" in resumed.data.tags
    assert len(resumed.inputs.dataset_inputs) == 3
    assert _inputs(resumed) == got_a


@pytest.mark.slow
def test_a_regression_run_records_its_splits_and_predicted_vs_gold(tmp_path: Path) -> None:
    proc = run_cli("model=tiny", "task=regression", "data=stsb",
                   f"data.path={SHARED_DATA / 'stsb'}", "data.max_train_samples=120",
                   "data.max_eval_samples=30", "trainer.max_steps=3", "trainer.save_model=false",
                   "trainer.progress=false", "hydra.run.dir=runs/stsb", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path}/runs/mlflow.db")
    run = _run(client, tmp_path / "runs" / "stsb")
    got = _inputs(run)
    assert {name: (c, rows) for name, (c, _, rows) in got.items()} == {
        "stsb-train": ("train", 120), "stsb-dev": ("dev", 30), "stsb-test": ("test", 30)
    }  # fmt: skip
    assert int(run.data.params["derived.dev_examples"]) == 30
    assert len({digest for _, digest, _ in got.values()}) == 3
    logged = client.list_artifacts(run.info.run_id, "figures")
    assert [f.path for f in logged] == ["figures/predicted_vs_gold_test.png"]
    png = tmp_path / "runs" / "stsb" / "figures" / "predicted_vs_gold_test.png"
    assert png.read_bytes().startswith(PNG_MAGIC)
