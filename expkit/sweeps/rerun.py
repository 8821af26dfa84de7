"""`expkit rerun RUN_ID [overrides...]`: a recorded run again, from what MLflow holds of it.

The new run is composed from the recorded config group options (tag `expkit.choices`) and every
value of the recorded resolved config (artifact `config.yaml`) as an override, so it reproduces the
run even if the YAML files changed since; the user's overrides come last. It is a new run, tagged
`expkit.rerun_of` with the source run's id.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from expkit.errors import ExpkitError
from expkit.overrides import format as format_override
from expkit.overrides import is_hydra, parse
from expkit.redact import REDACTED

PRESETS = ("experiment", "hparams_search")  # their values are in the resolved config already


def _leaves(node: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in node.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def overrides_for(
    resolved: dict[str, Any], choices: dict[str, str], new: list[str], name: str
) -> list[str]:
    """The command line that recomposes `resolved`, with `new` applied on top."""
    parsed = parse(new)
    changed = {o.key_or_group for o in parsed}
    groups = {g for g in changed if g in choices or g in PRESETS}
    args = [f"{g}={o}" for g, o in choices.items() if g not in groups and g not in PRESETS]
    for key, value in _leaves(resolved):
        if key.split(".", 1)[0] in (*PRESETS, "resume"):  # a rerun starts fresh
            continue
        if key.split(".", 1)[0] in groups:
            continue  # the user picked another option of this group: its own defaults apply
        if any(key == c or key.startswith(f"{c}.") for c in changed):
            continue
        if value == REDACTED:  # a secret was never recorded: the config's own value applies
            continue
        args.append(format_override(f"++{key}", value))
    if "tracking.run_name" not in changed:
        args.append(format_override("++tracking.run_name", name))
    return args + new


def prepare(argv: list[str]) -> tuple[list[str], str]:
    """Parse `rerun` arguments; return (the Hydra command line, the source run id)."""
    from expkit.tracking import open_store

    parser = argparse.ArgumentParser(
        prog="expkit rerun",
        description="Run a recorded run again (same config and seed), optionally changed.",
    )
    parser.add_argument("run_id", help="the MLflow run id to reproduce")
    parser.add_argument("overrides", nargs="*", help="changes, e.g. trainer.max_steps=500")
    parser.add_argument("--uri", help="tracking URI of the source run (default: ./runs/mlflow.db)")
    args = parser.parse_args(argv)
    from expkit.tracking import find_run

    client = open_store(args.uri)
    run = find_run(client, args.run_id)
    if run is None:
        raise ExpkitError(f"no run {args.run_id!r} in this store")
    choices_tag = run.data.tags.get("expkit.choices")
    if choices_tag is None:
        raise ExpkitError(f"run {args.run_id} has no expkit.choices tag: not an expkit run")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = client.download_artifacts(args.run_id, "config.yaml", tmp)
        except Exception as exc:
            raise ExpkitError(f"run {args.run_id} has no config.yaml artifact ({exc})") from None
        resolved = OmegaConf.to_container(OmegaConf.load(Path(local)), resolve=True)
    name = f"rerun of {run.info.run_name}"
    changes = [o for o in args.overrides if not is_hydra(o)]
    if changes:
        name += ": " + " ".join(changes)
    return overrides_for(resolved, json.loads(choices_tag), args.overrides, name), args.run_id
