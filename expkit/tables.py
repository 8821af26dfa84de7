"""Find and read the split files of a local data set: csv, tsv, jsonl/json, parquet, CoNLL
column files (one token a line; a sentence per row), SQuAD files (a row per question) and plain
text (a document per file, or a row per line).

Errors name the file and line. Text formats use the stdlib alone (start-up stays fast);
pandas is imported for parquet only.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from expkit.errors import DataError

SPLIT_ALIASES: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "dev": ("dev", "validation", "valid", "val"),
    "test": ("test",),
}
FORMATS = ("csv", "tsv", "jsonl", "json", "parquet", "conll", "txt")
DELIMITED = ("csv", "tsv")
QUOTING = {"none": csv.QUOTE_NONE, "csv": csv.QUOTE_MINIMAL}
# GLUE's tsv files carry unbalanced quotes inside fields: quoting is off unless asked for
DEFAULT_QUOTING = {"tsv": "none", "csv": "csv"}
EXTRA_FIELDS = ("error", "ignore")
# how data.dev_fraction holds out dev rows: a seeded draw, or the end of the training text
HOLDOUTS = ("random", "tail")
FILE_SPLITS = {"train": "train", "dev": "dev", "validation": "dev", "test": "test"}

Cell = str | int | float | bool | list | dict | None
Row = dict[str, Cell]
Table = tuple[list[str], list[Row]]


def file_not_folder(path: str | Path) -> str | None:
    """The message for a data.path that names a file rather than a folder, else None."""
    if not Path(path).expanduser().is_file():
        return None
    hint = ""
    if Path(path).stem.lower() in {a for aliases in SPLIT_ALIASES.values() for a in aliases}:
        hint = f", e.g. data.path={Path(path).parent}"  # a split file: its folder was meant
    return (
        f"data.path '{path}' is a file, not a folder (data.path: a folder holding train/dev/test "
        f"files in csv, tsv, jsonl or parquet{hint})"
    )


def find_split_files(directory: str | Path) -> dict[str, Path]:
    """Map split name ("train", "dev", "test") -> its file in `directory`."""
    problem = file_not_folder(directory)
    if problem is not None:
        raise DataError(problem)
    root = Path(directory).expanduser().resolve()
    if not root.is_dir():
        raise DataError(
            f"data directory '{root}' does not exist (set data.path to a folder holding "
            "train/dev/test files in csv, tsv, jsonl or parquet)"
        )
    found: dict[str, Path] = {}
    for split, aliases in SPLIT_ALIASES.items():
        matches = [root / f"{a}.{ext}" for a in aliases for ext in FORMATS]
        matches = [m for m in matches if m.is_file()]
        if len(matches) > 1:
            names = ", ".join(m.name for m in matches)
            raise DataError(f"more than one {split} file in '{root}' ({names}): keep only one")
        if matches:
            found[split] = matches[0]
    texts = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() == ".txt")
    if not found and len(texts) == 1:
        found["train"] = texts[0]  # one plain-text file and no split names: the training text
    if "train" not in found:
        present = ", ".join(sorted(p.name for p in root.iterdir())) or "nothing"
        raise DataError(
            f"no train file in '{root}' (expected train.csv, train.tsv, train.jsonl, "
            f"train.parquet or train.txt, or a single .txt file; found: {present})"
        )
    return found


def _no_rows(path: Path) -> DataError:
    return DataError(f"{path}: no data rows (the {path.stem} file is empty)")


def _read_text(path: Path) -> str:
    """The whole file as text; decoded here so a bad byte is reported with its line."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        bad = data[exc.start : exc.start + 1].hex()
        raise DataError(
            f"{path}: not UTF-8 text ({exc.reason}, byte 0x{bad} on line {line}); "
            "save the file as UTF-8"
        ) from None
    # a byte-order mark (Excel, MRPC) would otherwise stick to the first column name
    return text.removeprefix("\ufeff")


