"""Unit tests for the optimizer, scheduler, freeze and loss builders on the tiny model."""

import pytest
import torch

from expkit.errors import ConfigError
from expkit.freeze import FREEZERS, apply_freeze
from expkit.loss import build_loss
from expkit.model import build_model
from expkit.optim import OPTIMIZERS, SCHEDULERS, build_optimizer, build_scheduler
from tests.conftest import CLASSIFICATION

LABELS = ["neg", "pos"]
HEAD = {"num_labels": 2, "id2label": dict(enumerate(LABELS)), "label2id": {"neg": 0, "pos": 1}}
MODEL_CLASS = "AutoModelForSequenceClassification"


@pytest.fixture
def tiny(make_cfg):
    def _tiny(*overrides):
        cfg = make_cfg(*overrides)
        torch.manual_seed(0)
        return cfg, build_model(cfg.model, HEAD, MODEL_CLASS)

    return _tiny


def test_tiny_model_has_head_of_num_labels_and_id2label(tiny):
    _, model = tiny()
    assert model.config.num_labels == 2
    assert model.config.id2label == {0: "neg", 1: "pos"}
    assert model.config.hidden_size == 32 and model.config.num_hidden_layers == 2


def test_adamw_groups_follow_the_tutorial_no_decay(tiny):
    cfg, model = tiny("optimizer.weight_decay=0.01")
    opt = build_optimizer(model, cfg.optimizer)
    assert isinstance(opt, torch.optim.AdamW)
    names = {id(p): n for n, p in model.named_parameters()}
    for group in opt.param_groups:
        for p in group["params"]:
            no_decay = any(nd in names[id(p)] for nd in ("bias", "LayerNorm.weight"))
            assert group["weight_decay"] == (0.0 if no_decay else 0.01)
    n_params = sum(len(g["params"]) for g in opt.param_groups)
    assert n_params == len(list(model.parameters()))


def test_frozen_parameters_are_left_out_of_the_optimizer(tiny):
    cfg, model = tiny("freeze=base_model")
    counts = apply_freeze(model, cfg.freeze)
    opt = build_optimizer(model, cfg.optimizer)
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    head = {id(p) for n, p in model.named_parameters() if n.startswith("classifier")}
    assert in_opt == head
    assert counts["trainable_params"] == sum(p.numel() for p in model.classifier.parameters())
    assert counts["total_params"] == sum(p.numel() for p in model.parameters())


def test_head_lr_gives_the_head_its_own_group(tiny):
    cfg, model = tiny("optimizer.head_lr=1e-3")
    opt = build_optimizer(model, cfg.optimizer)
    head = {id(p) for p in model.classifier.parameters()}
    for g in opt.param_groups:
        ids = {id(p) for p in g["params"]}
        assert ids <= head or not ids & head
        if ids <= head:
            assert g["lr"] == pytest.approx(1e-3)


def test_sgd(tiny):
    cfg, model = tiny("optimizer=sgd", "optimizer.momentum=0.5")
    opt = build_optimizer(model, cfg.optimizer)
    assert isinstance(opt, torch.optim.SGD)
    assert opt.param_groups[0]["momentum"] == 0.5
    assert set(OPTIMIZERS) >= {"adamw", "sgd"}


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_schedulers_warm_up_then_follow_their_shape(tiny, name):
    cfg, model = tiny(f"scheduler={name}", "scheduler.warmup_steps=4", "optimizer.lr=1.0")
    opt = build_optimizer(model, cfg.optimizer)
    sched = build_scheduler(opt, cfg.scheduler, total_steps=20)
    lrs = []
    for _ in range(20):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs[:5] == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    if name == "constant":
        assert lrs[-1] == pytest.approx(1.0)
    else:
        assert lrs[-1] < 0.2


def test_warmup_ratio(tiny):
    cfg, model = tiny("scheduler.warmup_ratio=0.25", "optimizer.lr=1.0")
    opt = build_optimizer(model, cfg.optimizer)
    sched = build_scheduler(opt, cfg.scheduler, total_steps=20)
    for _ in range(5):
        opt.step()
        sched.step()
    assert sched.get_last_lr()[0] == pytest.approx(1.0)  # 5 warmup steps done


@pytest.mark.parametrize(
    ("option", "frozen_prefixes"),
    [
        ("none", []),
        ("base_model", ["bert."]),
        ("embeddings", ["bert.embeddings."]),
        ("bottom_layers", ["bert.embeddings.", "bert.encoder.layer.0."]),
    ],
)
def test_freeze_options(tiny, option, frozen_prefixes):
    cfg, model = tiny(f"freeze={option}", "freeze.num_layers=1")
    apply_freeze(model, cfg.freeze)
    for name, p in model.named_parameters():
        expected_frozen = any(name.startswith(prefix) for prefix in frozen_prefixes)
        assert p.requires_grad == (not expected_frozen), name
    assert set(FREEZERS) == {"none", "base_model", "embeddings", "bottom_layers"}


def test_bottom_layers_beyond_the_model_is_a_config_error(tiny):
    from expkit.config.validate import check_model_fits

    cfg, model = tiny("freeze=bottom_layers", "freeze.num_layers=3")
    with pytest.raises(ConfigError, match="beyond the model's 2 encoder layers"):
        check_model_fits(cfg, model.config)


def test_cross_entropy_loss_with_weights_and_smoothing(make_cfg):
    cfg = make_cfg("loss=cross_entropy", "loss.class_weights=[1.0,3.0]", "loss.label_smoothing=0.1")
    loss_fn = build_loss(cfg.loss, None)
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.3]])
    labels = torch.tensor([1, 0])
    expected = torch.nn.functional.cross_entropy(
        logits, labels, weight=torch.tensor([1.0, 3.0]), label_smoothing=0.1
    )
    assert loss_fn(logits, labels).item() == pytest.approx(expected.item())
    assert build_loss(make_cfg().loss, None) is None  # the model's own loss


def test_class_weights_must_match_num_labels(make_cfg):
    from expkit.data import RawData

    cfg = make_cfg("loss=cross_entropy", "loss.class_weights=[1.0,2.0,3.0]")
    raw = RawData({"train": [["a", "b"]]}, {"train": [0, 1]}, ["neg", "pos"], {"train": "x"})
    with pytest.raises(ConfigError, match="has 3 values but the data has 2 labels"):
        CLASSIFICATION.check_data(raw, cfg)


def test_pretrained_minilm_reports_only_its_new_head(make_cfg, caplog, capfd):
    import logging

    cfg = make_cfg("model=minilm")
    with caplog.at_level(logging.INFO, logger="expkit.model"):
        model = build_model(cfg.model, HEAD, MODEL_CLASS)
    assert model.config.num_hidden_layers == 6 and model.config.num_labels == 2
    head = [r.getMessage() for r in caplog.records if "new task head" in r.getMessage()]
    assert head == ["new task head, randomly initialised: classifier.bias, classifier.weight"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "LOAD REPORT" not in capfd.readouterr().err  # transformers' own table is silenced
