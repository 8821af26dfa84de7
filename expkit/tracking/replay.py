"""`expkit replay FILE`: send what the tracking store did not take during a run.

The file is `<run dir>/mlflow_unsent.json`, written when the store failed and stayed down until
the run ended: metric values, tags, artifacts, dataset inputs and the final status. Replaying
writes them into the same run (same run id), then renames the file to `*.replayed.json`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from expkit.errors import ExpkitError
from expkit.tracking.mlflow_writer import UNSENT_FILE, dataset_inputs

VALID = (
    "give a run dir's mlflow_unsent.json, the file a run writes there when the tracking store "
    "did not take everything"
)
FIELDS = {"tracking_uri": str, "run_id": str, "metrics": list, "tags": dict, "artifacts": list}


def read_record(path: Path) -> dict[str, Any]:
    """The file's records, checked before anything is sent (a bad file is one line)."""
    if path.is_dir():
        raise ExpkitError(f"{path} is a directory; {VALID} (e.g. {path / UNSENT_FILE})")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ExpkitError(f"cannot read {path} ({exc.strerror or exc}); {VALID}") from None
    try:
        record = json.loads(text)
    except ValueError as exc:
        raise ExpkitError(f"{path} is not JSON ({exc}); {VALID}") from None
    if not isinstance(record, dict):
        raise ExpkitError(f"{path} holds a JSON {type(record).__name__}, not an object; {VALID}")
    for key, kind in FIELDS.items():
        if key not in record:
            raise ExpkitError(f"{path} has no {key!r} key; {VALID}")
        if not isinstance(record[key], kind):
            raise ExpkitError(
                f"{path}: {key!r} is a {type(record[key]).__name__}, not a {kind.__name__}; {VALID}"
            )
    rows = [("metrics", m, 4) for m in record["metrics"]] + [
        ("artifacts", a, 2) for a in record["artifacts"]
    ]
    for key, row, size in rows:
        if not isinstance(row, list) or len(row) != size:
            raise ExpkitError(f"{path}: an entry of {key!r} is {row!r}, not {size} values; {VALID}")
    for key in ("datasets", "models"):  # files of older runs have none
        if not isinstance(record.get(key, []), list):
            raise ExpkitError(f"{path}: {key!r} is not a list; {VALID}")
    for entry in record.get("models", []):
        if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[1], dict)):
            raise ExpkitError(f"{path}: an entry of 'models' is {entry!r}, not 3 values; {VALID}")
        if not Path(entry[0]).is_dir():
            raise ExpkitError(f"{path} names a model folder {entry[0]} that no longer exists")
    for local, _ in record["artifacts"]:  # one missing half-way would leave the run half-written
        if not Path(local).exists():
            raise ExpkitError(f"{path} names an artifact {local} that no longer exists")
    return record


def replay(path: Path, uri: str | None = None) -> str:
    """Write the file's records into its run; return a one-line summary."""
    from mlflow.entities import Metric, RunTag
    from mlflow.exceptions import MlflowException

    from expkit.tracking import open_store
    from expkit.tracking.models import log_model
    from expkit.tracking.names import MAX_METRICS_PER_BATCH, MAX_PARAMS_PER_BATCH

    record = read_record(path)
    try:
        metrics = [Metric(k, float(v), int(t), int(s)) for k, v, t, s in record["metrics"]]
    except (TypeError, ValueError) as exc:
        raise ExpkitError(f"{path}: a metric is not [name, value, time, step] ({exc})") from None
    datasets = record.get("datasets", [])
    try:
        inputs = dataset_inputs(datasets)
    except (KeyError, TypeError, ValueError, MlflowException) as exc:
        raise ExpkitError(f"{path}: a dataset input is not one expkit wrote ({exc})") from None
    origin = "--uri" if uri else f"the tracking_uri of {path}"
    client = open_store(uri or record["tracking_uri"], origin)
    run_id = record["run_id"]
    try:
        client.get_run(run_id)
    except MlflowException:
        raise ExpkitError(f"no run {run_id!r} in the store named by {origin}") from None
    for i in range(0, len(metrics), MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=metrics[i : i + MAX_METRICS_PER_BATCH])
    tags = [RunTag(k, v) for k, v in record["tags"].items()]
    for i in range(0, len(tags), MAX_PARAMS_PER_BATCH):
        client.log_batch(run_id, tags=tags[i : i + MAX_PARAMS_PER_BATCH])
    for local, artifact_path in record["artifacts"]:
        if Path(local).is_dir():
            client.log_artifacts(run_id, local, artifact_path)
        else:
            client.log_artifact(run_id, local, artifact_path)
    if inputs:
        client.log_inputs(run_id, datasets=inputs)
    models = record.get("models", [])
    experiment_id = client.get_run(run_id).info.experiment_id
    for local, info, step in models:
        log_model(client, run_id, experiment_id, Path(local), info, step)
    if record.get("status"):
        client.set_terminated(run_id, record["status"])
    path.rename(path.with_name(path.stem + ".replayed.json"))
    return (
        f"replayed into run {run_id}: {len(metrics)} metric values, {len(tags)} tags, "
        f"{len(record['artifacts'])} artifacts"
        + (f", {len(inputs)} dataset inputs" if inputs else "")
        + (f", {len(models)} models" if models else "")
        + (f", status {record['status']}" if record.get("status") else "")
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="expkit replay",
        description="Send what the tracking store did not take during a run (mlflow_unsent.json).",
    )
    parser.add_argument("file", type=Path, help="a run dir's mlflow_unsent.json")
    parser.add_argument("--uri", help="write to this store instead of the one the run used")
    args = parser.parse_args(argv)
    print(replay(args.file, args.uri))
    return 0
