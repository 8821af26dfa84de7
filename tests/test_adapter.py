"""Adapters (expkit.adapter): LoRA through peft on each task's model, what trains and what is
saved, the checks at the door, the optimizer's groups, and reloads that give the trained logits."""

from __future__ import annotations

import json

import pytest
import torch

from expkit.adapter import (
    apply_adapter,
    check_adapter,
    describe,
    load_adapter_weights,
    load_trained,
    save_trained,
)
from expkit.config.validate import validate
from expkit.errors import ConfigError
from expkit.model import build_model, build_tokenizer, model_config

# (task, model class, peft task type, head fields, the head module)
TASKS = [
    ("classification", "AutoModelForSequenceClassification", "SEQ_CLS",
     {"num_labels": 3, "id2label": {0: "a", 1: "b", 2: "c"}}, "classifier"),
    ("token_classification", "AutoModelForTokenClassification", "TOKEN_CLS",
     {"num_labels": 5}, "classifier"),
    ("question_answering", "AutoModelForQuestionAnswering", None, {}, "qa_outputs"),
]  # fmt: skip


@pytest.fixture
def lora_cfg(make_cfg, tiny_pretrained):
    def _make(*overrides: str):
        return make_cfg(
            f"model.name_or_path={tiny_pretrained}", "model.init=pretrained", "model.dropout=0.0",
            "adapter=lora", *overrides,
        )  # fmt: skip

    return _make


