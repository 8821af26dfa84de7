"""Backend registry: `trainer.backend` name -> the function that trains an already-built job.

Backends build nothing themselves: they get the model (freeze applied), tokenized splits, collator,
optimizer, scheduler and loss from the shared builders, the task (what is kept of the model's
outputs, and the metrics: expkit.tasks), and the tracker. They never name a task.
Adding a backend is one module with a `train(job) -> metrics` function (and, optionally, a
`check(cfg, device)` that rejects what the backend cannot run, before the tracking run opens),
one line here, one YAML file in conf/trainer/.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from expkit.distributed import World, all_gather
from expkit.errors import TrainingDiverged

log = logging.getLogger(__name__)

# name -> "module:function", imported only when chosen (the hf backend pulls in accelerate)
BACKENDS: dict[str, str] = {
    "manual": "expkit.backends.manual:train",
    "hf": "expkit.backends.hf:train",
}


@dataclass
class TrainJob:
    """Everything a backend needs, built once by expkit.run."""

    cfg: DictConfig
    model: Any
    tokenizer: Any
    datasets: dict[str, Any]  # "train", and "dev" / "test" when present
    collator: Any
    optimizer: Any
    scheduler: Any
    loss_fn: Callable[[Any, Any], Any] | None  # None: the model's own loss
    task: Any  # expkit.tasks.Task: outputs(logits) per example, metrics(outputs, labels, split)
    total_steps: int
    tracker: Any
    run_dir: Path
    device: Any  # torch.device, resolved and checked against trainer.precision by expkit.run
    resume: Any = None  # expkit.checkpoint.Checkpoint to continue from, or None
    # written into every checkpoint: the MLflow run id, the store, the resolved config
    checkpoint_meta: dict[str, Any] = field(default_factory=dict)
    stop: Any = None  # expkit.stopping.GracefulStop, entered around the training loop
    # expkit.early_stopping.EarlyStopping (early stopping, the best weights), or None
    early_stopping: Any = None
    world: World = field(default_factory=World)  # this process among the run's processes

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps per epoch of the training split (windows never span an epoch)."""
        from expkit.batching import steps_per_epoch

        t = self.cfg.trainer
        return steps_per_epoch(
            len(self.datasets["train"]), t.batch_size, t.grad_accum_steps, self.world.size
        )

    @property
    def last_step(self) -> int:
        """The step training ends at: total_steps, or the one early stopping stopped it at."""
        early = self.early_stopping
        return early.stopped_at if early is not None and early.stopped else self.total_steps

    @property
    def trained(self) -> bool:
        """Training is over (resumed from its last step, or early stopping has stopped it)."""
        early = self.early_stopping
        done = early is not None and early.stopped
        return done or (self.resume is not None and self.resume.step >= self.total_steps)


def get_backend(name: str) -> Callable[[TrainJob], dict[str, float]]:
    module, _, func = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module), func)


def check_backend(cfg: DictConfig, device: Any) -> None:
    """The backend's own checks of the run config, if it has any (raise ConfigError)."""
    module = importlib.import_module(BACKENDS[str(cfg.trainer.backend)].partition(":")[0])
    check = getattr(module, "check", None)
    if check is not None:
        check(cfg, device)


@dataclass
class Progress:
    """What a backend counts while training, saved in checkpoints so a resumed run goes on
    counting (the loss window between logging steps, samples, time, skipped steps, metrics)."""

    window_loss: float = 0.0
    window_steps: int = 0
    samples: int = 0
    train_seconds: float = 0.0  # wall time in the training loop so far, evaluations included
    eval_seconds: float = 0.0
    skipped_steps: int = 0
    metrics: dict[str, float] = field(default_factory=dict)  # the latest evaluation

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def nan_policy(job: TrainJob, step: int, loss: float, lr: float, progress: Progress) -> bool:
    """A NaN / inf loss at `step`: raise TrainingDiverged (on_nan=stop), or count it, log it and
    return True so the backend drops the step's update (on_nan=skip)."""
    if job.cfg.trainer.on_nan != "skip":
        raise TrainingDiverged(step, loss, lr)
    progress.skipped_steps += 1
    log.warning(
        "step %d: the loss is %s; its update is skipped (%d skipped so far)",
        step, loss, progress.skipped_steps,
    )  # fmt: skip
    job.tracker.log_metrics({"skipped_steps": progress.skipped_steps}, step=step)
    return True


def after_evaluation(job: TrainJob, step: int, metrics: dict[str, float]) -> bool:
    """The dev evaluation at `step` seen by early stopping; True: training stops after it."""
    early = job.early_stopping
    if early is None or not early.update(step, metrics, job.model, job.task.state()):
        return False
    log.info("%s", early.message())
    job.tracker.set_tags({"expkit.stopped_early_at": str(step)})
    return True


