"""Reading local data as the data config says: data.files (globs), format, header-less files,
extra fields, quoting, label-name files and a held-out dev split; and the door checks on them."""

from __future__ import annotations

import csv
import io
import random
import re
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from expkit.config.schema import DataConfig
from expkit.config.validate import validate
from expkit.errors import ConfigError, DataError
from expkit.tables import find_split_files, read_label_names, read_splits, read_table
from tests.conftest import SHARED_DATA, compose_config, run_cli
from tests.test_errors import _assert_no_run_recorded, _assert_one_line_error

STSB = SHARED_DATA / "stsb"
GOEMOTIONS = SHARED_DATA / "goemotions"


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _data(path: Path, **keys: Any) -> Any:
    """A data config as composition gives it (schema defaults, then `keys`)."""
    return OmegaConf.merge(
        OmegaConf.structured(DataConfig), {"name": "t", "path": str(path), **keys}
    )


def _texts(table: tuple[list[str], list[dict]], column: str = "text") -> list[Any]:
    return [row[column] for row in table[1]]


# data.files


def test_files_map_splits_to_named_files_and_validation_is_dev(tmp_path):
    _write(tmp_path / "a.csv", "text,label\nx,1\n")
    _write(tmp_path / "b.csv", "text,label\ny,0\n")
    elsewhere = _write(tmp_path / "other" / "c.csv", "text,label\nz,1\n")
    files = {"train": "a.csv", "validation": "b.csv", "test": str(elsewhere)}
    tables, sources, notes = read_splits(_data(tmp_path, files=files))
    assert list(tables) == ["train", "dev", "test"]
    assert [_texts(tables[s]) for s in tables] == [["x"], ["y"], ["z"]]
    assert sources == {
        "train": str(tmp_path / "a.csv"),
        "dev": str(tmp_path / "b.csv"),
        "test": str(elsewhere),
    }
    assert notes == []


def test_files_replace_discovery_by_name(tmp_path):
    _write(tmp_path / "train.csv", "text,label\nby-name,1\n")
    _write(tmp_path / "dev.csv", "text,label\nby-name-dev,1\n")
    _write(tmp_path / "mine.csv", "text,label\nmapped,0\n")
    tables, _, _ = read_splits(_data(tmp_path, files={"train": "mine.csv"}))
    assert list(tables) == ["train"]  # dev.csv is not picked up when data.files is set
    assert _texts(tables["train"]) == ["mapped"]


def test_a_glob_concatenates_its_files_in_sorted_order(tmp_path):
    for n in (2, 10, 1):
        _write(tmp_path / f"part-{n}.jsonl", f'{{"text": "p{n}a", "label": 1}}\n'
                                             f'{{"text": "p{n}b", "label": 0}}\n')  # fmt: skip
    tables, sources, _ = read_splits(_data(tmp_path, files={"train": "part-*.jsonl"}))
    # sorted by name, as datasets.load_dataset(data_files=...) orders a pattern's files
    assert _texts(tables["train"]) == ["p1a", "p1b", "p10a", "p10b", "p2a", "p2b"]
    assert sources["train"] == f"{tmp_path} (3 files: part-1.jsonl, part-10.jsonl, part-2.jsonl)"


def test_a_glob_reaches_into_subfolders_of_a_folder_named_like_a_pattern(tmp_path):
    root = tmp_path / "data[1]"  # its "[1]" is part of the name, not a pattern
    _write(root / "b" / "x.csv", "text,label\nb,0\n")
    _write(root / "a" / "x.csv", "text,label\na,1\n")
    tables, _, _ = read_splits(_data(root, files={"train": "**/*.csv"}))
    assert _texts(tables["train"]) == ["a", "b"]


def test_files_of_one_split_need_the_same_columns(tmp_path):
    _write(tmp_path / "t1.csv", "text,label\na,1\n")
    second = _write(tmp_path / "t2.csv", "sentence,label\nb,0\n")
    with pytest.raises(DataError) as err:
        read_splits(_data(tmp_path, files={"train": "t*.csv"}))
    assert str(err.value).startswith(f"{second}: its columns (sentence, label) differ from those")


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"train": "nope-*.csv"}, "data.files.train='nope-*.csv' matches no file in '{root}'"),
        ({"train": "missing.csv"}, "data.files.train: '{root}/missing.csv' is not a file"),
        (
            {"train": "a.csv", "tset": "a.csv"},
            "data.files has an unknown split 'tset' (valid: train",
        ),
        ({"train": "a.csv", "dev": "a.csv", "validation": "a.csv"}, "both dev and validation"),
        ({"test": "a.csv"}, "data.files (test) has no train file"),
    ],
)
def test_bad_files_are_named(tmp_path, files, message):
    _write(tmp_path / "a.csv", "text,label\nx,1\n")
    with pytest.raises(DataError) as err:
        read_splits(_data(tmp_path, files=files))
    assert message.format(root=tmp_path) in str(err.value)