def _check_header(path: Path, header: list[str]) -> list[str]:
    header = [h.rstrip("\r") for h in header]
    empty = [str(i) for i, h in enumerate(header, start=1) if not h.strip()]
    if empty:
        raise DataError(
            f"{path}:1: empty column name in the header (column {', '.join(empty)}); "
            "every column needs a name"
        )
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        names = ", ".join(f"'{h}'" for h in dupes)
        raise DataError(f"{path}:1: duplicate column name {names} in the header; names must differ")
    return header


@dataclass
class ReadOptions:
    """How to read one file: the data config's format keys (defaults: the old behaviour)."""

    format: str | None = None  # None: from the extension
    header: bool = True
    columns: list[str] | None = None  # the names of the fields when header is False
    extra_fields: str = "error"  # rows longer than the columns: error | ignore
    quoting: str | None = None  # none | csv; None: DEFAULT_QUOTING of the format
    # CoNLL files: the column holding the tag (-1: the last), and the row fields they fill
    tag_column: int = -1
    tokens_field: str = "tokens"
    tags_field: str = "tags"
    # plain-text files: the field their text fills, and a row per line instead of per file
    text_field: str = "text"
    line_by_line: bool = False


LINE_FIELD = "_line"  # a CoNLL sentence's first line: errors about its tokens name the line


@dataclass
class Extra:
    """Rows of one file that had more fields than columns (extra_fields=ignore)."""

    count: int = 0
    first_line: int = 0
    most: int = 0


def columns_problem(columns: list[str]) -> str | None:
    """Why `columns` cannot name a file's fields (empty or duplicate names), else None."""
    empty = [str(i) for i, c in enumerate(columns, start=1) if not str(c).strip()]
    if empty:
        return f"data.columns={list(columns)} has an empty name (position {', '.join(empty)})"
    dupes = sorted({c for c in columns if list(columns).count(c) > 1})
    if dupes:
        return f"data.columns={list(columns)} has duplicates ({', '.join(dupes)})"
    return None


def _read_delimited(
    path: Path,
    delimiter: str,
    quoting: int,
    opts: ReadOptions | None = None,
    extra: Extra | None = None,
) -> Table:
    opts = opts or ReadOptions()
    # whole documents in one field exceed csv's default 128 KiB field limit
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    # newline="" leaves \r\n inside quoted fields alone; csv itself ends lines on \n, \r\n or \r
    reader = csv.reader(
        io.StringIO(_read_text(path), newline=""), delimiter=delimiter, quoting=quoting
    )
    ignore = opts.extra_fields == "ignore"
    try:
        if opts.header:
            header = next(reader, None)
            if not header:
                raise _no_rows(path)
            header = _check_header(path, header)
            origin = "as in the header"
        else:
            header = list(opts.columns or [])
            origin = f"data.columns has {len(header)} names"
        width = len(header)
        rows: list[Row] = []
        append = rows.append
        for fields in reader:
            if len(fields) != width:
                if not fields:  # a blank line
                    continue
                if len(fields) > width and ignore:
                    # the record is the first `width` fields; the rest are trailing notes
                    if extra is not None:
                        extra.count += 1
                        extra.first_line = extra.first_line or reader.line_num
                        extra.most = max(extra.most, len(fields))
                    fields = fields[:width]
                else:
                    hint = ""
                    if len(fields) > width and not opts.header:
                        hint = " (data.extra_fields=ignore keeps the first fields of longer rows)"
                    raise DataError(
                        f"{path}:{reader.line_num}: expected {width} fields ({origin}), "
                        f"found {len(fields)}{hint}"
                    )
            append(dict(zip(header, fields, strict=True)))  # width checked above
    except csv.Error as exc:
        kind = "tsv" if delimiter == "\t" else "csv"  # as read: data.format may override the name
        raise DataError(f"{path}:{reader.line_num}: malformed {kind} ({exc})") from None
    return header, rows


