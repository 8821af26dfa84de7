"""The Hugging Face Trainer backend, step for step equal to the manual loop.

The Trainer gets the objects the shared builders made (model with freeze applied, tokenized splits,
collator, optimizer, scheduler), the task's outputs and metrics, and expkit's training order
(`EpochSampler`) and loss (`forward_loss`). What it would do differently by default is set
back to the manual loop's way:
- the loss of a step is the mean of its micro-batch losses (no `num_items_in_batch` rescaling);
- no built-in reporting (`report_to=[]`): `TrackerCallback` forwards the Trainer's logs to
  expkit's tracker under the manual loop's names and steps, and times the training loop alone;
- checkpoints are expkit's (`checkpoints/step_N`, atomic, in the Trainer's file layout), saved
  when `trainer.save_every` or a signal asks, and resumed through `resume_from_checkpoint`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from expkit.backends import (
    Progress,
    TrainJob,
    after_evaluation,
    batch_size,
    end_training,
    final_evaluation,
    log_evaluation,
    log_progress,
    nan_policy,
    save_checkpoint,
    save_every_due,
    task_metrics,
)
from expkit.batching import epoch_sampler
from expkit.distributed import barrier, step_totals
from expkit.errors import ConfigError
from expkit.loss import forward_loss

# TrainingArguments that expkit sets from the run config: where to set each one instead
DERIVED: dict[str, str] = {
    "output_dir": "the run dir (hydra.run.dir)",
    "num_train_epochs": "trainer.epochs",
    "max_steps": "trainer.max_steps",
    "per_device_train_batch_size": "trainer.batch_size",
    "per_device_eval_batch_size": "trainer.eval_batch_size",
    "gradient_accumulation_steps": "trainer.grad_accum_steps",
    "max_grad_norm": "trainer.max_grad_norm",
    "logging_strategy": "trainer.log_every",
    "logging_steps": "trainer.log_every",
    "eval_strategy": "trainer.eval_every",
    "eval_steps": "trainer.eval_every",
    "bf16": "trainer.precision",
    "fp16": "trainer.precision",
    "use_cpu": "trainer.device",
    "dataloader_num_workers": "trainer.num_workers",
    "disable_tqdm": "trainer.progress",
    "seed": "seed",
    "data_seed": "seed",
    "learning_rate": "optimizer.lr",
    "weight_decay": "optimizer.weight_decay",
    "optim": "the optimizer group (optimizer=...)",
    "optim_args": "the optimizer group (optimizer=...)",
    "adam_beta1": "optimizer.betas",
    "adam_beta2": "optimizer.betas",
    "adam_epsilon": "optimizer.eps",
    "lr_scheduler_type": "the scheduler group (scheduler=...)",
    "lr_scheduler_kwargs": "the scheduler group (scheduler=...)",
    "warmup_steps": "scheduler.warmup_steps / scheduler.warmup_ratio",
    "label_smoothing_factor": "loss=cross_entropy loss.label_smoothing",
    "train_sampling_strategy": "expkit's training order (the same in both backends)",
    "group_by_length": "data.group_by_length (the same order in both backends)",
    "torch_compile": "trainer.compile",
    "report_to": "tracking (expkit's tracker is the only writer)",
    "run_name": "tracking.run_name",
    "remove_unused_columns": "the data group (expkit passes the tokenized columns as they are)",
    "logging_nan_inf_filter": "nothing: expkit logs every loss as it is",
    "save_strategy": "trainer.save_every (expkit writes the checkpoints)",
    "save_steps": "trainer.save_every (expkit writes the checkpoints)",
    "save_total_limit": "trainer.keep_checkpoints",
    "save_only_model": "trainer.save_every (a checkpoint holds everything a resume needs)",
    "resume_from_checkpoint": "resume=auto or resume=PATH",
    "ignore_data_skip": "nothing: a resumed run skips the trained batches by index, exactly",
    "load_best_model_at_end": "trainer.load_best (expkit keeps the best weights itself)",
    "metric_for_best_model": "trainer.early_stopping.metric",
    "greater_is_better": "trainer.early_stopping.direction",
}
# what the Trainer adds to evaluation metrics besides the metrics themselves (timings, epoch)
_TRAINER_EXTRAS = (
    "_runtime",
    "_samples_per_second",
    "_steps_per_second",
    "_model_preparation_time",
)
_TRAIN_LOGS = ("loss", "learning_rate", "grad_norm")


def _field_types() -> dict[str, Any]:
    import dataclasses
    import typing

    from transformers import TrainingArguments

    hints = typing.get_type_hints(TrainingArguments)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(TrainingArguments) if f.init}


_SCALARS = (bool, int, float, str, type(None))


def _type_error(key: str, value: Any, hint: Any) -> str | None:
    """A message when `value` cannot be `hint` (scalar fields only; others are left to the Trainer).

    TrainingArguments does not check types itself: `logging_first_step=tru` would pass as true.
    """
    import types
    import typing

    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    members = typing.get_args(hint) if union else ()
    members = members or (hint,)
    if not all(m in _SCALARS for m in members):
        return None  # dicts, lists, enums given as strings: TrainingArguments parses them
    if value is None:
        ok = type(None) in members
    elif isinstance(value, bool):
        ok = bool in members
    elif isinstance(value, int):
        ok = int in members or float in members
    else:
        ok = type(value) in members
    if ok:
        return None
    wanted = " or ".join("null" if m is type(None) else m.__name__ for m in members)
    return f"trainer.hf_args.{key}={value!r} must be {wanted} (a TrainingArguments field)"


def training_arguments(cfg: DictConfig, output_dir: Path, device: Any, has_dev: bool) -> Any:
    """TrainingArguments from the run config, plus the user's `trainer.hf_args`."""
    from transformers import TrainingArguments

    t, o = cfg.trainer, cfg.optimizer
    betas = list(o.betas) if "betas" in o else [0.9, 0.999]
    eval_strategy = "no" if not has_dev else "steps" if t.eval_every else "epoch"
    args: dict[str, Any] = {
        "output_dir": str(output_dir),
        "num_train_epochs": float(t.epochs),
        "max_steps": int(t.max_steps),
        "per_device_train_batch_size": int(t.batch_size),
        "per_device_eval_batch_size": int(t.eval_batch_size),
        "gradient_accumulation_steps": int(t.grad_accum_steps),
        # 0 turns clipping off; the Trainer still logs the norm, as the manual loop does
        "max_grad_norm": float(t.max_grad_norm) if t.max_grad_norm is not None else 0.0,
        "logging_strategy": "steps",
        "logging_steps": int(t.log_every),
        "eval_strategy": eval_strategy,
        "eval_steps": int(t.eval_every) if t.eval_every else None,
        "bf16": t.precision == "bf16",
        "fp16": t.precision == "fp16",
        "use_cpu": device.type == "cpu",
        "dataloader_num_workers": int(t.num_workers),
        # a bar only on a terminal, as the manual loop (log lines otherwise)
        "disable_tqdm": not (t.progress and sys.stderr.isatty()),
        "seed": int(cfg.seed),
        # what the passed-in optimizer and scheduler do, so the arguments read true (unused)
        "learning_rate": float(o.lr),
        "weight_decay": float(o.weight_decay),
        "adam_beta1": float(betas[0]),
        "adam_beta2": float(betas[1]),
        "adam_epsilon": float(o.eps) if "eps" in o else 1e-8,
        "report_to": [],
        "save_strategy": "no",
        # early stopping and the best weights are expkit's (expkit.early_stopping), as in the
        # manual loop: the Trainer keeps no best checkpoint of its own
        "load_best_model_at_end": False,
        "remove_unused_columns": False,
        "torch_compile": bool(t.compile),
        "logging_nan_inf_filter": False,
        # every trainable parameter gets a gradient (as in the manual loop's DDP): no extra
        # pass over the graph per step; trainer.hf_args can turn it back on
        "ddp_find_unused_parameters": False,
    }
    args.update(OmegaConf.to_container(t.hf_args, resolve=True))
    return TrainingArguments(**args)