def test_without_files_the_old_discovery_reads_the_same(tmp_path):
    sst2 = SHARED_DATA / "sst2"
    tables, sources, notes = read_splits(_data(sst2))
    found = find_split_files(sst2)
    assert sources == {s: str(p) for s, p in found.items()}
    assert tables == {s: read_table(p) for s, p in found.items()}
    assert notes == []
    assert [len(tables[s][1]) for s in ("train", "dev", "test")] == [60614, 6735, 872]


# format, header, columns, extra fields


def test_format_overrides_the_extension(tmp_path):
    _write(tmp_path / "train.csv", "text\tlabel\na, b\t1\n")
    tables, _, _ = read_splits(_data(tmp_path, format="tsv"))
    assert tables["train"] == (["text", "label"], [{"text": "a, b", "label": "1"}])


def test_a_file_without_header_takes_the_names_of_data_columns(tmp_path):
    _write(tmp_path / "train.tsv", "x\t1\ny\t0\n")
    tables, _, _ = read_splits(_data(tmp_path, header=False, columns=["text", "label"]))
    assert tables["train"] == (["text", "label"], [{"text": "x", "label": "1"},
                                                   {"text": "y", "label": "0"}])  # fmt: skip


def test_a_row_shorter_than_the_columns_is_an_error_even_when_extras_are_ignored(tmp_path):
    path = _write(tmp_path / "train.tsv", "x\t1\tA\ny\t0\n")
    for extra in ("error", "ignore"):
        keys = {"header": False, "columns": ["text", "label", "id"], "extra_fields": extra}
        with pytest.raises(DataError) as err:
            read_splits(_data(tmp_path, **keys))
        assert str(err.value) == f"{path}:2: expected 3 fields (data.columns has 3 names), found 2"


def test_a_row_longer_than_the_columns_is_an_error_by_default(tmp_path):
    path = _write(tmp_path / "train.tsv", "x\t1\ny\t0\tnote\n")
    with pytest.raises(DataError) as err:
        read_splits(_data(tmp_path, header=False, columns=["text", "label"]))
    assert str(err.value).startswith(
        f"{path}:2: expected 2 fields (data.columns has 2 names), found 3 "
        "(data.extra_fields=ignore keeps"
    )


def test_extra_fields_ignore_keeps_the_first_fields_with_a_note(tmp_path):
    path = _write(tmp_path / "train.tsv", "a\t1\nb\t0\tx\tyy\nc\t1\nd\t0\tz\n")
    keys = {"header": False, "columns": ["text", "label"], "extra_fields": "ignore"}
    tables, _, notes = read_splits(_data(tmp_path, **keys))
    assert tables["train"][1] == [
        {"text": t, "label": lab} for t, lab in [("a", "1"), ("b", "0"), ("c", "1"), ("d", "0")]
    ]
    assert notes == [
        f"{path}: 2 rows have more than 2 fields (up to 4; the first on line 2): their first 2 "
        "fields are the record, the rest is ignored (data.extra_fields=ignore)"
    ]


def test_extra_fields_ignore_applies_to_a_header_row_too(tmp_path):
    _write(tmp_path / "train.tsv", "text\tlabel\na\t1\tsource\n")
    tables, _, notes = read_splits(_data(tmp_path, extra_fields="ignore"))
    assert tables["train"] == (["text", "label"], [{"text": "a", "label": "1"}])
    assert len(notes) == 1 and "1 rows have more than 2 fields" in notes[0]


def test_header_false_on_a_json_file_is_an_error(tmp_path):
    path = _write(tmp_path / "train.jsonl", '{"text": "a", "label": 1}\n')
    with pytest.raises(DataError) as err:
        read_splits(_data(tmp_path, header=False, columns=["text", "label"]))
    assert str(err.value).startswith(f"{path}: data.header=false and data.columns apply to csv")


