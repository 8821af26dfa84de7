"""`expkit replay FILE`: send what the tracking store did not take during a run.

The file is `<run dir>/mlflow_unsent.json`, written when the store failed and stayed down until
the run ended: metric values, tags, artifacts and the final status. Replaying writes them into
the same run (same run id), then renames the file to `*.replayed.json`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from expkit.errors import ExpkitError


def replay(path: Path, uri: str | None = None) -> str:
    """Write the file's records into its run; return a one-line summary."""
    from mlflow.entities import Metric, RunTag

    from expkit.tracking import MAX_METRICS_PER_BATCH, MAX_PARAMS_PER_BATCH, mlflow_client

    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ExpkitError(f"cannot read {path}: {exc}") from None
    client = mlflow_client(uri or record["tracking_uri"])
    run_id = record["run_id"]
    metrics = [Metric(k, float(v), int(t), int(s)) for k, v, t, s in record["metrics"]]
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
    if record.get("status"):
        client.set_terminated(run_id, record["status"])
    path.rename(path.with_name(path.stem + ".replayed.json"))
    return (
        f"replayed into run {run_id}: {len(metrics)} metric values, {len(tags)} tags, "
        f"{len(record['artifacts'])} artifacts"
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
