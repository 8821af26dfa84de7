"""Model and tokenizer builder (S1): pretrained encoder plus a fresh head of num_labels."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from expkit.errors import ConfigError

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
    if cfg.init == "random":
        model = AutoModelForSequenceClassification.from_config(config)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(
            str(cfg.name_or_path), config=config, **_load_kwargs(cfg)
        )
    if not hasattr(model, "base_model"):
        raise ConfigError(f"{type(model).__name__} has no base_model (not a transformers encoder)")
    return model