# quoting


def test_tsv_quotes_are_text_by_default_and_csv_quoting_unwraps_them(tmp_path):
    _write(tmp_path / "train.tsv", 'text\tlabel\n"say ""hi"""\t1\n"open\t0\n')
    plain, _, _ = read_splits(_data(tmp_path))
    assert _texts(plain["train"]) == ['"say ""hi"""', '"open']
    _write(tmp_path / "train.tsv", 'text\tlabel\n"say ""hi"""\t1\n"a\ttab"\t0\n')
    quoted, _, _ = read_splits(_data(tmp_path, quoting="csv"))
    assert quoted["train"][1] == [{"text": 'say "hi"', "label": "1"},
                                  {"text": "a\ttab", "label": "0"}]  # fmt: skip


def test_csv_quoting_none_keeps_quote_characters(tmp_path):
    _write(tmp_path / "train.csv", 'text,label\n"quoted",1\n')
    default, _, _ = read_splits(_data(tmp_path))
    off, _, _ = read_splits(_data(tmp_path, quoting="none"))
    assert (_texts(default["train"]), _texts(off["train"])) == (["quoted"], ['"quoted"'])


# label names file


def test_label_names_file_one_name_a_line(tmp_path):
    path = _write(tmp_path / "labels.txt", "anger\njoy\r\nneutral\n\n")
    assert read_label_names(path) == ["anger", "joy", "neutral"]
    _write(path, "anger\njoy")  # no newline at the end
    assert read_label_names(path) == ["anger", "joy"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "{path}: no label names"),
        ("\n\n", "{path}: no label names"),
        ("anger\n\njoy\n", "{path}:2: empty label name"),
        ("anger\njoy\nanger\n", "{path}:3: duplicate label name 'anger' (also on line 1)"),
    ],
)
def test_bad_label_names_files_name_file_and_line(tmp_path, text, message):
    path = _write(tmp_path / "labels.txt", text)
    with pytest.raises(DataError) as err:
        read_label_names(path)
    assert str(err.value).startswith(message.format(path=path))


def test_a_missing_label_names_file_is_named(tmp_path):
    with pytest.raises(DataError, match=r"label names file '.*nope\.txt' does not exist"):
        read_label_names(tmp_path / "nope.txt")


# a dev split held out of train


def test_dev_fraction_follows_the_fixed_recipe(tmp_path):
    rows = [f"t{i},{i % 2}" for i in range(23)]
    path = _write(tmp_path / "train.csv", "text,label\n" + "\n".join(rows) + "\n")
    tables, sources, notes = read_splits(_data(tmp_path, dev_fraction=0.3, split_seed=7))
    perm = list(range(23))
    random.Random(7).shuffle(perm)
    dev_idx = set(perm[: round(0.3 * 23)])
    assert _texts(tables["dev"]) == [f"t{i}" for i in range(23) if i in dev_idx]
    assert _texts(tables["train"]) == [f"t{i}" for i in range(23) if i not in dev_idx]
    assert len(tables["dev"][1]) == 7 and list(tables) == ["train", "dev"]
    assert sources["dev"] == f"{path} (dev: 30% held out, split_seed 7)"
    assert sources["train"] == f"{path} (train: without the 30% held out as dev, split_seed 7)"
    assert notes == [
        f"dev split: 7 of the 23 train rows of {path} held out (data.dev_fraction=0.3, "
        "data.split_seed=7); 16 remain for train"
    ]
    again, _, _ = read_splits(_data(tmp_path, dev_fraction=0.3, split_seed=7))
    other, _, _ = read_splits(_data(tmp_path, dev_fraction=0.3, split_seed=8))
    assert again == tables and other["dev"] != tables["dev"]


def test_dev_fraction_with_a_dev_file_is_an_error(tmp_path):
    _write(tmp_path / "train.csv", "text,label\na,1\nb,0\n")
    dev = _write(tmp_path / "dev.csv", "text,label\nc,1\n")
    with pytest.raises(DataError) as err:
        read_splits(_data(tmp_path, dev_fraction=0.5))
    assert f"there is a dev file ({dev})" in str(err.value)


