"""Optimizer and scheduler builders, each a registry from config name to a function.

Adding an optimizer is one function here plus one YAML file in conf/optimizer/.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig


def parameter_groups(model: Any, cfg: DictConfig) -> list[dict[str, Any]]:
    """The tutorial's groups: weight decay except on `no_decay` matches; frozen parameters left out.

    With `head_lr` set, the task head (parameters outside the encoder, model.base_model) gets
    its own lr. With an adapter, LoRA's matrices sit inside the encoder and take `lr`; the head
    it trains in full takes `head_lr`. `no_decay` matches parameter names (LoRA's lora_A and
    lora_B decay unless listed).
    """
    from expkit.adapter import inner_model

    encoder = {id(p) for p in inner_model(model).base_model.parameters()}
    groups: dict[tuple[bool, bool], list[Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decay = not any(nd in name for nd in cfg.no_decay)
        is_head = cfg.head_lr is not None and id(param) not in encoder
        groups.setdefault((is_head, decay), []).append(param)
    out = []
    for (is_head, decay), params in sorted(groups.items(), key=lambda kv: (kv[0][0], not kv[0][1])):
        group: dict[str, Any] = {
            "params": params,
            "weight_decay": cfg.weight_decay if decay else 0.0,
        }
        if is_head:
            group["lr"] = cfg.head_lr
        out.append(group)
    return out


def _adamw(groups: list[dict[str, Any]], cfg: DictConfig) -> Any:
    import torch

    fused = {"fused": True} if cfg.get("fused") else {}
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, **fused)


def _sgd(groups: list[dict[str, Any]], cfg: DictConfig) -> Any:
    import torch

    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)


OPTIMIZERS: dict[str, Callable[[list[dict[str, Any]], DictConfig], Any]] = {
    "adamw": _adamw,
    "sgd": _sgd,
}


def build_optimizer(model: Any, cfg: DictConfig) -> Any:
    """The optimizer named by `cfg.name` over the model's trainable parameters."""
    groups = parameter_groups(model, cfg)
    if not groups:
        from expkit.errors import ConfigError

        raise ConfigError("no trainable parameters left after freezing (choose another freeze=)")
    return OPTIMIZERS[cfg.name](groups, cfg)


# transformers' schedule names; `constant` gains a warmup when one is asked for.
SCHEDULERS: dict[str, Callable[[int], str]] = {
    "linear": lambda warmup: "linear",
    "cosine": lambda warmup: "cosine",
    "constant": lambda warmup: "constant_with_warmup" if warmup else "constant",
}


def warmup_steps(cfg: DictConfig, total_steps: int) -> int:
    """Warmup in optimizer steps: `warmup_steps`, else `warmup_ratio` of the training steps."""
    if cfg.warmup_steps > 0:
        return int(cfg.warmup_steps)
    return math.ceil(cfg.warmup_ratio * total_steps)


def build_scheduler(optimizer: Any, cfg: DictConfig, total_steps: int) -> Any:
    """A transformers schedule (linear warmup and the others), stepped once after every optimizer
    step."""
    from transformers import get_scheduler

    warmup = warmup_steps(cfg, total_steps)
    name = SCHEDULERS[cfg.name](warmup)
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)
