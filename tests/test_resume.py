"""Checkpoints and resume: atomic `checkpoints/step_N`, and a resumed run that goes on exactly
as the uninterrupted one (both backends)."""

from __future__ import annotations

import pytest

from expkit import checkpoint
from expkit.backends import get_backend

# 48 examples in micro-batches of 8, two per step: 3 steps per epoch, the last of one micro-batch
RESUMABLE = [
    "model.dropout=0.1", "trainer.batch_size=8", "trainer.grad_accum_steps=2",
    "trainer.log_every=1", "trainer.save_every=2", "trainer.keep_checkpoints=0",
    "optimizer.lr=1e-3",
]  # fmt: skip
_TIMINGS = ("train_runtime", "train_samples_per_second")


@pytest.mark.parametrize("backend", ["manual", "hf"])
def test_resuming_from_any_checkpoint_continues_exactly(make_job, tmp_path, backend):
    """Checkpoints inside an epoch (2, 4, 8) and at an epoch's end (6, after its evaluation)."""
    opts = [f"trainer={backend}", *RESUMABLE]
    job, rec = make_job(10, *opts)
    final = get_backend(backend)(job)
    saved = sorted(p.name for p in checkpoint.checkpoints_dir(job.run_dir).iterdir())
    assert saved == ["step_2", "step_4", "step_6", "step_8"]  # none after the last step
    for step in (2, 4, 6, 8):
        again, rec2 = make_job(10, *opts)
        again.run_dir = tmp_path / f"resumed_{step}"
        again.resume = checkpoint.load(job.run_dir / "checkpoints" / f"step_{step}")
        state = again.resume.state
        assert (state["epoch"], state["batches_in_epoch"]) == (step // 3, step % 3 * 2)
        resumed = get_backend(backend)(again)
        for name in ("loss", "grad_norm", "learning_rate", "eval_accuracy", "eval_loss"):
            expected = [(s, v) for s, v in rec.series(name) if s > step]
            got = rec2.series(name)
            assert [s for s, _ in got] == [s for s, _ in expected], (step, name)
            assert [v for _, v in got] == pytest.approx([v for _, v in expected], abs=1e-6), (
                step, name,
            )  # fmt: skip
        assert {k: v for k, v in resumed.items() if k not in _TIMINGS} == pytest.approx(
            {k: v for k, v in final.items() if k not in _TIMINGS}, abs=1e-6
        )


class _Counting:
    """A training set that counts the examples read from it."""

    def __init__(self, data):
        self.data, self.reads = data, 0

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        self.reads += 1
        return self.data[index]


@pytest.mark.parametrize("backend", ["manual", "hf"])
def test_a_resumed_run_reads_no_example_it_skips(make_job, tmp_path, backend):
    """The trained batches of the resumed epoch are skipped by index: nothing loaded, nothing
    collated, so resuming late costs what resuming early does."""
    opts = [f"trainer={backend}", *RESUMABLE]
    job, _ = make_job(10, *opts)
    get_backend(backend)(job)
    again, _ = make_job(10, *opts)
    again.run_dir = tmp_path / "resumed"
    again.resume = checkpoint.load(job.run_dir / "checkpoints" / "step_8")  # 2 steps into epoch 2
    again.datasets["train"] = counting = _Counting(again.datasets["train"])
    get_backend(backend)(again)
    # steps 9 and 10, 16 examples each, and none of steps 7 and 8 (accelerate's data loader,
    # under the Trainer, reads one batch ahead to see the end coming)
    assert counting.reads == 2 * 16 + (8 if backend == "hf" else 0)


def test_a_damaged_checkpoint_is_named_and_skipped(make_job, caplog):
    job, _ = make_job(6, *RESUMABLE)
    get_backend("manual")(job)
    newest = job.run_dir / "checkpoints" / "step_4"
    optimizer = newest / "optimizer.pt"
    optimizer.write_bytes(optimizer.read_bytes()[:100])  # killed mid-write, in an older version
    found = checkpoint.latest(job.run_dir)
    assert found is not None and found.step == 2
    assert f"checkpoint {newest} is truncated (optimizer.pt has 100 of" in caplog.text
    rng = found.path / "rng_state.pth"
    rng.write_bytes(b"\0" * rng.stat().st_size)  # same size, other bytes: disk trouble
    with pytest.raises(checkpoint.CheckpointError, match=r"rng_state\.pth fails its checksum"):
        checkpoint.load(found.path)
    assert checkpoint.latest(job.run_dir) is None
    (found.path / checkpoint.MANIFEST).unlink()
    with pytest.raises(checkpoint.CheckpointError, match=r"incomplete \(no manifest.json\)"):
        checkpoint.load(found.path)


def test_a_full_disk_keeps_the_old_checkpoints_and_training_goes_on(make_job, monkeypatch, caplog):
    import errno

    import torch

    job, rec = make_job(6, *RESUMABLE)
    real_save = torch.save

    def save(obj, f, *args, **kwargs):  # the disk fills while step 4's optimizer state is written
        if str(f).endswith("optimizer.pt") and ".step_4." in str(f):
            with open(f, "wb") as out:
                out.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    final = get_backend("manual")(job)
    assert "test_accuracy" in final or "eval_accuracy" in final  # the run went on to its end
    assert [s for s, _ in rec.series("loss")] == [1, 2, 3, 4, 5, 6]
    folder = checkpoint.checkpoints_dir(job.run_dir)
    assert sorted(p.name for p in folder.iterdir()) == ["step_2"]  # no partial one left
    assert checkpoint.load(folder / "step_2").step == 2
    assert "checkpoint at step 4 not saved (the disk is full)" in caplog.text


def _nan_at(loss_fn, calls):
    """`loss_fn`, returning NaN on the given training calls (1-based; evaluation not counted)."""
    count = 0

    def wrapped(logits, labels):
        nonlocal count
        loss = loss_fn(logits, labels)
        if logits.requires_grad:
            count += 1
            if count in calls:
                return loss * float("nan")
        return loss

    return wrapped


@pytest.mark.parametrize("backend", ["manual", "hf"])
def test_on_nan_skip_drops_the_update_counts_and_logs_it(make_job, backend):
    import math

    import torch

    opts = [f"trainer={backend}", "loss=cross_entropy", "trainer.on_nan=skip",
            "trainer.batch_size=8", "trainer.log_every=1"]  # fmt: skip
    job, rec = make_job(6, *opts)
    job.loss_fn = _nan_at(job.loss_fn, {3, 5})  # steps 3 and 5 (one micro-batch per step)
    final = get_backend(backend)(job)
    assert rec.series("skipped_steps") == [(3, 1.0), (5, 2.0)]
    assert [s for s, _ in rec.series("loss")] == [1, 2, 4, 6]  # a skipped step has no loss
    assert all(math.isfinite(v) for _, v in rec.series("loss"))
    assert all(torch.isfinite(p).all() for p in job.model.parameters())
    assert math.isfinite(final["eval_loss"])


@pytest.mark.parametrize("backend", ["manual", "hf"])
def test_on_nan_stop_fails_before_the_update(make_job, backend):
    import torch

    from expkit.errors import TrainingDiverged

    job, _ = make_job(6, f"trainer={backend}", "loss=cross_entropy", "trainer.batch_size=8")
    job.loss_fn = _nan_at(job.loss_fn, {3})
    with pytest.raises(TrainingDiverged, match=r"loss is nan at step 3 \(learning rate"):
        get_backend(backend)(job)
    assert all(torch.isfinite(p).all() for p in job.model.parameters())  # no NaN update applied


def test_config_changes_are_refused_unless_allowed(tmp_path):
    from expkit.errors import ConfigError
    from expkit.resume import check_changes

    saved = {"optimizer.lr": 1e-3, "trainer.max_steps": 30, "trainer.log_every": 10, "seed": 1}
    ck = checkpoint.Checkpoint(tmp_path, {"step": 10, "config": saved})
    # optimizer.fused: a key a newer expkit added, not in the checkpoint: not a change
    now = {**saved, "optimizer.lr": 3e-3, "trainer.max_steps": 50, "trainer.log_every": 1,
           "optimizer.fused": None}  # fmt: skip
    with pytest.raises(ConfigError) as err:
        check_changes(ck, now, ["trainer.max_steps"])
    assert "optimizer.lr (0.001 -> 0.003)" in str(err.value)
    assert "resume.allow_changes=[optimizer.lr]" in str(err.value)
    assert "max_steps" not in str(err.value) and "log_every" not in str(err.value)
    assert check_changes(ck, now, ["optimizer", "trainer.max_steps"]) == {
        "optimizer.lr": (1e-3, 3e-3), "trainer.max_steps": (30, 50),
    }  # fmt: skip


def test_the_resume_shorthand():
    from expkit.cli import expand_shorthands

    assert expand_shorthands(["resume=auto", "a=1", "resume.allow_changes=[x]"]) == [
        "resume.checkpoint=auto", "a=1", "resume.allow_changes=[x]",
    ]  # fmt: skip


def test_the_first_signal_asks_to_stop_and_the_second_stops_at_once():
    import signal

    from expkit.errors import Terminated
    from expkit.stopping import GracefulStop

    with GracefulStop() as stop:
        signal.raise_signal(signal.SIGTERM)  # the loop finishes its step, saves, then stops
        assert stop.requested and stop.signum == signal.SIGTERM
        with pytest.raises(Terminated):
            signal.raise_signal(signal.SIGTERM)
    with GracefulStop() as stop:
        signal.raise_signal(signal.SIGINT)
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):  # and outside, Ctrl-C acts at once as before
        signal.raise_signal(signal.SIGINT)
