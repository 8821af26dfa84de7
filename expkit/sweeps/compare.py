"""`expkit compare [SWEEP_OR_RUN_ID] [--plot PNG] [--uri URI]`: a sweep's table, from any store."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from expkit.errors import ExpkitError
from expkit.tracking import open_store


def _output(path: Path | None, flag: str, example: str) -> None:
    """An output file named on the command line must not be a directory."""
    if path is not None and path.is_dir():
        raise ExpkitError(f"{flag} {path} is a directory; give a file: {flag} {path / example}")


def _write(path: Path, write: Any) -> None:
    """`write(path)`, its folder made first; a file that cannot be written is one line."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(path)
    except OSError as exc:
        raise ExpkitError(f"cannot write {path}: {exc.strerror or exc}") from None


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
    from expkit.tracking import find_run

    if ident is None:
        return _latest_sweep(client), None
    run = find_run(client, ident)
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
    from expkit.sweeps import summary

    parser = argparse.ArgumentParser(
        prog="expkit compare",
        description="The summary table of a sweep (default: the latest), read from MLflow.",
    )
    parser.add_argument("id", nargs="?", help="a sweep id, the sweep's run id, or a child's run id")
    parser.add_argument("--plot", type=Path, help="also write the summary plot to this PNG")
    parser.add_argument("--uri", help="tracking URI (default: $MLFLOW_TRACKING_URI or ./runs)")
    parser.add_argument("--csv", type=Path, help="also write the table as CSV")
    args = parser.parse_args(argv)
    _output(args.csv, "--csv", "summary.csv")
    _output(args.plot, "--plot", "summary.png")
    client = open_store(args.uri)
    parent, single = find(client, args.id)
    if parent is not None:
        sweep = summary.load(client, parent)
        tags = parent.data.tags
        print(
            f"sweep {tags.get('expkit.sweep_id', '')}  run {parent.info.run_id}  "
            f"{parent.info.status}  objective {sweep.objective} ({sweep.direction})"
        )
    else:
        params = single.data.params  # a single run: its own objective and task, as recorded
        objective = params.get("objective.metric", "eval_accuracy")
        direction = params.get("objective.direction", "maximize")
        shown = summary.shown_for(params.get("task.name"))
        sweep = summary.Sweep(None, [summary.row_of(single)], objective, direction, shown)
    print(summary.text_table(sweep))
    if args.csv:
        text = summary.csv_text(sweep)
        _write(args.csv, lambda path: path.write_text(text, encoding="utf-8"))
        print(f"table: {args.csv}")
    if args.plot:
        _write(args.plot, lambda path: summary.plot(client, sweep, path))
        print(f"plot: {args.plot}")
    return 0