def check(cfg: DictConfig, device: Any) -> None:
    """Reject what the Trainer cannot run or what expkit sets itself, before the run opens."""
    import difflib

    extra = OmegaConf.to_container(cfg.trainer.hf_args, resolve=True)
    fields = _field_types()
    for key, value in extra.items():
        if key in DERIVED:
            raise ConfigError(
                f"trainer.hf_args.{key} is set by expkit from {DERIVED[key]}; set that instead"
            )
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ConfigError(
                f"trainer.hf_args.{key} is not a TrainingArguments field{hint}; see "
                "https://huggingface.co/docs/transformers/main_classes/trainer#transformers.TrainingArguments"
            )
        problem = _type_error(key, value, fields[key])
        if problem:
            raise ConfigError(problem)
    if device.type == "cuda" and (device.index or 0) > 0:
        raise ConfigError(
            f"trainer=hf places the model itself and cannot take trainer.device={device}; "
            f"run with CUDA_VISIBLE_DEVICES={device.index} and trainer.device=cuda"
        )
    try:
        training_arguments(cfg, Path("hf_check"), device, has_dev=True)
    except (ValueError, TypeError) as exc:  # TrainingArguments' own checks of the values
        message = " ".join(str(exc).split()) or type(exc).__name__  # one line
        raise ConfigError(f"trainer.hf_args: {message}") from None