def _batch(n: int = 4, length: int = 12) -> dict:
    torch.manual_seed(1)
    segments = torch.zeros(n, length, dtype=torch.long)
    segments[:, length // 2 :] = 1  # a pair: every input must reach the model (QA's segments)
    mask = torch.ones(n, length, dtype=torch.long)
    mask[1:, -3:] = 0  # and padding
    return {"input_ids": torch.randint(1000, 2000, (n, length)), "attention_mask": mask,
            "token_type_ids": segments}  # fmt: skip


def _logits(out) -> torch.Tensor:
    if getattr(out, "start_logits", None) is not None:
        return torch.stack([out.start_logits, out.end_logits])
    return out.logits


def _train_a_little(model, steps: int = 5) -> None:
    """A few AdamW steps on a made-up loss: LoRA's B starts at zero, so it must move."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    model.train()
    for _ in range(steps):
        loss = _logits(model(**_batch())).pow(2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


@pytest.mark.parametrize(("task", "model_class", "task_type", "head", "head_module"), TASKS)
def test_lora_trains_its_updates_and_the_whole_head_only(
    lora_cfg, task, model_class, task_type, head, head_module
):
    cfg = lora_cfg(f"task={task}")
    model = apply_adapter(build_model(cfg.model, head, model_class), cfg.adapter, task_type)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert all(".lora_" in n or ".modules_to_save." in n for n in trainable), trainable
    targeted = {n.split(".lora_")[0].rsplit(".", 1)[1] for n in trainable if ".lora_" in n}
    assert targeted == {"query", "key", "value", "dense"}  # expkit's default for BERT
    whole = [n for n in trainable if ".modules_to_save." in n]
    assert whole and all(f".{head_module}.modules_to_save." in n for n in whole)
    assert not any(".lora_" in n and f".{head_module}." in n for n in trainable)  # never targeted
    assert describe(model) == {
        "adapter_target_modules": "dense,key,query,value",
        "adapter_modules_to_save": head_module,
    }
    total = sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) < 0.1 * total


def test_a_module_the_checkpoint_lacked_trains_in_full_beside_the_head(lora_cfg, tmp_path):
    from transformers import AutoConfig, BertModel

    cfg = lora_cfg()
    config = AutoConfig.from_pretrained(str(cfg.model.name_or_path))
    BertModel(config, add_pooling_layer=False).save_pretrained(str(tmp_path))  # no pooler
    cfg.model.name_or_path = str(tmp_path)
    model = build_model(cfg.model, {"num_labels": 2}, "AutoModelForSequenceClassification")
    model = apply_adapter(model, cfg.adapter, "SEQ_CLS")
    assert describe(model)["adapter_modules_to_save"] == "bert.pooler.dense,classifier"
    assert any(
        "pooler.dense.modules_to_save" in n for n, p in model.named_parameters() if p.requires_grad
    )


@pytest.mark.parametrize(("task", "model_class", "task_type", "head", "head_module"), TASKS)
def test_model_and_adapter_folders_reload_to_the_trained_logits(
    lora_cfg, tmp_path, task, model_class, task_type, head, head_module
):
    import transformers

    dora = ["adapter.use_dora=true"] if task == "classification" else []
    cfg = lora_cfg(f"task={task}", *dora)
    model = apply_adapter(build_model(cfg.model, head, model_class), cfg.adapter, task_type)
    _train_a_little(model)
    with torch.no_grad():
        trained = _logits(model(**_batch()))
    tokenizer = build_tokenizer(cfg.model)
    saved = save_trained(model, tokenizer, tmp_path, {"expkit.json": "{}"})
    assert sorted(saved) == ["adapter", "model"]
    assert not (saved["model"] / "adapter_config.json").exists()  # plain transformers
    plain = getattr(transformers, model_class).from_pretrained(saved["model"]).eval()
    adapted = load_trained(saved["adapter"], model_class).eval()
    with torch.no_grad():
        for reloaded in (plain, adapted):
            assert torch.allclose(_logits(reloaded(**_batch())), trained, atol=1e-5)
    config = transformers.AutoConfig.from_pretrained(saved["adapter"])  # the head's labels
    assert config.num_labels == head.get("num_labels", 2)
    if "id2label" in head:
        assert config.id2label == {0: "a", 1: "b", 2: "c"}
    base = json.loads((saved["adapter"] / "adapter_config.json").read_text())
    assert base["base_model_name_or_path"] == str(cfg.model.name_or_path)
    small = (saved["adapter"] / "adapter_model.safetensors").stat().st_size
    assert small < 0.2 * (saved["model"] / "model.safetensors").stat().st_size


def test_a_checkpoints_adapter_loads_back_and_a_plain_model_refuses_it(lora_cfg, tmp_path):
    from expkit.checkpoint import CheckpointError

    cfg = lora_cfg()
    head = {"num_labels": 2}
    cls = "AutoModelForSequenceClassification"
    model = apply_adapter(build_model(cfg.model, head, cls), cfg.adapter, "SEQ_CLS")
    _train_a_little(model)
    model.save_pretrained(str(tmp_path))
    assert not (tmp_path / "model.safetensors").exists()
    other = apply_adapter(build_model(cfg.model, head, cls), cfg.adapter, "SEQ_CLS")
    assert load_adapter_weights(other, tmp_path)
    want, got = model.state_dict(), other.state_dict()
    # all but the head's unused original (random in each build; peft saves the trained copy)
    assert all(torch.equal(want[k], got[k]) for k in want if ".original_module." not in k)
    with pytest.raises(CheckpointError, match="holds an adapter; this run has adapter=none"):
        load_adapter_weights(build_model(cfg.model, head, cls), tmp_path)


def test_the_best_weights_are_the_trainable_ones_and_restore(lora_cfg):
    from expkit.early_stopping import EarlyStopping, copy_weights

    cfg = lora_cfg()
    cls = "AutoModelForSequenceClassification"
    model = apply_adapter(build_model(cfg.model, {"num_labels": 2}, cls), cfg.adapter, "SEQ_CLS")
    kept = copy_weights(model)
    params = dict(model.named_parameters())
    assert all(params[k].requires_grad for k in kept if k in params)
    assert any(".lora_B." in k for k in kept)
    early = EarlyStopping("eval_accuracy")
    early.update(10, {"eval_accuracy": 0.5}, model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _train_a_little(model)
    assert early.restore(model)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_head_lr_goes_to_the_head_lora_takes_lr(lora_cfg):
    from expkit.optim import build_optimizer

    cfg = lora_cfg("optimizer.head_lr=1e-3", "optimizer.lr=5e-4")
    cls = "AutoModelForSequenceClassification"
    model = apply_adapter(build_model(cfg.model, {"num_labels": 2}, cls), cfg.adapter, "SEQ_CLS")
    names = {id(p): n for n, p in model.named_parameters()}
    optimizer = build_optimizer(model, cfg.optimizer)
    for group in optimizer.param_groups:
        kinds = {".lora_" in names[id(p)] for p in group["params"]}
        assert len(kinds) == 1
        assert group["lr"] == (5e-4 if kinds == {True} else 1e-3)
        decay = {not names[id(p)].endswith("bias") for p in group["params"]}
        assert decay == {group["weight_decay"] > 0}
    grouped = sum(len(g["params"]) for g in optimizer.param_groups)
    assert grouped == sum(1 for p in model.parameters() if p.requires_grad)


def _config(cfg, head=None):
    return model_config(cfg.model, head or {"num_labels": 2})


def test_a_target_the_model_lacks_names_the_close_ones(lora_cfg):
    cfg = lora_cfg("adapter.target_modules=[querry,value]")
    cls = "AutoModelForSequenceClassification"
    with pytest.raises(ConfigError, match=r"no module 'querry' \(close names: query; its linear"):
        check_adapter(cfg.adapter, _config(cfg), cls, "SEQ_CLS")
    cfg = lora_cfg("adapter.target_modules=[classifier]")
    with pytest.raises(ConfigError, match="'classifier' is the task head"):
        check_adapter(cfg.adapter, _config(cfg), cls, "SEQ_CLS")
    check_adapter(lora_cfg().adapter, _config(cfg), cls, "SEQ_CLS")  # peft's default fits


def test_a_model_peft_cannot_wrap_is_one_line(lora_cfg):
    from transformers import FNetConfig

    cfg = lora_cfg("adapter.target_modules=[LayerNorm]")
    cls = "AutoModelForSequenceClassification"
    with pytest.raises(ConfigError, match="adapter=lora cannot wrap BertForSequenceClassification"):
        check_adapter(cfg.adapter, _config(cfg), cls, "SEQ_CLS")
    fnet = FNetConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, intermediate_size=64)
    with pytest.raises(ConfigError, match="no default target_modules for model type 'fnet'"):
        check_adapter(lora_cfg().adapter, fnet, cls, "SEQ_CLS")


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["adapter.r=0"], "adapter.r=0 must be at least 1"),
        (["adapter.alpha=0"], "adapter.alpha=0.0 must be positive"),
        (["adapter.dropout=1.0"], "adapter.dropout=1.0 must be in [0, 1)"),
        (["adapter.bias=some"], "adapter.bias='some' is not valid (valid: none, all, lora_only)"),
        (["adapter.target_modules=[]"], "adapter.target_modules=[] names no module"),
        (["freeze=base_model"], "freeze=base_model with adapter=lora"),
        (["model.init=random"], "adapter=lora with model.init=random"),
        (["adapter=prefix"], None),  # Hydra's own: no such option
    ],
)
def test_adapter_settings_are_checked_at_the_door(lora_cfg, overrides, needle):
    if needle is None:
        from hydra.errors import MissingConfigException

        with pytest.raises(MissingConfigException):
            lora_cfg(*overrides)
        return
    with pytest.raises(ConfigError) as info:
        validate(lora_cfg(*overrides))
    assert needle in str(info.value)
