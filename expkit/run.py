"""One run, top to bottom: validate, read data, open the tracker, build, train, save, close.

Everything a user can get wrong is checked before the tracking run opens, so bad input never
leaves a run behind; once it is open, the run ends FINISHED, FAILED or KILLED, never RUNNING.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from expkit.errors import Terminated

log = logging.getLogger(__name__)

_VERSIONED = ("expkit", "torch", "transformers", "datasets", "mlflow", "hydra-core", "omegaconf")


def plan_total_steps(num_train: int, trainer: DictConfig, world_size: int = 1) -> int:
    """Optimizer steps: trainer.max_steps, or `epochs` epochs of steps (as the Trainer counts)."""
    from expkit.batching import steps_per_epoch

    if trainer.max_steps > 0:
        return int(trainer.max_steps)
    per_epoch = steps_per_epoch(num_train, trainer.batch_size, trainer.grad_accum_steps, world_size)
    return max(1, math.ceil(trainer.epochs * per_epoch))


def run_name(cfg: DictConfig, overrides: list[str]) -> str:
    """A readable name from the overrides (`lr=3e-05 freeze=base_model`), else the data set.

    Values show as the config holds them: a sweep job's, escaped for Hydra's grammar, plain.
    """
    from expkit.overrides import is_hydra, key, value_text

    if cfg.tracking.run_name:
        return str(cfg.tracking.run_name)
    parts = []
    for item in overrides:
        value = value_text(item)
        if value is not None and not is_hydra(item) and key(item) not in ("data.path",):
            parts.append(f"{key(item).rsplit('.', 1)[-1]}={value}")
    return " ".join(parts)[:240] or str(cfg.data.name)


def _git_commit(directory: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def run_tags(
    cfg: DictConfig, overrides: list[str], launch_dir: Path, run_dir: Path
) -> dict[str, str]:
    tags = {
        "expkit.backend": str(cfg.trainer.backend),
        "expkit.overrides": " ".join(overrides),
        "expkit.run_dir": str(run_dir),
        "mlflow.source.name": "expkit",
    }
    for dist in _VERSIONED:
        with suppress(metadata.PackageNotFoundError):
            tags[f"versions.{dist}"] = metadata.version(dist)
    commit = _git_commit(launch_dir)
    if commit:
        tags["mlflow.source.git.commit"] = commit
    choices = _group_choices()
    if choices:  # which option of each config group: `expkit rerun` composes from them
        tags["expkit.choices"] = json.dumps(choices)
    if os.environ.get(RERUN_ENV):
        tags["expkit.rerun_of"] = os.environ[RERUN_ENV]
    return {**tags, **_process_tags()}


RERUN_ENV = "EXPKIT_RERUN_OF"  # set by `expkit rerun`: the run this one reproduces


def _group_choices() -> dict[str, str]:
    """The config group options this run was composed from (Hydra's runtime choices)."""
    from hydra.core.hydra_config import HydraConfig

    from expkit.config.schema import SCHEMAS

    if not HydraConfig.initialized():
        return {}
    choices = HydraConfig.get().runtime.choices
    groups = [*SCHEMAS, "experiment", "hparams_search"]
    return {g: str(choices[g]) for g in groups if g in choices and choices[g] is not None}


@contextmanager
def _sigterm_as_interrupt():
    """SIGTERM ends the run like Ctrl-C does (KILLED, not left RUNNING)."""

    def handler(signum: int, frame: Any) -> None:
        raise Terminated(signum)

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _absolute_paths(cfg: DictConfig, launch_dir: Path) -> None:
    """Relative local paths mean the launch dir (also after `hydra.job.chdir`); recorded absolute,
    so the params say exactly what ran (and a re-run finds it)."""
    from expkit.config.validate import looks_like_path

    def absolute(value: Any) -> str:
        return str((launch_dir / Path(str(value)).expanduser()).resolve())

    if not OmegaConf.is_missing(cfg.data, "path") and cfg.data.path is not None:
        cfg.data.path = absolute(cfg.data.path)
    for key in ("name_or_path", "tokenizer"):
        if OmegaConf.is_missing(cfg.model, key) or cfg.model[key] is None:
            continue
        name = str(cfg.model[key])
        if looks_like_path(name) or (launch_dir / name).exists():
            cfg.model[key] = absolute(name)
    if cfg.resume.checkpoint not in (None, "auto"):
        cfg.resume.checkpoint = absolute(cfg.resume.checkpoint)


def _log_run_log(tracker: Any, run_dir: Path) -> None:
    """Hydra's log of this run (expkit.log), as it stands, beside the other artifacts."""
    for handler in logging.getLogger().handlers:
        handler.flush()
    log_file = run_dir / "expkit.log"
    if log_file.is_file():
        with suppress(Exception):  # never let the log hide how the run ended
            tracker.log_artifact(log_file)


def _log_figures(task: Any, tracker: Any, run_dir: Path) -> None:
    """The task's pictures of its last evaluation: `run_dir/figures/`, logged under `figures/`.
    A picture that cannot be drawn or written is a warning: the run's results stand."""
    try:
        figures = task.figures()
        if not figures:
            return
        folder = run_dir / "figures"
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in figures.items():
            (folder / name).write_bytes(data)
    except Exception as exc:
        log.warning("figures not drawn (%s: %s); the run goes on", type(exc).__name__, exc)
        return
    for name in figures:  # these only: the folder may hold an earlier attempt's
        tracker.log_artifact(folder / name, "figures")


def _summary_table(metrics: dict[str, float]) -> str:
    width = max(len(k) for k in metrics)
    lines = [f"{'metric'.ljust(width)}  value", f"{'-' * width}  ----------"]
    lines += [f"{k.ljust(width)}  {v:.4f}" for k, v in metrics.items()]
    return "\n".join(lines)


def _resume_tags(resume: Any, changes: dict[str, tuple[Any, Any]]) -> dict[str, str]:
    tags = {
        "expkit.resumed_from": str(resume.path),
        "expkit.resumed_at_step": str(resume.step),
        **_process_tags(),
    }
    if changes:
        tags["expkit.resume_changes"] = "; ".join(
            f"{k}: {a} -> {b}" for k, (a, b) in changes.items()
        )
    return tags


def _process_tags() -> dict[str, str]:
    """Which process writes the run: a later run of the same dir can tell if it is gone."""
    import socket

    return {"expkit.pid": str(os.getpid()), "expkit.host": socket.gethostname()}


@dataclass
class RunHandle:
    """Filled in by `run` once its tracking run is open (a sweep job asks whether it was)."""

    run_id: str | None = None


def run(
    cfg: DictConfig,
    run_dir: Path,
    launch_dir: Path,
    overrides: list[str],
    extra_tags: dict[str, str] | None = None,
    handle: RunHandle | None = None,
) -> dict[str, float]:
    """Train one run from a composed config; return its final metrics."""
    from expkit.config.validate import (
        check_early_stopping,
        check_model_fits,
        check_schedule,
        validate,
    )
    from expkit.data import dataset_records, load_raw
    from expkit.distributed import check_device, world
    from expkit.redact import redact_config, redact_file, redact_override, redact_text
    from expkit.tasks import build_task
    from expkit.tracking import flatten, make_tracker, store_uri, write_run_pointer

    for record in ("config.yaml", "overrides.yaml", "hydra.yaml"):  # Hydra's own copies
        redact_file(run_dir / ".hydra" / record)
    recorded_overrides = [redact_override(o) for o in overrides]  # what we record, not run
    _absolute_paths(cfg, launch_dir)  # relative paths mean the launch dir, even after chdir
    validate(cfg)
    here = world()
    check_device(str(cfg.trainer.device), here)
    if cfg.tracking.backend == "mlflow":
        # absolute, and recorded in the params: one store whatever the cwd
        cfg.tracking.uri = store_uri(cfg.tracking.uri, launch_dir)
    resolved = redact_config(OmegaConf.to_container(cfg, resolve=True))
    from expkit.resume import check_changes, check_world, find_checkpoint

    resume = find_checkpoint(cfg, run_dir)
    changes = (
        check_changes(resume, flatten(resolved), list(cfg.resume.allow_changes)) if resume else {}
    )
    if resume is not None:
        check_world(resume, here.size)
    # started first: the store's set-up (in a child process) overlaps reading the data and
    # importing torch; closed again, with no run opened, if anything below is wrong.
    # Rank 0 alone tracks: one MLflow run whatever the number of processes.
    tracker = make_tracker(
        str(cfg.tracking.backend) if here.is_main else "none",
        cfg.tracking.uri,
        str(cfg.tracking.experiment),
    )
    try:
        task = build_task(cfg)
        raw = load_raw(cfg.data, task)
        for note in raw.notes:
            log.info(note)
        task.bind(raw)
        task.check_data(raw, cfg)
        total_steps = plan_total_steps(raw.size("train"), cfg.trainer, here.size)
        check_schedule(cfg, total_steps, raw.size("train"))
        check_early_stopping(cfg, total_steps, raw.size("train"), "dev" in raw.labels, here.size)

        # the heavy imports happen before the run opens: a RUNNING run is one that is training;
        # so does the tokenizer's load: one that fails, or a data.max_length it cannot truncate
        # to, is bad input
        from expkit.model import build_tokenizer, check_max_length, model_config

        tokenizer = build_tokenizer(cfg.model)
        check_max_length(tokenizer, cfg.data)
        config = model_config(cfg.model, task.head_config(raw), tokenizer.pad_token_id)
        check_model_fits(cfg, config)  # the model is built from this config in _train
        from expkit.adapter import check_adapter

        check_adapter(cfg.adapter, config, task.model_class, task.peft_task_type)

        from expkit.device import check_precision, resolve_device
        from expkit.distributed import device_for, setup

        device = device_for(resolve_device(str(cfg.trainer.device)), here)
        check_precision(str(cfg.trainer.precision), device)
        setup(str(cfg.trainer.device))  # joined already when the CLI launched the run
        from expkit.backends import check_backend

        check_backend(cfg, device)

        run_dir.mkdir(parents=True, exist_ok=True)
        if here.is_main:
            (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(resolved), encoding="utf-8")
            (run_dir / "overrides.yaml").write_text(
                OmegaConf.to_yaml(recorded_overrides), encoding="utf-8"
            )
    except BaseException:
        with suppress(Exception):
            tracker.end()
        raise

    tracker.open()  # the checks passed: the store may be opened now
    from expkit.tracking import UNSENT_FILE

    tracker.spill_path = run_dir / UNSENT_FILE  # what the store will not take is kept for replay
    if cfg.tracking.tensorboard:
        from expkit.tracking import TensorBoardSink

        tracker = TensorBoardSink(tracker, run_dir / "tensorboard")
    status = "FAILED"
    with _sigterm_as_interrupt():
        try:
            tags = run_tags(cfg, recorded_overrides, launch_dir, run_dir)
            tags = {**tags, **(extra_tags or {})}
            if resume is None:
                tracker.start(redact_text(run_name(cfg, recorded_overrides)), tags)
            else:  # the same run goes on (its params stay: MLflow keeps them immutable)
                tracker.resume(
                    resume.state.get("run_id"), _resume_tags(resume, changes), resume.step
                )
                log.info("resuming from %s (step %d)", resume.path, resume.step)
            if handle is not None:
                handle.run_id = tracker.run_id
            write_run_pointer(run_dir, tracker.run_id, cfg.tracking.uri)
            tracker.close_orphans(str(run_dir))
            if resume is None:  # a resumed run has its params and dataset inputs
                tracker.log_params(flatten(resolved))
                tracker.log_datasets(dataset_records(raw, cfg.data))
            if here.is_main:
                tracker.log_artifact(run_dir / "config.yaml")
                tracker.log_artifact(run_dir / "overrides.yaml")
            meta = {"run_id": tracker.run_id, "config": flatten(resolved), "world_size": here.size}
            metrics = _train(
                cfg, task, raw, tokenizer, total_steps, device, tracker, run_dir, launch_dir,
                resume, meta,
            )  # fmt: skip
            status = "FINISHED"
            return metrics
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        except Exception as exc:
            with suppress(Exception):  # the original error matters more than this tag
                tracker.set_tags({"expkit.error": redact_text(f"{type(exc).__name__}: {exc}")})
            raise
        finally:
            if here.is_main:
                _log_run_log(tracker, run_dir)
            tracker.end(status)


def _model_spec(cfg: DictConfig, task: Any, raw: Any, run_id: str | None) -> dict[str, Any]:
    """expkit.json of the saved model: what predicting with it needs, from this run."""
    from expkit.predictor import model_spec
    from expkit.redact import redact_config

    config = redact_config(OmegaConf.to_container(cfg, resolve=True))
    return model_spec(task, config, run_id, task.input_example(raw))


def _train(
    cfg: DictConfig,
    task: Any,
    raw: Any,
    tokenizer: Any,
    total_steps: int,
    device: Any,
    tracker: Any,
    run_dir: Path,
    launch_dir: Path,
    resume: Any = None,
    checkpoint_meta: dict[str, Any] | None = None,
) -> dict[str, float]:
    from transformers import set_seed

    from expkit.adapter import apply_adapter, save_trained
    from expkit.adapter import describe as describe_adapter
    from expkit.backends import TrainJob, get_backend
    from expkit.checkpoint import WriteFailed, load_best_weights, write_text_atomic
    from expkit.data import tokenize
    from expkit.distributed import world
    from expkit.early_stopping import EarlyStopping
    from expkit.freeze import apply_freeze
    from expkit.model import ModelNotSaved, build_model
    from expkit.optim import build_optimizer, build_scheduler
    from expkit.predictor import SPEC_FILE
    from expkit.stopping import GracefulStop

    set_seed(int(cfg.seed))
    splits = tokenize(raw, tokenizer, task, cfg.data, launch_dir / "runs" / ".cache" / "tokenized")
    model = build_model(cfg.model, task.head_config(raw), task.model_class, tokenizer.pad_token_id)
    model = apply_adapter(model, cfg.adapter, task.peft_task_type)
    counts = apply_freeze(model, cfg.freeze)
    optimizer = build_optimizer(model, cfg.optimizer)
    scheduler = build_scheduler(optimizer, cfg.scheduler, total_steps)
    t = cfg.trainer
    here = world()
    derived = {
        "task": task.name,
        **task.params(raw),
        "train_examples": raw.size("train"),
        "dev_examples": raw.size("dev"),
        "test_examples": raw.size("test"),
        "total_steps": total_steps,
        "effective_batch_size": t.batch_size * t.grad_accum_steps,  # per process
        "world_size": here.size,
        "global_batch_size": t.batch_size * t.grad_accum_steps * here.size,
        **counts,
        **describe_adapter(model),
    }
    if resume is None:  # a resumed run has them (a changed value is in expkit.resume_changes)
        tracker.log_params({f"derived.{k}": v for k, v in derived.items()})
    log.info(
        "%s%s, %s on %s: %d train / %d dev / %d test examples, %d labels; %d steps of %d (batch "
        "%d x accumulation %d x %d processes); %d of %d parameters trainable",
        cfg.model.name_or_path, " (random weights)" if cfg.model.init == "random" else "",
        task.name, cfg.data.name, raw.size("train"), raw.size("dev"),
        raw.size("test"), len(raw.label_names), total_steps, derived["global_batch_size"],
        t.batch_size, t.grad_accum_steps, here.size, counts["trainable_params"],
        counts["total_params"],
    )  # fmt: skip
    if resume is not None:  # what evaluation had chosen (a threshold) before the interruption
        task.load_state(resume.state.get("task_state") or {})
    early = EarlyStopping.from_config(cfg)
    if early is not None and resume is not None:  # the best so far, its weights, the counter
        early.load_state(resume.state.get("early_stopping") or {}, load_best_weights(resume.path))

    job = TrainJob(
        cfg=cfg,
        model=model,
        tokenizer=tokenizer,
        datasets=splits,
        collator=task.collator(tokenizer),
        optimizer=optimizer,
        scheduler=scheduler,
        loss_fn=task.loss(cfg.loss, raw),
        task=task,
        total_steps=total_steps,
        tracker=tracker,
        run_dir=run_dir,
        device=device,
        resume=resume,
        checkpoint_meta=checkpoint_meta or {},
        stop=GracefulStop(),
        world=here,
        early_stopping=early,
    )
    # the same RNG state at the first step whatever the backend (the Trainer seeds itself so too)
    set_seed(int(cfg.seed))
    metrics = get_backend(str(t.backend))(job)
    if not here.is_main:  # rank 0 writes the records
        return metrics

    print(_summary_table(metrics))  # before anything is written: shown even if that fails
    kept = [f"MLflow run {tracker.run_id}"] if tracker.run_id else []
    try:
        write_text_atomic(run_dir / "metrics.json", json.dumps(metrics, indent=2))
    except WriteFailed as exc:  # the metrics are in the store; the model is worth a try
        log.warning("metrics.json not written (%s); the metrics are in %s", exc.reason,
                    " and ".join(kept) or "the table above")  # fmt: skip
    else:
        tracker.log_artifact(run_dir / "metrics.json")
        kept.insert(0, str(run_dir / "metrics.json"))
    for name, text in task.report().items():  # per-label scores, chosen thresholds
        tracker.log_text(text, name)
    _log_figures(task, tracker, run_dir)
    if t.save_model:
        spec = _model_spec(cfg, task, raw, tracker.run_id)
        try:  # model/, and adapter/ for an adapter
            saved = save_trained(model, tokenizer, run_dir, {SPEC_FILE: json.dumps(spec, indent=2)})
        except ModelNotSaved as exc:
            where = " and ".join(kept) or "the table above"
            raise ModelNotSaved(f"{exc}; its metrics are kept in {where}") from exc.__cause__
        info = {k: spec[k] for k in ("task", "input_fields", "input_example")}
        tracker.log_model(saved["model"], info, total_steps)  # the MLflow Model: runs:/ID/model
        if "adapter" in saved:  # runs:/RUN_ID/adapter
            tracker.log_artifact(saved["adapter"], "adapter")
    print(f"run dir: {run_dir}" + (f"  (mlflow run {tracker.run_id})" if tracker.run_id else ""))
    return metrics
