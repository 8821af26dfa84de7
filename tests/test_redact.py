"""Secrets never reach the store or the run dir's records."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from expkit.redact import REDACTED, redact_config, redact_override, redact_text, secret_key
from tests.conftest import run_cli


def test_credential_keys_are_told_from_ordinary_ones():
    secrets = ["hub_token", "HF_TOKEN", "trainer.hf_args.hub_token", "MLFLOW_TRACKING_PASSWORD",
               "aws_secret_access_key", "WANDB_API_KEY", "auth_token", "client_secret"]  # fmt: skip
    for key in secrets:
        assert secret_key(key), key
    for key in ("tokenizer", "TOKENIZERS_PARALLELISM", "max_length", "author", "PWD", "name"):
        assert not secret_key(key), key


def test_config_uris_overrides_and_environment_values_are_redacted(monkeypatch):
    monkeypatch.setenv("MY_API_KEY", "k-1234567890")
    cfg = {
        "model": {"tokenizer": "bert", "hub_token": "abc"},
        "tracking": {"uri": "http://bob:hunter2@host:5000"},
        "note": "key k-1234567890 inside",
        "list": ["k-1234567890", 3],
    }
    assert redact_config(cfg) == {
        "model": {"tokenizer": "bert", "hub_token": REDACTED},
        "tracking": {"uri": f"http://bob:{REDACTED}@host:5000"},
        "note": f"key {REDACTED} inside",
        "list": [REDACTED, 3],
    }
    assert redact_override("+model.hub_token=abc") == f"+model.hub_token={REDACTED}"
    assert redact_override("optimizer.lr=0.1") == "optimizer.lr=0.1"
    assert redact_text("a=1,hub_token=xyz,b=2") == f"a=1,hub_token={REDACTED},b=2"


def _leaks(root: Path, secrets: list[str]) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found += [f"{path}: {s}" for s in secrets if s.encode() in data]
    return found


SECRETS = ["PLANTEDCFGSECRET77", "hf_PLANTEDENVSECRET42"]


@pytest.mark.slow
def test_planted_secrets_reach_neither_the_store_nor_the_run_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_PLANTEDENVSECRET42")
    proc = run_cli(
        "model=tiny", "trainer=hf", "trainer.max_steps=2",
        "trainer.hf_args.hub_token=PLANTEDCFGSECRET77",
        "tracking.run_name=token hf_PLANTEDENVSECRET42", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _leaks(tmp_path, SECRETS) == []  # the SQLite store, artifacts, run dir, .hydra/
    assert os.environ["HF_TOKEN"] == "hf_PLANTEDENVSECRET42"  # the run itself was not changed
    sweep = run_cli(
        "-m", "model=tiny", "trainer.max_steps=2", "seed=1,2",
        "+model.hub_token=PLANTEDCFGSECRET77", cwd=tmp_path,
    )  # fmt: skip
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    assert _leaks(tmp_path, SECRETS) == []  # parent params and tags, multirun.yaml, children
    assert b"REDACTED" in (tmp_path / "runs" / "mlflow.db").read_bytes()
