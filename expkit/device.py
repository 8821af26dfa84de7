"""Device and precision: `trainer.device=auto` picks CUDA, then MPS, then the CPU."""

from __future__ import annotations

from typing import Any

from expkit.errors import ConfigError


def resolve_device(name: str) -> Any:
    """The torch.device for `trainer.device`; an absent CUDA or MPS device is a ConfigError."""
    import torch

    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps and mps.is_available())
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if has_mps else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"trainer.device={name} but no CUDA device is available (valid here: auto, cpu)"
            )
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ConfigError(
                f"trainer.device={name} but this machine has {torch.cuda.device_count()} CUDA "
                f"device(s) (valid: cuda:0 to cuda:{torch.cuda.device_count() - 1})"
            )
    if name == "mps" and not has_mps:
        raise ConfigError("trainer.device=mps but MPS is not available (valid here: auto, cpu)")
    return torch.device(name)


def check_precision(precision: str, device: Any) -> None:
    """fp16 needs a gradient scaler and a GPU; bf16 autocast runs on CPU and GPU."""
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError(
            f"trainer.precision=fp16 needs a CUDA device (this run is on {device}); "
            "use bf16 or fp32"
        )
