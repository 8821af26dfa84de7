"""Freeze strategies (none, the whole encoder, the embeddings, the lowest N layers): a registry
from config name to a function that sets requires_grad."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig

from expkit.errors import ConfigError


def _freeze(module: Any) -> None:
    for param in module.parameters():
        param.requires_grad = False


def _embeddings(model: Any) -> Any:
    base = model.base_model
    return getattr(base, "embeddings", None) or model.get_input_embeddings()


def encoder_layers(model: Any) -> Any:
    """The stack of encoder layers (BERT's encoder.layer, or another family's first layer list)."""
    import torch

    encoder = getattr(model.base_model, "encoder", None)
    if encoder is not None and isinstance(getattr(encoder, "layer", None), torch.nn.ModuleList):
        return encoder.layer
    for name, module in model.base_model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and name.split(".")[-1] in ("layer", "layers"):
            return module
    raise ConfigError(f"{type(model).__name__} has no encoder layer list to freeze layers of")


def _none(model: Any, cfg: DictConfig) -> None:
    pass


def _base_model(model: Any, cfg: DictConfig) -> None:
    # The tutorial's loop: every parameter of the encoder, so only the task head trains.
    _freeze(model.base_model)


def _embeddings_only(model: Any, cfg: DictConfig) -> None:
    _freeze(_embeddings(model))


def _bottom_layers(model: Any, cfg: DictConfig) -> None:
    layers = encoder_layers(model)  # num_layers is checked against the config in validate
    for layer in layers[: cfg.num_layers]:
        _freeze(layer)
    if cfg.embeddings:
        _freeze(_embeddings(model))


FREEZERS: dict[str, Callable[[Any, DictConfig], None]] = {
    "none": _none,
    "base_model": _base_model,
    "embeddings": _embeddings_only,
    "bottom_layers": _bottom_layers,
}


def apply_freeze(model: Any, cfg: DictConfig) -> dict[str, int]:
    """Freeze what `cfg.name` says; return the trainable and total parameter counts."""
    FREEZERS[cfg.name](model, cfg)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable_params": trainable, "total_params": total}
