"""A sweep's summary, read from the MLflow store: the table of its children and the plot.

Used at the end of every sweep (logged on the parent run) and by `expkit compare`, which reads
any store, so it works for sweeps run elsewhere.
"""

from __future__ import annotations

import csv
import io
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from expkit import overrides
from expkit.overrides import split as split_overrides

SHOWN = ("eval_accuracy", "eval_f1", "eval_loss", "test_accuracy", "test_f1", "train_runtime")


def shown_for(task: str | None) -> tuple[str, ...]:
    """The metrics a table shows for runs of `task` (its summary metrics on dev and test)."""
    from expkit.tasks import TASKS, task_class

    if task not in TASKS:
        return SHOWN  # runs recorded before tasks were a config group: classification
    names = task_class(task).summary
    return (*[f"eval_{m}" for m in names], "eval_loss", *[f"test_{m}" for m in names],
            "train_runtime")  # fmt: skip


@dataclass
class Row:
    """One child run of a sweep."""

    run_id: str
    job: int | None
    name: str
    status: str
    overrides: dict[str, str]
    metrics: dict[str, float]
    error: str = ""
    start_time: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def value(self, metric: str) -> float:
        return self.metrics.get(metric, math.nan)


@dataclass
class Sweep:
    parent: Any  # the parent mlflow Run, or None for a single run
    rows: list[Row]
    objective: str
    direction: str
    shown: tuple[str, ...] = SHOWN  # the metric columns besides the objective

    @property
    def swept(self) -> list[str]:
        """The override keys whose values differ between the children."""
        keys: list[str] = []
        for row in self.rows:
            keys += [k for k in row.overrides if k not in keys]
        return [k for k in keys if len({r.overrides.get(k) for r in self.rows}) > 1]


def _overrides(text: str) -> dict[str, str]:
    """A record's overrides as {key: the value as the config holds it}; `~key` has none."""
    out = {}
    for item in split_overrides(text):
        value = overrides.value_text(item)
        if value is not None:
            out[overrides.key(item)] = value
    return out


def row_of(run: Any) -> Row:
    tags = run.data.tags
    job = tags.get("expkit.job_num")
    return Row(
        run_id=run.info.run_id,
        job=int(job) if job is not None and job.isdigit() else None,
        name=run.info.run_name or run.info.run_id[:8],
        status=run.info.status,
        overrides=_overrides(tags.get("expkit.overrides", "")),
        metrics=dict(run.data.metrics),
        error=tags.get("expkit.error", ""),
        start_time=run.info.start_time or 0,
        extra={"job_key": tags.get("expkit.job_key")},
    )


def children(client: Any, parent: Any) -> list[Row]:
    """The parent's child runs, the newest per job when a job ran more than once (resume)."""
    runs = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
        max_results=5000,
    )
    rows = sorted((row_of(r) for r in runs), key=lambda r: r.start_time)
    newest: dict[str, Row] = {}
    for row in rows:
        newest[row.extra.get("job_key") or row.run_id] = row
    return list(newest.values())


def load(client: Any, parent: Any) -> Sweep:
    tags = parent.data.tags
    return Sweep(
        parent=parent,
        rows=children(client, parent),
        objective=tags.get("expkit.objective", "eval_accuracy"),
        direction=tags.get("expkit.direction", "maximize"),
        shown=shown_for(tags.get("expkit.task")),
    )


def ranked(sweep: Sweep) -> list[Row]:
    """Best first by the objective; runs without it (failed ones) last, by job number."""
    sign = -1.0 if sweep.direction == "maximize" else 1.0

    def key(row: Row) -> tuple:
        value = row.value(sweep.objective)
        ok = row.status == "FINISHED" and math.isfinite(value)
        return (0 if ok else 1, sign * value if ok else 0.0, row.job if row.job is not None else 0)

    return sorted(sweep.rows, key=key)


def _columns(sweep: Sweep) -> list[str]:
    metrics = [sweep.objective] + [m for m in sweep.shown if m != sweep.objective]
    return [m for m in metrics if any(m in r.metrics for r in sweep.rows)]


