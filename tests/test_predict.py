"""expkit predict / evaluate and the MLflow Model: the same records from every way of asking.

A tiny model is trained once per task with the real CLI and a real SQLite store; then it is asked
through `expkit predict` (run id, run dir, runs:/ and models:/ URIs), `expkit evaluate` (its
metrics are the run's own test metrics), `mlflow.pyfunc.load_model`, and a real
`mlflow models serve` process over HTTP.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from expkit.errors import ExpkitError
from expkit.serving import inputs_from
from tests.conftest import SHARED_DATA, run_cli

SST2 = [
    "model=tiny", "data=sst2", f"data.path={SHARED_DATA / 'sst2'}", "data.max_train_samples=64",
    "data.max_eval_samples=24", "trainer.max_steps=4", "trainer.progress=false",
]  # fmt: skip


def _assert_one_line_error(proc, *needles: str) -> None:
    """Exit 2 and one line `expkit predict|evaluate: error: ...` naming the problem."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert lines[0].startswith(("expkit predict: error: ", "expkit evaluate: error: "))
    for needle in needles:
        assert needle in lines[0], lines[0]


def _client(workdir: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{workdir}/runs/mlflow.db")


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _same(a: list[dict], b: list[dict]) -> None:
    """The same predictions (labels exactly, probabilities to float32 rounding)."""
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x["label"] == y["label"]
        assert x["scores"].keys() == y["scores"].keys()
        for name in x["scores"]:
            assert x["scores"][name] == pytest.approx(y["scores"][name], abs=1e-5)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(workdir, run id, run dir, the run's metrics) of one tiny SST-2 run."""
    workdir = tmp_path_factory.mktemp("predict")
    proc = run_cli(*SST2, "hydra.run.dir=runs/sst2", cwd=workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = workdir / "runs" / "sst2"
    run_id = json.loads((run_dir / "mlflow_run.json").read_text())["run_id"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return workdir, run_id, run_dir, metrics


# -- unit: what a request may look like ------------------------------------------------------


def test_inputs_from_takes_texts_objects_pairs_and_tables():
    import pandas as pd

    assert inputs_from(["a", "b"], ["text"]) == [["a", "b"]]
    assert inputs_from({"inputs": ["a"]}, ["text"]) == [["a"]]
    assert inputs_from(pd.DataFrame({0: ["a", "b"]}), ["text"]) == [["a", "b"]]
    pairs = ["s1", "s2"]
    assert inputs_from([{"s1": "a", "s2": "b"}], pairs) == [["a"], ["b"]]
    assert inputs_from([["a", "b"], ["c", "d"]], pairs) == [["a", "c"], ["b", "d"]]
    assert inputs_from(pd.DataFrame({"s2": ["y"], "s1": ["x"]}), pairs) == [["x"], ["y"]]
    with pytest.raises(ValueError, match="has no field s2"):
        inputs_from([{"s1": "a"}], pairs)
    with pytest.raises(ValueError, match="columns a, b, c; this model reads s1, s2"):
        inputs_from(pd.DataFrame({"a": [1], "b": [2], "c": [3]}), pairs)


def test_a_new_folder_drops_the_runs_file_names_and_finds_its_test_or_only_file(tmp_path):
    from expkit.predict import data_config, input_file

    spec = {"config": {"data": {"path": "/old", "files": {"train": "a.csv", "test": "b.csv"},
                                "dev_fraction": 0.1, "max_eval_samples": None}}}  # fmt: skip
    (tmp_path / "only.jsonl").write_text('{"text": "x"}\n')
    data, new = data_config(spec, {"data.path": str(tmp_path)})
    assert new and dict(data.files) == {} and data.dev_fraction is None
    assert input_file(data, new) == [tmp_path / "only.jsonl"]
    (tmp_path / "test.csv").write_text("text\nx\n")
    assert input_file(data, new) == [tmp_path / "test.csv"]
    (tmp_path / "other.tsv").write_text("text\nx\n")
    data, new = data_config(spec, {"data.path": str(tmp_path), "data.files.test": "other.tsv"})
    assert input_file(data, new) == [tmp_path / "other.tsv"]
    with pytest.raises(ExpkitError, match=r"unknown key data.colums \(data keys: dev_fraction"):
        data_config(spec, {"data.colums": "x"})


def test_a_new_file_is_read_whole_and_a_jsonl_one_as_jsonl_whatever_the_runs_format(tmp_path):
    from expkit.predict import data_config, read_as_named

    spec = {"config": {"data": {"path": "/old", "files": {}, "dev_fraction": None,
                                "max_eval_samples": 20, "format": "conll", "header": True,
                                "columns": None}}}  # fmt: skip
    data, new = data_config(spec, {"data.files.test": str(tmp_path / "x.jsonl")})
    assert new and data.max_eval_samples is None
    read_as_named(data, [tmp_path / "x.jsonl"], {})
    assert data.format is None
    data, _ = data_config(spec, {"data.files.test": str(tmp_path / "x.iob")})
    read_as_named(data, [tmp_path / "x.iob"], {})
    assert data.format == "conll"  # an extension that says nothing: the run's format
    given = {"data.files.test": str(tmp_path / "x.jsonl"), "data.format": "conll"}
    data, _ = data_config(spec, given)
    read_as_named(data, [tmp_path / "x.jsonl"], given)
    assert data.format == "conll"  # as the user says


def test_write_outputs_writes_jsonl_and_a_csv_with_a_column_per_score(tmp_path):
    from expkit.predict import write_outputs

    records = [{"id": 0, "text": "a", "labels": ["x", "y"], "scores": {"x": 0.9, "y": 0.6}}]
    jsonl, table = write_outputs(records, tmp_path / "out" / "p.jsonl")
    assert _records(jsonl) == records
    assert table.read_text().splitlines() == ["id,text,labels,scores.x,scores.y", "0,a,x|y,0.9,0.6"]


def test_the_spec_names_the_input_fields_and_example():
    from expkit.predictor import model_spec
    from expkit.tasks import task_class

    task = task_class("regression")(OmegaConf.create({"name": "regression"}))
    config = {"data": {"text_fields": ["sentence1", "sentence2"]}, "task": {"name": "regression"}}
    spec = model_spec(task, config, "r1", [["a", "b"]])
    assert spec["input_fields"] == ["sentence1", "sentence2"]
    assert spec["input_example"] == [["a", "b"]]
    assert spec["task"] == "regression" and spec["label_names"] == [] and spec["run_id"] == "r1"


# -- the real CLI ----------------------------------------------------------------------------


@pytest.mark.slow
def test_the_run_logs_a_servable_mlflow_model_once(trained):
    workdir, run_id, run_dir, _ = trained
    client = _client(workdir)
    run = client.get_run(run_id)
    (output,) = run.outputs.model_outputs  # the UI's Models column
    model = client.get_logged_model(output.model_id)
    assert model.name == "model" and model.source_run_id == run_id
    assert str(model.status).endswith("READY")
    files = {a.path for a in client.list_logged_model_artifacts(output.model_id)}
    assert {"MLmodel", "python_env.yaml", "input_example.json"} <= files
    # the weights are stored once in the store: in the MLflow Model, not as run artifacts too
    assert "model" not in {a.path for a in client.list_artifacts(run_id)}
    spec = json.loads((run_dir / "model" / "expkit.json").read_text())
    assert spec["task"] == "classification" and spec["label_names"] == ["negative", "positive"]
    assert spec["input_fields"] == ["sentence"] and spec["run_id"] == run_id


@pytest.mark.slow
def test_predict_gives_the_same_records_from_every_source(trained, tmp_path):
    workdir, run_id, run_dir, _ = trained
    outs = {}
    for name, source in [("id", run_id), ("dir", str(run_dir)), ("uri", f"runs:/{run_id}/model"),
                         ("folder", str(run_dir / "model"))]:  # fmt: skip
        out = tmp_path / f"{name}.jsonl"
        proc = run_cli("predict", source, "--out", str(out), cwd=workdir)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "24 predictions of" in proc.stdout
        outs[name] = _records(out)
    first = outs["id"]
    assert [r["id"] for r in first] == list(range(24))
    assert set(first[0]) == {"id", "sentence", "label", "scores"}
    first_row = (SHARED_DATA / "sst2" / "test.tsv").read_text().split("\n")[1]
    assert first[0]["sentence"] == first_row.split("\t")[0]
    for other in outs.values():
        _same(first, other)
    assert sum(first[0]["scores"].values()) == pytest.approx(1.0, abs=1e-6)
    csv_lines = (tmp_path / "id.csv").read_text().splitlines()
    assert csv_lines[0] == "id,sentence,label,scores.negative,scores.positive"
    assert len(csv_lines) == 25


@pytest.mark.slow
def test_evaluate_gives_the_runs_test_metrics_and_logs_its_own_run(trained, tmp_path):
    workdir, run_id, _, metrics = trained
    proc = run_cli("evaluate", run_id, "--out", str(tmp_path / "e.jsonl"), cwd=workdir)
    assert proc.returncode == 0, proc.stderr[-2000:]
    client = _client(workdir)
    (evaluation,) = client.search_runs(
        [client.get_run(run_id).info.experiment_id],
        filter_string=f"tags.`expkit.evaluation_of` = '{run_id}'",
    )
    assert evaluation.info.status == "FINISHED"
    for name in ("test_accuracy", "test_f1", "test_precision", "test_recall"):
        assert evaluation.data.metrics[name] == pytest.approx(metrics[name], abs=1e-6)
    assert evaluation.data.params["examples"] == "24"
    artifacts = {a.path for a in client.list_artifacts(evaluation.info.run_id)}
    assert artifacts == {"e.jsonl", "e.csv"}


@pytest.mark.slow
def test_pyfunc_and_a_served_model_answer_what_predict_wrote(trained, tmp_path):
    workdir, run_id, _, _ = trained
    out = tmp_path / "p.jsonl"
    proc = run_cli("predict", run_id, "--out", str(out), cwd=workdir)
    assert proc.returncode == 0, proc.stderr[-2000:]
    expected = _records(out)[:5]
    texts = [r["sentence"] for r in expected]
    uri = f"sqlite:///{workdir}/runs/mlflow.db"

    code = (
        "import json, sys, mlflow; mlflow.set_tracking_uri(sys.argv[1]); "
        "m = mlflow.pyfunc.load_model(sys.argv[2]); "
        "print(json.dumps(m.predict(json.loads(sys.argv[3]))))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code, uri, f"runs:/{run_id}/model", json.dumps(texts)],
        capture_output=True, text=True, cwd=workdir,
    )  # fmt: skip
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    _same(expected, json.loads(loaded.stdout.strip().splitlines()[-1]))

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"runs:/{run_id}/model",
         "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
        cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        answer = _post(port, {"inputs": texts}, server)
    finally:
        server.terminate()
        server.wait()
    records = answer["predictions"]
    assert [r["sentence"] for r in records] == texts  # in order
    _same(expected, records)


def _post(port: int, body: dict, server: subprocess.Popen) -> dict:
    """POST /invocations once the server answers /ping (it loads the model first)."""
    while True:
        if server.poll() is not None:
            raise AssertionError(f"mlflow models serve exited: {server.stderr.read()[-2000:]}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/ping")
            break
        except OSError:
            time.sleep(0.5)
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request) as reply:
        return json.loads(reply.read())


@pytest.mark.slow
def test_bad_sources_and_files_are_one_line_and_log_nothing(trained, tmp_path):
    workdir, run_id, _, _ = trained
    client = _client(workdir)
    experiments = [e.experiment_id for e in client.search_experiments()]
    before = len(client.search_runs(experiments))
    _assert_one_line_error(
        run_cli("predict", "0" * 32, cwd=workdir), "no run 00000000000000000000000000000000"
    )
    _assert_one_line_error(
        run_cli("predict", "models:/nope/1", cwd=workdir), "no model models:/nope/1"
    )  # fmt: skip
    _assert_one_line_error(run_cli("predict", "not-a-model", cwd=workdir), "names no model")
    no_model = tmp_path / "nomodel"
    (no_model).mkdir()
    (no_model / "config.yaml").write_text("seed: 1\n")
    _assert_one_line_error(run_cli("predict", str(no_model), cwd=workdir), "has no saved model")
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / "test.tsv").write_text("review\tlabel\ngood\t1\n")
    _assert_one_line_error(
        run_cli("predict", run_id, f"data.path={wrong}", cwd=workdir),
        "no text column 'sentence'", "its columns are: review, label",
    )  # fmt: skip
    unknown = tmp_path / "unknown"
    unknown.mkdir()
    (unknown / "test.tsv").write_text("sentence\tlabel\ngood\tneutral\n")
    _assert_one_line_error(
        run_cli("evaluate", run_id, f"data.path={unknown}", cwd=workdir),
        "label 'neutral' is not in the label set (negative, positive)",
    )  # fmt: skip
    _assert_one_line_error(
        run_cli("predict", run_id, "trainer.lr=1", cwd=workdir), "unknown key trainer.lr"
    )  # fmt: skip
    _assert_one_line_error(
        run_cli("predict", run_id, "predict.precision=fp8", cwd=workdir), "predict.precision=fp8"
    )  # fmt: skip
    assert len(client.search_runs(experiments)) == before  # no evaluation run was opened
    assert not (workdir / "predictions.jsonl").exists()


@pytest.mark.slow
def test_a_run_without_a_saved_model_is_named(tmp_path):
    proc = run_cli(*SST2, "trainer.save_model=false", "hydra.run.dir=runs/nomodel", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run_id = json.loads((tmp_path / "runs" / "nomodel" / "mlflow_run.json").read_text())["run_id"]
    _assert_one_line_error(run_cli("predict", run_id, cwd=tmp_path), "has no logged model")
    _assert_one_line_error(
        run_cli("predict", str(tmp_path / "runs" / "nomodel"), cwd=tmp_path), "has no saved model"
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(
    ("task", "data", "fields"),
    [
        ("regression", "stsb", {"id", "sentence1", "sentence2", "value"}),
        ("multilabel", "goemotions", {"id", "text", "labels", "scores"}),
    ],
)
def test_regression_and_multilabel_predict_and_evaluate(tmp_path, task, data, fields):
    args = [
        "model=tiny", f"task={task}", f"data={data}", f"data.path={SHARED_DATA / data}",
        "data.max_train_samples=64", "data.max_eval_samples=20", "trainer.max_steps=3",
        "trainer.progress=false", "hydra.run.dir=runs/a",
    ]  # fmt: skip
    if task == "multilabel":
        args.append("task.threshold=auto")  # chosen on dev, recorded, used by predict
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((tmp_path / "runs" / "a" / "metrics.json").read_text())
    run_id = json.loads((tmp_path / "runs" / "a" / "mlflow_run.json").read_text())["run_id"]
    proc = run_cli("evaluate", run_id, "--out", str(tmp_path / "e.jsonl"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = _records(tmp_path / "e.jsonl")
    assert len(records) == 20 and set(records[0]) == fields
    client = _client(tmp_path)
    (evaluation,) = client.search_runs(
        [client.get_run(run_id).info.experiment_id],
        filter_string=f"tags.`expkit.evaluation_of` = '{run_id}'",
    )
    for name, value in metrics.items():
        if name.startswith("test_") and name != "test_loss":
            assert evaluation.data.metrics[name] == pytest.approx(value, abs=1e-6), name
    if task == "multilabel":
        spec = json.loads((tmp_path / "runs" / "a" / "model" / "expkit.json").read_text())
        threshold = spec["task_state"]["threshold"]
        assert isinstance(threshold, float)
        for record in records:
            on = sorted(n for n, p in record["scores"].items() if p >= threshold)
            assert sorted(record["labels"]) == on
