"""Extractive question answering (SQuAD v1.1 / v2): the answer is a span of the context.

A row is a question, its context and its reference answers (`text` and `answer_start` lists): a
SQuAD JSON file as distributed, or flat jsonl / parquet / csv files with `data.id_field`,
`data.question_field`, `data.context_field` and `data.answers_field` columns. Each training
answer must sit at its `answer_start` in the context (`task.fix_offsets=true` takes the nearest
place the text is found instead).

Question and context go in as a pair, only the context truncated; a context longer than
`data.max_length` becomes several windows sharing `task.doc_stride` sub-tokens, every one kept.
A window holding the (first) answer is labelled with its start and end sub-tokens, one without it
with the CLS token. The encoding keeps bookkeeping columns (each window's question, the character
offsets of its context sub-tokens, the references), which the collator drops and `merge` /
`golds` read. The answer of a question is the best span over all its windows (`task.n_best`
starts and ends per window, at most `task.max_answer_length` sub-tokens); with
`task.version_2_with_negative`, "no answer" when the null (CLS) score beats it by more than
`task.null_score_threshold`. Metrics are SQuAD's official exact match and F1, per question.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from typing import Any, ClassVar

from omegaconf import DictConfig

from expkit.data import RawData, kind_of, preview
from expkit.errors import DataError
from expkit.tasks.base import Task, check_fast_tokenizer, model_tensors

# the bookkeeping columns of the encoding
EXAMPLE, OFFSETS, REFERENCE = "example", "offsets", "reference"
BOOKKEEPING = (EXAMPLE, OFFSETS, REFERENCE)
V2_METRICS = (
    "HasAns_exact_match", "HasAns_f1", "NoAns_exact_match", "NoAns_f1",
    "best_exact_match", "best_exact_match_threshold", "best_f1", "best_f1_threshold",
)  # fmt: skip


def parse_answers(value: Any, where: str) -> tuple[list[str], list[int]]:
    """A row's answers as (texts, starts): {text: [...], answer_start: [...]} (SQuAD flattened,
    the hub's layout), a list of {text, answer_start} objects, or either as JSON text (a csv
    cell)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise DataError(
                f"{where}: answers {preview(value)} is not JSON; answers are "
                '{"text": [...], "answer_start": [...]}'
            ) from None
    if isinstance(value, list):
        if not all(isinstance(a, dict) for a in value):
            raise DataError(
                f"{where}: answers is a list, but not of {{text, answer_start}} objects"
            )
        value = {"text": [a.get("text") for a in value],
                 "answer_start": [a.get("answer_start") for a in value]}  # fmt: skip
    if not isinstance(value, dict) or "text" not in value or "answer_start" not in value:
        raise DataError(
            f"{where}: answers is a {kind_of(value)} ({preview(value)}); answers are "
            '{"text": [...], "answer_start": [...]}'
        )
    texts, starts = value["text"], value["answer_start"]
    if hasattr(texts, "tolist"):  # parquet gives arrays
        texts, starts = texts.tolist(), starts.tolist()
    if not isinstance(texts, list) or not isinstance(starts, list) or len(texts) != len(starts):
        raise DataError(f"{where}: answers need as many answer_start values as texts")
    for text, start in zip(texts, starts, strict=True):
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{where}: an answer text is {preview(text)}, not text")
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise DataError(f"{where}: answer_start {preview(start)} is not a character offset")
    return list(texts), list(starts)


def locate(context: str, text: str, start: int) -> int | None:
    """The start of `text` in `context` nearest to `start`; None if it is not there."""
    found, at = [], context.find(text)
    while at >= 0:
        found.append(at)
        at = context.find(text, at + 1)
    return min(found, key=lambda a: (abs(a - start), a)) if found else None