def records(sweep: Sweep) -> list[dict[str, Any]]:
    """The table as dicts: rank, job, run, status, each swept key, the metrics, the error."""
    swept, metrics = sweep.swept, _columns(sweep)
    out = []
    for rank, row in enumerate(ranked(sweep), start=1):
        record: dict[str, Any] = {"rank": rank, "job": row.job, "run_name": row.name}
        record["status"] = row.status
        record.update({k: row.overrides.get(k, "") for k in swept})
        record.update({m: row.metrics.get(m) for m in metrics})
        record["run_id"] = row.run_id
        record["error"] = row.error
        out.append(record)
    return out


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def text_table(sweep: Sweep) -> str:
    """The terminal table (the error column cut short; the CSV keeps it whole)."""
    rows = records(sweep)
    if not rows:
        return "(no runs)"
    headers = [h for h in rows[0] if h not in ("run_id", "run_name")]
    cells = [[_cell(r[h]) for h in headers] for r in rows]
    for line in cells:
        line[-1] = line[-1][:60]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in cells]
    return "\n".join(line.rstrip() for line in lines)


def csv_text(sweep: Sweep) -> str:
    rows = records(sweep)
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return buffer.getvalue()


def markdown(sweep: Sweep) -> str:
    rows = records(sweep)
    if not rows:
        return "(no runs)\n"
    headers = list(rows[0])
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for r in rows:
        cells = [_cell(r[h]).replace("|", "\\|").replace("\n", " ") for h in headers]
        lines.append("| " + " | ".join(cells) + " |")
    title = f"Objective: `{sweep.objective}` ({sweep.direction}); best first.\n\n"
    return title + "\n".join(lines) + "\n"


def _curve_metric(sweep: Sweep) -> str:
    name = sweep.objective
    if name.startswith("test_"):  # tests happen once; the dev curve of the same metric
        name = "eval_" + name[len("test_") :]
    return name


def plot(client: Any, sweep: Sweep, path: Path) -> Path:
    """The objective against each swept parameter, and every child's eval curve, in one PNG."""
    import matplotlib.pyplot as plt

    fig = figure(client, sweep)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _say(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="0.4")


