"""Adapters: parameter-efficient fine-tuning through peft, a registry from config name to a
function that wraps the built model.

`none` leaves the model as it is. `lora` freezes the base model's weights and trains low-rank
updates of `adapter.target_modules` plus, in full, the task head and any other module the
checkpoint did not have (peft's `modules_to_save`; peft never also targets them). The wrapped
model is a `PeftModel`: its `save_pretrained` (checkpoints, `adapter/`) writes the adapter and
the head only. At the end of a run `model/` is the merged model, loadable without peft.
Nothing heavy is imported at module level: the config checks use the registry.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from expkit.errors import ConfigError

ADAPTER_CONFIG = "adapter_config.json"  # peft's names, in checkpoints and in adapter/
ADAPTER_WEIGHTS = "adapter_model.safetensors"
BIASES = ("none", "all", "lora_only")


def is_adapted(model: Any) -> bool:
    """Whether `model` is a peft model (an adapter around a transformers model)."""
    return hasattr(model, "get_base_model") and hasattr(model, "peft_config")


def inner_model(model: Any) -> Any:
    """The transformers model: itself, or the one an adapter wraps."""
    return model.get_base_model() if is_adapted(model) else model


def _within(name: str, modules: list[str]) -> bool:
    """`name` is one of `modules` or inside one (dotted module names)."""
    return any(name == m or name.startswith(f"{m}.") for m in modules)


def saved_in_full(model: Any, new_weights: list[str]) -> list[str]:
    """The modules an adapter trains and saves whole: the task head (every child of the model
    outside its encoder that has parameters) and the modules of weights the checkpoint lacked.

    A language model's output layer is its input embedding (tied weights): copied whole it would
    train a vocabulary-sized matrix in full and come apart from the embedding it is tied to, so
    of a module holding a tied weight only its submodules without one are saved (BERT's MLM
    transform; GPT-2's lm_head, the embedding itself, stays frozen as the base)."""
    base = model.base_model
    shared = {id(p) for p in base.parameters()}

    def untied(name: str, module: Any) -> list[str]:
        if next(module.parameters(), None) is None:
            return []
        if not any(id(p) in shared for p in module.parameters()):
            return [name]
        return [n for child, sub in module.named_children() for n in untied(f"{name}.{child}", sub)]

    names = [n for name, child in model.named_children() if child is not base
             for n in untied(name, child)]  # fmt: skip
    for key in new_weights:
        module = key.rpartition(".")[0]
        if module and not _within(module, names):
            sub = model.get_submodule(module)
            inside = any(sub is m for m in base.modules())  # a pooler the checkpoint lacked
            names += [n for n in ([module] if inside else untied(module, sub))
                      if not _within(n, names)]  # fmt: skip
    return names


# expkit's defaults, before peft's table (which covers most decoders): every linear layer of
# the encoder's attention and feed-forward blocks. peft's BERT default (query and value only)
# fell 0.064 short of full fine-tuning on SST-2 with MiniLM in 150 steps; these, 0.024.
_BERT_LIKE = ["query", "key", "value", "dense"]
_TARGETS = {
    **dict.fromkeys(
        ("bert", "roberta", "xlm-roberta", "camembert", "electra", "ernie", "megatron-bert"),
        _BERT_LIKE,
    ),
    "distilbert": ["q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"],
    "albert": ["query", "key", "value", "dense", "ffn", "ffn_output"],
    "mpnet": ["q", "k", "v", "o", "dense"],
    "modernbert": ["Wqkv", "Wo", "Wi"],
}


def target_modules(cfg: DictConfig, model_type: str) -> list[str] | None:
    """adapter.target_modules, else the default for the model type (expkit's, then peft's);
    None when neither knows the type."""
    if cfg.target_modules:
        return list(cfg.target_modules)
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT

    found = _TARGETS.get(model_type) or PEFT.get(model_type)
    return list(found) if found else None


def _lora_config(cfg: DictConfig, task_type: str, modules_to_save: list[str], model: Any) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        task_type=task_type,
        r=int(cfg.r),
        lora_alpha=float(cfg.alpha),
        lora_dropout=float(cfg.dropout),
        target_modules=target_modules(cfg, str(getattr(model.config, "model_type", ""))),
        use_dora=bool(cfg.use_dora),
        use_rslora=bool(cfg.use_rslora),
        bias=str(cfg.bias),
        modules_to_save=modules_to_save,
    )


def _none(model: Any, cfg: DictConfig, task_type: str, new_weights: list[str]) -> Any:
    return model


def _lora(model: Any, cfg: DictConfig, task_type: str, new_weights: list[str]) -> Any:
    from peft import get_peft_model

    from expkit.model import quiet_transformers

    config = _lora_config(cfg, task_type, saved_in_full(model, new_weights), model)
    with quiet_transformers():
        return get_peft_model(model, config)


ADAPTERS: dict[str, Callable[[Any, DictConfig, str, list[str]], Any]] = {
    "none": _none,
    "lora": _lora,
}


def apply_adapter(model: Any, cfg: DictConfig, task_type: str | None) -> Any:
    """The model with the adapter `cfg.name` says (the model itself for `none`).

    `task_type` is peft's for the task's head (the task's `peft_task_type`).
    """
    from expkit.model import new_weights

    return ADAPTERS[cfg.name](model, cfg, task_type, new_weights(model))


def _leaf_names(model: Any, heads: list[str]) -> tuple[list[str], list[str]]:
    """(names a target may use, names of linear layers) of the encoder: last name parts."""
    import torch

    names: set[str] = set()
    linear: set[str] = set()
    for full, module in model.named_modules():
        if not full or _within(full, heads):
            continue
        if next(module.parameters(recurse=False), None) is None:
            continue
        last = full.rpartition(".")[2]
        names.add(last)
        if isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D":
            linear.add(last)
    return sorted(names), sorted(linear)


