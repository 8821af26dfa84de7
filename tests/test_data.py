"""The data builder: labels to ids, pairs, sample limits, tokenization cache, dynamic padding."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from expkit.data import load_raw, tokenize
from expkit.errors import DataError
from expkit.model import build_tokenizer
from tests.conftest import CLASSIFICATION, SHARED_DATA


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


@pytest.fixture
def topic_dir(tmp_path):
    rows = [
        {"title": f"t{i}", "body": f"body {i}", "topic": ["sport", "art", "food"][i % 3]}
        for i in range(12)
    ]
    _jsonl(tmp_path / "train.jsonl", rows)
    _jsonl(tmp_path / "validation.jsonl", rows[:6])
    return tmp_path


def _cfg(make_cfg, path, *overrides):
    return make_cfg("data=local", f"data.path={path}", *overrides).data


def test_string_labels_map_to_sorted_ids_and_pairs_keep_two_columns(make_cfg, topic_dir):
    cfg = _cfg(make_cfg, topic_dir, "data.text_fields=[title,body]", "data.label_field=topic")
    raw = load_raw(cfg, CLASSIFICATION)
    assert raw.label_names == ["art", "food", "sport"]
    assert raw.labels["train"][:3] == [2, 0, 1]
    assert len(raw.texts["train"]) == 2 and raw.texts["train"][1][0] == "body 0"
    assert raw.size("dev") == 6  # validation.jsonl is the dev split
    assert raw.notes == [f"no test split in {topic_dir}: skipped"]


def test_label_names_fix_the_order(make_cfg, topic_dir):
    cfg = _cfg(
        make_cfg, topic_dir, "data.text_fields=[title]", "data.label_field=topic",
        "data.label_names=[sport,art,food]",
    )  # fmt: skip
    assert load_raw(cfg, CLASSIFICATION).labels["train"][:3] == [0, 1, 2]


def test_unknown_label_in_dev_is_named(make_cfg, topic_dir):
    _jsonl(
        topic_dir / "validation.jsonl",
        [{"title": "x", "topic": "art"}, {"title": "y", "topic": "war"}],
    )
    cfg = _cfg(make_cfg, topic_dir, "data.text_fields=[title]", "data.label_field=topic")
    with pytest.raises(DataError, match=r"validation.jsonl: data row 2: label 'war' is not in"):
        load_raw(cfg, CLASSIFICATION)


def test_sample_limits(make_cfg, topic_dir):
    cfg = _cfg(
        make_cfg, topic_dir, "data.text_fields=[title]", "data.label_field=topic",
        "data.max_train_samples=5", "data.max_eval_samples=2",
    )  # fmt: skip
    raw = load_raw(cfg, CLASSIFICATION)
    assert raw.size("train") == 5 and raw.size("dev") == 2


def test_integer_labels_with_names(make_cfg):
    if not (SHARED_DATA / "sst2").is_dir():
        pytest.skip("shared SST-2 data not present")
    cfg = make_cfg("data=sst2", f"data.path={SHARED_DATA / 'sst2'}").data
    raw = load_raw(cfg, CLASSIFICATION)
    assert raw.label_names == ["negative", "positive"]
    assert (raw.size("train"), raw.size("dev"), raw.size("test")) == (60614, 6735, 872)
    assert set(raw.labels["train"]) == {0, 1}


def test_mrpc_loads_every_row_as_pairs(make_cfg):
    if not (SHARED_DATA / "mrpc").is_dir():
        pytest.skip("shared MRPC data not present")
    raw = load_raw(make_cfg("data=mrpc", f"data.path={SHARED_DATA / 'mrpc'}").data, CLASSIFICATION)
    assert (raw.size("train"), raw.size("dev")) == (3668, 408)
    assert len(raw.texts["train"]) == 2


def test_tokenize_is_cached_by_content_and_pads_per_batch(make_cfg, topic_dir, tmp_path):
    cfg = make_cfg("data=local", f"data.path={topic_dir}", "data.text_fields=[title,body]",
                   "data.label_field=topic")  # fmt: skip
    raw = load_raw(cfg.data, CLASSIFICATION)
    tok = build_tokenizer(cfg.model)
    cache = tmp_path / "cache"
    first = tokenize(raw, tok, CLASSIFICATION, cfg.data, cache)
    files = sorted(p.name for p in cache.iterdir())
    assert len(files) == 2  # train and dev
    again = tokenize(raw, tok, CLASSIFICATION, cfg.data, cache)
    assert sorted(p.name for p in cache.iterdir()) == files  # reused, nothing new written
    assert again["train"]["input_ids"] == first["train"]["input_ids"]
    row = first["train"][0]
    # a pair: [CLS] a [SEP] b [SEP] with token types 0 then 1
    assert row["token_type_ids"][0] == 0 and row["token_type_ids"][-1] == 1
    batch = CLASSIFICATION.collator(tok)([first["train"][i] for i in range(4)])
    assert batch["input_ids"].shape[0] == 4
    assert batch["input_ids"].shape[1] == max(len(first["train"][i]["input_ids"]) for i in range(4))
    assert batch["labels"].tolist() == raw.labels["train"][:4]
