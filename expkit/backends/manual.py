"""The hand-written PyTorch loop: the tutorial's loop (eval mode and inference mode for evaluation,
the loss options, mixed precision, the scheduler stepped after the optimizer), with what a run
needs besides: accumulation, clipping, checkpoints, resume, several processes."""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any

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
from expkit.batching import epoch_sampler, step_windows, train_loader
from expkit.distributed import all_gather, barrier, step_totals
from expkit.loss import forward_loss


def is_eval_step(step: int, eval_every: int, steps_per_epoch: int) -> bool:
    """Every `eval_every` steps; with 0, at the last step of each epoch."""
    return step % (eval_every or steps_per_epoch) == 0


def _autocast(precision: str, device: Any) -> Any:
    """A context-manager factory: autocast to bf16 / fp16, or nothing for fp32."""
    import contextlib

    import torch

    if precision == "fp32":
        return contextlib.nullcontext
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16

    def autocast() -> Any:
        return torch.autocast(device_type=device.type, dtype=dtype)

    return autocast


def evaluate(job: TrainJob, split: str, device: Any, autocast: Any) -> dict[str, float]:
    """Loss and the task's metrics on one split, in eval mode under inference_mode.

    The task's outputs are kept per row of the encoded split, whatever their shape (the gold
    labels are the encoding's, read by the task). With several processes each evaluates every
    world_size-th row and the outputs are gathered back in the split's order: every row counted
    once, whether or not the split divides evenly.
    """
    import torch
    from torch.utils.data import DataLoader, Subset

    model = job.model
    data, here = job.datasets[split], job.world
    if here.active:
        data = Subset(data, range(here.rank, len(data), here.size))
    loader = DataLoader(data, batch_size=job.cfg.trainer.eval_batch_size, collate_fn=job.collator)
    was_training = model.training
    model.eval()
    total_loss, count, outputs = 0.0, 0, []
    with torch.inference_mode():
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            with autocast():
                loss, out = forward_loss(model, batch, job.loss_fn)
            n = batch_size(batch)
            total_loss += float(loss) * n  # per-sample mean over the split
            count += n
            outputs.extend(job.task.batch_outputs(out, batch.get("labels")).cpu().numpy())
    model.train(was_training)
    if here.active:
        parts = all_gather((outputs, total_loss, count), here)
        # back in the split's order: rank r evaluated rows r, r + size, r + 2 * size, ...
        outputs = interleave([part[0] for part in parts])
        total_loss, count = sum(part[1] for part in parts), sum(part[2] for part in parts)
    return {"loss": total_loss / max(count, 1), **task_metrics(job, split, outputs)}


def interleave(parts: list[list[Any]]) -> list[Any]:
    """The items of strided shards (shard r holds items r, r + n, ...) in their first order."""
    out: list[Any] = []
    for row in range(max((len(p) for p in parts), default=0)):
        out.extend(p[row] for p in parts if row < len(p))
    return out


