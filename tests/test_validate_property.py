"""Property: any override a user types either composes and passes the checks, or fails with one
line naming the problem, never a traceback (hypothesis)."""

from __future__ import annotations

import pytest
from hydra.errors import HydraException
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf.errors import OmegaConfBaseException

from expkit.cli import _one_line, expand_shorthands
from expkit.config.validate import validate
from expkit.errors import ExpkitError
from tests.conftest import compose_config

KEYS = [
    "trainer.batch_size", "trainer.eval_batch_size", "trainer.grad_accum_steps",
    "trainer.max_steps", "trainer.epochs", "trainer.max_grad_norm", "trainer.log_every",
    "trainer.eval_every", "trainer.precision", "trainer.device", "trainer.num_workers",
    "optimizer.lr", "optimizer.weight_decay", "optimizer.head_lr", "scheduler.warmup_steps",
    "scheduler.warmup_ratio", "data.max_length", "data.max_train_samples", "loss.label_smoothing",
    "loss.class_weights", "freeze.num_layers", "seed", "objective.metric",
    "objective.direction", "resume", "resume.checkpoint", "resume.allow_changes",
    "trainer.save_every", "trainer.keep_checkpoints", "trainer.on_nan", "trainer.bogus",
    "model.dropout",
]  # fmt: skip
GROUPS = {
    "optimizer": ["adamw", "sgd", "adam"], "scheduler": ["linear", "cosine", "nope"],
    "freeze": ["none", "base_model", "bottom_layers", "all"], "loss": ["model", "cross_entropy"],
    "trainer": ["manual", "hf", "x"],
}  # fmt: skip
VALUES = st.one_of(
    st.integers(-5, 10**6).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["null", "true", "abc", "''", "[1,2]", "[]", "fp16", "bf16", "cuda:7",
                     "auto", "eval_f1", "maximize", "1e-3", "-0.5", "{a:1}", "[0.5,-1]"]),
)  # fmt: skip
OVERRIDE = st.one_of(
    st.tuples(st.sampled_from(KEYS), VALUES).map(lambda kv: f"{kv[0]}={kv[1]}"),
    st.sampled_from(list(GROUPS)).flatmap(
        lambda g: st.sampled_from(GROUPS[g]).map(lambda o: f"{g}={o}")
    ),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(OVERRIDE, max_size=4, unique_by=lambda o: o.partition("=")[0]))
def test_overrides_compose_and_validate_or_fail_in_one_line(overrides):
    try:
        cfg = compose_config(["model=tiny", "tracking=none", *expand_shorthands(overrides)])
    except (HydraException, OmegaConfBaseException) as exc:
        message = _one_line(exc)
        assert message and "\n" not in message, message
        assert "Traceback" not in message
        return
    try:
        validate(cfg)
    except ExpkitError as exc:
        assert str(exc) and "\n" not in str(exc), str(exc)


@pytest.mark.parametrize(
    "override",
    ["trainer.batch_size=0", "optimizer.lr=-1", "resume=later", "trainer.on_nan=ignore",
     "resume.allow_changes=[optimizer.lrr]", "trainer.save_every=-5"],
)  # fmt: skip
def test_examples_of_one_line_failures(override):
    with pytest.raises(ExpkitError) as err:
        validate(compose_config(["model=tiny", "tracking=none", *expand_shorthands([override])]))
    assert "\n" not in str(err.value)
