"""Token classification (named entities): a tag per word, e.g. CoNLL-2003's PER / ORG / LOC / MISC.

A row is a sentence: a list of words and a list of tags (a CoNLL file's sentences, or jsonl /
parquet rows with `data.tokens_field` and `data.tags_field`). The tags are checked against the
scheme (`task.scheme`: IOB1, IOB2, BIOES); a tag out of the scheme's order is an error naming file
and line, or is converted with `task.repair_tags=true`.

Words are tokenized with `is_split_into_words=True`; the label sits on each word's first
sub-token (`task.label_all_tokens=true`: on every sub-token), -100 elsewhere. A sentence longer
than `data.max_length` becomes several windows of whole words sharing `task.stride` sub-tokens;
each word is predicted once, in the window where it has the most context. The encoding keeps
two bookkeeping columns (the sentence of each window, and which position predicts which word),
which the collator drops and `merge` reads. Metrics are seqeval's, per word, at the entity level.
"""

from __future__ import annotations

import csv
import io
import numbers
import re
from collections import Counter
from typing import Any, ClassVar

from omegaconf import DictConfig

from expkit.data import RawData, kind_of, preview
from expkit.errors import DataError
from expkit.tables import LINE_FIELD
from expkit.tasks.base import (
    Task,
    check_class_weights,
    check_fast_tokenizer,
    given_label_names,
    shown_split,
)

# the prefixes each scheme writes (O aside)
SCHEMES: dict[str, tuple[str, ...]] = {
    "IOB1": ("I", "B"),
    "IOB2": ("B", "I"),
    "BIOES": ("B", "I", "E", "S"),
}
EXAMPLE, WORDS = "example", "word_ids"  # the bookkeeping columns of the encoding
_WORD = re.compile(r"\w+|[^\w\s]")  # raw text to words: runs of word characters, punctuation


def split_tag(tag: str) -> tuple[str, str] | None:
    """(prefix, type) of a tag; None for O."""
    if tag == "O":
        return None
    prefix, dash, kind = tag.partition("-")
    return (prefix, kind) if dash and kind else ("", tag)


def entity_spans(tags: list[str]) -> list[tuple[str, int, int]]:
    """The entities of a tag sequence as (type, start, end) word spans, end exclusive, read
    leniently (as conlleval does): an I- or E- that does not continue its type starts one."""
    spans: list[tuple[str, int, int]] = []
    kind, start = None, 0

    def close(end: int) -> None:
        nonlocal kind
        if kind is not None:
            spans.append((kind, start, end))
        kind = None

    for i, tag in enumerate(tags):
        parts = split_tag(tag)
        if parts is None:
            close(i)
            continue
        prefix, t = parts
        if prefix in ("B", "S") or kind != t:
            close(i)
            kind, start = t, i
        if prefix in ("E", "S"):
            close(i + 1)
    close(len(tags))
    return spans


def write_tags(spans: list[tuple[str, int, int]], n: int, scheme: str) -> list[str]:
    """Tags of `n` words holding `spans`, written in `scheme`."""
    tags = ["O"] * n
    previous: tuple[str, int] | None = None  # (type, end) of the span before
    for kind, start, end in spans:
        if scheme == "BIOES" and end - start == 1:
            tags[start] = f"S-{kind}"
        else:
            for i in range(start, end):
                tags[i] = f"I-{kind}"
            # IOB1 writes B only between two entities of one type
            if scheme != "IOB1" or previous == (kind, start):
                tags[start] = f"B-{kind}"
            if scheme == "BIOES":
                tags[end - 1] = f"E-{kind}"
        previous = (kind, end)
    return tags


