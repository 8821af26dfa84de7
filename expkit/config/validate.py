"""Semantic checks on the composed config, all collected into one ConfigError before anything loads.

Types and unknown keys are already caught by the schemas during composition; this module checks
what a schema cannot: ranges, combinations, files that must exist, limits of the chosen model.
Nothing heavy is imported here: the model's limits come from its config.json.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import os
import re
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from expkit.errors import ConfigError, DataError

PRECISIONS = ("fp32", "bf16", "fp16")
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def looks_like_path(name: str) -> bool:
    """A model name that is meant as a local directory rather than a hub id."""
    return name.startswith(("/", "./", "../", "~", "<")) or Path(name).expanduser().exists()


def model_limits(model_cfg: DictConfig) -> dict[str, Any] | None:
    """The model's config.json fields (with `arch` overrides) for a local model, else None."""
    path = Path(str(model_cfg.name_or_path)).expanduser()
    config_file = path / "config.json"
    if not config_file.is_file():
        return None
    fields = json.loads(config_file.read_text(encoding="utf-8"))
    fields.update(OmegaConf.to_container(model_cfg.arch) or {})
    return fields


def _registered(kind: str) -> tuple[str, ...]:
    # The registries live in the builder modules, which import torch only inside their functions.
    if kind == "optimizer":
        from expkit.optim import OPTIMIZERS as reg
    elif kind == "scheduler":
        from expkit.optim import SCHEDULERS as reg
    elif kind == "freeze":
        from expkit.freeze import FREEZERS as reg
    elif kind == "adapter":
        from expkit.adapter import ADAPTERS as reg
    elif kind == "loss":
        from expkit.loss import LOSSES as reg
    elif kind == "backend":
        from expkit.backends import BACKENDS as reg
    elif kind == "task":
        from expkit.tasks import TASKS as reg
    else:
        from expkit.tracking import TRACKERS as reg
    return tuple(reg)


def _check_model(cfg: DictConfig, errors: list[str]) -> dict[str, Any] | None:
    m = cfg.model
    name = str(m.name_or_path)
    if m.init not in ("pretrained", "random"):
        errors.append(f"model.init={m.init!r} is not valid (valid: pretrained, random)")
    if looks_like_path(name):
        path = Path(name).expanduser()
        if not path.is_dir():
            errors.append(
                f"model directory '{name}' does not exist (model.name_or_path: a local model "
                "folder, a hub id, or model=minilm / model=tiny for the offline ones)"
            )
            return None
        if not (path / "config.json").is_file():
            errors.append(f"model directory '{name}' has no config.json (not a Hugging Face model)")
            return None
        limits = _read_limits(m, errors)
        if limits is None:
            return None
        if m.init == "pretrained":  # random weights need config.json alone
            from expkit.model import weights_problem

            problem = weights_problem(path)
            if problem:
                errors.append(problem)
    else:
        from expkit.hub import hub_reachable, model_is_cached, unreachable_model_message

        if not model_is_cached(name, m.cache_dir) and not hub_reachable():
            errors.append(unreachable_model_message(name))
            return None
        limits = None
    _check_tokenizer(m, errors)
    if m.dropout is not None and not 0.0 <= m.dropout < 1.0:
        errors.append(f"model.dropout={m.dropout} must be in [0, 1)")
    return limits


def _read_limits(m: DictConfig, errors: list[str]) -> dict[str, Any] | None:
    """model_limits, with a config.json that is not a JSON object named in one message."""
    config_file = Path(str(m.name_or_path)).expanduser() / "config.json"
    try:
        limits = model_limits(m)
    except json.JSONDecodeError as exc:
        errors.append(
            f"{config_file} is not valid JSON ({exc.msg}: line {exc.lineno} column {exc.colno})"
        )
        return None
    except (UnicodeDecodeError, AttributeError, TypeError):  # binary, or JSON but no object
        errors.append(f"{config_file} is not a JSON object of model config fields")
        return None
    return limits