def figure(client: Any, sweep: Sweep) -> Any:
    """The summary plot's matplotlib figure (`plot` saves it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    swept = sweep.swept or ["job"]
    panels = len(swept) + 1
    cols = min(panels, 3)
    rows_n = math.ceil(panels / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(5 * cols, 3.8 * rows_n), squeeze=False)
    flat = list(axes.flat)
    done = [r for r in sweep.rows if r.status == "FINISHED" and sweep.objective in r.metrics]
    for ax, key in zip(flat, swept, strict=False):
        raw = [r.overrides.get(key, str(r.job)) if key != "job" else str(r.job) for r in done]
        ys = [r.value(sweep.objective) for r in done]
        numbers = _as_numbers(raw)
        if numbers is not None:
            ax.scatter(numbers, ys)
            positive = [x for x in numbers if x > 0]
            if len(positive) == len(numbers) and positive and max(positive) / min(positive) >= 5:
                ax.set_xscale("log")
            distinct = sorted(set(numbers))
            if len(distinct) <= 8:  # label the values tried, nothing else
                ax.minorticks_off()
                ax.set_xticks(distinct, [f"{v:g}" for v in distinct])
        else:
            labels = sorted(set(raw))
            ax.scatter([labels.index(v) for v in raw], ys)
            ax.set_xticks(range(len(labels)), labels, rotation=20)
        if not done:
            _say(ax, f"no job finished: no {sweep.objective} to plot")
        ax.set_xlabel(key)
        ax.set_ylabel(sweep.objective)
        ax.grid(alpha=0.3)
    curve = flat[len(swept)]
    metric = _curve_metric(sweep)
    for row in ranked(sweep):
        history = client.get_metric_history(row.run_id, metric)
        if history:
            points = sorted((m.step, m.value) for m in history)
            curve.plot(*zip(*points, strict=True), marker="o", markersize=3, label=row.name[:40])
    curve.set_xlabel("step")
    curve.set_ylabel(metric)
    curve.set_title(f"{metric} of every run")
    curve.grid(alpha=0.3)
    labelled, _ = curve.get_legend_handles_labels()
    if not labelled:  # a legend of nothing is a matplotlib warning, and says nothing
        _say(curve, f"no run recorded {metric}")
    elif len(sweep.rows) <= 12:
        curve.legend(fontsize=7)
    for ax in flat[panels:]:
        ax.axis("off")
    title = "runs"
    if sweep.parent is not None:
        title = f"sweep {sweep.parent.data.tags.get('expkit.sweep_id', '')}"
    outcome = f"{len(done)} finished" if done else "no job finished"
    fig.suptitle(
        f"{title}: {len(sweep.rows)} runs over {', '.join(sweep.swept) or 'one setting'}, "
        f"{outcome}; objective {sweep.objective} ({sweep.direction})",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def _as_numbers(values: list[str]) -> list[float] | None:
    try:
        return [float(v) for v in values]
    except ValueError:
        return None


def finish_sweep(
    uri: str, parent_id: str, register_as: str | None = None
) -> tuple[list[tuple], int]:
    """At the end of a sweep: table printed and logged on the parent (CSV, markdown, PNG),
    best child's params on the parent, parent status; returns the failed jobs and the count."""
    from expkit.tracking import clean_tags, log_params, mlflow_client

    client = mlflow_client(uri)
    parent = client.get_run(parent_id)
    sweep = load(client, parent)
    print(f"\nsweep {parent.data.tags.get('expkit.sweep_id', '')} (mlflow run {parent_id}):")
    print(text_table(sweep))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "summary.csv").write_text(csv_text(sweep), encoding="utf-8")
        (folder / "summary.md").write_text(markdown(sweep), encoding="utf-8")
        if sweep.rows:
            plot(client, sweep, folder / "summary.png")
        for file in sorted(folder.iterdir()):
            client.log_artifact(parent_id, str(file))
    best = ranked(sweep)[0] if sweep.rows else None
    tags = {"expkit.children": str(len(sweep.rows))}
    if best is not None and best.status == "FINISHED" and sweep.objective in best.metrics:
        value = best.value(sweep.objective)
        tags.update({"expkit.best_run_id": best.run_id, "expkit.best_run_name": best.name})
        params = {f"best.{k}": v for k, v in best.overrides.items()}
        fresh = {k: v for k, v in params.items() if k not in parent.data.params}
        if fresh:  # a resumed sweep may have logged them already (params cannot change)
            log_params(client, parent_id, fresh)
        client.log_metric(parent_id, f"best_{sweep.objective}", value)
        if register_as:
            try:
                _register(client, best, str(register_as), sweep, value)
            except Exception as exc:  # the sweep is done: its parent still gets its status
                print(f"not registered as {register_as}: {type(exc).__name__}: {exc}")
                tags["expkit.register_error"] = f"{type(exc).__name__}: {exc}"[:5000]
    for key, value in clean_tags(tags).items():
        client.set_tag(parent_id, key, value)
    failed = [(r.job, r.name, r.error or r.status) for r in sweep.rows if r.status != "FINISHED"]
    client.set_terminated(parent_id, "FAILED" if failed else "FINISHED")
    print(f"summary logged on the sweep's run {parent_id} (summary.csv, summary.md, summary.png)")
    return sorted(failed, key=lambda f: (f[0] is None, f[0] or 0)), len(sweep.rows)


def _register(client: Any, best: Row, name: str, sweep: Sweep, value: float) -> None:
    """The best child's model in the Model Registry, the objective in its description."""
    from expkit.tracking import ensure_registered_model
    from expkit.tracking.models import run_model_id

    ensure_registered_model(client, name)
    description = (
        f"best of sweep {sweep.parent.data.tags.get('expkit.sweep_id', '')}: "
        f"{sweep.objective}={value:.4f} ({sweep.direction}); run {best.name}"
    )
    model_id = run_model_id(client, best.run_id)
    if model_id is None:
        print(f"not registered: the best run {best.name} logged no model (trainer.save_model)")
        return
    # the LoggedModel's own artifact location: a models:/ source would be looked up in the
    # default store, not this one
    source = client.get_logged_model(model_id).artifact_location
    version = client.create_model_version(
        name, source=source, run_id=best.run_id, description=description, model_id=model_id
    )
    print(f"registered the best model as {name} version {version.version} ({description})")