def _trainer_class() -> type:
    from transformers import Trainer

    class ExpkitTrainer(Trainer):
        """The Trainer with expkit's training order and loss; counts the samples it trains on."""

        # compute_loss returns a micro-batch mean; the Trainer divides it by the number of
        # micro-batches in the step, as the manual loop does
        loss_is_scaled_for_ga = False

        def __init__(
            self, *args: Any, loss_fn: Any, order_seed: int, group_by_length: bool, **kwargs: Any
        ) -> None:
            self.loss_fn = loss_fn
            self.order_seed = order_seed
            self.group_by_length = group_by_length
            self.samples_seen = 0  # by all processes
            self.step_samples = 0  # this process's, in the current optimizer step
            self.step_loss = 0.0  # the current optimizer step's loss, checked for NaN per step
            self.write_checkpoint: Any = None  # set by `train`: expkit's checkpoint writer
            super().__init__(*args, **kwargs)
            # no num_items_in_batch: each micro-batch's loss is its own mean, as in the manual loop
            self.model_accepts_loss_kwargs = False

        def _get_train_sampler(self, train_dataset: Any = None) -> Any:
            dataset = train_dataset if train_dataset is not None else self.train_dataset
            return epoch_sampler(
                dataset, self.order_seed, self.args.per_device_train_batch_size,
                self.group_by_length, collator=self.data_collator,
            )  # fmt: skip

        def compute_loss(
            self,
            model: Any,
            inputs: dict[str, Any],
            return_outputs: bool = False,
            num_items_in_batch: Any = None,
        ) -> Any:
            loss, outputs = forward_loss(model, inputs, self.loss_fn)
            return (loss, outputs) if return_outputs else loss

        def _save_checkpoint(self, model: Any, trial: Any) -> None:
            # expkit's atomic checkpoint in place of the Trainer's, at the point it would save
            self.write_checkpoint()

        def training_step(self, model: Any, inputs: dict[str, Any], *args: Any, **kw: Any) -> Any:
            self.step_samples += batch_size(inputs)
            loss = super().training_step(model, inputs, *args, **kw)
            self.step_loss = self.step_loss + loss
            return loss

    return ExpkitTrainer