def _check_tokenizer(m: DictConfig, errors: list[str]) -> None:
    """A local tokenizer directory holds tokenizer files (without them AutoTokenizer makes one
    of special tokens only, and every word becomes the unknown token)."""
    from expkit.model import TOKENIZER_FILES, has_tokenizer_files, tokenizer_source

    source, key = tokenizer_source(m)
    if not looks_like_path(source):
        return  # a hub id: loaded (and its failure reported) before the run opens
    path = Path(source).expanduser()
    what = "tokenizer directory" if key == "model.tokenizer" else "model directory"
    if not path.is_dir():
        if key == "model.tokenizer":  # the model's own directory is reported by _check_model
            errors.append(f"tokenizer directory '{source}' (model.tokenizer) does not exist")
        return
    if not has_tokenizer_files(path):
        errors.append(
            f"{what} '{source}' has no tokenizer files ({', '.join(TOKENIZER_FILES)} or a "
            "*.model); set model.tokenizer to a directory (or hub id) of the model's tokenizer"
        )


# numpy's legacy seeding (set_seed seeds it) takes exactly this range
_SEED_RANGE = (0, 2**32 - 1)


def _check_seed(cfg: DictConfig, errors: list[str]) -> None:
    low, high = _SEED_RANGE
    if not low <= cfg.seed <= high:
        errors.append(f"seed={cfg.seed} is out of range (valid: {low} to {high})")


def _check_data(cfg: DictConfig, limits: dict[str, Any] | None, errors: list[str]) -> None:
    d = cfg.data
    if OmegaConf.is_missing(d, "path") or (d.path is None and d.hub_id is None):
        errors.append(
            f"data.path is required for data={d.name} (a folder with train/dev/test files), "
            "e.g. data.path=../shared/data/sst2"
        )
    elif d.path is not None and not Path(str(d.path)).expanduser().is_dir():
        from expkit.tables import file_not_folder  # stdlib only: the check stays light

        errors.append(
            file_not_folder(str(d.path))
            or f"data directory '{d.path}' does not exist (data.path: a folder holding "
            "train/dev/test files in csv, tsv, jsonl or parquet)"
        )
    if len(d.text_fields) not in (1, 2):
        errors.append(
            f"data.text_fields={list(d.text_fields)} must name one column or two (a sentence pair)"
        )
    if d.max_length < 1:
        errors.append(f"data.max_length={d.max_length} must be at least 1")
    elif limits and d.max_length > int(limits.get("max_position_embeddings", d.max_length)):
        errors.append(
            f"data.max_length={d.max_length} is beyond the model's "
            f"{limits['max_position_embeddings']} positions (max_position_embeddings)"
        )
    for key in ("max_train_samples", "max_eval_samples"):
        value = d[key]
        if value is not None and value < 1:
            errors.append(f"data.{key}={value} must be positive (or null for all)")
    if d.label_names is not None and len(set(d.label_names)) != len(d.label_names):
        errors.append(f"data.label_names={list(d.label_names)} has duplicates")
    if not str(d.label_separator):
        errors.append("data.label_separator is empty (the text between label ids, e.g. ',')")
    _check_files(d, errors)


def _check_files(d: DictConfig, errors: list[str]) -> None:
    """The keys on which files to read and how; the named files exist (no data file is read)."""
    from expkit.tables import (  # stdlib only: the check stays light
        label_names_path,
        options_problems,
        read_label_names,
        resolve_split_files,
    )

    errors += options_problems(d)
    if d.label_names_file is not None and d.label_names is not None:
        errors.append(
            "set data.label_names or data.label_names_file, not both (data.label_names=null "
            "reads the names from the file)"
        )
    if OmegaConf.is_missing(d, "path"):
        return  # reported by _check_data
    if d.path is None:
        if d.files or d.label_names_file is not None or d.dev_fraction is not None:
            errors.append(
                "data.files, data.label_names_file and data.dev_fraction need data.path "
                "(local files)"
            )
        return
    if not Path(str(d.path)).expanduser().is_dir():
        return  # reported by _check_data
    names = label_names_path(d)
    if names is not None:
        try:
            read_label_names(names)
        except DataError as exc:
            errors.append(str(exc))
    try:
        files = resolve_split_files(d)
    except DataError as exc:
        if d.files:  # the files named here; a folder without a train file is reported on reading
            errors.append(str(exc))
        return
    if d.dev_fraction is not None and "dev" in files:
        errors.append(
            f"data.dev_fraction={d.dev_fraction} holds out a dev split from train, but there is "
            f"a dev file ({', '.join(map(str, files['dev']))}); set data.dev_fraction=null or "
            "drop the dev file"
        )


