"""Model and tokenizer builder: a pretrained encoder plus the task's fresh head, and its tokenizer.

The task (expkit.tasks) names the head's class (`AutoModelFor...`) and its config fields
(num_labels, problem_type, id2label); this module loads, checks and saves.
"""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from expkit.errors import ConfigError, ExpkitError

log = logging.getLogger(__name__)

# The dropout fields of the common encoder families; `model.dropout` sets those the config has.
_DROPOUT_FIELDS = (
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "dropout",
    "attention_dropout",
    "resid_pdrop",  # GPT-2
    "embd_pdrop",
    "attn_pdrop",
)


def _load_kwargs(cfg: DictConfig) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if cfg.cache_dir:
        kwargs["cache_dir"] = str(cfg.cache_dir)
    return kwargs


# The files AutoTokenizer builds a vocabulary from; in a directory with none of them it builds
# a tokenizer of special tokens only, which turns every word into [UNK]. tokenizer_config.json
# counts: byte-level tokenizers (ByT5, CANINE) need no vocabulary file.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "vocab.json",
    "tekken.json",
)
_TOKENIZER_SUFFIXES = (".model", ".tiktoken")  # sentencepiece and tiktoken vocabularies

# The weights from_pretrained looks for in a local directory, in its order of preference.
WEIGHTS_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def tokenizer_source(cfg: DictConfig) -> tuple[str, str]:
    """Where the tokenizer comes from, and the config key that names it."""
    if cfg.tokenizer:
        return str(cfg.tokenizer), "model.tokenizer"
    return str(cfg.name_or_path), "model.name_or_path"


def has_tokenizer_files(directory: Path) -> bool:
    """Whether a local directory holds any file AutoTokenizer reads a vocabulary from."""
    return any(
        f.name in TOKENIZER_FILES or f.name.endswith(_TOKENIZER_SUFFIXES)
        for f in directory.iterdir()
        if f.is_file()
    )


def weights_file(directory: Path) -> Path | None:
    """The weights file from_pretrained would read in a local directory, or None."""
    return next((directory / n for n in WEIGHTS_FILES if (directory / n).is_file()), None)