def _fill(path: Path, records: list) -> Table:
    """Columns in first-seen order; a row without some key gets None there."""
    columns: dict[str, None] = {}
    for r in records:
        columns.update(dict.fromkeys(r))
    for r in records:
        if len(r) != len(columns):
            for c in columns:
                r.setdefault(c, None)
    return list(columns), records


def _squad_rows(path: Path, articles: Any) -> Table:
    """A SQuAD file (`data` -> articles -> `paragraphs` -> `context`, `qas`) as one row per
    question: id, title, question, context, answers ({text: [...], answer_start: [...]}, as
    flat files and the hub's copies give them) and, in SQuAD v2 files, is_impossible."""
    rows: list[Row] = []
    where = f"{path}: not a SQuAD file"
    if not isinstance(articles, list):
        raise DataError(f"{where} ('data' is a {type(articles).__name__}, not a list of articles)")
    for a, article in enumerate(articles, start=1):
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            raise DataError(f"{where} (article {a} has no list of 'paragraphs')")
        for p, paragraph in enumerate(paragraphs, start=1):
            if not isinstance(paragraph, dict) or not isinstance(paragraph.get("qas"), list):
                raise DataError(f"{where} (article {a}, paragraph {p} has no list of 'qas')")
            for q, qa in enumerate(paragraph["qas"], start=1):
                if not isinstance(qa, dict):
                    raise DataError(f"{where} (article {a}, paragraph {p}, question {q})")
                answers = qa.get("answers") or []
                if not isinstance(answers, list) or not all(isinstance(x, dict) for x in answers):
                    raise DataError(
                        f"{path}: question {qa.get('id', q)!r}: 'answers' is not a list of "
                        "{text, answer_start} objects"
                    )
                row: Row = {
                    "id": qa.get("id"),
                    "title": article.get("title"),
                    "question": qa.get("question"),
                    "context": paragraph.get("context"),
                    "answers": {
                        "text": [x.get("text") for x in answers],
                        "answer_start": [x.get("answer_start") for x in answers],
                    },
                }
                if "is_impossible" in qa:
                    row["is_impossible"] = qa["is_impossible"]
                rows.append(row)
    return _fill(path, rows)


def _read_json(path: Path) -> Table:
    text = _read_text(path)
    if path.suffix.lower() == ".json" and text.lstrip().startswith("{"):
        try:
            whole = json.loads(text)
        except json.JSONDecodeError:
            whole = None  # one object per line, read below
        if isinstance(whole, dict) and "data" in whole:
            return _squad_rows(path, whole["data"])
    if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
        bad = next((i for i, r in enumerate(records, 1) if not isinstance(r, dict)), None)
        if bad is not None:
            found = type(records[bad - 1]).__name__
            raise DataError(f"{path}: item {bad} of the JSON list is a {found}, not an object")
        return _fill(path, records)
    hint = "; a .json file holds a list of objects, one object per line, or SQuAD's layout"
    hint = hint if path.suffix.lower() == ".json" else ""
    records = []
    # split on \n only: str.splitlines also breaks on U+2028 etc., legal inside JSON strings
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{number}: not valid JSON ({exc.msg}{hint})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{number}: expected a JSON object, found {type(obj).__name__}")
        records.append(obj)
    return _fill(path, records)