def _check_training(cfg: DictConfig, limits: dict[str, Any] | None, errors: list[str]) -> None:
    t, o, s, f, loss = cfg.trainer, cfg.optimizer, cfg.scheduler, cfg.freeze, cfg.loss
    if not o.lr > 0:
        errors.append(f"optimizer.lr={o.lr} must be positive")
    if o.head_lr is not None and not o.head_lr > 0:
        errors.append(f"optimizer.head_lr={o.head_lr} must be positive (or null)")
    if o.weight_decay < 0:
        errors.append(f"optimizer.weight_decay={o.weight_decay} must be >= 0")
    for key in ("batch_size", "eval_batch_size", "grad_accum_steps", "log_every"):
        if t[key] < 1:
            errors.append(f"trainer.{key}={t[key]} must be at least 1")
    if t.max_steps == 0 or t.max_steps < -1:
        errors.append(f"trainer.max_steps={t.max_steps} must be positive (or -1 to use epochs)")
    if t.max_steps == -1 and not t.epochs > 0:
        errors.append(f"trainer.epochs={t.epochs} must be positive when trainer.max_steps=-1")
    if t.eval_every < 0:
        errors.append(f"trainer.eval_every={t.eval_every} must be >= 0 (0: after each epoch)")
    if t.max_grad_norm is not None and not t.max_grad_norm > 0:
        errors.append(f"trainer.max_grad_norm={t.max_grad_norm} must be positive (or null)")
    if t.precision not in PRECISIONS:
        errors.append(
            f"trainer.precision={t.precision!r} is not valid (valid: {', '.join(PRECISIONS)})"
        )
    if not _DEVICE.match(str(t.device)):
        errors.append(
            f"trainer.device={t.device!r} is not valid (valid: auto, cpu, cuda, cuda:N, mps)"
        )
    if t.num_workers < 0:
        errors.append(f"trainer.num_workers={t.num_workers} must be >= 0")
    if t.save_every < 0:
        errors.append(f"trainer.save_every={t.save_every} must be >= 0 (0: only on SIGTERM/Ctrl-C)")
    if t.keep_checkpoints < 0:
        errors.append(f"trainer.keep_checkpoints={t.keep_checkpoints} must be >= 0 (0: keep all)")
    attention = cfg.model.attn_implementation
    if attention is not None and attention not in ATTENTION:
        errors.append(
            f"model.attn_implementation={attention!r} is not valid (valid: {', '.join(ATTENTION)}, "
            "or null for the model's default)"
        )
    elif attention == "flash_attention_2":
        # transformers would only find out once the run is open and the model loading
        if importlib.util.find_spec("flash_attn") is None:
            errors.append(
                "model.attn_implementation=flash_attention_2 needs the flash-attn package, which "
                "is not installed (pip install flash-attn on a CUDA machine; or use sdpa)"
            )
        elif str(t.device) in ("cpu", "mps"):
            errors.append(
                f"model.attn_implementation=flash_attention_2 needs a CUDA device, not "
                f"trainer.device={t.device} (use sdpa)"
            )
    if t.on_nan not in ON_NAN:
        errors.append(f"trainer.on_nan={t.on_nan!r} is not valid (valid: {', '.join(ON_NAN)})")
    if t.hf_args and t.backend != "hf":
        errors.append(
            f"trainer.hf_args ({', '.join(t.hf_args)}) only applies to trainer=hf, "
            f"not trainer={t.backend}"
        )
    if s.warmup_steps < 0:
        errors.append(f"scheduler.warmup_steps={s.warmup_steps} must be >= 0")
    if not 0.0 <= s.warmup_ratio < 1.0:
        errors.append(f"scheduler.warmup_ratio={s.warmup_ratio} must be in [0, 1)")
    if s.warmup_steps > 0 and s.warmup_ratio > 0:
        errors.append("set scheduler.warmup_steps or scheduler.warmup_ratio, not both")
    if f.name == "bottom_layers" and f.num_layers < 1:
        errors.append(f"freeze.num_layers={f.num_layers} must be at least 1 for bottom_layers")
    if not 0.0 <= loss.label_smoothing < 1.0:
        errors.append(f"loss.label_smoothing={loss.label_smoothing} must be in [0, 1)")
    if loss.class_weights is not None:
        if loss.name != "cross_entropy":
            errors.append("loss.class_weights needs loss=cross_entropy")
        if any(w <= 0 for w in loss.class_weights):
            errors.append(f"loss.class_weights={list(loss.class_weights)} must all be positive")
    if loss.label_smoothing > 0 and loss.name != "cross_entropy":
        errors.append("loss.label_smoothing needs loss=cross_entropy")
    if not loss.delta > 0:
        errors.append(f"loss.delta={loss.delta} must be positive")
    if loss.pos_weight is not None:
        weights = loss.pos_weight
        if loss.name != "bce":
            errors.append("loss.pos_weight needs loss=bce (task=multilabel)")
        elif weights != "auto" and not (
            OmegaConf.is_list(weights)
            and all(isinstance(w, (int, float)) and not isinstance(w, bool) and w > 0
                    for w in weights)
        ):  # fmt: skip
            errors.append(
                f"loss.pos_weight={weights!r} is not valid (valid: null, auto, or one positive "
                "weight per label, e.g. [1.0, 3.5, ...])"
            )