class QuestionAnsweringTask(Task):
    name = "question_answering"
    objective = "eval_f1"
    losses: ClassVar[tuple[str, ...]] = ("model",)
    summary: ClassVar[tuple[str, ...]] = ("exact_match", "f1")
    metric_names: ClassVar[tuple[str, ...]] = ("exact_match", "f1", *V2_METRICS)
    model_class: ClassVar[str] = "AutoModelForQuestionAnswering"
    # none: peft's QUESTION_ANS wrapper drops token_type_ids (the question/context segments);
    # its plain PeftModel passes every input to the model
    peft_task_type: ClassVar[str | None] = None

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg)
        self.v2 = bool(cfg.version_2_with_negative)
        self.reports: dict[str, list[list[Any]]] = {}  # split -> rows of the report

    # -- at the door ---------------------------------------------------------------------------
    def check(self, cfg: DictConfig) -> list[str]:
        errors = super().check(cfg)
        t = cfg.task
        max_length = int(cfg.data.max_length)
        if not 0 <= int(t.doc_stride) < max_length:
            errors.append(
                f"task.doc_stride={t.doc_stride} must be at least 0 and less than "
                f"data.max_length={max_length} (the sub-tokens two windows of a long context "
                "share; the default is 128 for data.max_length=384)"
            )
        for key in ("n_best", "max_answer_length"):
            if int(t[key]) < 1:
                errors.append(f"task.{key}={t[key]} must be 1 or more")
        return errors

    def check_data(self, raw: RawData, cfg: DictConfig) -> None:
        """Before the run opens (bad input leaves no run behind), what the encoding would stop
        on: a tokenizer that is not fast, and a question that leaves its windows no room to move
        on through a long context."""
        from expkit.model import build_tokenizer

        tokenizer = build_tokenizer(cfg.model)
        check_fast_tokenizer(tokenizer, self.name, "it maps sub-tokens to characters")
        kwargs = self.encode_kwargs(cfg.data)
        for split in raw.splits:
            questions, contexts = raw.texts[split]
            self._check_questions(questions, contexts, tokenizer, int(kwargs["max_length"]),
                                  int(kwargs["doc_stride"]), raw.sources[split],
                                  raw.labels[split])  # fmt: skip

    # -- data ----------------------------------------------------------------------------------
    def read(
        self,
        tables: dict[str, tuple[list[str], list[dict]]],
        sources: dict[str, str],
        data_cfg: DictConfig,
        notes: list[str],
    ) -> RawData:
        texts, labels = {}, {}
        for split, (columns, rows) in tables.items():
            questions, contexts = self._inputs(columns, rows, data_cfg, sources[split])
            answers = self._answers(columns, rows, data_cfg, sources[split], contexts, split,
                                    notes)  # fmt: skip
            texts[split], labels[split] = [questions, contexts], answers
        fields = [str(data_cfg.question_field), str(data_cfg.context_field)]
        return RawData(texts, labels, [], sources, notes, fields)

    def _inputs(
        self, columns: list[str], rows: list[dict], data_cfg: DictConfig, source: str
    ) -> tuple[list[str], list[str]]:
        from expkit.data import text_column

        out = []
        for key in ("question_field", "context_field"):
            name = str(data_cfg[key])
            if name not in columns:
                raise DataError(
                    f"{source} has no column '{name}' (data.{key}); its columns are: "
                    f"{', '.join(columns)}"
                )
            out.append(text_column([r[name] for r in rows], name, source, []))
        # leading spaces in a question only take room in the window (as the tutorial strips)
        return [q.strip() for q in out[0]], out[1]

    def _id(self, row: dict, number: int, data_cfg: DictConfig) -> str:
        value = row.get(str(data_cfg.id_field))
        return str(value) if value is not None else f"row {number}"

    def _answers(
        self,
        columns: list[str],
        rows: list[dict],
        data_cfg: DictConfig,
        source: str,
        contexts: list[str],
        split: str,
        notes: list[str],
    ) -> list[dict[str, Any]]:
        """Each row's references ({text, answer_start}); training answers checked against the
        context (moved to where they are with task.fix_offsets)."""
        field = str(data_cfg.answers_field)
        if field not in columns:
            raise DataError(
                f"{source} has no column '{field}' (data.answers_field: each question's "
                f'{{"text": [...], "answer_start": [...]}}); its columns are: {", ".join(columns)}'
            )
        if not self.v2 and "is_impossible" in columns:
            raise DataError(
                f"{source} is a SQuAD v2 file (its questions carry is_impossible: some have no "
                "answer); set task.version_2_with_negative=true"
            )
        out, moved = [], 0
        for number, (row, context) in enumerate(zip(rows, contexts, strict=True), start=1):
            qid = self._id(row, number, data_cfg)
            where = f"{source}: question {qid}"
            value = row[field]
            if row.get("is_impossible") is True or value is None:
                value = {"text": [], "answer_start": []}
            texts, starts = parse_answers(value, where)
            if not texts and not self.v2:
                kind = "training split" if split == "train" else f"{split} split"
                raise DataError(
                    f"{where} has no answer; every question of a {kind} needs one in SQuAD v1.1 "
                    "(questions without one: task.version_2_with_negative=true)"
                )
            if split == "train":
                for i, (text, start) in enumerate(zip(texts, starts, strict=True)):
                    if context[start:].startswith(text):
                        continue
                    found = locate(context, text, start) if self.cfg.fix_offsets else None
                    if found is None:
                        hint = (
                            "; the text is nowhere in the context"
                            if self.cfg.fix_offsets
                            else "; task.fix_offsets=true takes the nearest place the text is found"
                        )
                        raise DataError(
                            f"{where}: answer {text!r} is not at answer_start {start} of its "
                            f"context (there: {context[start : start + len(text)]!r}){hint}"
                        )
                    starts[i] = found
                    moved += 1
            out.append({"id": qid, "text": texts, "answer_start": starts})
        if moved:
            notes.append(
                f"{source}: {moved} answer(s) not at their answer_start moved to the nearest "
                "place the text is found (task.fix_offsets=true)"
            )
        return out

    def encode_kwargs(self, data_cfg: DictConfig) -> dict[str, Any]:
        # every window padded to max_length: the model's loss normalises its start and end
        # scores over all positions, padding included, so with per-batch padding a window's
        # loss (and the training) would depend on the windows batched with it and on how many
        # processes share a batch
        return {"max_length": int(data_cfg.max_length), "doc_stride": int(self.cfg.doc_stride),
                "padding": "max_length"}  # fmt: skip

    def encode(
        self, raw: RawData, split: str, tokenizer: Any, kwargs: dict[str, Any]
    ) -> dict[str, list]:
        questions, contexts = raw.texts[split]
        # the references travel with the evaluated splits: metrics need the context's text
        references = raw.labels[split] if split != "train" else None
        return self._encode(questions, contexts, tokenizer, kwargs, raw.labels[split],
                            references, raw.sources[split])  # fmt: skip

    def encode_inputs(
        self, texts: list[list[Any]], tokenizer: Any, kwargs: dict[str, Any]
    ) -> dict[str, list]:
        questions = [str(q).strip() for q in texts[0]]
        return self._encode(questions, [str(c) for c in texts[1]], tokenizer, kwargs, None, None,
                            "the input")  # fmt: skip

    def _encode(
        self,
        questions: list[str],
        contexts: list[str],
        tokenizer: Any,
        kwargs: dict[str, Any],
        answers: list[dict[str, Any]] | None,
        references: list[dict[str, Any]] | None,
        source: str,
    ) -> dict[str, list]:
        """Every window of every (question, context), with the answer's sub-token positions
        (given answers) and the bookkeeping columns."""
        check_fast_tokenizer(tokenizer, self.name, "it maps sub-tokens to characters")
        max_length, stride = int(kwargs["max_length"]), int(kwargs["doc_stride"])
        self._check_questions(questions, contexts, tokenizer, max_length, stride, source, answers)
        encoded = tokenizer(
            questions, contexts, truncation="only_second", max_length=max_length, stride=stride,
            return_overflowing_tokens=True, return_offsets_mapping=True,
            padding=kwargs["padding"],
        )  # fmt: skip
        examples = list(encoded.pop("overflow_to_sample_mapping"))
        offsets = encoded.pop("offset_mapping")
        out: dict[str, list] = {k: list(v) for k, v in encoded.items()}
        kept, starts, ends = [], [], []
        for f, example in enumerate(examples):
            sequence = encoded.sequence_ids(f)
            spans = [list(o) if s == 1 else [-1, -1]
                     for o, s in zip(offsets[f], sequence, strict=True)]  # fmt: skip
            kept.append(spans)
            if answers is not None:
                start, end = self._positions(spans, answers[example], out["input_ids"][f],
                                             tokenizer)  # fmt: skip
                starts.append(start)
                ends.append(end)
        out[EXAMPLE], out[OFFSETS] = examples, kept
        if answers is not None:
            out["start_positions"], out["end_positions"] = starts, ends
        if references is not None:
            out[REFERENCE] = [
                json.dumps({"id": references[e]["id"], "context": contexts[e],
                            "answers": references[e]["text"]}, ensure_ascii=False)
                for e in examples
            ]  # fmt: skip
        return out

    @staticmethod
    def _positions(
        spans: list[list[int]], answer: dict[str, Any], ids: list[int], tokenizer: Any
    ) -> tuple[int, int]:
        """The sub-tokens of the first answer in a window; the CLS token's when the window does
        not hold all of it (or the question has none)."""
        cls = ids.index(tokenizer.cls_token_id) if tokenizer.cls_token_id in ids else 0
        if not answer["text"]:
            return cls, cls
        first = answer["answer_start"][0]
        last = first + len(answer["text"][0])
        inside = [i for i, (a, _b) in enumerate(spans) if a >= 0]
        lo, hi = inside[0], inside[-1]
        if spans[lo][0] > first or spans[hi][1] < last:
            return cls, cls
        start = lo
        while start <= hi and spans[start][1] <= first:
            start += 1
        end = hi
        while end >= lo and spans[end][0] >= last:
            end -= 1
        return start, max(end, start)

    @staticmethod
    def _check_questions(
        questions: list[str],
        contexts: list[str],
        tokenizer: Any,
        max_length: int,
        stride: int,
        source: str,
        answers: list[dict[str, Any]] | None,
    ) -> None:
        """Every question whose context has to be split into windows leaves room in a window for
        more context than the windows share (else the tokenizer cannot move on through the
        context: it stops the process). A long question with a context that fits beside it is
        fine."""
        lengths = [len(ids) for ids in tokenizer(questions, add_special_tokens=False)["input_ids"]]
        room = max_length - tokenizer.num_special_tokens_to_add(pair=True)
        tight = [i for i, n in enumerate(lengths) if room - n <= stride]
        if not tight:
            return
        # only these few contexts are measured: does the pair need truncating at all?
        fits = tokenizer([contexts[i] for i in tight], add_special_tokens=False)["input_ids"]
        for i, context_ids in zip(tight, fits, strict=True):
            n = lengths[i]
            if n + len(context_ids) <= room:
                continue
            which = f"question {answers[i]['id']}" if answers is not None else f"row {i + 1}"
            raise DataError(
                f"{source}: {which} has {n} sub-tokens, which leaves {max(room - n, 0)} of "
                f"data.max_length={max_length} for its context, not more than "
                f"task.doc_stride={stride}; raise data.max_length or lower task.doc_stride"
            )

    def collator(self, tokenizer: Any) -> Any:
        return QACollator(tokenizer)

    def merge(self, values: list[Any], encoded: Any) -> list[Any]:
        """Per question, its best span over all its windows: {start, end (characters), score
        (the span's probability in its window), gap (null score minus the span's; v2)}."""
        import numpy as np

        examples, offsets = list(encoded[EXAMPLE]), list(encoded[OFFSETS])
        n_best, longest = int(self.cfg.n_best), int(self.cfg.max_answer_length)
        best: list[dict[str, Any] | None] = [None] * (max(examples, default=-1) + 1)
        nulls = [np.inf] * len(best)
        for value, example, spans in zip(values, examples, offsets, strict=True):
            spans = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
            logits = np.asarray(value, dtype=np.float64)[: len(spans)]
            start, end = logits[:, 0], logits[:, 1]
            nulls[example] = min(nulls[example], start[0] + end[0])  # CLS: "no answer"
            found = best_span(start, end, spans[:, 0] >= 0, n_best, longest, self.v2)
            if found is None:
                continue
            score, i, j, probability = found
            if best[example] is None or score > best[example]["logit"]:
                best[example] = {"start": int(spans[i, 0]), "end": int(spans[j, 1]),
                                 "logit": score, "score": probability}  # fmt: skip
        out = []
        for example, found in enumerate(best):
            record = found or {"start": -1, "end": -1, "logit": -np.inf, "score": 0.0}
            record["gap"] = float(nulls[example] - record["logit"])
            out.append(record)
        return out

    def encoded_notes(self, split: str, encoded: Any) -> list[str]:
        windows = Counter(encoded[EXAMPLE])
        split_up = sum(1 for n in windows.values() if n > 1)
        lines = []
        if split_up:
            lines.append(
                f"{split}: {split_up} of {len(windows)} contexts are longer than a window and "
                f"were split into {sum(n for n in windows.values() if n > 1)} windows sharing "
                f"task.doc_stride={self.cfg.doc_stride} sub-tokens"
            )
        if "start_positions" in encoded.column_names:
            empty = sum(1 for s in encoded["start_positions"] if s == 0)
            if empty:
                lines.append(
                    f"{split}: {empty} of {len(encoded)} windows hold no answer (their label is "
                    "the CLS token)"
                )
        return lines

    def golds(self, encoded: Any) -> list[Any]:
        """Per question: its id, context and reference answer texts."""
        out: dict[int, Any] = {}
        for example, reference in zip(encoded[EXAMPLE], encoded[REFERENCE], strict=True):
            if example not in out:
                out[example] = json.loads(reference)
        return [out[e] for e in range(len(out))]

    def input_fields(self, data_cfg: DictConfig) -> list[str]:
        return [str(data_cfg.question_field), str(data_cfg.context_field)]

    def read_inputs(
        self, columns: list[str], rows: list[dict], data_cfg: DictConfig, source: str
    ) -> list[list[Any]]:
        missing = [f for f in self.input_fields(data_cfg) if f not in columns]
        if missing:
            raise DataError(
                f"{source} has no column {', '.join(map(repr, missing))}, which the model reads "
                f"(data.question_field, data.context_field); its columns are: {', '.join(columns)}"
            )
        return list(self._inputs(columns, rows, data_cfg, source))

    def read_gold(
        self, columns: list[str], rows: list[dict], data_cfg: DictConfig, source: str
    ) -> list[Any]:
        _questions, contexts = self._inputs(columns, rows, data_cfg, source)
        answers = self._answers(columns, rows, data_cfg, source, contexts, "test", [])
        return [{"id": a["id"], "context": c, "answers": a["text"]}
                for a, c in zip(answers, contexts, strict=True)]  # fmt: skip

    # -- model ---------------------------------------------------------------------------------
    def head_config(self, raw: RawData) -> dict[str, Any]:
        return {}  # a start and an end score per sub-token: the model class's own head

    # -- evaluation and predictions ------------------------------------------------------------
    def logits(self, output: Any) -> Any:
        import torch

        start, end = model_tensors(output)[:2]
        return torch.stack((start, end), dim=-1)  # (batch, length, 2)

    def outputs(self, logits: Any) -> Any:
        return logits.float()

    def metrics(self, outputs: list[Any], labels: list[Any], split: str) -> dict[str, float]:
        from expkit.metrics import answer_exact, answer_f1, squad_metrics

        predictions = [_text(o, g["context"]) for o, g in zip(outputs, labels, strict=True)]
        references = [g["answers"] for g in labels]
        gaps = [o["gap"] for o in outputs] if self.v2 else None
        threshold = float(self.cfg.null_score_threshold)
        scores = squad_metrics(predictions, references, gaps, threshold)
        rows = []
        for i, (pred, gold) in enumerate(zip(predictions, labels, strict=True)):
            if gaps is not None and gaps[i] > threshold:
                pred = ""
            refs = [r for r in gold["answers"] if r.strip()] or [""]
            rows.append([split, gold["id"], pred, json.dumps(gold["answers"], ensure_ascii=False),
                         max(answer_exact(pred, r) for r in refs),
                         max(answer_f1(pred, r) for r in refs)])  # fmt: skip
        self.reports[split] = rows
        return scores

    def report(self) -> dict[str, str]:
        if not self.reports:
            return {}
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(["split", "id", "prediction", "answers", "exact_match", "f1"])
        for rows in self.reports.values():
            writer.writerows([*row[:4], row[4], f"{row[5]:.4f}"] for row in rows)
        return {"qa_predictions.csv": text.getvalue()}

    def prediction(self, score: Any, inputs: list[Any]) -> dict[str, Any]:
        context = str(inputs[1])
        unanswerable = score["start"] < 0 or (
            self.v2 and score["gap"] > float(self.cfg.null_score_threshold)
        )
        record: dict[str, Any] = {
            "answer": "" if unanswerable else context[score["start"] : score["end"]],
            "start": None if unanswerable else score["start"],
            "end": None if unanswerable else score["end"],
            "score": 0.0 if unanswerable else float(score["score"]),
        }
        if self.v2:
            record["unanswerable"] = bool(unanswerable)
            record["null_score_gap"] = float(score["gap"])
        return record


