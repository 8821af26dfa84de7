"""Data defects: a stale tokenization cache, numeric labels, data.path, non-text values."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from expkit.config.validate import validate
from expkit.data import RawData, load_raw, tokenize
from expkit.errors import ConfigError, DataError
from expkit.tables import find_split_files, read_table
from tests.conftest import CLASSIFICATION, run_cli
from tests.test_errors import _assert_no_run_recorded, _assert_one_line_error

# ---------------------------------------------------------------- the tokenization cache

TEXTS = [
    "Café Films are GREAT filmish and long long long long long long words end",
    "A dull Résumé of a filmish plot that goes on and on and on for ever",
    "short one",
]
MAX_LENGTH = 8  # shorter than the first two texts: the truncation side shows


def _load(directory: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(directory))


@pytest.fixture
def tok_dir(make_cfg, tmp_path) -> Path:
    """The model=tiny tokenizer, saved to a folder of its own (its files are edited below)."""
    from expkit.model import build_tokenizer

    directory = tmp_path / "tokenizer"
    build_tokenizer(make_cfg().model).save_pretrained(str(directory))
    return directory


def _raw() -> RawData:
    return RawData({"train": [TEXTS]}, {"train": [0, 1, 0]}, ["a", "b"], {})


def _edit_config(directory: Path, **changes) -> None:
    path = directory / "tokenizer_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config.update(changes)
    path.write_text(json.dumps(config), encoding="utf-8")


def _add_token(directory: Path) -> None:
    tok = _load(directory)
    tok.add_tokens(["filmish"])
    tok.save_pretrained(str(directory))


EDITS = {
    "do_lower_case": lambda d: _edit_config(d, do_lower_case=False),
    "normaliser": lambda d: _edit_config(d, strip_accents=False),  # keeps é (lowercased)
    "added_token": _add_token,
    "truncation_side": lambda d: _edit_config(d, truncation_side="left"),
}


def _ids(tok, max_length: int = MAX_LENGTH) -> list[list[int]]:
    return tok(TEXTS, truncation=True, max_length=max_length)["input_ids"]


@pytest.mark.parametrize("edit", list(EDITS))
def test_a_changed_tokenizer_misses_the_cache(make_cfg, tok_dir, tmp_path, edit):
    cfg = make_cfg(f"data.max_length={MAX_LENGTH}").data
    cache = tmp_path / "cache"
    before = tokenize(_raw(), _load(tok_dir), CLASSIFICATION, cfg, cache)["train"]["input_ids"]
    EDITS[edit](tok_dir)  # in place: the same path, as a user edits a model folder
    changed = _load(tok_dir)
    fresh = _ids(changed)
    assert fresh != before  # the edit changes the tokens (else the test proves nothing)
    got = tokenize(_raw(), changed, CLASSIFICATION, cfg, cache)["train"]["input_ids"]
    assert got == fresh
    assert len(list(cache.iterdir())) == 2  # a second file beside the first


def test_a_changed_max_length_misses_the_cache(make_cfg, tok_dir, tmp_path):
    cache = tmp_path / "cache"
    tok = _load(tok_dir)
    tokenize(_raw(), tok, CLASSIFICATION, make_cfg(f"data.max_length={MAX_LENGTH}").data, cache)
    got = tokenize(_raw(), tok, CLASSIFICATION, make_cfg("data.max_length=12").data, cache)
    assert got["train"]["input_ids"] == _ids(tok, 12)
    assert len(list(cache.iterdir())) == 2


def test_an_unchanged_tokenizer_hits_the_cache(make_cfg, tok_dir, tmp_path):
    cfg = make_cfg(f"data.max_length={MAX_LENGTH}").data
    cache = tmp_path / "cache"
    first = tokenize(_raw(), _load(tok_dir), CLASSIFICATION, cfg, cache)["train"]["input_ids"]
    files = sorted(cache.iterdir())
    reloaded = _load(tok_dir)
    reloaded(["other"], truncation=True, max_length=3, padding="max_length")  # call state
    copy = tmp_path / "elsewhere"
    shutil.copytree(tok_dir, copy)
    for tok in (reloaded, _load(copy)):  # the same files at another path: the same tokens
        assert tokenize(_raw(), tok, CLASSIFICATION, cfg, cache)["train"]["input_ids"] == first
    assert sorted(cache.iterdir()) == files  # nothing new written


# ---------------------------------------------------------------- labels


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _local(make_cfg, path: Path, *overrides: str):
    return make_cfg("data=local", f"data.path={path}", *overrides).data


def test_numeric_labels_are_compared_as_numbers(make_cfg, tmp_path):
    labels = [1, 1.0, "1", " 1 ", "1.0", 0, 0.0, "0", "+0"]
    _jsonl(tmp_path / "train.jsonl", [{"text": f"t{i}", "label": v} for i, v in enumerate(labels)])
    (tmp_path / "dev.tsv").write_text("text\tlabel\na\t1.0\nb\t 0 \n", encoding="utf-8")
    raw = load_raw(_local(make_cfg, tmp_path), CLASSIFICATION)
    assert raw.label_names == ["0", "1"]
    assert raw.labels["train"] == [1, 1, 1, 1, 1, 0, 0, 0, 0]
    assert raw.labels["dev"] == [1, 0]


def test_float_labels_are_class_ids_beside_label_names(make_cfg, tmp_path):
    _jsonl(tmp_path / "train.jsonl", [{"text": "a", "label": 1.0}, {"text": "b", "label": 0.0}])
    raw = load_raw(_local(make_cfg, tmp_path, "data.label_names=[neg,pos]"), CLASSIFICATION)
    assert raw.label_names == ["neg", "pos"] and raw.labels["train"] == [1, 0]


def test_numeric_label_names_match_by_value(make_cfg, tmp_path):
    _jsonl(tmp_path / "train.jsonl", [{"text": "a", "label": 1.0}, {"text": "b", "label": "0"}])
    raw = load_raw(_local(make_cfg, tmp_path, "data.label_names=['1','0']"), CLASSIFICATION)
    assert raw.labels["train"] == [0, 1]  # 1.0 is the name "1" (id 0), not class id 1


def test_parquet_float_labels_are_class_ids(make_cfg, tmp_path):
    import pandas as pd

    pd.DataFrame({"text": ["a", "b", "c"], "label": [1.0, 0.0, 1.0]}).to_parquet(
        tmp_path / "train.parquet"
    )
    raw = load_raw(_local(make_cfg, tmp_path), CLASSIFICATION)
    assert raw.label_names == ["0", "1"] and raw.labels["train"] == [1, 0, 1]


@pytest.mark.parametrize(("split", "row"), [("train", 3), ("dev", 2)])
def test_a_fractional_label_is_an_error(make_cfg, tmp_path, split, row):
    train = [{"text": "a", "label": 0}, {"text": "b", "label": 1}, {"text": "c", "label": 1}]
    dev = [{"text": "a", "label": 0}, {"text": "b", "label": 1}]
    (train if split == "train" else dev)[row - 1]["label"] = 0.5
    _jsonl(tmp_path / "train.jsonl", train)
    _jsonl(tmp_path / "dev.jsonl", dev)
    with pytest.raises(DataError) as err:
        load_raw(_local(make_cfg, tmp_path), CLASSIFICATION)
    assert str(err.value).startswith(
        f"{tmp_path / f'{split}.jsonl'}: data row {row}: label '0.5' is not a whole number"
    )


def test_labels_that_differ_in_case_are_named_in_a_warning(make_cfg, tmp_path, caplog):
    rows = [{"text": t, "label": v} for t, v in [("a", "Pos"), ("b", "pos"), ("c", "neg")]]
    _jsonl(tmp_path / "train.jsonl", rows)
    with caplog.at_level(logging.WARNING, logger="expkit.data"):
        raw = load_raw(_local(make_cfg, tmp_path), CLASSIFICATION)
    assert raw.label_names == ["Pos", "neg", "pos"]  # still separate: the data says so
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "labels 'Pos' and 'pos' differ only in case" in warnings[0]


def test_a_label_that_is_a_list_is_an_error(make_cfg, tmp_path):
    _jsonl(tmp_path / "train.jsonl", [{"text": "a", "label": 0}, {"text": "b", "label": [1]}])
    message = r"train.jsonl: data row 2: label is a list \(\[1\]\).*task=multilabel"
    with pytest.raises(DataError, match=message):
        load_raw(_local(make_cfg, tmp_path), CLASSIFICATION)


# ---------------------------------------------------------------- data.path


def test_data_path_naming_a_file_says_so(make_cfg, tmp_path):
    split_file = tmp_path / "train.tsv"
    split_file.write_text("text\tlabel\na\t0\n", encoding="utf-8")
    expected = (
        f"data.path '{split_file}' is a file, not a folder (data.path: a folder holding "
        f"train/dev/test files in csv, tsv, jsonl or parquet, e.g. data.path={tmp_path})"
    )
    with pytest.raises(ConfigError) as err:
        validate(make_cfg("data=local", f"data.path={split_file}"))
    assert str(err.value) == expected
    with pytest.raises(DataError) as err:
        find_split_files(split_file)
    assert str(err.value) == expected


# ---------------------------------------------------------------- values that are not text


def test_numbers_in_a_text_column_become_text_with_one_note(make_cfg, tmp_path):
    texts = ["plain", 5, 2.5, True, "more"]
    _jsonl(tmp_path / "train.jsonl", [{"text": t, "label": i % 2} for i, t in enumerate(texts)])
    raw = load_raw(_local(make_cfg, tmp_path), CLASSIFICATION)
    assert raw.texts["train"] == [["plain", "5", "2.5", "True", "more"]]
    notes = [n for n in raw.notes if "read as text" in n]
    assert notes == [
        f"{tmp_path / 'train.jsonl'}: text column 'text': 3 number(s) read as text "
        "(first in data row 2: 5)"
    ]


@pytest.mark.parametrize(
    ("value", "kind"), [({"a": 1}, "JSON object (dict)"), (["x", "y"], "list")]
)
def test_a_text_value_that_is_an_object_or_list_is_an_error(make_cfg, tmp_path, value, kind):
    _jsonl(tmp_path / "train.jsonl", [{"text": "a", "label": 0}, {"text": value, "label": 1}])
    with pytest.raises(DataError) as err:
        load_raw(_local(make_cfg, tmp_path), CLASSIFICATION)
    assert str(err.value).startswith(
        f"{tmp_path / 'train.jsonl'}: data row 2: text column 'text' holds a {kind} "
        f"({value!r}), not text"
    )


def test_parquet_list_cells_are_lists(tmp_path):
    import pandas as pd

    pd.DataFrame({"text": [["a", "b"], ["c"]], "label": [0, 1]}).to_parquet(tmp_path / "t.parquet")
    _, rows = read_table(tmp_path / "t.parquet")
    assert rows[0]["text"] == ["a", "b"] and type(rows[0]["text"]) is list


# ---------------------------------------------------------------- the same, from the command line


def _fractional_label(d: Path) -> None:
    _jsonl(d / "train.jsonl", [{"text": "a", "label": 0}, {"text": "b", "label": 0.5}])


def _object_text(d: Path) -> None:
    _jsonl(d / "train.jsonl", [{"text": {"t": "a"}, "label": 0}, {"text": "b", "label": 1}])


def _parquet_list_text(d: Path) -> None:
    import pandas as pd

    frame = pd.DataFrame({"text": [["a", "list"], ["b"]], "label": [0, 1]})  # one type a column
    frame.to_parquet(d / "train.parquet")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("make", "needles"),
    [
        (_fractional_label, ["train.jsonl: data row 2: label '0.5' is not a whole number"]),
        (_object_text, ["train.jsonl: data row 1: text column 'text' holds a JSON object (dict)"]),
        (
            _parquet_list_text,
            ["train.parquet: data row 1: text column 'text' holds a list (['a', 'list'])"],
        ),
    ],
)
def test_cli_data_value_errors(tmp_path, make, needles):
    data = tmp_path / "data"
    data.mkdir()
    make(data)
    proc = run_cli("model=tiny", "data=local", f"data.path={data}", cwd=tmp_path)
    _assert_one_line_error(proc, *needles)
    _assert_no_run_recorded(tmp_path)


@pytest.mark.slow
def test_cli_data_path_naming_a_file(tmp_path):
    split_file = tmp_path / "data" / "train.tsv"
    split_file.parent.mkdir()
    split_file.write_text("text\tlabel\na\t0\nb\t1\n", encoding="utf-8")
    proc = run_cli("model=tiny", "data=local", f"data.path={split_file}", cwd=tmp_path)
    _assert_one_line_error(proc, "is a file, not a folder", f"e.g. data.path={split_file.parent}")
    _assert_no_run_recorded(tmp_path)


@pytest.mark.slow
def test_cli_relative_data_path_means_the_launch_dir_after_chdir(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.tsv").write_text("text\tlabel\na fine film\t1\na dull film\t0\n", "utf-8")
    proc = run_cli(
        "model=tiny", "data=local", "data.path=data", "trainer.max_steps=1", "tracking=none",
        "hydra.job.chdir=true", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "run dir: " in proc.stdout