def _read_conll(path: Path, opts: ReadOptions) -> Table:
    """A CoNLL column file: one token a line, columns split on whitespace, the word in the first
    and the tag in `opts.tag_column`; a blank line ends a sentence; -DOCSTART- lines are
    document breaks, not tokens. One row per sentence: its words, its tags, its first line."""
    rows: list[Row] = []
    words: list[str] = []
    tags: list[str] = []
    start, width, first = 0, 0, 0

    def end_sentence() -> None:
        if words:
            rows.append({opts.tokens_field: list(words), opts.tags_field: list(tags),
                         LINE_FIELD: start})  # fmt: skip
            words.clear()
            tags.clear()

    for number, line in enumerate(_read_text(path).split("\n"), start=1):
        fields = line.split()
        if not fields or fields[0] == "-DOCSTART-":
            end_sentence()
            continue
        if not width:
            width, first = len(fields), number
            column = opts.tag_column if opts.tag_column >= 0 else width + opts.tag_column
            if width < 2 or not 0 < column < width:
                raise DataError(
                    f"{path}:{number}: {width} column(s), so data.tag_column={opts.tag_column} "
                    f"names no tag column (a CoNLL line is the word, then other columns; the tag "
                    f"column is 1 to {width - 1}, or -1 for the last)"
                )
        elif len(fields) != width:
            raise DataError(
                f"{path}:{number}: {len(fields)} column(s), but the file's lines have {width} "
                f"(as on line {first}); CoNLL columns are split on whitespace, so a word or tag "
                "cannot hold a space"
            )
        if not words:
            start = number
        words.append(fields[0])
        tags.append(fields[column])
    end_sentence()
    return [opts.tokens_field, opts.tags_field, LINE_FIELD], rows


def _read_txt(path: Path, opts: ReadOptions) -> Table:
    """A plain-text file: one row holding the whole file (a document), or with
    `opts.line_by_line` one row per non-blank line (its line number kept for messages)."""
    text = _read_text(path)
    field = opts.text_field
    if not opts.line_by_line:
        return [field], ([{field: text}] if text.strip() else [])
    rows: list[Row] = [
        {field: line.rstrip("\r"), LINE_FIELD: number}
        for number, line in enumerate(text.split("\n"), start=1)
        if line.strip()
    ]
    return [field, LINE_FIELD], rows


def _read_parquet(path: Path) -> Table:
    import numpy as np
    import pandas as pd

    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise DataError(f"{path}: not a readable parquet file ({exc})") from None
    # missing values (NaN, NaT, pd.NA) become None, as a missing JSON key does
    frame = frame.astype(object).where(frame.notna(), None)
    for name in frame.columns:
        # list columns come back as numpy arrays: lists, as a JSON file gives them
        if frame[name].map(lambda v: isinstance(v, np.ndarray)).any():
            frame[name] = frame[name].map(lambda v: v.tolist() if isinstance(v, np.ndarray) else v)
    return [str(c) for c in frame.columns], frame.to_dict(orient="records")


def file_format(path: str | Path, format: str | None = None) -> str:
    """The format a file is read as: `format` if given, else its extension (lower case)."""
    return format or Path(path).suffix.lstrip(".").lower()


def read_table(
    path: str | Path, opts: ReadOptions | None = None, extra: Extra | None = None
) -> Table:
    """Read one split file into (column names, rows); the format comes from the extension
    unless `opts.format` names it. Rows longer than the columns are counted in `extra`
    when `opts.extra_fields` is "ignore"."""
    path = Path(path)
    opts = opts or ReadOptions()
    ext = file_format(path, opts.format)
    if ext not in DELIMITED and (not opts.header or opts.columns is not None):
        raise DataError(
            f"{path}: data.header=false and data.columns apply to csv and tsv files, not {ext} "
            "(its records name their own columns)"
        )
    if ext in DELIMITED:
        quoting = QUOTING[opts.quoting or DEFAULT_QUOTING[ext]]
        delimiter = "\t" if ext == "tsv" else ","
        columns, rows = _read_delimited(path, delimiter, quoting, opts, extra)
    elif ext in ("jsonl", "json"):
        columns, rows = _read_json(path)
    elif ext == "parquet":
        columns, rows = _read_parquet(path)
    elif ext == "conll":
        columns, rows = _read_conll(path, opts)
    elif ext == "txt":
        columns, rows = _read_txt(path, opts)
    else:
        supported = ", ".join(f".{f}" for f in FORMATS)
        kind = f"'.{ext}'" if ext else "(no extension)"
        raise DataError(
            f"{path}: unsupported file type {kind} (supported: {supported}; a file of another "
            "extension is read as data.format says, e.g. data.format=conll)"
        )
    if not rows:
        raise _no_rows(path)
    return columns, rows


