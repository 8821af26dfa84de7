"""The manual loop, in process on the tiny model: steps, accumulation, modes, logging."""

from __future__ import annotations

import pytest
import torch

from expkit.backends import get_backend
from expkit.backends.manual import evaluate, is_eval_step
from expkit.batching import steps_per_epoch
from expkit.device import resolve_device


def test_accumulation_equals_the_larger_batch(make_job):
    """batch 8 x 1 and batch 4 x 2 see the same samples per step and follow the same losses."""
    big, rec_big = make_job(6, "trainer.batch_size=8", "trainer.log_every=1")
    small, rec_small = make_job(
        6, "trainer.batch_size=4", "trainer.grad_accum_steps=2",
        "trainer.log_every=1",
    )  # fmt: skip
    get_backend("manual")(big)
    get_backend("manual")(small)
    losses_big = [v for _, v in rec_big.series("loss")]
    losses_small = [v for _, v in rec_small.series("loss")]
    assert len(losses_big) == 6
    assert losses_small == pytest.approx(losses_big, abs=1e-5)


def test_logging_steps_and_the_model_learns(make_job):
    job, rec = make_job(
        24, "trainer.batch_size=8", "trainer.log_every=4",
        "trainer.eval_every=12", "optimizer.lr=3e-3",
    )  # fmt: skip
    final = get_backend("manual")(job)
    assert [s for s, _ in rec.series("loss")] == [4, 8, 12, 16, 20, 24]
    assert [s for s, _ in rec.series("eval_accuracy")] == [12, 24]
    losses = [v for _, v in rec.series("loss")]
    assert losses[-1] < losses[0]
    assert final["eval_accuracy"] == rec.series("eval_accuracy")[-1][1]
    assert job.model.training  # back in train mode after evaluating


def test_evaluate_uses_eval_mode_and_restores_train_mode(make_job):
    job, _ = make_job(1)
    job.model.train()
    seen = []
    job.model.register_forward_pre_hook(lambda m, args: seen.append(m.training))
    device = resolve_device("cpu")
    import contextlib

    out = evaluate(job, "dev", device, contextlib.nullcontext)
    assert seen and not any(seen)
    assert job.model.training
    assert set(out) == {"loss", "accuracy", "precision", "recall", "f1"}


def test_eval_every_zero_means_each_epoch():
    assert [s for s in range(1, 61) if is_eval_step(s, 0, 20)] == [20, 40, 60]
    # 7 micro-batches per epoch, 2 per step: 4 steps per epoch, the last of one micro-batch
    per_epoch = steps_per_epoch(7 * 8, 8, 2)
    assert per_epoch == 4
    assert [s for s in range(1, 15) if is_eval_step(s, 0, per_epoch)] == [4, 8, 12]
    assert [s for s in range(1, 15) if is_eval_step(s, 5, per_epoch)] == [5, 10]


def test_frozen_encoder_does_not_move(make_job):
    job, _ = make_job(3, "freeze=base_model", "optimizer.lr=1e-2")
    before = {n: p.detach().clone() for n, p in job.model.named_parameters()}
    get_backend("manual")(job)
    for name, p in job.model.named_parameters():
        moved = not torch.equal(before[name], p.detach())
        assert moved == name.startswith("classifier"), name