def weights_problem(directory: Path) -> str | None:
    """Why from_pretrained could not read the weights in `directory` (no torch needed), or None."""
    found = weights_file(directory)
    if found is None:
        return (
            f"model directory '{directory}' has no weights ({', '.join(WEIGHTS_FILES)}); "
            "model.init=random builds the architecture from config.json alone"
        )
    if found.name == "model.safetensors":
        return _safetensors_problem(found)
    if found.name == "model.safetensors.index.json":
        try:
            shards = sorted(
                set(json.loads(found.read_text(encoding="utf-8"))["weight_map"].values())
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            return f"{found} is not a safetensors index (a JSON object with a weight_map): {exc}"
        for shard in shards:
            if not (directory / shard).is_file():
                return f"{found} names the shard {shard}, which is not in '{directory}'"
            problem = _safetensors_problem(directory / shard)
            if problem:
                return problem
    return None


def _safetensors_problem(file: Path) -> str | None:
    """The safetensors library's own header check: it also compares the offsets with the size."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(file), framework="numpy"):
            pass
    except (SafetensorError, OSError) as exc:
        return (
            f"{file} cannot be read ({exc}; {file.stat().st_size} bytes): truncated or damaged, "
            "save or download it again"
        )
    return None


def _one_line(exc: BaseException) -> str:
    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def build_tokenizer(cfg: DictConfig) -> Any:
    """AutoTokenizer from model.tokenizer (else the model's directory), with a padding token."""
    from transformers import AutoTokenizer

    source, key = tokenizer_source(cfg)
    with _load_errors(f"a tokenizer from '{source}' ({key})"):
        tokenizer = AutoTokenizer.from_pretrained(source, **_load_kwargs(cfg))
    specials = set(tokenizer.all_special_tokens)
    if len(tokenizer) <= len(specials):
        raise ConfigError(
            f"the tokenizer from '{source}' ({key}) has only its {len(tokenizer)} special tokens "
            f"({', '.join(sorted(specials))}) and no vocabulary: every word would be the "
            "unknown token; set model.tokenizer to a directory with the model's tokenizer files"
        )
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ConfigError(
                f"the tokenizer from '{source}' ({key}) has no padding token and no end-of-text "
                "token to pad with; batches of different lengths need one"
            )
        # the usual choice for decoder models (GPT-2): the model only sees the attention mask
        tokenizer.pad_token = tokenizer.eos_token
        log.info(
            "the tokenizer has no padding token: padding with its end-of-text token %r",
            tokenizer.eos_token,
        )
    return tokenizer


def check_max_length(tokenizer: Any, data_cfg: DictConfig) -> None:
    """data.max_length leaves room for one text token beside the tokenizer's special tokens.

    Below that, the tokenizer does not truncate at all: long rows reach the model whole.
    """
    single = tokenizer.num_special_tokens_to_add(pair=False) + 1
    pair = tokenizer.num_special_tokens_to_add(pair=True) + 1
    needed = pair if len(data_cfg.text_fields) == 2 else single
    if data_cfg.max_length < needed:
        raise ConfigError(
            f"data.max_length={data_cfg.max_length} is below this tokenizer's minimum: "
            f"{single} for single texts, {pair} for sentence pairs (its special tokens + 1); "
            f"data.text_fields has {len(data_cfg.text_fields)} column(s), so at least {needed}"
        )


def _names(cfg: DictConfig) -> tuple[Any, Any]:
    """What a failed load names: the config file and the weights file of a local directory."""
    source = str(cfg.name_or_path)
    local = Path(source).expanduser()
    if local.is_dir():  # a load that fails names the very file
        return local / "config.json", weights_file(local) or local
    return f"'{source}'", f"'{source}'"


def model_config(cfg: DictConfig, head: dict[str, Any], pad_token_id: int | None = None) -> Any:
    """The model's config with the task's head fields, `model.arch` and `model.dropout` applied.

    Cheap (no weights): expkit.run builds it before the tracking run opens, so a config.json
    transformers cannot read (an unknown model_type, say) is bad input, not a failed run.
    `pad_token_id` (the tokenizer's) is set where the config has none (GPT-2): the
    classification head finds each row's last token by it.
    """
    from transformers import AutoConfig

    config_name, _ = _names(cfg)
    overrides: dict[str, Any] = dict(OmegaConf.to_container(cfg.arch) or {})
    overrides.update(head)
    with _load_errors(f"{config_name} (model.name_or_path)"):
        config = AutoConfig.from_pretrained(str(cfg.name_or_path), **_load_kwargs(cfg), **overrides)
    if cfg.dropout is not None:
        for name in _DROPOUT_FIELDS:
            if hasattr(config, name):
                setattr(config, name, float(cfg.dropout))
    if getattr(config, "pad_token_id", None) is None and pad_token_id is not None:
        config.pad_token_id = pad_token_id
    return config


def build_model(
    cfg: DictConfig, head: dict[str, Any], model_class: str, pad_token_id: int | None = None
) -> Any:
    """The task's `AutoModelFor...` class with its head config, pretrained or random."""
    import transformers

    auto_class = getattr(transformers, model_class)
    source = str(cfg.name_or_path)
    config_name, weights_name = _names(cfg)
    config = model_config(cfg, head, pad_token_id)
    attention = {"attn_implementation": cfg.attn_implementation} if cfg.attn_implementation else {}
    if cfg.init == "random":
        with _load_errors(f"a model from {config_name} (model.name_or_path)"):
            model = auto_class.from_config(config, **attention)
    else:
        with quiet_transformers(), _load_errors(f"{weights_name} (model.name_or_path)"):
            model, info = auto_class.from_pretrained(
                source, config=config, output_loading_info=True,
                **_load_kwargs(cfg), **attention,
            )  # fmt: skip
        _report_loading(model, info)
        # what an adapter must train in full (expkit.adapter): the checkpoint did not have it
        setattr(model, _NEW_WEIGHTS, sorted(info.get("missing_keys") or []))
    if not hasattr(model, "base_model"):
        raise ConfigError(f"{type(model).__name__} has no base_model (not a transformers encoder)")
    return model


_NEW_WEIGHTS = "expkit_new_weights"


def new_weights(model: Any) -> list[str]:
    """The weights build_model found missing from the checkpoint (randomly initialised)."""
    return list(getattr(model, _NEW_WEIGHTS, None) or [])


@contextmanager
def _load_errors(what: str):
    """A load that fails past the checks in validate: one line naming what, the cause chained.

    transformers, safetensors and tokenizers raise many types (OSError, ValueError,
    RuntimeError, SafetensorError, bare Exception), so all but ours are caught.
    """
    try:
        yield
    except ExpkitError:
        raise
    except Exception as exc:
        log.debug("cannot load %s", what, exc_info=True)
        raise ConfigError(f"cannot load {what}: {_one_line(exc)}") from exc


@contextmanager
def quiet_transformers():
    """transformers' multi-line load report and progress bars, silenced for one call.

    A fresh task head is the expected outcome of fine-tuning; _report_loading says it in one line.
    """
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


class ModelNotSaved(ExpkitError):
    """Writing the final model failed (disk full, ...); nothing of it is left."""


def save_model(
    model: Any, tokenizer: Any, directory: Path, extra: dict[str, str] | None = None
) -> None:
    """Model and tokenizer in save_pretrained layout, loadable with from_pretrained, and the
    `extra` files (name -> text) beside them.

    Written as a checkpoint is (a hidden sibling, renamed when complete): `directory` is a whole
    model or absent; a failed write raises ModelNotSaved.
    """
    from expkit.adapter import is_adapted
    from expkit.checkpoint import WriteFailed, atomic_dir

    try:
        with atomic_dir(Path(directory), manifest=False) as tmp, quiet_transformers():
            model.save_pretrained(tmp)
            if is_adapted(model):  # an adapter saves itself only: the base's config,
                model.get_base_model().config.save_pretrained(tmp)  # num_labels, id2label too
            tokenizer.save_pretrained(tmp)
            for name, text in (extra or {}).items():
                (Path(tmp) / name).write_text(text, encoding="utf-8")
    except WriteFailed as exc:
        raise ModelNotSaved(
            f"the trained model was not saved to {directory} ({exc.reason}; nothing of it is left)"
        ) from exc


def _report_loading(model: Any, info: dict[str, Any]) -> None:
    """One line for the new head; a warning for encoder weights the checkpoint did not have."""
    prefix = f"{getattr(model, 'base_model_prefix', '')}."
    missing = sorted(info.get("missing_keys") or [])
    head = [k for k in missing if not k.startswith(prefix)]
    encoder = [k for k in missing if k.startswith(prefix)]
    if head:
        log.info("new task head, randomly initialised: %s", ", ".join(head))
    if encoder:
        shown = ", ".join(encoder[:5]) + (
            f" and {len(encoder) - 5} more" if len(encoder) > 5 else ""
        )
        log.warning(
            "%d encoder weights were not in the checkpoint and start random: %s",
            len(encoder),
            shown,
        )
    mismatched = info.get("mismatched_keys") or []
    if mismatched:
        log.warning("weights with another shape in the checkpoint, re-initialised: %s", mismatched)