def _check_adapter(cfg: DictConfig, errors: list[str]) -> None:
    """The adapter's settings that need no model (check_adapter wraps the model's config)."""
    from expkit.adapter import BIASES

    a = cfg.adapter
    if a.name != "lora":
        return
    if a.r < 1:
        errors.append(f"adapter.r={a.r} must be at least 1 (the rank of LoRA's update; e.g. 8)")
    if not a.alpha > 0:
        errors.append(f"adapter.alpha={a.alpha} must be positive (e.g. 2 x adapter.r)")
    if not 0.0 <= a.dropout < 1.0:
        errors.append(f"adapter.dropout={a.dropout} must be in [0, 1)")
    if a.bias not in BIASES:
        errors.append(f"adapter.bias={a.bias!r} is not valid (valid: {', '.join(BIASES)})")
    if a.target_modules is not None and len(a.target_modules) == 0:
        errors.append(
            "adapter.target_modules=[] names no module (give names, or null for peft's default)"
        )
    if cfg.freeze.name != "none":
        errors.append(
            f"freeze={cfg.freeze.name} with adapter=lora: LoRA already freezes every base weight "
            "and trains its low-rank updates and the task head; use freeze=none (or adapter=none)"
        )
    if cfg.model.init == "random":
        errors.append(
            "adapter=lora with model.init=random: LoRA adapts pretrained weights, and random "
            "ones are saved nowhere to load the adapter onto; use model.init=pretrained (or "
            "adapter=none)"
        )


def _check_early_stopping(cfg: DictConfig, errors: list[str]) -> None:
    """The settings of early stopping and load_best that need no data (the dev split and the
    evaluation schedule are checked by check_early_stopping, once the data is read)."""
    from expkit.early_stopping import keeps_best, watched

    t = cfg.trainer
    e = t.early_stopping
    if e.patience < 0:
        errors.append(
            f"trainer.early_stopping.patience={e.patience} must be >= 0 (0: no early stopping)"
        )
    if e.min_delta < 0:
        errors.append(f"trainer.early_stopping.min_delta={e.min_delta} must be >= 0")
    if e.direction is not None and e.direction not in DIRECTIONS:
        errors.append(
            f"trainer.early_stopping.direction={e.direction!r} is not valid (valid: "
            f"{', '.join(DIRECTIONS)}, or null)"
        )
    if e.patience <= 0 and not keeps_best(cfg):
        return
    metric, _ = watched(cfg)
    given = (
        f"trainer.early_stopping.metric={metric}"
        if e.metric is not None
        else f"objective.metric={metric} (trainer.early_stopping.metric=null)"
    )
    names = _eval_metrics(cfg)
    if not metric.startswith("eval_"):
        errors.append(
            f"early stopping and load_best judge by a dev metric, and {given} is not one; set "
            "trainer.early_stopping.metric to an eval_* metric"
            + (f" (valid: {', '.join(names)})" if names else " (e.g. eval_loss)")
        )
    elif names and metric not in names:
        errors.append(
            f"{given} is not a metric of task={cfg.task.name} (valid: {', '.join(names)})"
        )