def train(job: TrainJob) -> dict[str, float]:
    """Train for job.total_steps optimizer steps; log, evaluate and return the final metrics.

    With `job.resume`, training continues from that checkpoint exactly: weights, optimizer,
    scheduler, scaler, every RNG and the data position as they were after its step.
    """
    import torch
    from tqdm.auto import tqdm

    from expkit import checkpoint
    from expkit.stopping import GracefulStop

    t = job.cfg.trainer
    device = job.device
    autocast = _autocast(str(t.precision), device)
    scaler = torch.amp.GradScaler(device.type, enabled=t.precision == "fp16")

    here = job.world
    model, optimizer, scheduler = job.model.to(device), job.optimizer, job.scheduler
    if job.resume is not None:  # before DDP, which starts every rank from rank 0's weights
        checkpoint.load_model_weights(model, job.resume.path)
    # the wrapped (DDP) and compiled module trains; checkpoints and evaluation use the model
    ddp = None
    if here.active:
        from torch.nn.parallel import DistributedDataParallel

        ddp = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    forward = ddp if ddp is not None else model
    forward = torch.compile(forward) if t.compile else forward
    params = [p for p in model.parameters() if p.requires_grad]
    accum = int(t.grad_accum_steps)
    train_set = job.datasets["train"]
    sampler = epoch_sampler(
        train_set, job.cfg.seed, t.batch_size, job.cfg.data.group_by_length, here.rank, here.size,
        job.collator,
    )  # fmt: skip
    loader = train_loader(
        train_set, job.collator, t.batch_size, sampler, t.num_workers,
        pin_memory=device.type == "cuda",
    )  # fmt: skip
    per_epoch = job.steps_per_epoch
    has_dev = "dev" in job.datasets
    max_norm = t.max_grad_norm if t.max_grad_norm is not None else math.inf
    p = Progress()
    first = 1
    if job.resume is not None:
        checkpoint.load_training_state(job.resume.path, optimizer, scheduler, scaler)
        p = Progress(**job.resume.state["progress"])
        first = job.resume.step + 1
    epoch, in_epoch = divmod(first - 1, per_epoch)
    windows = step_windows(loader, accum, start_epoch=epoch, skip_steps=in_epoch)
    # A new epoch's DataLoader iterator draws from the global RNG when it starts: restore the
    # RNG before that draw at an epoch boundary, and after it inside an epoch (as the Trainer).
    restore_after_first_window = job.resume is not None and in_epoch > 0
    if job.resume is not None and in_epoch == 0:
        checkpoint.restore_rng(job.resume.path, here.rank, here.size)

    model.train()  # from_pretrained returns the model in eval mode
    optimizer.zero_grad(set_to_none=True)
    bar = tqdm(total=job.total_steps, initial=first - 1, desc="train", unit="step",
               disable=not t.progress or not here.is_main or None)  # fmt: skip
    stop = job.stop or GracefulStop()
    start = time.perf_counter() - p.train_seconds
    with stop:  # resumed after early stopping had stopped the run (last_step): no step more
        for step in range(first, job.last_step + 1):
            _epoch, window = next(windows)
            if restore_after_first_window:
                checkpoint.restore_rng(job.resume.path, here.rank, here.size)
                restore_after_first_window = False
            step_loss = torch.zeros((), device=device)
            step_samples = 0
            for i, batch in enumerate(window):
                batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                # gradients are averaged across processes once per step, at its last micro-batch
                sync = ddp is None or i == len(window) - 1
                with contextlib.nullcontext() if sync else ddp.no_sync():
                    with autocast():
                        loss = forward_loss(forward, batch, job.loss_fn)[0]
                    # the mean over this step's micro-batches (an epoch's last may have fewer)
                    loss = loss / len(window)
                    scaler.scale(loss).backward()
                step_loss += loss.detach()
                step_samples += batch_size(batch)
            scaler.unscale_(optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
            lr = scheduler.get_last_lr()[0]  # the rate this step uses
            value = float(step_loss)
            value, step_samples, stopping = step_totals(
                value, step_samples, stop.requested, device, here
            )
            p.samples += step_samples
            skipped = not math.isfinite(value) and nan_policy(job, step, value, lr, p)
            if skipped:  # no update from this batch (the optimizer skips parameters without grads)
                optimizer.zero_grad(set_to_none=True)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()  # after optimizer.step(), as the tutorial says
            optimizer.zero_grad(set_to_none=True)

            if not skipped:
                p.window_loss += value
                p.window_steps += 1
            bar.update(1)
            if (step % t.log_every == 0 or step == job.total_steps) and p.window_steps:
                loss_value = p.window_loss / p.window_steps
                job.tracker.log_metrics(
                    {"loss": loss_value, "learning_rate": lr, "grad_norm": float(grad_norm)},
                    step=step,
                )
                bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}")
                if bar.disable:  # no terminal (a log file, CI): progress as log lines instead
                    elapsed = time.perf_counter() - start - p.eval_seconds
                    log_progress(step, job.total_steps, loss_value, lr, elapsed)
                p.window_loss, p.window_steps = 0.0, 0
            early_stop = False
            if has_dev and (is_eval_step(step, t.eval_every, per_epoch) or step == job.total_steps):
                eval_start = time.perf_counter()
                dev = evaluate(job, "dev", device, autocast)
                metrics = {f"eval_{k}": v for k, v in dev.items()}
                job.tracker.log_metrics(metrics, step=step)
                p.metrics.update(metrics)
                log_evaluation(step, metrics)
                early_stop = after_evaluation(job, step, metrics)  # keeps the best weights
                p.eval_seconds += time.perf_counter() - eval_start
            # one process: a signal during this step's evaluation counts too
            stopping = stopping or (not here.active and stop.requested)
            if save_every_due(job, step) or stopping:
                p.train_seconds = time.perf_counter() - start
                save_checkpoint(job, step, scaler, p.as_dict())
            if stopping:
                barrier(here)  # no process leaves (and gets its launcher to kill) before the save
                stop.stop()  # a process that got no signal itself stops as if sent SIGTERM
            if early_stop:
                break
    p.train_seconds = time.perf_counter() - start
    runtime = p.train_seconds - p.eval_seconds  # the training loop only
    bar.close()
    final = dict(p.metrics)
    final["train_runtime"] = runtime
    final["train_samples_per_second"] = p.samples / runtime if runtime > 0 else 0.0
    end_training(job, final)  # the best weights back (trainer.load_best)
    last = job.last_step
    with final_evaluation(job, scaler, p.as_dict()):
        timing = {k: final[k] for k in ("train_runtime", "train_samples_per_second")}
        job.tracker.log_metrics(timing, step=last)
        if "test" in job.datasets:
            metrics = {f"test_{k}": v for k, v in evaluate(job, "test", device, autocast).items()}
            job.tracker.log_metrics(metrics, step=last)
            final.update(metrics)
    return final
