"""Shared fixtures: configs composed once through Hydra's compose API, each test its own dirs."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from expkit.cli import config_dir
from expkit.schema import register_configs

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

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
        cfg = compose_config(["model=tiny", "tracking=none", *overrides])
        with open_dict(cfg):
            pass
        return cfg

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