def check_adapter(cfg: DictConfig, config: Any, model_class: str, task_type: str | None) -> None:
    """The adapter fits the model `config` describes: wrapped once on the meta device (no
    weights), so a target it lacks or a model peft cannot wrap is bad input, before the run."""
    if cfg.name == "none":
        return
    import torch
    import transformers

    from expkit.model import quiet_transformers

    with torch.device("meta"), quiet_transformers():
        model = getattr(transformers, model_class).from_config(config)
    kind = type(model).__name__
    heads = saved_in_full(model, [])
    names, linear = _leaf_names(model, heads)
    targets = target_modules(cfg, str(getattr(config, "model_type", "")))
    if targets is None:
        raise ConfigError(
            f"adapter=lora has no default target_modules for model type "
            f"{getattr(config, 'model_type', '?')!r} ({kind}); set adapter.target_modules "
            f"(its linear layers: {', '.join(linear) or 'none'})"
        )
    modules = [n for n, _ in model.named_modules() if n]
    for target in targets:
        hits = [n for n in modules if n == target or n.endswith(f".{target}")]
        inside = [n for n in hits if not _within(n, heads)]
        if hits and not inside:
            raise ConfigError(
                f"adapter.target_modules: {target!r} is the task head of {kind}, which trains "
                f"in full ({', '.join(heads)}); target the encoder's layers "
                f"({', '.join(linear)})"
            )
        if not hits:
            close = difflib.get_close_matches(target, names, n=4, cutoff=0.5)
            hint = f"close names: {', '.join(close)}; " if close else ""
            raise ConfigError(
                f"adapter.target_modules: {kind} has no module {target!r} ({hint}its linear "
                f"layers: {', '.join(linear)})"
            )
    try:
        with torch.device("meta"):
            _lora(model, cfg, task_type, [])
    except Exception as exc:  # peft raises ValueError, TypeError, NotImplementedError, ...
        first = next((s.strip() for s in str(exc).splitlines() if s.strip()), type(exc).__name__)
        raise ConfigError(f"adapter=lora cannot wrap {kind}: {first}") from exc


def describe(model: Any) -> dict[str, str]:
    """What the adapter of `model` targets and trains in full (for the run's params)."""
    if not is_adapted(model):
        return {}
    config = model.peft_config[model.active_adapter]
    return {
        "adapter_target_modules": ",".join(sorted(config.target_modules or [])),
        "adapter_modules_to_save": ",".join(
            name.removeprefix("base_model.model.")
            for name, module in model.named_modules()
            if type(module).__name__ == "ModulesToSaveWrapper"
        ),
    }


def load_adapter_weights(model: Any, folder: Path) -> bool:
    """A checkpoint's adapter weights (and saved-in-full modules) into `model`; False when the
    folder holds no adapter."""
    from expkit.checkpoint import CheckpointError

    file = Path(folder) / ADAPTER_WEIGHTS
    if not file.is_file():
        return False
    if not is_adapted(model):
        raise CheckpointError(f"checkpoint {folder} holds an adapter; this run has adapter=none")
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    result = set_peft_model_state_dict(model, load_file(str(file)))
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    if unexpected:
        raise CheckpointError(
            f"checkpoint {folder} has adapter weights this model lacks: {', '.join(unexpected[:5])}"
        )
    return True


def save_trained(
    model: Any, tokenizer: Any, run_dir: Path, extra: dict[str, str]
) -> dict[str, Path]:
    """The trained model as `run_dir/model` and, for an adapter, `run_dir/adapter` first (then
    the adapter is merged into the model, in place: `model/` loads without peft). Returns the
    folders by name; raises ModelNotSaved as save_model does."""
    from expkit.model import save_model

    saved: dict[str, Path] = {}
    if is_adapted(model):
        saved["adapter"] = Path(run_dir) / "adapter"
        save_model(model, tokenizer, saved["adapter"], extra)
        model = model.merge_and_unload()
    saved["model"] = Path(run_dir) / "model"
    save_model(model, tokenizer, saved["model"], extra)
    return saved


def base_model_path(adapter_dir: Path) -> str:
    """The base model an adapter folder adapts, as its adapter_config.json names it."""
    config = json.loads((Path(adapter_dir) / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    return str(config.get("base_model_name_or_path") or "")


def load_trained(model_dir: Path, model_class: str) -> Any:
    """A saved model folder: `model/` (plain from_pretrained) or `adapter/` (the base model from
    its recorded path, with the folder's config.json (the head's labels), and the adapter)."""
    import transformers

    from expkit.model import quiet_transformers

    model_dir = Path(model_dir)
    auto_class = getattr(transformers, model_class)
    if not (model_dir / ADAPTER_CONFIG).is_file():
        return auto_class.from_pretrained(model_dir)
    from peft import PeftModel

    from expkit.config.validate import looks_like_path

    base = base_model_path(model_dir)
    if not base or (looks_like_path(base) and not Path(base).expanduser().exists()):
        from expkit.errors import ExpkitError

        raise ExpkitError(
            f"the adapter in {model_dir} adapts the base model {base or '(none named)'}, which "
            "is not on this machine; load the merged model/ folder of the same run instead"
        )
    config = transformers.AutoConfig.from_pretrained(model_dir)
    with quiet_transformers():
        model = auto_class.from_pretrained(base, config=config)
    return PeftModel.from_pretrained(model, model_dir)
