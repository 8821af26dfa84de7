"""Semantic checks: every bad value named in one line, before anything heavy loads."""

import subprocess
import sys

import pytest

from expkit.config.validate import validate
from expkit.errors import ConfigError
from tests.conftest import SHARED_DATA


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optimizer.lr=-1e-5"], "optimizer.lr=-1e-05 must be positive"),
        (["optimizer.lr=0"], "optimizer.lr=0.0 must be positive"),
        (["trainer.batch_size=0"], "trainer.batch_size=0 must be at least 1"),
        (["trainer.max_steps=0"], "trainer.max_steps=0 must be positive"),
        (["trainer.precision=fp8"], "trainer.precision='fp8' is not valid"),
        (["trainer.device=gpu"], "trainer.device='gpu' is not valid"),
        (["data.max_length=4096"], "beyond the model's 128 positions"),
        (["scheduler.warmup_ratio=1.5"], "scheduler.warmup_ratio=1.5 must be in [0, 1)"),
        (["data=sst2"], "data.path is required for data=sst2"),
        (["data.path=/nonexistent/dir"], "data directory '/nonexistent/dir' does not exist"),
        (
            ["model.name_or_path=/nonexistent/model"],
            "model directory '/nonexistent/model' does not exist",
        ),
        (["data.text_fields=[a,b,c]"], "must name one column or two"),
        (["loss.label_smoothing=0.1"], "loss.label_smoothing needs loss=cross_entropy"),
    ],
)
def test_bad_values_are_named(make_cfg, overrides, message):
    with pytest.raises(ConfigError) as info:
        validate(make_cfg(*overrides))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_every_error_is_collected_into_one_line(make_cfg):
    with pytest.raises(ConfigError) as info:
        validate(make_cfg("optimizer.lr=-1", "trainer.batch_size=0"))
    assert "optimizer.lr" in str(info.value) and "trainer.batch_size" in str(info.value)


def test_defaults_are_valid(make_cfg):
    validate(make_cfg())
    validate(make_cfg("model=minilm", "data.max_length=512"))


def test_every_option_of_every_group_composes_and_validates(make_cfg, tmp_path):
    from expkit.cli import config_dir

    for group_dir in sorted(p for p in config_dir().iterdir() if p.is_dir()):
        if group_dir.name in ("experiment", "hparams_search"):
            continue  # whole-config presets: tested on their own
        for option in sorted(group_dir.glob("*.yaml")):
            # presets naming their files (data.files) need them: the real folder
            real = SHARED_DATA / option.stem
            extra = [f"data.path={real if real.is_dir() else tmp_path}"]
            extra = extra if group_dir.name == "data" else []
            if option.stem == "bert_base_uncased":
                continue  # a hub id: needs the network or a cache
            # a loss option fits the tasks that take it
            task = {"mse": "regression", "huber": "regression", "bce": "multilabel"}
            if group_dir.name == "loss" and option.stem in task:
                extra = [f"task={task[option.stem]}"]
            if option.stem == "question_answering":  # its windows share 128 of 384 by default
                extra = ["task.doc_stride=32"]
            if group_dir.name == "adapter" and option.stem == "lora":
                extra = ["model.init=pretrained"]  # LoRA adapts saved weights (MiniLM's here)
            if option.stem == "squad":  # 384 sub-tokens: beyond the tiny test model's 128
                extra.append("data.max_length=128")
            cfg = make_cfg(f"{group_dir.name}={option.stem}", *extra)
            validate(cfg)


def test_the_checks_that_need_the_data_or_the_model_config(make_cfg):
    from types import SimpleNamespace

    from expkit.config.validate import check_model_fits, check_schedule

    cfg = make_cfg("scheduler.warmup_steps=10", "trainer.max_steps=10")
    validate(cfg)  # the number of steps is known once the data is read
    with pytest.raises(ConfigError, match="gives 10 warmup steps, not shorter than training"):
        check_schedule(cfg, 10, 100)
    check_schedule(cfg, 11, 100)
    cfg = make_cfg("freeze=bottom_layers", "freeze.num_layers=5")
    with pytest.raises(ConfigError, match="beyond the model's 2 encoder layers"):
        check_model_fits(cfg, SimpleNamespace(num_hidden_layers=2))
    check_model_fits(cfg, SimpleNamespace(num_hidden_layers=6))


def test_the_optuna_preset_composes_and_validates(make_cfg, tmp_path):
    cfg = make_cfg("hparams_search=optuna_sst2", f"data.path={tmp_path}", "model=minilm")
    validate(cfg)
    assert (cfg.objective.metric, cfg.objective.direction) == ("eval_f1", "maximize")
    assert cfg.data.name == "sst2" and cfg.trainer.max_steps == 150


def test_validation_imports_nothing_heavy():
    code = (
        "import sys; from tests.conftest import compose_config;"
        "from expkit.config.validate import validate;"
        "validate(compose_config(['model=tiny']));"
        "heavy = [m for m in ('torch', 'transformers', 'datasets', 'mlflow') if m in sys.modules];"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