def read_label_names(path: str | Path) -> list[str]:
    """Label names, one a line: line N names label id N-1 (blank lines at the end are fine)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"label names file '{path}' does not exist (data.label_names_file)")
    lines = _read_text(path).split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise DataError(f"{path}: no label names (one name a line; line N names label id N-1)")
    seen: dict[str, int] = {}
    names = []
    for number, line in enumerate(lines, start=1):
        name = line.strip()
        if not name:
            raise DataError(f"{path}:{number}: empty label name (one name a line, no blank lines)")
        if name in seen:
            raise DataError(
                f"{path}:{number}: duplicate label name '{name}' (also on line {seen[name]})"
            )
        seen[name] = number
        names.append(name)
    return names


def _get(data_cfg: Any, key: str, default: Any = None) -> Any:
    """A data config key, or `default` where an older config lacks it."""
    return (
        data_cfg.get(key, default) if hasattr(data_cfg, "get") else getattr(data_cfg, key, default)
    )


def label_names_path(data_cfg: Any) -> Path | None:
    """data.label_names_file resolved against data.path, or None when it is unset."""
    name = _get(data_cfg, "label_names_file")
    if name is None:
        return None
    path = Path(str(name)).expanduser()
    return path if path.is_absolute() else Path(str(data_cfg.path)).expanduser() / path


def read_options(data_cfg: Any) -> ReadOptions:
    """The data config's keys on how to read each file."""
    columns = _get(data_cfg, "columns")
    return ReadOptions(
        format=_get(data_cfg, "format"),
        header=bool(_get(data_cfg, "header", True)),
        columns=[str(c) for c in columns] if columns is not None else None,
        extra_fields=str(_get(data_cfg, "extra_fields", "error")),
        quoting=_get(data_cfg, "quoting"),
        tag_column=int(_get(data_cfg, "tag_column", -1)),
        tokens_field=str(_get(data_cfg, "tokens_field", "tokens")),
        tags_field=str(_get(data_cfg, "tags_field", "tags")),
        text_field=str((_get(data_cfg, "text_fields") or ["text"])[0]),
        line_by_line=bool(_get(data_cfg, "line_by_line", False)),
    )


def options_problems(data_cfg: Any) -> list[str]:
    """What is wrong with the data config's keys on reading files (checked without a file)."""
    problems = []
    opts = read_options(data_cfg)
    if opts.format is not None and opts.format not in FORMATS:
        problems.append(f"data.format={opts.format!r} is not valid (valid: {', '.join(FORMATS)})")
    if opts.quoting is not None and opts.quoting not in QUOTING:
        problems.append(
            f"data.quoting={opts.quoting!r} is not valid (valid: none: quote characters are "
            "text; csv: CSV-style quoted fields)"
        )
    if opts.extra_fields not in EXTRA_FIELDS:
        problems.append(
            f"data.extra_fields={opts.extra_fields!r} is not valid "
            f"(valid: {', '.join(EXTRA_FIELDS)})"
        )
    if not opts.header and opts.columns is None:
        problems.append("data.header=false needs data.columns (the names of the fields, in order)")
    if opts.header and opts.columns is not None:
        problems.append(
            "data.columns names the fields of files without a header row: set data.header=false "
            "too (files with a header row take their column names from it)"
        )
    if opts.columns is not None:
        problem = columns_problem(opts.columns)
        if problem is not None:
            problems.append(problem)
    holdout = _get(data_cfg, "holdout", "random")
    if holdout not in HOLDOUTS:
        problems.append(
            f"data.holdout={holdout!r} is not valid (valid: random: a seeded draw of rows; tail: "
            "the end of the training text)"
        )
    fraction = _get(data_cfg, "dev_fraction")
    if fraction is not None and not 0.0 < float(fraction) < 1.0:
        problems.append(
            f"data.dev_fraction={fraction} must be in (0, 1) (or null: no held-out dev)"
        )
    return problems