def end_training(job: TrainJob, final: dict[str, float]) -> None:
    """After the last step, before the test evaluation: the best evaluation recorded and, with
    load_best, its weights back in the model and its eval_* metrics in `final` (and logged
    again at the last step, so the store's latest values are the best evaluation's too)."""
    early = job.early_stopping
    if early is None or early.best_step is None:
        return
    step = job.last_step
    job.tracker.set_tags({
        "expkit.best_step": str(early.best_step),
        "expkit.best_metric": early.metric,
        "expkit.best_value": repr(early.best),
    })  # fmt: skip
    final["best_step"] = float(early.best_step)
    job.tracker.log_metrics({"best_step": float(early.best_step)}, step=step)
    if early.restore(job.model):
        log.info(
            "restored the weights of step %d (%s=%.6g, the best evaluation)",
            early.best_step, early.metric, early.best,
        )  # fmt: skip
        job.task.load_state(early.best_task_state)  # the threshold chosen with those weights
        final.update(early.best_metrics)
        if early.best_step != step:
            # MLflow's latest value is the one of the greatest (step, timestamp, value): logged
            # a millisecond after the evaluation at this step, the best one is the latest
            time.sleep(0.002)
            job.tracker.log_metrics(early.best_metrics, step=step)


def save_every_due(job: TrainJob, step: int) -> bool:
    """A periodic checkpoint is due after `step` (none after the last: the run is done)."""
    every = int(job.cfg.trainer.save_every)
    return every > 0 and step % every == 0 and step < job.total_steps


def save_checkpoint(
    job: TrainJob,
    step: int,
    scaler: Any,
    progress: dict[str, Any],
    trainer_state: str | None = None,
    rng_states: list[dict[str, Any]] | None = None,
) -> None:
    """Checkpoint the job at `step`; a write that fails (disk full) is reported, training goes on.

    The tracker is flushed first, so the store holds every value up to the checkpoint. With
    several processes every rank calls this (each hands over its RNG state) and rank 0 writes;
    given `rng_states` (gathered before), rank 0 writes alone, with no collective call.
    """
    from expkit.checkpoint import CheckpointNotSaved, rng_state, save

    if rng_states is None:
        rng_states = all_gather(rng_state(), job.world)  # one per process, in rank order
    if not job.world.is_main:
        return
    job.tracker.try_flush()
    t = job.cfg.trainer
    early = job.early_stopping
    epoch, in_epoch = divmod(step, job.steps_per_epoch)
    state = {
        **job.checkpoint_meta,
        "task_state": job.task.state(),  # what evaluation chose (a threshold): used after resume
        # the best evaluation and the patience counter (the best weights: a file beside)
        "early_stopping": early.state() if early is not None else None,
        "backend": str(t.backend),
        # the data position: the sampler's order is fixed by (seed, epoch)
        "epoch": epoch,
        "batches_in_epoch": in_epoch * int(t.grad_accum_steps),
        "sampler_seed": int(job.cfg.seed),
        "progress": progress,
    }
    try:
        path = save(
            job.run_dir, step, model=job.model, optimizer=job.optimizer, scheduler=job.scheduler,
            scaler=scaler, state=state, keep=int(job.cfg.trainer.keep_checkpoints),
            trainer_state=trainer_state, rng_states=rng_states,
            best_weights=early.weights if early is not None else None,
        )  # fmt: skip
    except CheckpointNotSaved as exc:
        log.warning("%s", exc)
        job.tracker.set_tags({"expkit.checkpoint_error": str(exc)})
        return
    log.info("checkpoint saved: %s", path)


@contextmanager
def final_evaluation(
    job: TrainJob, scaler: Any, progress: dict[str, Any], trainer_state: str | None = None
) -> Iterator[None]:
    """Around the evaluation after the last step (job.last_step): an interrupt there (or one that
    came too late for the training loop to act on) first saves the trained steps as a
    checkpoint, then stops the run as a signal does (KILLED). Resuming it runs only the final
    evaluation."""
    from expkit.checkpoint import rng_state

    # gathered now, while every process is here: the save on an interrupt needs no other process
    rng_states = all_gather(rng_state(), job.world)

    def keep() -> None:
        log.warning(
            "stopped during the final evaluation: saving the trained model (step %d) as a "
            "checkpoint", job.last_step,
        )  # fmt: skip
        save_checkpoint(job, job.last_step, scaler, progress, trainer_state, rng_states)

    stop = job.stop
    if stop is not None and stop.requested:
        keep()
        stop.stop()
    try:  # from here on, whatever line a signal interrupts (even the log line below)
        if "test" in job.datasets:
            log.info("final evaluation on the test split (%d examples)", len(job.datasets["test"]))
        yield
    except KeyboardInterrupt:  # Ctrl-C, and SIGTERM (expkit.errors.Terminated)
        keep()
        raise


def task_metrics(job: TrainJob, split: str, outputs: list[Any]) -> dict[str, float]:
    """The task's metrics of one split from what was kept of each row of its encoding (in the
    split's order): the task joins the rows of one example (windows) into one, and reads the
    gold labels of the split's examples from the encoding."""
    encoded = job.datasets[split]
    return job.task.metrics(job.task.merge(outputs, encoded), job.task.golds(encoded), split)


def log_progress(step: int, total: int, loss: float, lr: float, train_seconds: float) -> None:
    """A logging step as a log line, where no progress bar shows (a log file, CI)."""
    rate = step / train_seconds if train_seconds > 0 else 0.0
    log.info("step %d/%d loss %.4f lr %.2e %.2f steps/s", step, total, loss, lr, rate)


def batch_size(batch: dict[str, Any]) -> int:
    """Examples in a batch: every task has input ids, not every one has a label per example."""
    return int(batch["input_ids"].shape[0])


def log_evaluation(step: int, metrics: dict[str, float]) -> None:
    log.info("step %d: %s", step, ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