def _callback_class() -> type:
    from transformers import TrainerCallback

    class TrackerCallback(TrainerCallback):
        """Forwards the Trainer's logs to expkit's tracker under the manual loop's names and steps.

        `loss` (the mean of the steps since the last log, counted here as in the manual loop),
        `learning_rate`, `grad_norm` at each logging step (and the last step), `eval_*` and
        `test_*` after each evaluation; `train_runtime` and `train_samples_per_second` time the
        training loop alone (evaluations left out). Also: the NaN policy before each update,
        early stopping after each dev evaluation, and when a checkpoint is due.
        """

        def __init__(self, job: TrainJob, progress: Progress) -> None:
            self.job = job
            self.progress = progress
            self.trainer: Any = None
            self.final: dict[str, float] = dict(progress.metrics)
            self.training = False
            self.start = self.mark = 0.0
            self.step_value = 0.0
            self.skipped = False
            self.stopping = False  # a stop asked of any process (all agree at each step)
            self.save_at_epoch_end = False
            self.per_epoch = job.steps_per_epoch

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.max_steps != self.job.total_steps:  # the two backends' step counts differ
                raise RuntimeError(
                    f"the Trainer plans {state.max_steps} steps, expkit planned "
                    f"{self.job.total_steps}"
                )
            self.training = True
            self.start = self.mark = time.perf_counter() - self.progress.train_seconds

        def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            trainer, here, stop = self.trainer, self.job.world, self.job.stop
            self.step_value, samples, self.stopping = step_totals(
                float(trainer.step_loss), trainer.step_samples, bool(stop and stop.requested),
                args.device, here,
            )  # fmt: skip
            trainer.samples_seen += samples
            trainer.step_loss, trainer.step_samples = 0.0, 0
            self.skipped = False
            if not math.isfinite(self.step_value):  # before the update, as the manual loop
                lr = self.job.scheduler.get_last_lr()[0]
                step = state.global_step + 1
                self.skipped = nan_policy(self.job, step, self.step_value, lr, self.progress)
                self.job.optimizer.zero_grad(set_to_none=True)

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            p = self.progress
            if not self.skipped:
                p.window_loss += self.step_value
                p.window_steps += 1
            if state.global_step >= state.max_steps:
                control.should_log = True  # the manual loop logs the last step too
            if not self.job.world.active:  # one process: a signal during this step counts too
                self.stopping = self.stopping or bool(self.job.stop and self.job.stop.requested)
            if save_every_due(self.job, state.global_step) or self.stopping:
                # the Trainer saves after logging and evaluating; at an epoch's end it evaluates
                # after this step's save point, so the checkpoint waits for the epoch's end
                if state.global_step % self.per_epoch == 0:
                    self.save_at_epoch_end = True
                else:
                    control.should_save = True
            self.mark = time.perf_counter()

        def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self.save_at_epoch_end:
                control.should_save = True
                self.save_at_epoch_end = False
            self.mark = time.perf_counter()

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if not logs or "loss" not in logs or not self.training:
                return  # evaluations come through on_evaluate; the Trainer's summary is unused
            p = self.progress
            metrics = {k: float(logs[k]) for k in _TRAIN_LOGS if k in logs and k != "loss"}
            if p.window_steps:
                metrics["loss"] = p.window_loss / p.window_steps
            p.window_loss, p.window_steps = 0.0, 0
            if "loss" not in metrics:
                return  # every step since the last log was skipped (on_nan=skip)
            self.job.tracker.log_metrics(metrics, step=state.global_step)
            if args.disable_tqdm:  # as the manual loop: progress as log lines
                elapsed = time.perf_counter() - self.start - p.eval_seconds
                lr = metrics.get("learning_rate", 0.0)
                log_progress(state.global_step, state.max_steps, metrics["loss"], lr, elapsed)
            self.mark = time.perf_counter()

        def on_evaluate(
            self, args: Any, state: Any, control: Any, metrics: Any = None, **kw: Any
        ) -> None:
            kept = {
                k: float(v)
                for k, v in (metrics or {}).items()
                if k != "epoch" and not k.endswith(_TRAINER_EXTRAS)
            }
            self.job.tracker.log_metrics(kept, step=state.global_step)
            self.final.update(kept)
            if self.training:
                self.progress.metrics.update(kept)
                log_evaluation(state.global_step, kept)
                # before the save that may follow at this step: the checkpoint holds this update
                if after_evaluation(self.job, state.global_step, kept):
                    control.should_training_stop = True
                self.progress.eval_seconds += time.perf_counter() - self.mark

        def progress_now(self) -> Progress:
            """The counts as they stand (for a checkpoint)."""
            self.progress.samples = self.trainer.samples_seen
            self.progress.train_seconds = time.perf_counter() - self.start
            return self.progress

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            runtime = time.perf_counter() - self.start - self.progress.eval_seconds
            self.training = False
            samples = self.trainer.samples_seen if self.trainer is not None else 0
            timing = {
                "train_runtime": runtime,
                "train_samples_per_second": samples / runtime if runtime > 0 else 0.0,
            }
            self.job.tracker.log_metrics(timing, step=state.global_step)
            self.final.update(timing)

    return TrackerCallback