def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def resolve_split_files(data_cfg: Any) -> dict[str, list[Path]]:
    """Map split name -> its files, sorted: data.files (globs allowed, paths relative to
    data.path) when set, else the train/dev/test files found by name in data.path."""
    root = Path(str(data_cfg.path)).expanduser()
    files = dict(_get(data_cfg, "files") or {})
    if not files:
        return {split: [path] for split, path in find_split_files(root).items()}
    problem = file_not_folder(root)
    if problem is not None:
        raise DataError(problem)
    if not root.is_dir():
        raise DataError(
            f"data directory '{root}' does not exist (data.path: the folder data.files are in)"
        )
    unknown = sorted(k for k in files if k not in FILE_SPLITS)
    if unknown:
        raise DataError(
            f"data.files has an unknown split {', '.join(map(repr, unknown))} "
            "(valid: train, dev, validation, test)"
        )
    if "dev" in files and "validation" in files:
        raise DataError("data.files names both dev and validation (one split: keep one of them)")
    if "train" not in files:
        raise DataError(
            f"data.files ({', '.join(files)}) has no train file (e.g. data.files.train=train.csv)"
        )
    found: dict[str, list[Path]] = {}
    for key, pattern in files.items():
        pattern = str(pattern)
        full = Path(pattern).expanduser()
        absolute = full.is_absolute()
        full = full if absolute else root / full
        if _is_glob(pattern):
            # the folder's own name is no pattern, even if it holds a "[" or "*"
            spec = str(full) if absolute else f"{glob.escape(str(root))}/{pattern}"
            # sorted: the order of the rows must not depend on the file system
            paths = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
            if not paths:
                raise DataError(f"data.files.{key}='{pattern}' matches no file in '{root}'")
        elif not full.is_file():
            present = ", ".join(sorted(p.name for p in root.iterdir())) or "nothing"
            raise DataError(
                f"data.files.{key}: '{full}' is not a file (found in '{root}': {present})"
            )
        else:
            paths = [full]
        found[FILE_SPLITS[key]] = paths
    return found


def read_split(paths: list[Path], opts: ReadOptions, notes: list[str]) -> Table:
    """Read the files of one split and concatenate their rows in order."""
    columns: list[str] | None = None
    rows: list[Row] = []
    for path in paths:
        extra = Extra()
        cols, part = read_table(path, opts, extra)
        if extra.count:
            notes.append(
                f"{path}: {extra.count} rows have more than {len(cols)} fields (up to "
                f"{extra.most}; the first on line {extra.first_line}): their first {len(cols)} "
                "fields are the record, the rest is ignored (data.extra_fields=ignore)"
            )
        if columns is None:
            columns = cols
        elif set(cols) != set(columns):
            raise DataError(
                f"{path}: its columns ({', '.join(cols)}) differ from those of {paths[0]} "
                f"({', '.join(columns)}); the files of one split need the same columns"
            )
        rows.extend(part)
    assert columns is not None  # resolve_split_files gives every split one file or more
    return columns, rows


def _source(paths: list[Path]) -> str:
    if len(paths) == 1:
        return str(paths[0])
    return f"{paths[0].parent} ({len(paths)} files: {', '.join(p.name for p in paths)})"


def hold_out(rows: list[Row], fraction: float, seed: int) -> tuple[list[Row], list[Row]]:
    """(kept, held out): round(fraction * n) rows drawn by a seeded shuffle, each part in file
    order. The recipe is fixed (benchmarks reproduce it): do not change it."""
    n = len(rows)
    n_dev = round(fraction * n)
    perm = list(range(n))
    random.Random(seed).shuffle(perm)
    dev_idx = set(perm[:n_dev])
    kept = [r for i, r in enumerate(rows) if i not in dev_idx]
    held = [r for i, r in enumerate(rows) if i in dev_idx]
    return kept, held


