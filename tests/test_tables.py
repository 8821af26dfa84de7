"""Local table reading: split discovery, the real GLUE files, and exact errors for bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from expkit.errors import DataError
from expkit.tables import ReadOptions, find_split_files, read_table

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MRPC_COLUMNS = ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"]


def _shared(name: str) -> Path:
    folder = SHARED_DATA / name
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    return folder


def _write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


# --- the real files ---------------------------------------------------------------------------


def test_mrpc_reads_every_row_despite_bom_and_unbalanced_quotes():
    folder = _shared("mrpc")
    columns, train = read_table(folder / "train.tsv")
    assert columns == MRPC_COLUMNS  # no '\ufeff' on 'Quality'
    assert len(train) == 3668
    assert {r["Quality"] for r in train} == {"0", "1"}
    _, dev = read_table(folder / "dev.tsv")
    assert len(dev) == 408
    found = {split: path.name for split, path in find_split_files(folder).items()}
    assert found == {"train": "train.tsv", "dev": "dev.tsv"}


def test_sst2_reads_every_row_of_every_split():
    folder = _shared("sst2")
    sizes = {}
    for split in ("train", "dev", "test"):
        columns, rows = read_table(folder / f"{split}.tsv")
        assert columns == ["sentence", "label"]
        assert {r["label"] for r in rows} == {"0", "1"}
        sizes[split] = len(rows)
    assert sizes == {"train": 60614, "dev": 6735, "test": 872}


# --- find_split_files --------------------------------------------------------------------------


@pytest.mark.parametrize("dev_name", ["dev.tsv", "validation.csv", "valid.jsonl", "val.json"])
def test_dev_aliases(tmp_path, dev_name):
    (tmp_path / "train.tsv").touch()
    (tmp_path / dev_name).touch()
    (tmp_path / "test.parquet").touch()
    (tmp_path / "notes.md").touch()
    assert find_split_files(tmp_path) == {
        "train": tmp_path / "train.tsv",
        "dev": tmp_path / dev_name,
        "test": tmp_path / "test.parquet",
    }


def test_dev_and_test_are_optional(tmp_path):
    (tmp_path / "train.jsonl").touch()
    assert find_split_files(tmp_path) == {"train": tmp_path / "train.jsonl"}


def test_missing_directory(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(DataError) as err:
        find_split_files(missing)
    assert str(err.value) == (
        f"data directory '{missing.resolve()}' does not exist (set data.path to a folder holding "
        "train/dev/test files in csv, tsv, jsonl or parquet)"
    )


def test_a_file_is_not_a_directory(tmp_path):
    with pytest.raises(DataError, match="is a file, not a folder"):
        find_split_files(_write(tmp_path / "train.csv", "a\n1\n"))


def test_no_train_file_lists_what_is_there(tmp_path):
    (tmp_path / "b.md").touch()
    (tmp_path / "a.txt").touch()
    (tmp_path / "dev.csv").touch()
    with pytest.raises(DataError) as err:
        find_split_files(tmp_path)
    assert str(err.value) == (
        f"no train file in '{tmp_path.resolve()}' (expected train.csv, train.tsv, train.jsonl, "
        "train.parquet or train.txt, or a single .txt file; found: a.txt, b.md, dev.csv)"
    )


def test_two_files_for_one_split(tmp_path):
    (tmp_path / "train.csv").touch()
    (tmp_path / "dev.tsv").touch()
    (tmp_path / "validation.csv").touch()
    with pytest.raises(DataError) as err:
        find_split_files(tmp_path)
    assert str(err.value) == (
        f"more than one dev file in '{tmp_path.resolve()}' (dev.tsv, validation.csv): keep only one"
    )


# --- csv / tsv ---------------------------------------------------------------------------------


def test_tsv_keeps_quotes_strips_bom_and_crlf(tmp_path):
    path = _write(tmp_path / "train.tsv", '\ufeffs\tlabel\r\n"He said "hi\t1\r\n\r\nok"\t0\r\n')
    assert read_table(path) == (
        ["s", "label"],
        [{"s": '"He said "hi', "label": "1"}, {"s": 'ok"', "label": "0"}],
    )


def test_tsv_row_with_wrong_width_names_file_and_line(tmp_path):
    path = _write(tmp_path / "train.tsv", "a\tb\n1\t2\n\n3\t4\t5\n")
    with pytest.raises(DataError) as err:
        read_table(path)
    assert str(err.value) == f"{path}:4: expected 2 fields (as in the header), found 3"


def test_csv_quoted_commas_and_newlines_and_bom(tmp_path):
    text = '\ufefftext,label\n"a, b",1\n"two\nlines",0\nplain,1\n'
    path = _write(tmp_path / "train.csv", text)
    columns, rows = read_table(path)
    assert columns == ["text", "label"]
    assert rows == [
        {"text": "a, b", "label": "1"},
        {"text": "two\nlines", "label": "0"},
        {"text": "plain", "label": "1"},
    ]


def test_csv_line_number_counts_physical_lines(tmp_path):
    path = _write(tmp_path / "train.csv", 'text,label\n"two\nlines",0\nx\n')
    with pytest.raises(
        DataError, match=r"train\.csv:4: expected 2 fields \(as in the header\), found 1$"
    ):
        read_table(path)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("a,b,a", "duplicate column name 'a' in the header"),
        ("a,,b", "empty column name in the header (column 2)"),
    ],
)
def test_bad_header(tmp_path, header, message):
    path = _write(tmp_path / "train.csv", f"{header}\n1,2,3\n")
    with pytest.raises(DataError) as err:
        read_table(path)
    assert str(err.value).startswith(f"{path}:1: {message}")


@pytest.mark.parametrize("text", ["", "\n", "a,b\n", "a,b\n\n\n"])
def test_empty_and_header_only_files(tmp_path, text):
    path = _write(tmp_path / "dev.csv", text)
    with pytest.raises(DataError) as err:
        read_table(path)
    assert str(err.value) == f"{path}: no data rows (the dev file is empty)"


def test_not_utf8(tmp_path):
    path = tmp_path / "train.csv"
    path.write_bytes(b"text,label\ncaf\xe9,1\n")
    with pytest.raises(DataError) as err:
        read_table(path)
    assert str(err.value).startswith(f"{path}: not UTF-8 text (")
    assert "line 2" in str(err.value)


def test_unknown_extension(tmp_path):
    path = _write(tmp_path / "train.iob", "a\n1\n")
    with pytest.raises(DataError) as err:
        read_table(path)
    assert str(err.value) == (
        f"{path}: unsupported file type '.iob' (supported: .csv, .tsv, .jsonl, .json, .parquet, "
        ".conll, .txt; a file of another extension is read as data.format says, e.g. "
        "data.format=conll)"
    )


def test_a_txt_file_is_one_document_or_a_row_per_line(tmp_path):
    path = _write(tmp_path / "train.txt", "To be,\n\nor not.\n")
    assert read_table(path) == (["text"], [{"text": "To be,\n\nor not.\n"}])
    _columns, rows = read_table(path, ReadOptions(line_by_line=True))
    assert [r["text"] for r in rows] == ["To be,", "or not."]
    assert [r["_line"] for r in rows] == [1, 3]


# --- json --------------------------------------------------------------------------------------


def test_jsonl_union_of_keys_missing_get_none(tmp_path):
    text = '{"a": 1, "b": "x"}\n\n{"b": "y\u2028z", "c": 2.5}\n'
    path = _write(tmp_path / "train.jsonl", text)
    assert read_table(path) == (
        ["a", "b", "c"],
        [{"a": 1, "b": "x", "c": None}, {"a": None, "b": "y\u2028z", "c": 2.5}],
    )


def test_jsonl_bad_line(tmp_path):
    path = _write(tmp_path / "train.jsonl", '{"a": 1}\n\n{"a": 2,}\n')
    with pytest.raises(DataError, match=r"train\.jsonl:3: not valid JSON \(.+\)$"):
        read_table(path)


def test_jsonl_line_that_is_not_an_object(tmp_path):
    path = _write(tmp_path / "train.jsonl", '{"a": 1}\n[1, 2]\n')
    with pytest.raises(DataError) as err:
        read_table(path)
    assert str(err.value) == f"{path}:2: expected a JSON object, found list"


def test_json_list_and_json_lines(tmp_path):
    rows = [{"text": "a", "label": 0}, {"text": "b", "label": 1}]
    listed = _write(tmp_path / "train.json", json.dumps(rows, indent=2))
    lined = _write(tmp_path / "dev.json", "".join(json.dumps(r) + "\n" for r in rows))
    assert read_table(listed) == (["text", "label"], rows)
    assert read_table(lined) == (["text", "label"], rows)


def test_json_list_item_not_an_object(tmp_path):
    path = _write(tmp_path / "train.json", '[{"a": 1}, "x"]')
    with pytest.raises(DataError) as err:
        read_table(path)
    assert str(err.value) == f"{path}: item 2 of the JSON list is a str, not an object"


def test_empty_json_list(tmp_path):
    path = _write(tmp_path / "test.json", "[]")
    with pytest.raises(DataError, match=r"no data rows \(the test file is empty\)"):
        read_table(path)


# --- parquet -----------------------------------------------------------------------------------


def test_parquet_roundtrip_gives_python_values(tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    path = tmp_path / "train.parquet"
    frame = pd.DataFrame({"text": ["a", None], "label": [0, 1], "score": [0.5, float("nan")]})
    frame.to_parquet(path)
    columns, rows = read_table(path)
    assert columns == ["text", "label", "score"]
    assert rows == [
        {"text": "a", "label": 0, "score": 0.5},
        {"text": None, "label": 1, "score": None},
    ]
    assert type(rows[0]["label"]) is int


def test_damaged_parquet(tmp_path):
    pytest.importorskip("pyarrow")
    path = _write(tmp_path / "train.parquet", "not parquet")
    with pytest.raises(DataError, match=r"train\.parquet: not a readable parquet file"):
        read_table(path)
