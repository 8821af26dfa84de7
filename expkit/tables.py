"""Find and read the split files of a local data set: csv, tsv, jsonl/json, parquet.

Errors name the file and line. Only the stdlib is used for text formats (start-up stays fast);
pandas is imported for parquet alone.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

from expkit.errors import DataError

SPLIT_ALIASES: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "dev": ("dev", "validation", "valid", "val"),
    "test": ("test",),
}
FORMATS = ("csv", "tsv", "jsonl", "json", "parquet")

Row = dict[str, Any]

# Long text fields (whole documents) exceed csv's default 128 KiB field limit.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


def find_split_files(directory: str | Path) -> dict[str, Path]:
    """Map split name ("train", "dev", "test") -> its file in `directory`."""
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
            raise DataError(f"more than one {split} file in '{root}' ({names}): keep one")
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


def _read_delimited(path: Path, delimiter: str, quoting: int) -> tuple[list[str], list[Row]]:
    with path.open(encoding="utf-8-sig", newline="") as f:  # utf-8-sig strips a byte-order mark
        reader = csv.reader(f, delimiter=delimiter, quoting=quoting)
        header = next(reader, None)
        if not header:
            raise _no_rows(path)
        header = [h.rstrip("\r") for h in header]
        dupes = sorted({h for h in header if header.count(h) > 1})
        if dupes or any(not h.strip() for h in header):
            raise DataError(f"{path}:1: empty or duplicate column names in the header: {header}")
        width = len(header)
        rows: list[Row] = []
        for fields in reader:
            if not fields:
                continue
            if len(fields) != width:
                raise DataError(
                    f"{path}:{reader.line_num}: expected {width} fields (as in the header), "
                    f"found {len(fields)}"
                )
            rows.append(dict(zip(header, fields, strict=True)))
    return header, rows


def _read_json_lines(path: Path, text: str) -> tuple[list[str], list[Row]]:
    columns: dict[str, None] = {}
    records: list[Row] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{number}: expected a JSON object, found {type(obj).__name__}")
        columns.update(dict.fromkeys(obj))
        records.append(obj)
    return list(columns), records


def _read_json(path: Path) -> tuple[list[str], list[Row]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if path.suffix == ".json" and text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
        bad = next((i for i, r in enumerate(records, 1) if not isinstance(r, dict)), None)
        if bad is not None:
            raise DataError(f"{path}: item {bad} of the JSON list is not an object")
        columns: dict[str, None] = {}
        for r in records:
            columns.update(dict.fromkeys(r))
        return list(columns), records
    return _read_json_lines(path, text)


def _read_parquet(path: Path) -> tuple[list[str], list[Row]]:
    import pandas as pd

    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise DataError(f"{path}: not a readable parquet file ({exc})") from None
    return [str(c) for c in frame.columns], frame.to_dict(orient="records")


def read_table(path: str | Path) -> tuple[list[str], list[Row]]:
    """Read one split file into (column names, rows); the format comes from the extension."""
    path = Path(path)
    ext = path.suffix.lstrip(".").lower()
    try:
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
            raise DataError(f"{path}: unsupported file type (supported: {', '.join(FORMATS)})")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise DataError(f"{path}: malformed {ext.upper()} ({exc})") from None
    if not rows:
        raise _no_rows(path)
    for row in rows:  # a JSON row without some key gets None there
        if len(row) != len(columns):
            for c in columns:
                row.setdefault(c, None)
    return columns, rows
