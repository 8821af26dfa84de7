"""`expkit compare [SWEEP_OR_RUN_ID] [--plot PNG] [--uri URI]`: a sweep's table, from any store."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from expkit.errors import ExpkitError


def default_uri() -> str:
    """$MLFLOW_TRACKING_URI, else the default store of this directory (runs/mlflow.db)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    db = Path.cwd() / "runs" / "mlflow.db"
    if not db.is_file():
        raise ExpkitError(
            f"no MLflow store at {db}; run from the directory you launched expkit in, "
            "or pass --uri (e.g. --uri sqlite:///path/runs/mlflow.db or http://host:5000)"
        )
    return f"sqlite:///{db}"


def _latest_sweep(client: Any) -> Any:
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(
        experiments,
        filter_string="tags.`expkit.role` = 'sweep'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        raise ExpkitError("no sweep in this store yet (run one: expkit -m key=a,b)")
    return runs[0]


def find(client: Any, ident: str | None) -> tuple[Any, Any]:
    """(parent run or None, the run itself when `ident` names a single run)."""
    from mlflow.exceptions import MlflowException

    if ident is None:
        return _latest_sweep(client), None
    try:
        run = client.get_run(ident)
    except MlflowException:
        run = None
    if run is not None:
        if run.data.tags.get("expkit.role") == "sweep":
            return run, None
        parent_id = run.data.tags.get("mlflow.parentRunId")
        if parent_id:
            return client.get_run(parent_id), None
        return None, run
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(
        experiments, filter_string=f"tags.`expkit.sweep_id` = '{ident}'", max_results=5000
    )
    parents = [r for r in runs if r.data.tags.get("expkit.role") == "sweep"]
    if not parents:
        raise ExpkitError(f"no run and no sweep with the id {ident!r} in this store")
    return parents[0], None


def main(argv: list[str]) -> int:
    from expkit import summary
    from expkit.tracking import mlflow_client

    parser = argparse.ArgumentParser(
        prog="expkit compare",
        description="The summary table of a sweep (default: the latest), read from MLflow.",
    )
    parser.add_argument("id", nargs="?", help="a sweep id, the sweep's run id, or a child's run id")
    parser.add_argument("--plot", type=Path, help="also write the summary plot to this PNG")
    parser.add_argument("--uri", help="tracking URI (default: $MLFLOW_TRACKING_URI or ./runs)")
    parser.add_argument("--csv", type=Path, help="also write the table as CSV")
    args = parser.parse_args(argv)
    client = mlflow_client(args.uri or default_uri())
    parent, single = find(client, args.id)
    if parent is not None:
        sweep = summary.load(client, parent)
        tags = parent.data.tags
        print(
            f"sweep {tags.get('expkit.sweep_id', '')}  run {parent.info.run_id}  "
            f"{parent.info.status}  objective {sweep.objective} ({sweep.direction})"
        )
    else:
        sweep = summary.Sweep(None, [summary.row_of(single)], "eval_accuracy", "maximize")
    print(summary.text_table(sweep))
    if args.csv:
        args.csv.write_text(summary.csv_text(sweep), encoding="utf-8")
        print(f"table: {args.csv}")
    if args.plot:
        summary.plot(client, sweep, args.plot)
        print(f"plot: {args.plot}")
    return 0
