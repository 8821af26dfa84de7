"""Model and tokenizer builder (S1): pretrained encoder plus a fresh head of num_labels."""

from __future__ import annotations

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
)


def _load_kwargs(cfg: DictConfig) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if cfg.cache_dir:
        kwargs["cache_dir"] = str(cfg.cache_dir)
    return kwargs


def build_tokenizer(cfg: DictConfig) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(
        str(cfg.tokenizer or cfg.name_or_path), **_load_kwargs(cfg)
    )


def build_model(cfg: DictConfig, label_names: list[str]) -> Any:
    """AutoModelForSequenceClassification with id2label from the data, pretrained or random."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    num_labels = len(label_names)
    overrides: dict[str, Any] = dict(OmegaConf.to_container(cfg.arch) or {})
    overrides.update(
        num_labels=num_labels,
        id2label=dict(enumerate(label_names)),
        label2id={name: i for i, name in enumerate(label_names)},
    )
    config = AutoConfig.from_pretrained(str(cfg.name_or_path), **_load_kwargs(cfg), **overrides)
    if cfg.dropout is not None:
        for name in _DROPOUT_FIELDS:
            if hasattr(config, name):
                setattr(config, name, float(cfg.dropout))
    attention = {"attn_implementation": cfg.attn_implementation} if cfg.attn_implementation else {}
    if cfg.init == "random":
        model = AutoModelForSequenceClassification.from_config(config, **attention)
    else:
        with quiet_transformers():
            model, info = AutoModelForSequenceClassification.from_pretrained(
                str(cfg.name_or_path), config=config, output_loading_info=True,
                **_load_kwargs(cfg), **attention,
            )  # fmt: skip
        _report_loading(model, info)
    if not hasattr(model, "base_model"):
        raise ConfigError(f"{type(model).__name__} has no base_model (not a transformers encoder)")
    return model


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


def save_model(model: Any, tokenizer: Any, directory: Path) -> None:
    """Model and tokenizer in save_pretrained layout, loadable with from_pretrained.

    Written as a checkpoint is (a hidden sibling, renamed when complete): `directory` is a whole
    model or absent; a failed write raises ModelNotSaved.
    """
    from expkit.checkpoint import WriteFailed, atomic_dir

    try:
        with atomic_dir(Path(directory), manifest=False) as tmp, quiet_transformers():
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
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
