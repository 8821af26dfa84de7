"""Language modelling, in process: plain text read as it is (documents, lines, the dev split cut
from the end), texts packed into blocks, masks that depend on (seed, epoch, block) alone, the
token-weighted loss, and the checks at the door."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from expkit.data import load_raw
from expkit.errors import ConfigError, DataError
from expkit.tables import hold_out_tail, read_splits
from expkit.tasks import build_task
from tests.conftest import SHARED_DATA, compose_config

SHAKESPEARE = SHARED_DATA / "tinyshakespeare" / "input.txt"


def _text(n: int = 6000) -> str:
    return SHAKESPEARE.read_text(encoding="utf-8")[:n]


def _cfg(tmp_path, *overrides):
    return compose_config(["data=text", f"data.path={tmp_path}", *overrides])


def _tokenizer(cfg):
    from expkit.model import build_tokenizer

    return build_tokenizer(cfg.model)


# -- reading ---------------------------------------------------------------------------------
def test_a_single_txt_file_is_the_training_text_and_dev_is_its_end(tmp_path):
    text = _text()
    (tmp_path / "input.txt").write_text(text, encoding="utf-8")
    cfg = _cfg(tmp_path, "task=causal_lm", "model=tiny_gpt2")
    tables, sources, notes = read_splits(cfg.data)
    train, dev = tables["train"][1], tables["dev"][1]
    assert len(train) == len(dev) == 1  # one document, cut in two
    assert train[0]["text"] + dev[0]["text"] == text  # in order, nothing lost or shuffled
    assert train[0]["text"].endswith("\n")  # cut at a line break
    cut = len(train[0]["text"])
    assert round(0.9 * len(text)) <= cut <= text.find("\n", round(0.9 * len(text))) + 1
    assert "held out, in order" in notes[-1] and "end of the text" in sources["dev"]


def test_line_by_line_reads_a_row_per_line_and_cuts_between_rows(tmp_path):
    (tmp_path / "train.txt").write_text("one two\n\nthree four\nfive\nsix seven\n", "utf-8")
    cfg = _cfg(tmp_path, "task=masked_lm", "model=tiny", "data.line_by_line=true",
               "data.dev_fraction=0.3")  # fmt: skip
    tables, _, _ = read_splits(cfg.data)
    assert [r["text"] for r in tables["train"][1]] == ["one two", "three four", "five"]
    assert [r["text"] for r in tables["dev"][1]] == ["six seven"]


def test_a_dev_file_wins_over_the_held_out_tail(tmp_path):
    (tmp_path / "train.txt").write_text("a b c\n" * 20, "utf-8")
    (tmp_path / "dev.txt").write_text("d e f\n", "utf-8")
    tables, _sources, notes = read_splits(_cfg(tmp_path, "task=masked_lm", "model=tiny").data)
    assert tables["dev"][1] == [{"text": "d e f\n"}]
    assert any("dev.txt) is read: data.dev_fraction=0.1 unused" in n for n in notes)


def test_hold_out_tail_splits_the_row_the_cut_falls_in():
    rows = [{"text": "aaaa\n", "id": 1}, {"text": "bbbb\ncccc\n", "id": 2},
            {"text": "d\n", "id": 3}]  # fmt: skip
    kept, held = hold_out_tail(rows, 0.4, "text")
    assert kept == [{"text": "aaaa\n", "id": 1}, {"text": "bbbb\n", "id": 2}]
    assert held == [{"text": "cccc\n", "id": 2}, {"text": "d\n", "id": 3}]


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_an_empty_text_file_names_the_file(tmp_path, content):
    (tmp_path / "input.txt").write_text(content, "utf-8")
    cfg = _cfg(tmp_path, "task=causal_lm", "model=tiny_gpt2")
    with pytest.raises(DataError, match=r"input\.txt: no data rows \(the input file is empty\)"):
        load_raw(cfg.data, build_task(cfg))


# -- encoding --------------------------------------------------------------------------------
def _raw(tmp_path, *overrides, docs=None):
    docs = docs or [_text(3000)]
    for i, doc in enumerate(docs):
        (tmp_path / f"part-{i}.txt").write_text(doc, "utf-8")
    cfg = _cfg(tmp_path, "data.files.train=part-*.txt", *overrides)
    task = build_task(cfg)
    return cfg, task, load_raw(cfg.data, task)


def test_causal_blocks_pack_the_documents_with_an_end_of_text_between(tmp_path):
    docs = ["First Citizen:\nSpeak.\n", "All:\nSpeak, speak.\n"]
    cfg, task, raw = _raw(tmp_path, "task=causal_lm", "model=tiny_gpt2", "task.block_size=16",
                          "data.dev_fraction=null", docs=docs)  # fmt: skip
    tokenizer = _tokenizer(cfg)
    enc = task.encode(raw, "train", tokenizer, task.encode_kwargs(cfg.data))
    stream = [t for block in enc["input_ids"] for t in block]
    eos = tokenizer.eos_token_id
    assert stream == [*tokenizer(docs[0])["input_ids"], eos, *tokenizer(docs[1])["input_ids"]]
    assert [len(b) for b in enc["input_ids"][:-1]] == [16] * (len(enc["input_ids"]) - 1)
    assert enc["labels"] == enc["input_ids"]  # the model shifts them
    assert enc["example"] == list(range(len(enc["input_ids"])))


def test_masked_blocks_are_wrapped_and_dev_is_masked_once_from_its_seed(tmp_path):
    cfg, task, raw = _raw(tmp_path, "task=masked_lm", "model=tiny", "data.max_length=32")
    tokenizer = _tokenizer(cfg)
    kwargs = task.encode_kwargs(cfg.data)
    train = task.encode(raw, "train", tokenizer, kwargs)
    assert all(len(ids) <= 32 for ids in train["input_ids"])
    assert train["input_ids"][0][0] == tokenizer.cls_token_id
    assert train["input_ids"][0][-1] == tokenizer.sep_token_id
    assert "labels" not in train  # masked by the collator, anew each epoch
    dev = task.encode(raw, "dev", tokenizer, kwargs)
    again = task.encode(raw, "dev", tokenizer, kwargs)
    assert dev["input_ids"] == again["input_ids"] and dev["labels"] == again["labels"]
    labels = [t for row in dev["labels"] for t in row]
    predicted = sum(t != -100 for t in labels)
    assert 0.08 < predicted / len(labels) < 0.22  # about 15 % of the tokens, specials never
    for ids, row in zip(dev["input_ids"], dev["labels"], strict=True):
        assert row[0] == row[-1] == -100
        assert ids[0] == tokenizer.cls_token_id
    reseeded = ["data.files.train=part-*.txt", "task=masked_lm", "model=tiny",
                "data.max_length=32", "task.eval_mask_seed=1"]  # fmt: skip
    other = build_task(_cfg(tmp_path, *reseeded))
    moved = other.encode(raw, "dev", tokenizer, other.encode_kwargs(cfg.data))
    assert moved["labels"] != dev["labels"]


def _features(encoded, rows):
    return [{k: v[i] for k, v in encoded.items()} for i in rows]


def test_a_training_block_is_masked_by_seed_epoch_and_block_alone(tmp_path):
    cfg, task, raw = _raw(tmp_path, "task=masked_lm", "model=tiny", "data.max_length=32")
    tokenizer = _tokenizer(cfg)
    train = task.encode(raw, "train", tokenizer, task.encode_kwargs(cfg.data))
    collator = task.collator(tokenizer)
    alone = collator(_features(train, [3]))
    batched = collator(_features(train, [7, 3, 1]))  # another batch, another place in it
    width = alone["input_ids"].shape[1]
    assert torch.equal(batched["input_ids"][1, :width], alone["input_ids"][0])
    assert torch.equal(batched["labels"][1, :width], alone["labels"][0])
    assert (alone["labels"] != -100).any()
    collator.set_epoch(1)
    assert not torch.equal(collator(_features(train, [3]))["labels"], alone["labels"])
    reseeded = build_task(compose_config(["data=text", f"data.path={tmp_path}", "seed=7",
                                          "task=masked_lm", "model=tiny"]))  # fmt: skip
    other = reseeded.collator(tokenizer)(_features(train, [3]))
    assert not torch.equal(other["labels"], alone["labels"])


def test_the_split_loss_is_weighted_by_tokens_not_batches(tmp_path):
    _, task, _ = _raw(tmp_path, "task=causal_lm", "model=tiny_gpt2", "task.block_size=16")
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[1, 2, 3, 4, 5], [6, 1, -100, -100, -100]])
    rows = task.batch_outputs(logits, labels)
    # causal: token t predicts t + 1, so 4 and 1 predicted tokens
    assert rows[:, 1].tolist() == [4.0, 1.0]
    expected = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, 7), labels[:, 1:].reshape(-1), ignore_index=-100,
        reduction="sum",
    ) / 5  # fmt: skip
    metrics = task.metrics(list(rows.numpy()), task.golds(rows), "dev")
    assert metrics["loss"] == pytest.approx(float(expected), rel=1e-6)
    assert metrics["perplexity"] == pytest.approx(math.exp(metrics["loss"]), rel=1e-9)
    batch_means = (rows[:, 0] / rows[:, 1]).mean()  # what a mean of batch losses would give
    assert float(batch_means) != pytest.approx(metrics["loss"], rel=1e-3)


def test_the_causal_loss_is_the_models_own_on_a_batch(tmp_path):
    cfg, task, raw = _raw(tmp_path, "task=causal_lm", "model=tiny_gpt2", "task.block_size=32")
    from expkit.model import build_model

    tokenizer = _tokenizer(cfg)
    enc = task.encode(raw, "train", tokenizer, task.encode_kwargs(cfg.data))
    model = build_model(cfg.model, {}, task.model_class, tokenizer.pad_token_id).eval()
    batch = task.collator(tokenizer)(_features(enc, [0, 1, 2]))
    with torch.no_grad():
        out = model(**batch)
    rows = task.batch_outputs(out, batch["labels"])
    assert float(rows[:, 0].sum() / rows[:, 1].sum()) == pytest.approx(float(out.loss), rel=1e-5)


# -- at the door -----------------------------------------------------------------------------
def test_masked_lm_needs_a_mask_token(tmp_path):
    cfg, task, raw = _raw(tmp_path, "task=masked_lm", "model=tiny_gpt2")
    with pytest.raises(ConfigError, match="task=masked_lm needs a tokenizer with a mask token"):
        task.check_data(raw, cfg)


def test_a_block_beyond_the_models_positions_is_refused(tmp_path):
    cfg, task, raw = _raw(tmp_path, "task=causal_lm", "model=tiny_gpt2", "task.block_size=512")
    with pytest.raises(ConfigError, match=r"task.block_size=512 is beyond the model's 256"):
        task.check_data(raw, cfg)


def test_the_block_size_follows_data_max_length_by_default(tmp_path):
    cfg = _cfg(tmp_path, "task=causal_lm", "model=tiny_gpt2", "data.max_length=64")
    assert cfg.task.block_size == 64
    assert cfg.objective.metric == "eval_loss" and cfg.objective.direction == "minimize"


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["task=masked_lm", "task.mlm_probability=0"], "task.mlm_probability=0.0 must be in"),
        (["task=causal_lm", "task.block_size=1"], "task.block_size=1 must be 2 or more"),
        (["task=causal_lm", "task.top_p=0"], "task.top_p=0.0 must be in (0, 1]"),
        (["task=masked_lm", "data.text_fields=[a,b]"], "task=masked_lm reads one text column"),
    ],
)
def test_bad_language_model_settings_are_named(tmp_path, overrides, needle):
    (tmp_path / "input.txt").write_text("some text\n", "utf-8")
    cfg = _cfg(tmp_path, *overrides)
    assert any(needle in e for e in build_task(cfg).check(cfg)), build_task(cfg).check(cfg)


# -- predictions -----------------------------------------------------------------------------
def test_fill_mask_ranks_the_candidates_of_each_mask(tmp_path):
    cfg, task, _ = _raw(tmp_path, "task=masked_lm", "model=tiny", "task.top_k=3")
    from expkit.model import build_model

    tokenizer = _tokenizer(cfg)
    model = build_model(cfg.model, {}, task.model_class, tokenizer.pad_token_id).eval()
    texts = [["the [MASK] is [MASK] here"]]
    enc = task.encode_inputs(texts, tokenizer, task.encode_kwargs(cfg.data))
    batch = task.collator(tokenizer)(_features(enc, [0]))
    with torch.no_grad():
        scores, _ = task.predict_batch(model, batch, tokenizer, scoring=False)
    record = task.prediction(scores[0], [texts[0][0]])
    assert len(record["masks"]) == 2 and all(len(m) == 3 for m in record["masks"])
    for candidates in record["masks"]:
        values = [c["score"] for c in candidates]
        assert values == sorted(values, reverse=True) and 0 < sum(values) <= 1
    first = [m[0]["token"] for m in record["masks"]]
    assert record["filled"] == f"the {first[0]} is {first[1]} here"


def test_generation_is_greedy_or_seeded_by_prompt(tmp_path):
    cfg, task, _ = _raw(tmp_path, "task=causal_lm", "model=tiny_gpt2", "task.max_new_tokens=6")
    from expkit.model import build_model

    tokenizer = _tokenizer(cfg)
    model = build_model(cfg.model, {}, task.model_class, tokenizer.pad_token_id).eval()
    collator = task.collator(tokenizer)
    enc = task.encode_inputs([["ROMEO:", "Ay"]], tokenizer, task.encode_kwargs(cfg.data))
    with torch.no_grad():
        both, _ = task.predict_batch(model, collator(_features(enc, [0, 1])), tokenizer, False)
        alone, _ = task.predict_batch(model, collator(_features(enc, [1])), tokenizer, False)
    assert [s["new_tokens"] for s in both] == [6, 6]
    assert both[1] == alone[0]  # padding beside it changes nothing
    task.cfg = OmegaConf.merge(task.cfg, {"do_sample": True})
    with torch.no_grad():
        one, _ = task.predict_batch(model, collator(_features(enc, [1])), tokenizer, False)
        two, _ = task.predict_batch(model, collator(_features(enc, [0, 1])), tokenizer, False)
    assert one[0] == two[1]  # the same prompt, the same sample, whatever the batch


# -- adapters --------------------------------------------------------------------------------
def test_lora_leaves_a_tied_output_layer_to_the_embedding(tmp_path):
    """An output layer tied to the input embedding is not copied to train in full: GPT-2's
    lm_head stays the (frozen) embedding; of BERT's new MLM head only the transform trains."""
    from expkit.adapter import saved_in_full
    from expkit.model import build_model

    for overrides, new, expected in (
        (["task=causal_lm", "model=tiny_gpt2"], [], []),
        (["task=masked_lm", "model=tiny"],
         ["cls.predictions.bias", "cls.predictions.transform.dense.weight"],
         ["cls.predictions.transform"]),
    ):  # fmt: skip
        cfg = _cfg(tmp_path, *overrides)
        task = build_task(cfg)
        model = build_model(cfg.model, {}, task.model_class, _tokenizer(cfg).pad_token_id)
        assert saved_in_full(model, new) == expected, overrides