def hold_out_tail(rows: list[Row], fraction: float, field: str) -> tuple[list[Row], list[Row]]:
    """(kept, held out): the last `fraction` of the rows' text in `field`, in order, nothing
    shuffled (text read in order leaks nothing across the cut). The row the cut falls in is
    split at the first line break after it (a whole document split in two); without one, the
    row goes to the held-out part."""
    total = sum(len(str(r[field])) for r in rows)
    cut = round((1.0 - fraction) * total)
    kept: list[Row] = []
    seen = 0
    for i, row in enumerate(rows):
        text = str(row[field])
        if seen + len(text) <= cut:
            kept.append(row)
            seen += len(text)
            continue
        at = text.find("\n", max(cut - seen - 1, 0))  # a cut at a line's start stays there
        held = rows[i + 1 :]
        if at < 0 or at + 1 >= len(text):
            return kept, [row, *held]
        return [*kept, {**row, field: text[: at + 1]}], [{**row, field: text[at + 1 :]}, *held]
    return kept, []


def read_splits(data_cfg: Any) -> tuple[dict[str, Table], dict[str, str], list[str]]:
    """Read every split of a local data set as the data config says: (tables, sources, notes).

    tables[split] is (column names, rows), sources[split] names where it came from (for
    messages), and notes are lines for the log (ignored extra fields, a held-out dev split).
    """
    problems = options_problems(data_cfg)
    if problems:
        raise DataError("; ".join(problems))
    opts = read_options(data_cfg)
    files = resolve_split_files(data_cfg)
    notes: list[str] = []
    tables = {split: read_split(paths, opts, notes) for split, paths in files.items()}
    sources = {split: _source(paths) for split, paths in files.items()}
    fraction = _get(data_cfg, "dev_fraction")
    tail = _get(data_cfg, "holdout", "random") == "tail"
    if fraction is not None and tail and "dev" in tables:
        notes.append(f"a dev file ({sources['dev']}) is read: data.dev_fraction={fraction} unused")
        fraction = None
    if fraction is not None:
        if "dev" in tables:
            raise DataError(
                f"data.dev_fraction={fraction} holds out a dev split, but there is a dev file "
                f"({sources['dev']}); set data.dev_fraction=null or drop the dev file"
            )
        seed = int(_get(data_cfg, "split_seed", 0))
        columns, rows = tables["train"]
        if tail:
            kept, held = hold_out_tail(rows, float(fraction), opts.text_field)
        else:
            kept, held = hold_out(rows, float(fraction), seed)
        where = sources["train"]
        if not held or not kept:
            part = "no row" if not held else "every row"
            raise DataError(
                f"data.dev_fraction={fraction} of the {len(rows)} train rows ({where}) holds out "
                f"{part}; choose a fraction that leaves rows in both dev and train"
            )
        share = f"{float(fraction) * 100:g}%"
        tables["train"], tables["dev"] = (columns, kept), (columns, held)
        how = "the end of the text" if tail else f"split_seed {seed}"
        sources["dev"] = f"{where} (dev: {share} held out, {how})"
        sources["train"] = f"{where} (train: without the {share} held out as dev, {how})"
        if tail:
            chars = sum(len(str(r[opts.text_field])) for r in held)
            notes.append(
                f"dev split: the last {chars} characters of the training text ({where}) held "
                f"out, in order (data.dev_fraction={fraction}, data.holdout=tail)"
            )
        else:
            notes.append(
                f"dev split: {len(held)} of the {len(rows)} train rows of {where} held out "
                f"(data.dev_fraction={fraction}, data.split_seed={seed}); {len(kept)} remain "
                "for train"
            )
    order = [s for s in SPLIT_ALIASES if s in tables]  # train, dev, test
    return {s: tables[s] for s in order}, {s: sources[s] for s in order}, notes
