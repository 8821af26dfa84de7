"""Language modelling through the real CLI on real text (the start of Tiny Shakespeare): both
backends equal step for step in one sweep, perplexity recorded, resume across an epoch,
predictions and evaluation of the saved model, the adapted encoder fine-tuned for a task, and
bad input stopped at the door."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.conftest import SHARED_DATA, run_cli, sweep_runs, two_processes_and_one
from tests.test_errors import _assert_no_run_recorded, _assert_one_line_error

pytestmark = pytest.mark.slow
SHAKESPEARE = SHARED_DATA / "tinyshakespeare" / "input.txt"
SETTINGS = {
    "causal_lm": ["task=causal_lm", "model=tiny_gpt2", "task.block_size=64", "optimizer.lr=3e-3",
                  "task.max_new_tokens=8"],
    "masked_lm": ["task=masked_lm", "model=tiny", "data.max_length=32", "optimizer.lr=3e-3"],
}  # fmt: skip
COMMON = ["data=text", "trainer.max_steps=30", "trainer.batch_size=16", "trainer.log_every=1",
          "trainer.eval_every=10", "trainer.save_every=10", "trainer.keep_checkpoints=0",
          "trainer.progress=false"]  # fmt: skip


def _history(client, run, name):
    return [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, name)]


@pytest.fixture(scope="module", params=["causal_lm", "masked_lm"])
def lm(request, tmp_path_factory):
    """A sweep over both backends of one language-modelling task on the first 12,000
    characters of Tiny Shakespeare (one file, the dev split its last 10 %)."""
    task = request.param
    workdir = tmp_path_factory.mktemp(task)
    data = workdir / "shakespeare"
    data.mkdir()
    (data / "input.txt").write_text(SHAKESPEARE.read_text(encoding="utf-8")[:12000], "utf-8")
    proc = run_cli("-m", "trainer=manual,hf", *SETTINGS[task], *COMMON, f"data.path={data}",
                   "hydra.sweep.dir=runs/sweep", cwd=workdir)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    client, parents, children = sweep_runs(f"sqlite:///{workdir}/runs/mlflow.db")
    runs = {r.data.tags["expkit.backend"]: r for r in children}
    return task, workdir, data, client, parents, runs


def test_both_backends_train_a_language_model_the_same(lm):
    _task, workdir, _data, client, parents, runs = lm
    manual, hf = runs["manual"], runs["hf"]
    assert manual.info.status == hf.info.status == "FINISHED"
    assert manual.data.params["objective.metric"] == "eval_loss"
    assert parents[0].data.tags["expkit.direction"] == "minimize"
    for name in ("loss", "grad_norm", "learning_rate"):
        a, b = _history(client, manual, name), _history(client, hf, name)
        assert [s for s, _ in a] == list(range(1, 31)) == [s for s, _ in b], name
        assert [v for _, v in b] == pytest.approx([v for _, v in a], abs=1e-4), name
    for name in ("eval_loss", "eval_perplexity", "eval_accuracy"):
        a, b = _history(client, manual, name), _history(client, hf, name)
        assert [s for s, _ in a] == [10, 20, 30] == [s for s, _ in b], name
        assert [v for _, v in b] == pytest.approx([v for _, v in a], rel=1e-6), name
    losses = [v for _, v in _history(client, manual, "eval_loss")]
    assert losses[-1] < losses[0] - 0.3  # it learned: dev perplexity fell
    final = manual.data.metrics
    assert final["eval_perplexity"] == pytest.approx(math.exp(final["eval_loss"]), rel=1e-9)
    metrics = json.loads((workdir / "runs" / "sweep" / "0" / "metrics.json").read_text())
    assert metrics["eval_loss"] == final["eval_loss"]
    log = (workdir / "runs" / "sweep" / "0" / "expkit.log").read_text()
    assert "held out, in order" in log and "blocks of up to" in log


def test_a_language_model_resumed_across_an_epoch_ends_as_the_whole_run(lm):
    """Resumed at step 10 with the hf backend; 30 steps of 16 span more than one epoch, whose
    masks (masked LM) are drawn anew."""
    task, workdir, data, _client, _parents, runs = lm
    whole = workdir / "runs" / "sweep" / "1"  # trainer=hf
    assert runs["hf"].data.tags["expkit.run_dir"] == str(whole)
    assert int(runs["hf"].data.params["derived.total_steps"]) == 30
    checkpoint = whole / "checkpoints" / "step_10"
    again = run_cli("trainer=hf", *SETTINGS[task], *COMMON, f"data.path={data}",
                    f"resume={checkpoint}", "hydra.run.dir=runs/again", cwd=workdir)  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    first = json.loads((whole / "metrics.json").read_text())
    second = json.loads((workdir / "runs" / "again" / "metrics.json").read_text())
    for name in ("eval_loss", "eval_perplexity", "eval_accuracy"):
        assert second[name] == pytest.approx(first[name], rel=1e-6), name


def test_the_saved_language_model_predicts_and_evaluates(lm):
    task, workdir, _data, _client, _parents, _runs = lm
    run_dir = workdir / "runs" / "sweep" / "0"
    inputs = workdir / "inputs.jsonl"
    texts = ["First Citizen:\nWe are [MASK] poor citizens.", "All:\nWe [MASK] it."]
    if task == "causal_lm":
        texts = ["First Citizen:\n", "All:\nWe know"]
    inputs.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), "utf-8")
    out = workdir / f"{task}.jsonl"
    proc = run_cli("predict", str(run_dir), f"data.path={inputs}", "--out", str(out), cwd=workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["text"] for r in records] == texts
    if task == "causal_lm":
        assert all(r["new_tokens"] == 8 and isinstance(r["generated"], str) for r in records)
        again = workdir / "again.jsonl"
        proc = run_cli("predict", str(run_dir), f"data.path={inputs}", "--out", str(again),
                       cwd=workdir)  # fmt: skip
        assert again.read_text() == out.read_text()  # greedy: the same continuation
    else:
        for record in records:
            (candidates,) = record["masks"]
            assert len(candidates) == 5
            assert "[MASK]" not in record["filled"] and candidates[0]["token"] in record["filled"]
    scored = workdir / "scored.jsonl"
    text = SHAKESPEARE.read_text(encoding="utf-8")[20000:21600]  # not trained on
    passages = workdir / "passages.jsonl"
    passages.write_text("".join(json.dumps({"text": text[i : i + 400]}) + "\n"
                                for i in range(0, 1600, 400)), "utf-8")  # fmt: skip
    proc = run_cli("evaluate", str(run_dir), f"data.path={passages}", "--out", str(scored),
                   cwd=workdir)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    client, _, _ = sweep_runs(f"sqlite:///{workdir}/runs/mlflow.db")
    exp = client.get_experiment_by_name("expkit")
    (evaluation,) = client.search_runs([exp.experiment_id], "tags.`expkit.role` = 'evaluation'")
    m = evaluation.data.metrics
    assert m["test_perplexity"] == pytest.approx(math.exp(m["test_loss"]), rel=1e-9)
    rows = [json.loads(line) for line in scored.read_text().splitlines()]
    assert len(rows) == 4 and all(r["tokens"] > 0 and r["perplexity"] > 1 for r in rows)
    tokens = sum(r["tokens"] for r in rows)
    weighted = sum(r["loss"] * r["tokens"] for r in rows) / tokens  # per token, not per row
    assert weighted == pytest.approx(m["test_loss"], rel=1e-6)


def test_the_trained_model_is_a_base_to_train_on(lm, tmp_path):
    """masked_lm: the adapted encoder fine-tuned for a task (its MLM head dropped, a new task
    head); causal_lm: the saved decoder trained on from where it stopped."""
    task, workdir, data, client, _parents, runs = lm
    saved = workdir / "runs" / "sweep" / "0" / "model"
    if task == "masked_lm":
        args = [f"model.name_or_path={saved}"]  # the demo data set's classification
    else:
        args = [
            *SETTINGS[task],
            "data=text",
            f"data.path={data}",
            "model.init=pretrained",
            f"model.name_or_path={saved}",
            "trainer.eval_every=2",
            "optimizer.lr=1e-5",
        ]  # fmt: skip  (a fresh AdamW's first steps move far)
    proc = run_cli(*args, "trainer.max_steps=2", "trainer.batch_size=8", "trainer.save_model=false",
                   "tracking=none", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads(next((tmp_path / "runs").rglob("metrics.json")).read_text())
    log = next((tmp_path / "runs").rglob("expkit.log")).read_text()
    if task == "masked_lm":
        assert "test_accuracy" in metrics
        assert "new task head, randomly initialised: classifier" in log
    else:
        assert "new task head" not in log  # every weight came from the saved model
        start = _history(client, runs["manual"], "eval_loss")[0][1]  # after 10 steps of 30
        assert metrics["eval_loss"] < start


def test_lora_on_the_trained_model_equal_on_both_backends(lm):
    """The saved model as the base of a LoRA sweep over both backends: the same steps, only
    the adapter (and no tied output layer) trains, and model/ and adapter/ predict alike."""
    task, workdir, data, _client, _parents, _runs = lm
    saved = workdir / "runs" / "sweep" / "0" / "model"
    args = [*SETTINGS[task], "data=text", f"data.path={data}", "model.init=pretrained",
            f"model.name_or_path={saved}", "adapter=lora", "trainer.max_steps=6",
            "trainer.batch_size=8", "trainer.log_every=1", "trainer.eval_every=3",
            "trainer.progress=false", "tracking.uri=sqlite:///runs/lora.db"]  # fmt: skip
    proc = run_cli("-m", "trainer=manual,hf", *args, "hydra.sweep.dir=runs/lora", cwd=workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client, _, children = sweep_runs(f"sqlite:///{workdir}/runs/lora.db")
    runs = {r.data.tags["expkit.backend"]: r for r in children}
    manual, hf = runs["manual"], runs["hf"]
    for name in ("loss", "eval_loss"):
        a, b = _history(client, manual, name), _history(client, hf, name)
        assert [v for _, v in b] == pytest.approx([v for _, v in a], abs=1e-4), name
    params = manual.data.params
    trained = int(params["derived.trainable_params"])
    assert 0 < trained < 0.2 * int(params["derived.total_params"])
    kept = params.get("derived.adapter_modules_to_save", "")
    assert "lm_head" not in kept and "decoder" not in kept
    run_dir = workdir / "runs" / "lora" / "0"
    inputs = workdir / "lora_inputs.jsonl"
    prompt = "ROMEO:\nWhat [MASK] here?" if task == "masked_lm" else "ROMEO:\nWhat"
    inputs.write_text(json.dumps({"text": prompt}) + "\n", "utf-8")
    outputs = []
    for source in (run_dir / "model", run_dir / "adapter"):
        out = workdir / f"lora-{source.name}.jsonl"
        proc = run_cli("predict", str(source), f"data.path={inputs}", "--out", str(out),
                       cwd=workdir)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        outputs.append(json.loads(out.read_text()))
    if task == "masked_lm":
        a, b = (o["masks"][0] for o in outputs)
        assert [c["token"] for c in a] == [c["token"] for c in b]
        assert [c["score"] for c in a] == pytest.approx([c["score"] for c in b], abs=1e-5)
    else:
        assert outputs[0]["generated"] == outputs[1]["generated"]


@pytest.mark.parametrize(
    ("args", "content", "needles"),
    [
        (SETTINGS["causal_lm"], "", ["input.txt: no data rows (the input file is empty)"]),
        ([*SETTINGS["causal_lm"], "task.block_size=512"], "some text\n" * 50,
         ["task.block_size=512 is beyond the model's 256 positions"]),
        (["task=masked_lm", "model=tiny_gpt2"], "some text\n" * 50,
         ["task=masked_lm needs a tokenizer with a mask token"]),
    ],
)  # fmt: skip
def test_bad_language_model_input_is_one_line(tmp_path, args, content, needles):
    data = tmp_path / "data"
    data.mkdir()
    (data / "input.txt").write_text(content, "utf-8")
    proc = run_cli(*args, "data=text", f"data.path={data}", "trainer.max_steps=2", cwd=tmp_path)
    _assert_one_line_error(proc, *needles)
    _assert_no_run_recorded(tmp_path)
    assert not list(Path(tmp_path / "runs").glob("*/*/model"))


def test_two_processes_train_and_evaluate_a_language_model_as_one(tmp_path):
    """torchrun: each block evaluated once and the loss weighted by tokens across processes;
    two processes of 4 train as one of 8 (causal LM, no dropout, full blocks)."""

    data = tmp_path / "data"
    data.mkdir()
    (data / "input.txt").write_text(SHAKESPEARE.read_text(encoding="utf-8")[:12000], "utf-8")
    args = [*SETTINGS["causal_lm"], "data=text", f"data.path={data}", "model.dropout=0",
            "trainer.max_steps=4", "trainer.save_model=false", "trainer.progress=false",
            "tracking=none"]  # fmt: skip
    a, b = two_processes_and_one(*args, cwd=tmp_path)
    for name in ("eval_loss", "eval_perplexity", "eval_accuracy"):
        assert a[name] == pytest.approx(b[name], rel=1e-4), name
