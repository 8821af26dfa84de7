"""Find and read the split files of a local data set: csv, tsv, jsonl/json, parquet.

Errors name the file and line. Text formats use the stdlib alone (start-up stays fast);
pandas is imported for parquet only.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

from expkit.errors import DataError

SPLIT_ALIASES: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "dev": ("dev", "validation", "valid", "val"),
    "test": ("test",),
}
FORMATS = ("csv", "tsv", "jsonl", "json", "parquet")

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
    if "train" not in found:
        present = ", ".join(sorted(p.name for p in root.iterdir())) or "nothing"
        raise DataError(
            f"no train file in '{root}' (expected train.csv, train.tsv, train.jsonl or "
            f"train.parquet; found: {present})"
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


def _read_delimited(path: Path, delimiter: str, quoting: int) -> Table:
    # whole documents in one field exceed csv's default 128 KiB field limit
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    # newline="" leaves \r\n inside quoted fields alone; csv itself ends lines on \n, \r\n or \r
    reader = csv.reader(
        io.StringIO(_read_text(path), newline=""), delimiter=delimiter, quoting=quoting
    )
    try:
        header = next(reader, None)
        if not header:
            raise _no_rows(path)
        header = _check_header(path, header)
        width = len(header)
        rows: list[Row] = []
        append = rows.append
        for fields in reader:
            if len(fields) != width:
                if not fields:  # a blank line
                    continue
                raise DataError(
                    f"{path}:{reader.line_num}: expected {width} fields (as in the header), "
                    f"found {len(fields)}"
                )
            append(dict(zip(header, fields, strict=True)))  # width checked above
    except csv.Error as exc:
        raise DataError(f"{path}:{reader.line_num}: malformed {path.suffix[1:]} ({exc})") from None
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


def _read_json(path: Path) -> Table:
    text = _read_text(path)
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
    hint = "; a .json file holds a list of objects or one object per line"
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


def read_table(path: str | Path) -> Table:
    """Read one split file into (column names, rows); the format comes from the extension."""
    path = Path(path)
    ext = path.suffix.lstrip(".").lower()
    if ext == "tsv":
        # GLUE files carry unbalanced quotes inside fields: quoting must be off
        columns, rows = _read_delimited(path, "\t", csv.QUOTE_NONE)
    elif ext == "csv":
        columns, rows = _read_delimited(path, ",", csv.QUOTE_MINIMAL)
    elif ext in ("jsonl", "json"):
        columns, rows = _read_json(path)
    elif ext == "parquet":
        columns, rows = _read_parquet(path)
    else:
        supported = ", ".join(f".{f}" for f in FORMATS)
        kind = f"'.{ext}'" if ext else "(no extension)"
        raise DataError(f"{path}: unsupported file type {kind} (supported: {supported})")
    if not rows:
        raise _no_rows(path)
    return columns, rows