def _progress_class() -> type:
    from transformers.trainer_callback import ProgressCallback

    class Progress(ProgressCallback):
        """The Trainer's bar, without its own timing figures (expkit reports the manual loop's)."""

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if not logs or "train_runtime" in logs:
                return  # its summary times evaluation too; expkit prints its own table
            kept = {k: v for k, v in logs.items() if not k.endswith(_TRAINER_EXTRAS)}
            super().on_log(args, state, control, logs=kept, **kw)

    return Progress


def _trained_already(trainer: Any, callback: Any, path: Path) -> None:
    """Resumed from a checkpoint of the last step: its weights and state, and no step more (the
    Trainer, resumed there, would train one more before it checks the step count)."""
    from transformers import TrainerState

    from expkit.checkpoint import load_model_weights

    load_model_weights(trainer.model, path)
    trainer.state = TrainerState.load_from_json(str(Path(path) / "trainer_state.json"))
    callback.on_train_begin(trainer.args, trainer.state, trainer.control)
    callback.on_train_end(trainer.args, trainer.state, trainer.control)


def train(job: TrainJob) -> dict[str, float]:
    """Train with the Trainer on the shared objects; return the manual loop's final metrics."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from expkit.stopping import GracefulStop

    cfg = job.cfg
    has_dev = "dev" in job.datasets
    output_dir = job.run_dir / "hf_trainer"
    args = training_arguments(cfg, output_dir, job.device, has_dev)
    resume = job.resume
    progress = Progress(**resume.state["progress"]) if resume is not None else Progress()
    callback = _callback_class()(job, progress)

    split = {"name": "dev"}  # which split the Trainer is evaluating: the task may use it

    def compute_metrics(prediction: Any) -> dict[str, float]:
        # one item per row of the split, in its order, as the manual loop hands them over
        return task_metrics(job, split["name"], list(prediction.predictions))

    def keep_outputs(logits: Any, labels: Any) -> Any:
        # what the task keeps of each batch (class ids, scores, token losses), not the logits
        return job.task.batch_outputs(logits, labels)

    trainer = _trainer_class()(
        model=job.model,
        args=args,
        train_dataset=job.datasets["train"],
        eval_dataset=job.datasets.get("dev"),
        data_collator=job.collator,
        compute_metrics=compute_metrics,
        preprocess_logits_for_metrics=keep_outputs,
        optimizers=(job.optimizer, job.scheduler),
        callbacks=[callback],
        loss_fn=job.loss_fn,
        order_seed=int(cfg.seed),
        group_by_length=bool(cfg.data.group_by_length),
    )
    callback.trainer = trainer
    trainer.samples_seen = progress.samples
    stop = job.stop or GracefulStop()
    job.stop = stop

    def trainer_state() -> tuple[Any, str]:
        """The gradient scaler and the Trainer's state (trainer_state.json), as they stand."""
        state = json.dumps(dataclasses.asdict(trainer.state), indent=2, sort_keys=True)
        return getattr(trainer.accelerator, "scaler", None), state

    def write_checkpoint() -> None:
        scaler, state = trainer_state()
        step = trainer.state.global_step
        save_checkpoint(job, step, scaler, callback.progress_now().as_dict(), trainer_state=state)
        if callback.stopping:
            barrier(job.world)  # no process leaves (and gets its launcher to kill) before the save
            stop.stop()

    trainer.write_checkpoint = write_checkpoint
    if args.disable_tqdm:
        trainer.remove_callback(PrinterCallback)  # TrackerCallback writes the log lines
    else:
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(_progress_class())
    if resume is not None and job.trained:  # at the last step, or after early stopping stopped
        _trained_already(trainer, callback, resume.path)
    else:
        with stop:
            trainer.train(resume_from_checkpoint=str(resume.path) if resume is not None else None)
    end_training(job, callback.final)  # the best weights back (trainer.load_best)
    scaler, state = trainer_state()
    with final_evaluation(job, scaler, callback.progress_now().as_dict(), trainer_state=state):
        if "test" in job.datasets:
            split["name"] = "test"
            trainer.evaluate(job.datasets["test"], metric_key_prefix="test")
    if job.world.is_main and output_dir.is_dir() and not any(output_dir.iterdir()):
        output_dir.rmdir()  # nothing was saved there: leave no empty folder behind
    return dict(callback.final)