def _text(output: dict[str, Any], context: str) -> str:
    return context[output["start"] : output["end"]] if output["start"] >= 0 else ""


def best_span(
    start: Any, end: Any, inside: Any, n_best: int, longest: int, with_null: bool
) -> tuple[float, int, int, float] | None:
    """(start + end logit, start index, end index, probability) of a window's best span: of the
    `n_best` best starts and ends among the context's sub-tokens, end not before start and at
    most `longest` sub-tokens. The probability is the start's times the end's, each a softmax
    over the context's sub-tokens (and the CLS token with `with_null`). None: no such span."""
    import numpy as np

    where = np.flatnonzero(inside)
    if where.size == 0:
        return None
    k = min(n_best, where.size)
    starts = where[np.argsort(-start[where], kind="stable")[:k]]
    ends = where[np.argsort(-end[where], kind="stable")[:k]]
    total = start[starts][:, None] + end[ends][None, :]
    length = ends[None, :] - starts[:, None]
    total = np.where((length >= 0) & (length < longest), total, -np.inf)
    flat = int(np.argmax(total))
    a, b = divmod(flat, k)
    if not np.isfinite(total[a, b]):
        return None
    pool = np.concatenate(([0], where)) if with_null else where
    p_start = _softmax_at(start[pool], int(np.flatnonzero(pool == starts[a])[0]))
    p_end = _softmax_at(end[pool], int(np.flatnonzero(pool == ends[b])[0]))
    return float(total[a, b]), int(starts[a]), int(ends[b]), p_start * p_end


def _softmax_at(values: Any, index: int) -> float:
    import numpy as np

    shifted = np.exp(values - values.max())
    return float(shifted[index] / shifted.sum())


class QACollator:
    """The model's columns as tensors (the windows are padded to max_length when encoded):
    the bookkeeping columns of the encoding stay out of the batch."""

    def __init__(self, tokenizer: Any) -> None:
        from transformers import DataCollatorWithPadding

        self.inner = DataCollatorWithPadding(tokenizer)

    def __call__(self, features: list[dict[str, Any]]) -> Any:
        kept = [{k: v for k, v in f.items() if k not in BOOKKEEPING} for f in features]
        return self.inner(kept)