def test_dev_fraction_that_holds_out_no_row_is_an_error(tmp_path):
    _write(tmp_path / "train.csv", "text,label\na,1\nb,0\n")
    with pytest.raises(DataError, match=r"of the 2 train rows .* holds out no row"):
        read_splits(_data(tmp_path, dev_fraction=0.1))


# the door: validate names every problem before anything loads


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    _write(tmp_path / "train.csv", "text,label\na,1\nb,0\n")
    _write(tmp_path / "labels.txt", "neg\npos\n")
    return tmp_path


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["data.format=xls"],
            "data.format='xls' is not valid (valid: csv, tsv, jsonl, json, parquet, conll, txt)",
        ),
        (["data.quoting=double"], "data.quoting='double' is not valid (valid: none"),
        (
            ["data.extra_fields=drop"],
            "data.extra_fields='drop' is not valid (valid: error, ignore)",
        ),
        (["data.header=false"], "data.header=false needs data.columns"),
        (["data.columns=[text,label]"], "data.columns names the fields of files without a header"),
        (["data.header=false", "data.columns=[a,a]"], "data.columns=['a', 'a'] has duplicates (a)"),
        (["data.dev_fraction=0"], "data.dev_fraction=0.0 must be in (0, 1)"),
        (["data.dev_fraction=1.5"], "data.dev_fraction=1.5 must be in (0, 1)"),
        (["data.files.train=nope.csv"], "data.files.train: '{folder}/nope.csv' is not a file"),
        (["data.files.train=x*.tsv"], "data.files.train='x*.tsv' matches no file in '{folder}'"),
        (["data.files.train=train.csv", "data.files.tset=train.csv"], "unknown split 'tset'"),
        (["data.label_names_file=nope.txt"], "label names file '{folder}/nope.txt' does not exist"),
        (
            ["data.label_names_file=labels.txt", "data.label_names=[neg,pos]"],
            "set data.label_names or data.label_names_file, not both",
        ),
        (["data.label_separator="], "data.label_separator is empty"),
    ],
)
def test_validate_names_bad_data_keys(make_cfg, folder, overrides, message):
    with pytest.raises(ConfigError) as err:
        validate(make_cfg("data=local", f"data.path={folder}", *overrides))
    assert message.format(folder=folder) in str(err.value)
    assert "\n" not in str(err.value)


def test_validate_checks_the_label_names_file_content(make_cfg, folder):
    _write(folder / "labels.txt", "neg\npos\nneg\n")
    with pytest.raises(ConfigError, match=r"labels\.txt:3: duplicate label name 'neg'"):
        validate(make_cfg("data=local", f"data.path={folder}", "data.label_names_file=labels.txt"))


def test_validate_rejects_dev_fraction_next_to_a_dev_file(make_cfg, folder):
    _write(folder / "validation.csv", "text,label\nc,1\n")
    cfg = make_cfg("data=local", f"data.path={folder}", "data.dev_fraction=0.2")
    with pytest.raises(ConfigError, match=r"there is a dev file \(.*validation\.csv\)"):
        validate(cfg)


def test_good_new_keys_validate(make_cfg, folder):
    cfg = make_cfg(
        "data=local", f"data.path={folder}", "data.files.train=train.csv",
        "data.dev_fraction=0.5", "data.label_names_file=labels.txt",
    )  # fmt: skip
    validate(cfg)


# composition: the presets and the data.files override


def test_files_override_needs_no_plus():
    cfg = compose_config([f"data.path={STSB}", "data.files.train=sts-train.csv"])
    assert dict(cfg.data.files) == {"train": "sts-train.csv"}
    cfg = compose_config(["data=stsb", f"data.path={STSB}", "data.files.test=sts-train.csv"])
    assert dict(cfg.data.files) == {"train": "sts-train.csv", "test": "sts-train.csv"}
    cfg = compose_config(["data=local", f"data.path={STSB}", "data.files={train: a.csv}"])
    assert dict(cfg.data.files) == {"train": "a.csv"}
    cfg = compose_config(["data=stsb", f"data.path={STSB}", "~data.files.test"])
    assert dict(cfg.data.files) == {"train": "sts-train.csv"}


def test_new_keys_default_to_the_old_behaviour():
    d = compose_config(["data=sst2", "data.path=x"]).data
    assert (d.files, d.format, d.header, d.columns, d.extra_fields, d.quoting) == (
        {}, None, True, None, "error", None,
    )  # fmt: skip
    assert (d.dev_fraction, d.split_seed, d.label_names_file, d.label_separator) == (
        None, 0, None, ",",
    )  # fmt: skip


