"""Shared fixtures: configs composed once through Hydra's compose API, each test its own dirs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from expkit.cli import config_dir
from expkit.config.schema import register_configs

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def _classification() -> Any:
    from omegaconf import OmegaConf

    from expkit.tasks import task_class

    return task_class("classification")(
        OmegaConf.create({"name": "classification", "objective": "eval_accuracy"})
    )


CLASSIFICATION = _classification()  # the default task, for builder tests that read data

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.pop("MLFLOW_TRACKING_URI", None)  # the tests assert on the default store in their cwd


def compose_config(overrides: list[str] | None = None) -> DictConfig:
    """The run config as `expkit <overrides>` would compose it."""
    register_configs()
    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir())):
        return compose("config", overrides=overrides or [])


@pytest.fixture
def make_cfg() -> Callable[..., DictConfig]:
    """Compose with overrides; defaults to the tiny model on the demo data, no tracking."""

    def _make(*overrides: str) -> DictConfig:
        return compose_config(["model=tiny", "tracking=none", *overrides])

    return _make


WORDS = ["good", "bad", "fine", "awful", "great", "poor", "lovely", "dull", "bright", "grim"]


class Recorder:
    """A tracker that keeps the metrics in memory: (step, name, value)."""

    run_id = None

    def __init__(self) -> None:
        self.metrics: list[tuple[int, str, float]] = []

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.metrics += [(step, k, v) for k, v in metrics.items()]

    def try_flush(self) -> None:
        pass

    def set_tags(self, tags: dict[str, str]) -> None:
        pass

    def series(self, name: str) -> list[tuple[int, float]]:
        return [(s, v) for s, k, v in self.metrics if k == name]


def _sentiment_raw() -> Any:
    from expkit.data import RawData

    texts = [" ".join(WORDS[(i * 7 + j) % 10] for j in range(1 + i % 9)) for i in range(48)]
    labels = [i % 2 for i in range(48)]
    return RawData(
        {"train": [texts], "dev": [texts[:16]]}, {"train": labels, "dev": labels[:16]},
        ["neg", "pos"], {},
    )  # fmt: skip


@pytest.fixture
def make_job(make_cfg, tmp_path) -> Callable[..., Any]:
    """A TrainJob built in process by the shared builders (tiny model, 48 two-class sentences),
    seeded as expkit.run seeds it before training, with a Recorder as its tracker."""
    from transformers import set_seed

    from expkit.backends import TrainJob
    from expkit.data import tokenize
    from expkit.device import resolve_device
    from expkit.freeze import apply_freeze
    from expkit.model import build_model, build_tokenizer
    from expkit.optim import build_optimizer, build_scheduler
    from expkit.tasks import build_task

    def _make(total_steps: int, *overrides: str) -> tuple[Any, Recorder]:
        defaults = {"model.dropout": "0.0", "trainer.max_steps": str(total_steps)}
        given = {o.partition("=")[0] for o in overrides}
        first = [f"{k}={v}" for k, v in defaults.items() if k not in given]
        cfg = make_cfg(*first, "trainer.progress=false", *overrides)
        raw = _sentiment_raw()
        task = build_task(cfg)
        task.bind(raw)
        tok = build_tokenizer(cfg.model)
        splits = tokenize(raw, tok, task, cfg.data, tmp_path / "cache")
        set_seed(0)
        model = build_model(cfg.model, task.head_config(raw), task.model_class)
        apply_freeze(model, cfg.freeze)
        opt = build_optimizer(model, cfg.optimizer)
        recorder = Recorder()
        job = TrainJob(
            cfg=cfg, model=model, tokenizer=tok, datasets=splits, collator=task.collator(tok),
            optimizer=opt, scheduler=build_scheduler(opt, cfg.scheduler, total_steps),
            loss_fn=task.loss(cfg.loss, raw), task=task,
            total_steps=total_steps, tracker=recorder, run_dir=tmp_path / "run",
            device=resolve_device("cpu"),
        )  # fmt: skip
        set_seed(int(cfg.seed))  # as expkit.run does before handing the job to a backend
        return job, recorder

    return _make


def run_cli(*args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """The real `expkit` command in `cwd` (as a user runs it), output captured."""
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "expkit", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def two_processes_and_one(*args: str, cwd: Path) -> tuple[dict, dict]:
    """The metrics.json of the run `args` on two processes of batch 4 (torchrun, runs/two) and
    on one process of batch 8 (runs/one): the same global batch, to compare."""
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "expkit", *args, "trainer.batch_size=4", "hydra.run.dir=runs/two"],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    one = run_cli(*args, "trainer.batch_size=8", "hydra.run.dir=runs/one", cwd=cwd)
    assert one.returncode == 0, one.stderr[-3000:]
    return tuple(
        json.loads((cwd / "runs" / d / "metrics.json").read_text()) for d in ("two", "one")
    )


def sweep_runs(uri: str) -> tuple[Any, list, list]:
    """(client, parent runs, child runs) of the expkit experiment in the store at `uri`."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("expkit")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("expkit.role") == "sweep"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return client, parents, children


@pytest.fixture(scope="session")
def tiny_pretrained(tmp_path_factory) -> Path:
    """model=tiny's encoder with saved weights (seeded) and MiniLM's tokenizer: a pretrained
    base for what needs one (adapters: random weights are saved nowhere to adapt)."""
    import torch
    from transformers import AutoConfig, AutoTokenizer, BertModel

    cfg = compose_config(["model=tiny"])
    source = str(cfg.model.name_or_path)
    directory = tmp_path_factory.mktemp("tiny_pretrained")
    AutoTokenizer.from_pretrained(source).save_pretrained(str(directory))
    config = AutoConfig.from_pretrained(source, **dict(cfg.model.arch))
    torch.manual_seed(0)
    BertModel(config).save_pretrained(str(directory))
    return directory