def _eval_metrics(cfg: DictConfig) -> list[str]:
    """The eval_* names the run's task reports (empty: the task does not say)."""
    from expkit.tasks import TASKS, task_class

    if cfg.task.name not in TASKS:
        return []  # reported by _check_names
    names = task_class(str(cfg.task.name)).metric_names
    return ["eval_loss", *(f"eval_{n}" for n in names)] if names else []


def check_early_stopping(
    cfg: DictConfig, total_steps: int, train_size: int, has_dev: bool, world_size: int = 1
) -> None:
    """Early stopping and load_best have a dev split to judge by, and early stopping more than
    one evaluation to compare, once the data fixes the splits and the number of steps."""
    from expkit.batching import steps_per_epoch
    from expkit.early_stopping import keeps_best

    t = cfg.trainer
    patience, keep = int(t.early_stopping.patience), keeps_best(cfg)
    if patience <= 0 and not keep:
        return
    setting = (
        f"trainer.early_stopping.patience={patience}" if patience > 0 else "trainer.load_best=true"
    )
    if not has_dev:
        raise ConfigError(
            f"{setting} judges by the dev split, and the data has none (add a dev file, set "
            "data.dev_fraction, or set trainer.early_stopping.patience=0 trainer.load_best=false)"
        )
    if patience <= 0:
        return
    per_epoch = steps_per_epoch(train_size, t.batch_size, t.grad_accum_steps, world_size)
    every = int(t.eval_every) or per_epoch
    evaluations = total_steps // every + (1 if total_steps % every else 0)
    if evaluations < 2:
        schedule = (
            f"trainer.eval_every={t.eval_every}"
            if t.eval_every
            else f"trainer.eval_every=0 (each epoch's end, every {per_epoch} steps)"
        )
        raise ConfigError(
            f"{setting} compares evaluations, and {schedule} evaluates only once in "
            f"{total_steps} steps (at step {total_steps}); set trainer.eval_every below "
            f"{total_steps}"
        )


def _check_task(cfg: DictConfig, errors: list[str]) -> None:
    """The task's own checks (expkit.tasks), once its name is known to be registered."""
    from expkit.tasks import TASKS, build_task

    if cfg.task.name in TASKS:
        errors += build_task(cfg).check(cfg)


def check_schedule(cfg: DictConfig, total_steps: int, train_size: int) -> None:
    """The warmup is shorter than training, once the data fixes the number of steps."""
    from expkit.optim import warmup_steps

    warmup = warmup_steps(cfg.scheduler, total_steps)
    if warmup < total_steps:
        return
    s, t = cfg.scheduler, cfg.trainer
    setting = (
        f"scheduler.warmup_steps={s.warmup_steps}"
        if s.warmup_steps > 0
        else f"scheduler.warmup_ratio={s.warmup_ratio}"
    )
    length = (
        f"trainer.max_steps={t.max_steps}"
        if t.max_steps > 0
        else f"trainer.epochs={t.epochs} over {train_size} examples, "
        f"batch {t.batch_size} x accumulation {t.grad_accum_steps}"
    )
    raise ConfigError(
        f"{setting} gives {warmup} warmup steps, not shorter than training "
        f"({total_steps} steps: {length})"
    )


