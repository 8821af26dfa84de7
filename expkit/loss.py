"""Loss options (S5, S6): the model's own loss, or cross-entropy computed by expkit."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig

from expkit.errors import ConfigError

LossFn = Callable[[Any, Any], Any]


def _model_loss(cfg: DictConfig, num_labels: int) -> LossFn | None:
    return None  # labels go into the forward pass and the model returns .loss


def _cross_entropy(cfg: DictConfig, num_labels: int) -> LossFn:
    import torch
    import torch.nn.functional as F

    weight = None
    if cfg.class_weights is not None:
        if len(cfg.class_weights) != num_labels:
            raise ConfigError(
                f"loss.class_weights has {len(cfg.class_weights)} values for {num_labels} labels"
            )
        weight = torch.tensor(list(cfg.class_weights), dtype=torch.float32)
    smoothing = float(cfg.label_smoothing)

    def cross_entropy(logits: Any, labels: Any) -> Any:
        w = weight.to(logits.device) if weight is not None else None
        # float32 logits: the loss under bf16 autocast stays as exact as the model's own loss
        return F.cross_entropy(logits.float(), labels, weight=w, label_smoothing=smoothing)

    return cross_entropy


LOSSES: dict[str, Callable[[DictConfig, int], LossFn | None]] = {
    "model": _model_loss,
    "cross_entropy": _cross_entropy,
}


def build_loss(cfg: DictConfig, num_labels: int) -> LossFn | None:
    """None means: pass labels to the model and use its loss."""
    return LOSSES[cfg.name](cfg, num_labels)


def forward_loss(model: Any, batch: dict, loss_fn: LossFn | None) -> tuple[Any, Any]:
    """(loss, model outputs) for one batch: the model's own loss, or `loss_fn(logits, labels)`.

    Both backends compute every training and evaluation loss through this function.
    """
    if loss_fn is None:
        out = model(**batch)
        return out.loss, out
    out = model(**{k: v for k, v in batch.items() if k != "labels"})
    return loss_fn(out.logits, batch["labels"]), out
