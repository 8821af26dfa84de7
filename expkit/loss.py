"""Loss options: the model's own loss, or one computed by expkit from the logits.

Which options a task takes is the task's (expkit.tasks: `Task.losses`); each builder gets the
loss config and the data read (for per-label weights computed from the train split).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig

LossFn = Callable[[Any, Any], Any]
POS_WEIGHT_CAP = 30.0  # pos_weight=auto: a label seen once in 40,000 rows would weigh 40,000


def _model_loss(cfg: DictConfig, raw: Any) -> LossFn | None:
    return None  # labels go into the forward pass and the model returns .loss


def _cross_entropy(cfg: DictConfig, raw: Any) -> LossFn:
    import torch
    import torch.nn.functional as F

    weight = None
    if cfg.class_weights is not None:  # one per class: checked by the task against the data
        weight = torch.tensor(list(cfg.class_weights), dtype=torch.float32)
    smoothing = float(cfg.label_smoothing)

    def cross_entropy(logits: Any, labels: Any) -> Any:
        w = weight.to(logits.device) if weight is not None else None
        # one row per labelled position: a token head's (batch, length, classes) logits are
        # flattened as the model's own loss does; -100 (padding, later sub-tokens) is ignored
        flat = logits.reshape(-1, logits.shape[-1])
        # float32 logits: the loss under bf16 autocast stays as exact as the model's own loss
        return F.cross_entropy(
            flat.float(), labels.reshape(-1), weight=w, label_smoothing=smoothing,
            ignore_index=-100,
        )  # fmt: skip

    return cross_entropy


def _mse(cfg: DictConfig, raw: Any) -> LossFn:
    import torch.nn.functional as F

    def mse(logits: Any, labels: Any) -> Any:
        return F.mse_loss(logits.float().squeeze(-1), labels.float())

    return mse


def _huber(cfg: DictConfig, raw: Any) -> LossFn:
    import torch.nn.functional as F

    delta = float(cfg.delta)

    def huber(logits: Any, labels: Any) -> Any:
        return F.huber_loss(logits.float().squeeze(-1), labels.float(), delta=delta)

    return huber


def pos_weights(cfg: DictConfig, raw: Any) -> list[float] | None:
    """loss.pos_weight as one weight per label: given, or `auto` (negatives / positives in the
    train split, at most POS_WEIGHT_CAP; a label never present gets the cap)."""
    if cfg.pos_weight is None:
        return None
    if cfg.pos_weight != "auto":
        return [float(w) for w in cfg.pos_weight]
    rows = raw.labels["train"]
    positives = [sum(row[j] for row in rows) for j in range(raw.num_labels)]
    return [min(POS_WEIGHT_CAP, (len(rows) - p) / p) if p else POS_WEIGHT_CAP for p in positives]


def _bce(cfg: DictConfig, raw: Any) -> LossFn:
    import torch
    import torch.nn.functional as F

    weights = pos_weights(cfg, raw)
    pos_weight = torch.tensor(weights, dtype=torch.float32) if weights is not None else None

    def bce(logits: Any, labels: Any) -> Any:
        w = pos_weight.to(logits.device) if pos_weight is not None else None
        return F.binary_cross_entropy_with_logits(logits.float(), labels.float(), pos_weight=w)

    return bce


LOSSES: dict[str, Callable[[DictConfig, Any], LossFn | None]] = {
    "model": _model_loss,
    "cross_entropy": _cross_entropy,
    "mse": _mse,
    "huber": _huber,
    "bce": _bce,
}


def build_loss(cfg: DictConfig, raw: Any) -> LossFn | None:
    """None means: pass labels to the model and use its loss."""
    return LOSSES[cfg.name](cfg, raw)


def forward_loss(model: Any, batch: dict, loss_fn: LossFn | None) -> tuple[Any, Any]:
    """(loss, model outputs) for one batch: the model's own loss, or `loss_fn(logits, labels)`.

    Both backends compute every training and evaluation loss through this function.
    """
    if loss_fn is None:
        out = model(**batch)
        return out.loss, out
    out = model(**{k: v for k, v in batch.items() if k != "labels"})
    return loss_fn(out.logits, batch["labels"]), out