def check_model_fits(cfg: DictConfig, config: Any) -> None:
    """What depends on the model's config (local or from the hub): the layers freeze counts."""
    f = cfg.freeze
    layers = getattr(config, "num_hidden_layers", None)
    if f.name == "bottom_layers" and layers is not None and f.num_layers > layers:
        raise ConfigError(
            f"freeze.num_layers={f.num_layers} is beyond the model's {layers} encoder layers"
        )


def _check_names(cfg: DictConfig, errors: list[str]) -> None:
    for kind, value in (
        ("task", cfg.task.name),
        ("optimizer", cfg.optimizer.name),
        ("scheduler", cfg.scheduler.name),
        ("freeze", cfg.freeze.name),
        ("adapter", cfg.adapter.name),
        ("loss", cfg.loss.name),
        ("backend", cfg.trainer.backend),
        ("tracking", cfg.tracking.backend),
    ):
        valid = _registered(kind)
        if value not in valid:
            errors.append(f"{kind} {value!r} is not registered (valid: {', '.join(valid)})")


DIRECTIONS = ("maximize", "minimize")
ON_NAN = ("stop", "skip")
ATTENTION = ("eager", "sdpa", "flash_attention_2", "flex_attention")
_METRIC = re.compile(r"^(eval|test|train)_\w+$")


def _objective_errors(cfg: DictConfig) -> list[str]:
    errors = []
    o = cfg.objective
    if not _METRIC.match(str(o.metric)):
        errors.append(
            f"objective.metric={o.metric!r} is not a final metric name (e.g. eval_accuracy, "
            "eval_f1, eval_loss, test_accuracy)"
        )
    if o.direction not in DIRECTIONS:
        errors.append(f"objective.direction={o.direction!r} is not valid (maximize, minimize)")
    errors += _resume_errors(cfg)
    return errors


def _resume_errors(cfg: DictConfig) -> list[str]:
    """`resume.checkpoint` is auto, null or an existing directory; allowed changes are keys."""
    errors = []
    r = cfg.resume
    where = r.checkpoint
    if where not in (None, "auto") and not Path(str(where)).expanduser().is_dir():
        errors.append(
            f"resume={where!r} is not valid (valid: auto, null, or a checkpoint directory such as "
            "<run dir>/checkpoints/step_200)"
        )
    from expkit.tracking import flatten  # the dotted keys MLflow's params get

    known = set(flatten(OmegaConf.to_container(cfg, resolve=False)))
    for key in r.allow_changes:
        if key not in known and not any(k.startswith(f"{key}.") for k in known):
            close = difflib.get_close_matches(str(key), sorted(known), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            errors.append(f"resume.allow_changes: {key!r} is not a config key{hint}")
    return errors


SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file
ALLOW_FILE_STORE = "MLFLOW_ALLOW_FILE_STORE"  # MLflow 3 opens its old file store only if set
SERVER_DATABASES = ("postgresql", "mysql", "mssql")  # MLflow's SQLAlchemy stores besides SQLite
# pip packages of the DB-API modules SQLAlchemy's dialects import, where the names differ
DRIVER_PACKAGES = {
    "psycopg": "psycopg[binary]",
    "psycopg2": "psycopg2-binary",
    "MySQLdb": "mysqlclient",
    "pymysql": "PyMySQL",
    "mysql": "mysql-connector-python",
}
# what a run leaves in its run dir (Hydra's .hydra/ and expkit.log come before any check)
RUN_RECORDS = (
    "mlflow_run.json", "metrics.json", "model", "checkpoints", "mlflow_unsent.json", "tensorboard",
)  # fmt: skip


def dir_problem(path: Path) -> str | None:
    """Why the folder `path` could not be created or written to, or None if it can."""
    existing = Path(path).expanduser().absolute()
    while not os.path.exists(existing):  # os.path: an unreadable parent is "not there" too
        existing = existing.parent
    if not os.path.isdir(existing):
        return f"{existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    # root passes os.access everywhere, yet a folder such as /proc takes no new entries
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".expkit-", dir=existing))
    except OSError as exc:
        return f"no folder can be created in {existing} ({exc.strerror})"
    return None