# the real folders


def test_stsb_preset_reads_every_row(make_cfg):
    cfg = make_cfg("data=stsb", f"data.path={STSB}")
    validate(cfg)
    tables, sources, notes = read_splits(cfg.data)
    columns = ["genre", "file", "year", "id", "score", "sentence1", "sentence2"]
    n_train, n_dev = len(tables["train"][1]), len(tables["dev"][1])
    assert n_train + n_dev == 5749 and n_dev == round(0.1 * 5749) == 575
    assert len(tables["test"][1]) == 1500
    for columns_, rows in tables.values():
        assert columns_ == columns
        assert all(list(r) == columns and all(isinstance(v, str) for v in r.values()) for r in rows)
        assert all(0.0 <= float(r["score"]) <= 5.0 for r in rows)
    assert sources["dev"] == f"{STSB / 'sts-train.csv'} (dev: 10% held out, split_seed 0)"
    assert sources["test"] == str(STSB / "sts-dev.csv")
    # 197 + 22 rows carry two trailing fields (the source named twice)
    assert [n.split(": ")[1].split(" rows")[0] for n in notes[:2]] == ["197", "22"]
    first = next(r for r in tables["train"][1] + tables["dev"][1] if r["sentence1"].startswith(
        "Driver backs into stroller"))  # fmt: skip
    assert first["sentence2"] == "Driver backs into mom, stroller with child then drives off"


def test_goemotions_preset_reads_every_row(make_cfg):
    cfg = make_cfg("data=goemotions", f"data.path={GOEMOTIONS}")
    validate(cfg)
    tables, _, notes = read_splits(cfg.data)
    train, dev, test = (tables[s][1] for s in ("train", "dev", "test"))
    assert len(train) + len(dev) == 43410 and len(dev) == round(0.1 * 43410)
    assert len(test) == 5426
    assert all(re.fullmatch(r"\d+(,\d+)*", r["labels"]) for r in train + dev + test)
    names = read_label_names(GOEMOTIONS / cfg.data.label_names_file)
    assert len(names) == 28 and names[0] == "admiration" and names[-1] == "neutral"
    assert max(int(i) for r in train + dev + test for i in r["labels"].split(",")) == 27
    assert len(notes) == 1  # the held-out dev split: no row had extra fields


def test_goemotions_quotes_are_csv_quoting():
    """Texts holding a double quote were written by a CSV writer: wrapped, inner quotes doubled.
    Both readings give the same rows (no quoted tab or newline), and a CSV writer reproduces
    the files byte for byte from the csv reading; quoting=none would keep the wrapping."""
    for name, n_rows, n_quoted in (("train.tsv", 43410, 1097), ("dev.tsv", 5426, 137)):
        text = (GOEMOTIONS / name).read_text(encoding="utf-8")
        plain = list(csv.reader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE))
        quoted = list(csv.reader(io.StringIO(text), delimiter="\t", strict=True))
        assert len(plain) == len(quoted) == n_rows
        assert {len(r) for r in quoted} == {3}
        differ = [(p, q) for p, q in zip(plain, quoted, strict=True) if p != q]
        assert len(differ) == n_quoted
        assert all(p[0].startswith('"') and '"' in q[0] for p, q in differ)
        out = io.StringIO()
        csv.writer(out, delimiter="\t", lineterminator="\n").writerows(quoted)
        assert out.getvalue() == text


@pytest.mark.slow
def test_stsb_preset_composes_on_the_command_line(tmp_path):
    proc = run_cli("data=stsb", f"data.path={STSB}", "--cfg", "job", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "name: stsb" in proc.stdout and "train: sts-train.csv" in proc.stdout
    assert "dev_fraction: 0.1" in proc.stdout


@pytest.mark.slow
def test_a_missing_data_file_is_one_line_before_any_run(tmp_path):
    proc = run_cli(
        "model=tiny", "data=stsb", f"data.path={STSB}", "data.files.train=sts-tain.csv",
        "trainer.max_steps=1", cwd=tmp_path,
    )  # fmt: skip
    _assert_one_line_error(proc, f"data.files.train: '{STSB}/sts-tain.csv' is not a file")
    _assert_no_run_recorded(tmp_path)