def scheme_problem(tags: list[str], scheme: str) -> tuple[int, str] | None:
    """(word index, why) of the first tag `scheme` does not allow there; None if all fit. A
    sequence fits when it is how the scheme writes the entities it holds."""
    prefixes = SCHEMES[scheme]
    for i, tag in enumerate(tags):
        parts = split_tag(tag)
        if parts is not None and parts[0] not in prefixes:
            written = ", ".join(f"{p}-TYPE" for p in prefixes)
            return i, f"tag '{tag}' is not in the {scheme} scheme (its tags are O, {written})"
    canonical = write_tags(entity_spans(tags), len(tags), scheme)
    for i, (tag, expected) in enumerate(zip(tags, canonical, strict=True)):
        if tag != expected:
            before = f"after '{tags[i - 1]}'" if i else "at the start of a sentence"
            return i, (
                f"tag '{tag}' {before} is not valid {scheme} (read as conlleval reads it, "
                f"{scheme} writes it '{expected}')"
            )
    return None


def _word_at(source: str, line: int | None, row: int, i: int) -> str:
    """Where word i of a sentence is: its line in a CoNLL file, else the row and word."""
    return f"{source}:{line + i}" if line is not None else f"{source}: data row {row}, word {i + 1}"


def _tag_text(value: Any, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, numbers.Integral)):
        raise DataError(f"{where}: tag {preview(value)} is a {kind_of(value)}; a tag is a name")
    return str(value).strip()