def run_records(run_dir: Path) -> list[str]:
    """The records of an earlier run in `run_dir` (a run would overwrite them)."""
    return [name for name in RUN_RECORDS if os.path.lexists(Path(run_dir) / name)]


def check_run_dir(run_dir: Path, resume: str | None) -> None:
    """A single run's dir, before Hydra creates it: writable, and not holding an earlier run's
    records unless this run resumes (auto or a checkpoint) there."""
    problem = dir_problem(run_dir)
    if problem is not None:
        raise ConfigError(
            f"hydra.run.dir={run_dir} cannot be written: {problem} (set hydra.run.dir to a folder "
            "you can write to)"
        )
    found = run_records(run_dir) if resume is None else []
    if found:
        raise ConfigError(
            f"the run dir {run_dir} already holds a run ({', '.join(found)}), which this run "
            "would overwrite: continue that run with resume=auto, or start this one in a fresh "
            "dir (another hydra.run.dir, or none for a new one)"
        )


def _check_sweep_dir(cfg: DictConfig, errors: list[str]) -> None:
    """A sweep's dir, before any job: writable, and without an earlier sweep's job runs unless
    this one resumes them (resume=auto)."""
    if "hydra" not in cfg:
        return
    sweep_dir = Path(str(cfg.hydra.runtime.cwd)) / str(cfg.hydra.sweep.dir)
    problem = dir_problem(sweep_dir)
    if problem is not None:
        errors.append(f"hydra.sweep.dir={cfg.hydra.sweep.dir} cannot be written: {problem}")
        return
    if cfg.resume.checkpoint is not None or not sweep_dir.is_dir():
        return
    jobs = sorted(p.name for p in sweep_dir.iterdir() if p.is_dir() and run_records(p))
    if jobs:
        errors.append(
            f"the sweep dir {sweep_dir} already holds the runs of a sweep (jobs {', '.join(jobs)})"
            ", which this sweep would overwrite: continue it with resume=auto, or start this one "
            "in a fresh dir (another hydra.sweep.dir, or none for a new one)"
        )


def _check_tracking(cfg: DictConfig, errors: list[str]) -> None:
    """The experiment name, and a store that can open: found without importing mlflow."""
    t = cfg.tracking
    if t.backend != "mlflow":
        return
    if t.get("register_best") and not cfg.trainer.save_model:
        errors.append(
            f"tracking.register_best={t.register_best} registers the best run's model, and "
            "trainer.save_model=false saves none (drop one of them)"
        )
    if not str(t.experiment).strip():
        errors.append(
            f"tracking.experiment={str(t.experiment)!r} is empty (name an MLflow experiment, "
            "e.g. tracking.experiment=expkit)"
        )
    from expkit.tracking import configured_store, default_store_path

    configured = configured_store(t.uri)
    if configured is not None:
        errors += _store_errors(*configured)
    else:
        db = default_store_path(Path.cwd())
        errors += _sqlite_errors(db, f"the default tracking store sqlite:///{db}", new_dir=True)


def _store_errors(uri: str, setting: str) -> list[str]:
    """What would keep the store at `uri` (given as `setting`) from opening, by its scheme."""
    from expkit.redact import redact_text

    shown = f"{setting}={redact_text(uri)}"
    scheme = urllib.parse.urlparse(uri).scheme.lower()
    if scheme in ("", "file") and uri != "databricks":
        return _file_store_errors(uri, shown)
    if scheme == "sqlite":
        from expkit.tracking import sqlite_database

        database = sqlite_database(uri) or ""
        return _sqlite_errors(Path(database), shown) if database not in ("", ":memory:") else []
    if scheme.partition("+")[0] in SERVER_DATABASES:
        return _driver_errors(uri, shown)
    return []  # http(s) is probed when the store opens; other schemes are MLflow plugins'


