"""The hand-written PyTorch loop (S2, S5, S7, S8): the tutorial's loop, with what a run needs."""

from __future__ import annotations

import math
import time
from typing import Any

from expkit.backends import TrainJob, log_evaluation, log_progress
from expkit.batching import step_windows, steps_per_epoch, train_loader
from expkit.errors import TrainingDiverged
from expkit.loss import forward_loss


def is_eval_step(step: int, eval_every: int, steps_per_epoch: int) -> bool:
    """Every `eval_every` steps; with 0, at the last step of each epoch."""
    return step % (eval_every or steps_per_epoch) == 0


def _autocast(precision: str, device: Any) -> Any:
    """A context-manager factory: autocast to bf16 / fp16, or nothing for fp32 (S7)."""
    import contextlib

    import torch

    if precision == "fp32":
        return contextlib.nullcontext
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16

    def autocast() -> Any:
        return torch.autocast(device_type=device.type, dtype=dtype)

    return autocast


def evaluate(job: TrainJob, split: str, device: Any, autocast: Any) -> dict[str, float]:
    """Loss and metrics on one split, in eval mode under inference_mode (S2)."""
    import numpy as np
    import torch
    from torch.utils.data import DataLoader

    model = job.model
    loader = DataLoader(
        job.datasets[split], batch_size=job.cfg.trainer.eval_batch_size, collate_fn=job.collator
    )
    was_training = model.training
    model.eval()
    total_loss, count, preds, golds = 0.0, 0, [], []
    with torch.inference_mode():
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            with autocast():
                loss, out = forward_loss(model, batch, job.loss_fn)
            n = batch["labels"].shape[0]
            total_loss += float(loss) * n  # per-sample mean over the split
            count += n
            preds.append(out.logits.argmax(-1).cpu().numpy())
            golds.append(batch["labels"].cpu().numpy())
    model.train(was_training)
    metrics = job.compute_metrics(np.concatenate(preds), np.concatenate(golds))
    return {"loss": total_loss / max(count, 1), **metrics}


def train(job: TrainJob) -> dict[str, float]:
    """Train for job.total_steps optimizer steps; log, evaluate and return the final metrics."""
    import torch
    from tqdm.auto import tqdm

    t = job.cfg.trainer
    device = job.device
    autocast = _autocast(str(t.precision), device)
    scaler = torch.amp.GradScaler(device.type, enabled=t.precision == "fp16")

    model, optimizer, scheduler = job.model.to(device), job.optimizer, job.scheduler
    params = [p for p in model.parameters() if p.requires_grad]
    accum = int(t.grad_accum_steps)
    train_set = job.datasets["train"]
    loader = train_loader(train_set, job.collator, t.batch_size, job.cfg.seed, t.num_workers)
    windows = step_windows(loader, accum)
    per_epoch = steps_per_epoch(len(train_set), t.batch_size, accum)
    has_dev = "dev" in job.datasets
    max_norm = t.max_grad_norm if t.max_grad_norm is not None else math.inf
    final: dict[str, float] = {}

    model.train()  # from_pretrained returns the model in eval mode (S2)
    optimizer.zero_grad(set_to_none=True)
    bar = tqdm(total=job.total_steps, desc="train", unit="step", disable=not t.progress or None)
    window_loss, window_steps, samples, eval_seconds = 0.0, 0, 0, 0.0
    start = time.perf_counter()
    for step in range(1, job.total_steps + 1):
        _epoch, window = next(windows)
        step_loss = torch.zeros((), device=device)
        for batch in window:
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            with autocast():
                loss, _ = forward_loss(model, batch, job.loss_fn)
            # the mean over this step's micro-batches (an epoch's last step may have fewer)
            loss = loss / len(window)
            scaler.scale(loss).backward()
            step_loss += loss.detach()
            samples += batch["labels"].shape[0]
        scaler.unscale_(optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        scaler.step(optimizer)
        scaler.update()
        lr = scheduler.get_last_lr()[0]  # the rate this step used
        scheduler.step()  # after optimizer.step(), as the tutorial says (S8)
        optimizer.zero_grad(set_to_none=True)

        value = float(step_loss)
        if not math.isfinite(value):
            raise TrainingDiverged(step, value, lr)
        window_loss += value
        window_steps += 1
        bar.update(1)
        if step % t.log_every == 0 or step == job.total_steps:
            loss_value = window_loss / window_steps
            job.tracker.log_metrics(
                {"loss": loss_value, "learning_rate": lr, "grad_norm": float(grad_norm)}, step=step
            )
            bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}")
            if bar.disable:  # no terminal (a log file, CI): progress as log lines instead
                elapsed = time.perf_counter() - start - eval_seconds
                log_progress(step, job.total_steps, loss_value, lr, elapsed)
            window_loss, window_steps = 0.0, 0
        if has_dev and (is_eval_step(step, t.eval_every, per_epoch) or step == job.total_steps):
            eval_start = time.perf_counter()
            metrics = {f"eval_{k}": v for k, v in evaluate(job, "dev", device, autocast).items()}
            eval_seconds += time.perf_counter() - eval_start
            job.tracker.log_metrics(metrics, step=step)
            final.update(metrics)
            log_evaluation(step, metrics)
    runtime = time.perf_counter() - start - eval_seconds  # the training loop only
    bar.close()
    final["train_runtime"] = runtime
    final["train_samples_per_second"] = samples / runtime if runtime > 0 else 0.0
    job.tracker.log_metrics(
        {"train_runtime": runtime, "train_samples_per_second": final["train_samples_per_second"]},
        step=job.total_steps,
    )
    if "test" in job.datasets:
        metrics = {f"test_{k}": v for k, v in evaluate(job, "test", device, autocast).items()}
        job.tracker.log_metrics(metrics, step=job.total_steps)
        final.update(metrics)
    return final