class TokenClassificationTask(Task):
    name = "token_classification"
    objective = "eval_f1"
    losses: ClassVar[tuple[str, ...]] = ("model", "cross_entropy")
    summary: ClassVar[tuple[str, ...]] = ("f1", "precision", "recall")
    metric_names: ClassVar[tuple[str, ...]] = ("precision", "recall", "f1", "accuracy")
    model_class: ClassVar[str] = "AutoModelForTokenClassification"
    peft_task_type: ClassVar[str] = "TOKEN_CLS"

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg)
        self.scheme = str(cfg.scheme)
        self.reports: dict[str, dict[str, dict[str, float]]] = {}  # split -> type -> scores

    # -- at the door ---------------------------------------------------------------------------
    def check(self, cfg: DictConfig) -> list[str]:
        errors = super().check(cfg)
        t = cfg.task
        if t.scheme not in SCHEMES:
            errors.append(f"task.scheme={t.scheme!r} is not valid (valid: {', '.join(SCHEMES)})")
        if int(t.stride) < 0:
            errors.append(
                f"task.stride={t.stride} must be 0 or more (the sub-tokens two windows of a long "
                "sentence share; at most half a window is used)"
            )
        return errors

    def check_data(self, raw: RawData, cfg: DictConfig) -> None:
        check_class_weights(raw, cfg, "tags")

    # -- data ----------------------------------------------------------------------------------
    def read(
        self,
        tables: dict[str, tuple[list[str], list[dict]]],
        sources: dict[str, str],
        data_cfg: DictConfig,
        notes: list[str],
    ) -> RawData:
        words, tags = {}, {}
        given = given_label_names(data_cfg)
        for split, (columns, rows) in tables.items():
            words[split], tags[split] = self._sentences(
                columns, rows, data_cfg, sources[split], notes, given
            )
        names = given if given is not None else self._tag_set(tags["train"])
        labels = {
            split: self._tag_ids(values, names, sources[split]) for split, values in tags.items()
        }
        texts = {split: [w] for split, w in words.items()}
        return RawData(texts, labels, names, sources, notes, [str(data_cfg.tokens_field)])

    def _sentences(
        self,
        columns: list[str],
        rows: list[dict],
        data_cfg: DictConfig,
        source: str,
        notes: list[str],
        given: list[str] | None,
    ) -> tuple[list[list[str]], list[list[str]]]:
        """The words and tags of every row, checked (and repaired, if asked) against the scheme."""
        tokens_field, tags_field = str(data_cfg.tokens_field), str(data_cfg.tags_field)
        for name, key in ((tokens_field, "data.tokens_field"), (tags_field, "data.tags_field")):
            if name not in columns:
                raise DataError(
                    f"{source} has no column '{name}' ({key}); its columns are: "
                    f"{', '.join(c for c in columns if c != LINE_FIELD)} (a CoNLL file: "
                    "data.format=conll)"
                )
        words_out, tags_out, repaired, sentences = [], [], 0, 0
        for row_number, row in enumerate(rows, start=1):
            line = row.get(LINE_FIELD)
            where = f"{source}:{line}" if line is not None else f"{source}: data row {row_number}"
            words = self._words(row[tokens_field], where, tokens_field)
            tags = row[tags_field]
            if not isinstance(tags, list):
                raise DataError(
                    f"{where}: '{tags_field}' is a {kind_of(tags)} ({preview(tags)}), not a list "
                    "of tags"
                )
            if len(tags) != len(words):
                raise DataError(
                    f"{where}: {len(words)} tokens but {len(tags)} tags; every token needs one tag"
                )
            tags = [
                self._tag_name(t, given, _word_at(source, line, row_number, i))
                for i, t in enumerate(tags)
            ]
            problem = scheme_problem(tags, self.scheme)
            if problem is not None:
                i, why = problem
                fixed = write_tags(entity_spans(tags), len(tags), self.scheme)
                unrepairable = "scheme (its tags are" in why
                if unrepairable or not self.cfg.repair_tags:
                    hint = (
                        f"; set task.scheme to the file's scheme (valid: {', '.join(SCHEMES)})"
                        if unrepairable
                        else "; task.repair_tags=true converts such tags (read as conlleval "
                        "reads them), or set task.scheme to the file's scheme"
                    )
                    raise DataError(f"{_word_at(source, line, row_number, i)}: {why}{hint}")
                repaired += sum(a != b for a, b in zip(tags, fixed, strict=True))
                sentences += 1
                tags = fixed
            words_out.append(words)
            tags_out.append(tags)
        if repaired:
            notes.append(
                f"{source}: {repaired} tag(s) in {sentences} sentence(s) converted to valid "
                f"{self.scheme} (task.repair_tags=true)"
            )
        return words_out, tags_out

    @staticmethod
    def _words(value: Any, where: str, field: str) -> list[str]:
        if not isinstance(value, list):
            raise DataError(
                f"{where}: '{field}' is a {kind_of(value)} ({preview(value)}), not a list of "
                "words (raw text is for expkit predict; training data gives its words)"
            )
        if not value:
            raise DataError(f"{where}: no tokens ('{field}' is an empty list)")
        for i, word in enumerate(value, start=1):
            if not isinstance(word, (str, numbers.Number)) or isinstance(word, bool):
                raise DataError(f"{where}: token {i} is a {kind_of(word)} ({preview(word)})")
            if not str(word).strip():
                raise DataError(f"{where}: token {i} is empty")
        return [str(w) for w in value]

    @staticmethod
    def _tag_name(value: Any, given: list[str] | None, where: str) -> str:
        """A tag as its name: tag ids (jsonl from the hub) name data.label_names' entries."""
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            if given is None:
                raise DataError(
                    f"{where}: tag {value} is an id; give the tag names in id order "
                    "(data.label_names=[O,B-PER,...] or data.label_names_file)"
                )
            if not 0 <= int(value) < len(given):
                raise DataError(
                    f"{where}: tag id {value} is outside data.label_names ({len(given)} tags)"
                )
            return given[int(value)]
        return _tag_text(value, where)

    @staticmethod
    def _tag_set(train_tags: list[list[str]]) -> list[str]:
        """The tags of the train split, sorted, O first."""
        seen = {t for tags in train_tags for t in tags}
        return (["O"] if "O" in seen else []) + sorted(seen - {"O"})

    @staticmethod
    def _tag_ids(sentences: list[list[str]], names: list[str], source: str) -> list[list[int]]:
        index = {name: i for i, name in enumerate(names)}
        out = []
        for row, tags in enumerate(sentences, start=1):
            try:
                out.append([index[t] for t in tags])
            except KeyError as missing:
                shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
                raise DataError(
                    f"{source}: sentence {row}: tag '{missing.args[0]}' is not in the tag set "
                    f"({shown}; from the train split, or data.label_names)"
                ) from None
        return out

    def encode_kwargs(self, data_cfg: DictConfig) -> dict[str, Any]:
        return {
            "max_length": int(data_cfg.max_length),
            "stride": int(self.cfg.stride),
            "label_all_tokens": bool(self.cfg.label_all_tokens),
        }

    def encode(
        self, raw: RawData, split: str, tokenizer: Any, kwargs: dict[str, Any]
    ) -> dict[str, list]:
        return self._encode(raw.texts[split][0], tokenizer, kwargs, raw.labels[split])

    def encode_inputs(
        self, texts: list[list[Any]], tokenizer: Any, kwargs: dict[str, Any]
    ) -> dict[str, list]:
        sentences = [v if isinstance(v, list) else words_of(v)[0] for v in texts[0]]
        return self._encode(sentences, tokenizer, kwargs, None)

    def _encode(
        self,
        sentences: list[list[str]],
        tokenizer: Any,
        kwargs: dict[str, Any],
        tags: list[list[int]] | None,
    ) -> dict[str, list]:
        """The windows of every sentence, tokenized, with their labels (given tags) and the
        bookkeeping columns `merge` reads."""
        check_fast_tokenizer(tokenizer, self.name, "it maps sub-tokens to words")
        max_length = int(kwargs["max_length"])
        budget = max_length - tokenizer.num_special_tokens_to_add(pair=False)
        # at most half a window shared: each window moves on by half of it or more
        stride = min(int(kwargs["stride"]), budget // 2)
        whole = tokenizer(sentences, is_split_into_words=True, add_special_tokens=False)
        sizes = []
        for s, words in enumerate(sentences):
            counts = Counter(w for w in whole.word_ids(s) if w is not None)
            sizes.append([counts.get(i, 0) for i in range(len(words))])
        sentences, sizes = _with_unknown(sentences, sizes, tokenizer)
        windows: list[tuple[int, int, int]] = []  # (sentence, first word, end word)
        for s, counts in enumerate(sizes):
            windows += [(s, a, b) for a, b in word_windows(counts, budget, stride)]
        encoded = tokenizer(
            [sentences[s][a:b] for s, a, b in windows],
            is_split_into_words=True, truncation=True, max_length=max_length,
        )  # fmt: skip
        word_ids = [encoded.word_ids(f) for f in range(len(windows))]
        owners = _owners(windows, word_ids)
        inside = self._inside_ids() if kwargs["label_all_tokens"] else None
        out: dict[str, list] = {k: list(v) for k, v in encoded.items()}
        scored, labels = [], []
        for f, (s, a, _b) in enumerate(windows):
            positions, row = [], []
            previous = None
            for local in word_ids[f]:
                first = local is not None and local != previous
                word = a + local if local is not None else -1
                positions.append(word if first and owners[(s, word)] == f else -1)
                if tags is not None:
                    if local is None:
                        row.append(-100)
                    elif first:
                        row.append(tags[s][word])
                    else:
                        row.append(inside[tags[s][word]] if inside is not None else -100)
                previous = local
            scored.append(positions)
            labels.append(row)
        out[EXAMPLE] = [s for s, _a, _b in windows]
        out[WORDS] = scored
        if tags is not None:
            out["labels"] = labels
        return out

    def _inside_ids(self) -> list[int]:
        """For each tag id, the tag a later sub-token of its word carries: I-X for B-X (where
        the tag set has it), the tag itself otherwise."""
        index = {name: i for i, name in enumerate(self.label_names)}
        out = []
        for i, name in enumerate(self.label_names):
            parts = split_tag(name)
            inside = f"I-{parts[1]}" if parts is not None and parts[0] in ("B", "S") else None
            out.append(index.get(inside, i) if inside is not None else i)
        return out

    def collator(self, tokenizer: Any) -> Any:
        return TokenCollator(tokenizer)

    def merge(self, values: list[Any], encoded: Any) -> list[Any]:
        import numpy as np

        examples, positions = list(encoded[EXAMPLE]), list(encoded[WORDS])
        words: list[dict[int, Any]] = [{} for _ in range(max(examples, default=-1) + 1)]
        for value, example, where in zip(values, examples, positions, strict=True):
            for pos, word in enumerate(where):
                if word >= 0:
                    words[example][word] = value[pos]
        out = []
        for example, found in enumerate(words):
            if sorted(found) != list(range(len(found))):  # the encoding guarantees it
                raise RuntimeError(f"sentence {example}: a word was predicted in no window")
            out.append(np.asarray([found[w] for w in range(len(found))]))
        return out

    def encoded_notes(self, split: str, encoded: Any) -> list[str]:
        windows = Counter(encoded[EXAMPLE])
        split_up = sum(1 for n in windows.values() if n > 1)
        if not split_up:
            return []
        return [
            f"{split}: {split_up} of {len(windows)} sentences are longer than data.max_length "
            f"sub-tokens and were split into {sum(n for n in windows.values() if n > 1)} windows "
            f"sharing task.stride={self.cfg.stride} sub-tokens (each word predicted once, in the "
            "window where it has the most context)"
        ]

    def input_fields(self, data_cfg: DictConfig) -> list[str]:
        return [str(data_cfg.tokens_field)]

    def input_example(self, raw: RawData, n: int = 2) -> list[list[Any]]:
        # a served model takes raw text: the example is the words joined
        return [[" ".join(row[0])] for row in super().input_example(raw, n)]

    def read_inputs(
        self, columns: list[str], rows: list[dict], data_cfg: DictConfig, source: str
    ) -> list[list[Any]]:
        tokens_field = str(data_cfg.tokens_field)
        text_field = str(data_cfg.text_fields[0]) if data_cfg.text_fields else "text"
        if tokens_field in columns:
            values = [r[tokens_field] for r in rows]
            out = []
            for row, value in enumerate(values, start=1):
                where = f"{source}: data row {row}"
                out.append(
                    value if isinstance(value, str) else self._words(value, where, tokens_field)
                )
            return [out]
        if text_field in columns:
            from expkit.data import text_column

            return [text_column([r[text_field] for r in rows], text_field, source, [])]
        raise DataError(
            f"{source} has neither a '{tokens_field}' column (lists of words, data.tokens_field) "
            f"nor a '{text_field}' column (raw text, data.text_fields); its columns are: "
            f"{', '.join(c for c in columns if c != LINE_FIELD)}"
        )

    def read_gold(
        self, columns: list[str], rows: list[dict], data_cfg: DictConfig, source: str
    ) -> list[Any]:
        _words, tags = self._sentences(columns, rows, data_cfg, source, [], None)
        return self._tag_ids(tags, self.label_names, source)

    # -- model ---------------------------------------------------------------------------------
    def head_config(self, raw: RawData) -> dict[str, Any]:
        return {
            "num_labels": raw.num_labels,
            "id2label": dict(enumerate(raw.label_names)),
            "label2id": {name: i for i, name in enumerate(raw.label_names)},
        }

    def params(self, raw: RawData) -> dict[str, Any]:
        return {"num_labels": raw.num_labels, "label_names": ",".join(raw.label_names)}

    # -- evaluation and predictions ------------------------------------------------------------
    def outputs(self, logits: Any) -> Any:
        return logits.argmax(-1)  # a tag id per position

    def scores(self, logits: Any) -> Any:
        return logits.float().softmax(-1)  # a probability per tag and position

    def metrics(self, outputs: list[Any], labels: list[Any], split: str) -> dict[str, float]:
        from expkit.metrics import entity_metrics

        names = self.label_names
        predicted = [[names[int(i)] for i in row] for row in outputs]
        gold = [[names[int(i)] for i in row] for row in labels]
        scores, per_type = entity_metrics(predicted, gold, self.scheme, bool(self.cfg.strict))
        self.reports[split] = per_type
        return scores

    def report(self) -> dict[str, str]:
        if not self.reports:
            return {}
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(["split", "type", "precision", "recall", "f1", "support"])
        for split, per_type in self.reports.items():
            for kind, s in per_type.items():
                writer.writerow([split, kind, *(f"{s[k]:.6f}" for k in ("precision", "recall",
                                 "f1")), int(s["support"])])  # fmt: skip
        return {"ner_report.csv": text.getvalue()}

    def figures(self) -> dict[str, bytes]:
        from expkit.plots import bars, png

        split = shown_split(self.reports)
        if split is None:
            return {}
        types = {k: v for k, v in self.reports[split].items() if not k.endswith(" avg")}
        if not types:
            return {}
        figure = bars(list(types), [v["f1"] for v in types.values()], f"F1 per type ({split})")
        return {f"per_type_f1_{split}.png": png(figure)}

    def prediction(self, score: Any, inputs: list[Any]) -> dict[str, Any]:
        import numpy as np

        probs = np.asarray(score, dtype=float).reshape(-1, len(self.label_names))
        value = inputs[0]
        words, offsets = (value, None) if isinstance(value, list) else words_of(value)
        ids = probs.argmax(-1)
        tags = [self.label_names[int(i)] for i in ids]
        entities = []
        for kind, start, end in entity_spans(tags):
            entity: dict[str, Any] = {
                "type": kind,
                "text": " ".join(words[start:end]),
                "start_word": start,
                "end_word": end,  # exclusive: words[start_word:end_word]
                "score": float(probs[np.arange(start, end), ids[start:end]].mean()),
            }
            if offsets is not None:  # raw text: where the entity is in it
                entity["start"], entity["end"] = offsets[start][0], offsets[end - 1][1]
                entity["text"] = value[entity["start"] : entity["end"]]
            entities.append(entity)
        return {"words": list(words), "tags": tags, "entities": entities}


def words_of(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    """Raw text as words (runs of word characters; each punctuation mark alone, as CoNLL
    writes them) and their character offsets."""
    found = list(_WORD.finditer(str(text)))
    return [m.group() for m in found], [m.span() for m in found]


def word_windows(sizes: list[int], budget: int, stride: int) -> list[tuple[int, int]]:
    """Windows of whole words, each at most `budget` sub-tokens (a single longer word alone),
    consecutive ones sharing about `stride` sub-tokens of words: (first word, end word)."""
    n = len(sizes)
    if sum(sizes) <= budget:
        return [(0, n)]
    out, start = [], 0
    while True:
        end, total = start, 0
        while end < n and total + sizes[end] <= budget:
            total += sizes[end]
            end += 1
        end = max(end, start + 1)
        out.append((start, end))
        if end >= n:
            return out
        back, shared = end, 0
        while back > start + 1 and shared + sizes[back - 1] <= stride:
            shared += sizes[back - 1]
            back -= 1
        start = back


def _owners(windows: list[tuple[int, int, int]], word_ids: list[list[Any]]) -> dict:
    """(sentence, word) -> the window predicting it: of the windows holding the word's first
    sub-token, the one where it sits farthest from an edge (the most context on both sides)."""
    best: dict[tuple[int, int], tuple[int, int]] = {}  # -> (context, window)
    for f, (s, a, b) in enumerate(windows):
        seen = set()
        for local in word_ids[f]:
            if local is None or local in seen:
                continue
            seen.add(local)
            context = min(local, b - a - 1 - local)
            key = (s, a + local)
            if key not in best or context > best[key][0]:
                best[key] = (context, f)
    return {key: f for key, (_c, f) in best.items()}


def _with_unknown(
    sentences: list[list[str]], sizes: list[list[int]], tokenizer: Any
) -> tuple[list[list[str]], list[list[int]]]:
    """Words the tokenizer makes no sub-token of (a control character alone) replaced by its
    unknown token, so every word has a position to be predicted at."""
    unk = tokenizer.unk_token
    if unk is None or all(all(sizes_) for sizes_ in sizes):
        return sentences, sizes
    words = [[w if n else unk for w, n in zip(ws, ns, strict=True)]
             for ws, ns in zip(sentences, sizes, strict=True)]  # fmt: skip
    return words, [[n or 1 for n in ns] for ns in sizes]


class TokenCollator:
    """DataCollatorForTokenClassification (labels padded with -100) on the model's columns:
    the bookkeeping columns of the encoding stay out of the batch."""

    def __init__(self, tokenizer: Any) -> None:
        from transformers import DataCollatorForTokenClassification

        self.inner = DataCollatorForTokenClassification(tokenizer)

    def __call__(self, features: list[dict[str, Any]]) -> Any:
        kept = [{k: v for k, v in f.items() if k not in (EXAMPLE, WORDS)} for f in features]
        return self.inner(kept)