def _file_store_errors(uri: str, shown: str) -> list[str]:
    """A local folder or file: URI is MLflow's file store, which MLflow 3 refuses unless asked."""
    if os.environ.get(ALLOW_FILE_STORE, "").lower() in ("true", "1"):
        return []  # MLflow's own opt-in to its file store
    path = Path(urllib.parse.urlparse(uri).path if uri.startswith("file:") else uri).absolute()
    is_db = path.is_file() or path.suffix in (".db", ".sqlite", ".sqlite3")
    example = f"sqlite:///{path if is_db else path / 'mlflow.db'}"
    return [
        f"{shown} names a folder for MLflow's file store, which MLflow no longer opens by "
        f"default; use a SQLite store, e.g. tracking.uri={example} (or set "
        f"{ALLOW_FILE_STORE}=true for the file store)"
    ]


def _sqlite_errors(db: Path, shown: str, new_dir: bool = False) -> list[str]:
    """A SQLite file SQLite can open: a database or no file yet, in a writable folder (SQLite
    writes its journal beside it). `new_dir`: the folder is created if missing (the default
    store's runs/); a folder a user named must exist."""
    db = db.absolute()
    if os.path.isdir(db):
        return [f"{shown}: {db} is a folder, not a SQLite file (e.g. sqlite:///{db}/mlflow.db)"]
    if os.path.exists(db):
        try:
            with open(db, "rb") as f:
                head = f.read(len(SQLITE_HEADER))
        except OSError as exc:
            return [f"{shown}: {db} cannot be read ({exc.strerror})"]
        if head and head != SQLITE_HEADER:
            return [
                f"{shown}: {db} is not a SQLite database (valid: an MLflow SQLite file, or a new "
                "file name such as sqlite:///runs/mlflow.db)"
            ]
        if not os.access(db, os.W_OK):
            return [f"{shown}: {db} is not writable"]
    elif not new_dir and not os.path.isdir(db.parent):
        return [
            f"{shown}: the folder {db.parent} does not exist (SQLite creates the file, not its "
            "folder)"
        ]
    problem = dir_problem(db.parent)
    return [f"{shown} cannot be written: {problem}"] if problem else []


def _driver_errors(uri: str, shown: str) -> list[str]:
    """The database driver SQLAlchemy will import for `uri` (the dialect's default unless the
    URI names one: postgresql+psycopg2://...) is installed."""
    try:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError, NoSuchModuleError
    except ImportError:  # mlflow-skinny: no SQL store, and MLflow says so
        return []
    from expkit.redact import redact_text

    try:
        dialect = make_url(uri).get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError) as exc:
        return [f"{shown} is not a database URI SQLAlchemy can use ({redact_text(str(exc))})"]
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        module = (exc.name or dialect.driver).split(".")[0]
        package = DRIVER_PACKAGES.get(module, module)
        return [
            f"{shown} needs the {dialect.name} driver {dialect.driver!r}, which is not installed "
            f"(pip install '{package}'; or name an installed driver: {dialect.name}+DRIVER://...)"
        ]
    return []


def validate_objective(cfg: DictConfig) -> None:
    """The sweep-level keys, checked once when a multirun starts (before any job)."""
    errors = _objective_errors(cfg)
    _check_tracking(cfg, errors)
    _check_sweep_dir(cfg, errors)
    if errors:
        raise ConfigError("; ".join(errors))


def validate(cfg: DictConfig) -> None:
    """Raise one ConfigError naming every problem in `cfg` (semicolon-separated, one line)."""
    missing = [k for k in OmegaConf.missing_keys(cfg) if k != "data.path"]  # data: own message
    if missing:  # every later check would trip over them
        raise ConfigError(
            "; ".join(f"{k} is required (set it on the command line: {k}=...)" for k in missing)
        )
    errors: list[str] = []
    _check_names(cfg, errors)
    _check_seed(cfg, errors)
    limits = _check_model(cfg, errors)
    _check_data(cfg, limits, errors)
    _check_training(cfg, limits, errors)
    _check_adapter(cfg, errors)
    _check_task(cfg, errors)
    _check_early_stopping(cfg, errors)
    errors += _objective_errors(cfg)
    _check_tracking(cfg, errors)
    if errors:
        raise ConfigError("; ".join(errors))
