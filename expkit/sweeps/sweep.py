"""A sweep as one thing in MLflow: a parent run, one child run per job, a summary at the end.

`SweepCallback` (a Hydra callback, registered in conf/config.yaml) opens the parent run when a
multirun starts and hands its id to the jobs through the environment (inherited by the joblib
launcher's worker processes and by submitit's jobs), and a file in the sweep dir. Each job runs
through `run_job`, which tags its run as a child, records a job that fails (even before its run
could open) as a FAILED child, and returns the objective to the sweeper (NaN when it failed, so
an Optuna trial is marked failed and the sweep goes on). When the multirun ends, the callback
writes the summary table and plot on the parent, sets its status, and exits non-zero naming each
failed job.

This module is imported when Hydra starts; mlflow is imported only inside the functions.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import sys
import uuid
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from expkit import overrides
from expkit.errors import ExpkitError
from expkit.redact import redact_file, redact_override, redact_text

log = logging.getLogger(__name__)

PARENT_ENV = "EXPKIT_PARENT_RUN_ID"
SWEEP_ENV = "EXPKIT_SWEEP_ID"
SWEPT_ENV = "EXPKIT_SWEPT_KEYS"  # a JSON list: the keys that name each child run
SWEEP_FILE = "expkit_sweep.json"  # in the sweep dir: the parent run and its store


def _plain(items: list[str]) -> list[str]:
    """The overrides that define a job (not `resume.*`, which only says how to launch it)."""
    return [o for o in items if overrides.section(o) != "resume"]


def job_key(items: list[str]) -> str:
    """A job's identity within its sweep: its own overrides, order-insensitive."""
    return hashlib.sha1("\n".join(sorted(_plain(items))).encode()).hexdigest()[:16]


def sweep_key(config: DictConfig) -> str:
    """A sweep's identity: the command's overrides and the sweeper's search space."""
    task = _plain(list(config.hydra.overrides.task))
    space = OmegaConf.to_container(config.hydra.sweeper, resolve=False)
    text = json.dumps({"task": sorted(task), "sweeper": space}, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _tracking_uri(config: DictConfig) -> str | None:
    from expkit.tracking import store_uri

    if config.tracking.backend != "mlflow":
        return None
    return store_uri(config.tracking.uri, Path(config.hydra.runtime.cwd))


def swept_keys(config: DictConfig) -> list[str]:
    """The keys the sweep varies: comma lists, ranges and choices, and the sweeper's params."""
    parsed = overrides.parse(config.hydra.overrides.task)
    keys = [o.key_or_group for o in parsed if o.is_sweep_override()]
    params = config.hydra.sweeper.get("params") or {}
    return keys + [str(k) for k in params if str(k) not in keys]


def check_launches_jobs(config: DictConfig) -> None:
    """A sweep that would launch no job (an empty range, Optuna's `n_trials=0`) is an error."""
    from hydra.core.global_hydra import GlobalHydra

    sweeper = config.hydra.sweeper
    params = sweeper.get("params") or {}
    # the sweeper's params first, the command's overrides after: the command wins a shared key,
    # as in Hydra's BasicSweeper and the Optuna sweeper
    items = [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)
    hydra = GlobalHydra.instance()
    loader = hydra.config_loader() if hydra.is_initialized() else None  # glob() lists groups
    parsed = overrides.parse(items, config_loader=loader)
    last = {o.get_key_element(): (o, item) for o, item in zip(parsed, items, strict=True)}
    for override, item in last.values():
        if override.is_discrete_sweep() and not list(override.sweep_string_iterator()):
            raise ExpkitError(
                f"the sweep launches no job: {redact_override(item)} yields no value "
                "(a sweep needs at least one, e.g. a,b or range(1,5))"
            )
    trials = sweeper.get("n_trials")
    if isinstance(trials, int) and trials < 1:
        raise ExpkitError(
            f"the sweep launches no job: hydra.sweeper.n_trials={trials} (it must be at least 1)"
        )


def _search_space(config: DictConfig) -> dict[str, str]:
    """What the sweep varies: the sweeper's `params`, and the command's comma lists."""
    space: dict[str, str] = {}
    params = config.hydra.sweeper.get("params") or {}
    for key, value in params.items():
        space[f"search.{key}"] = str(value)  # search spaces, not values: nothing secret
    for item in map(redact_override, _plain(list(config.hydra.overrides.task))):
        space[f"overrides.{overrides.key(item)}"] = overrides.value_text(item) or ""
    return space


class SweepCallback(Callback):
    """Hydra callback: the parent run of a multirun, and the summary when it ends."""

    def __init__(self) -> None:
        self.parent_id: str | None = None
        self.uri: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            self._open_parent(config)
        except ExpkitError as exc:
            # Hydra turns a callback's exception into a warning and launches the jobs anyway:
            # stop here, before any job, with the one-line error
            sys.stderr.write(f"expkit: error: {exc}\n")
            raise SystemExit(2) from None
        except Exception as exc:  # the store failing: jobs without their parent run would
            # scatter the sweep over unrelated runs, so none is launched
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            where = redact_text(str(self.uri)) if self.uri else "the tracking store"
            sys.stderr.write(
                f"expkit: error: could not open the sweep's parent run in {where} "
                f"({type(exc).__name__}: {redact_text(first)}); no job was launched\n"
            )
            self.abort("FAILED")  # a parent created before the failure is not left RUNNING
            raise SystemExit(2) from None

    def _open_parent(self, config: DictConfig) -> None:
        from expkit.config.validate import validate_objective
        from expkit.tracking import bound_http_retries

        bound_http_retries()  # the jobs inherit them: launched here, or by SLURM's sbatch
        validate_objective(config)
        check_launches_jobs(config)
        self.uri = _tracking_uri(config)
        if self.uri is None:
            return
        from expkit.tracking import (
            check_server,
            clean_tags,
            ensure_experiment,
            log_params,
            mlflow_client,
        )

        check_server(self.uri)  # a server that is down: one line now, not one per job
        client = mlflow_client(self.uri)
        experiment_id = ensure_experiment(client, self.uri, str(config.tracking.experiment))
        key = sweep_key(config)
        sweep_dir = Path(config.hydra.runtime.cwd) / str(config.hydra.sweep.dir)
        parent = None
        if config.resume.checkpoint == "auto":
            parent = _previous_parent(client, experiment_id, key)
        if parent is not None:
            self.parent_id = parent.info.run_id
            sweep_id = parent.data.tags.get("expkit.sweep_id", self.parent_id)
            client.update_run(self.parent_id, status="RUNNING")
            log.info("resuming sweep %s (parent run %s)", sweep_id, self.parent_id)
        else:
            sweep_id = uuid.uuid4().hex[:12]
            task = " ".join(map(redact_override, _plain(list(config.hydra.overrides.task))))
            tags = {
                "expkit.role": "sweep",
                "expkit.sweep_id": sweep_id,
                "expkit.sweep_key": key,
                "expkit.sweep_dir": str(sweep_dir),
                "expkit.launcher": str(config.hydra.launcher.get("_target_", "")),
                "expkit.sweeper": str(config.hydra.sweeper.get("_target_", "")),
                "expkit.objective": str(config.objective.metric),
                "expkit.task": str(config.task.name),  # the table's columns follow the task
                "expkit.direction": str(config.objective.direction),
                "expkit.overrides": task,
                "mlflow.source.name": "expkit",
            }
            name = f"sweep {task}"[:240]
            run = client.create_run(experiment_id, run_name=name, tags=clean_tags(tags))
            self.parent_id = run.info.run_id
            params = {
                "objective.metric": config.objective.metric,
                "objective.direction": config.objective.direction,
                **_search_space(config),
            }
            log_params(client, self.parent_id, params)
        os.environ[PARENT_ENV] = self.parent_id
        os.environ[SWEEP_ENV] = sweep_id
        os.environ[SWEPT_ENV] = json.dumps(swept_keys(config))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        pointer = {"parent_run_id": self.parent_id, "sweep_id": sweep_id, "tracking_uri": self.uri}
        (sweep_dir / SWEEP_FILE).write_text(json.dumps(pointer, indent=2), encoding="utf-8")
        _ACTIVE.append(self)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self in _ACTIVE:
            _ACTIVE.remove(self)
        redact_file(Path(config.hydra.runtime.cwd) / str(config.hydra.sweep.dir) / "multirun.yaml")
        if self.parent_id is None or self.uri is None:
            return
        from expkit.sweeps.summary import finish_sweep

        failed, total = finish_sweep(
            self.uri, self.parent_id, register_as=config.tracking.get("register_best")
        )
        for name in (PARENT_ENV, SWEEP_ENV, SWEPT_ENV):
            os.environ.pop(name, None)
        if failed:
            # Hydra turns a callback's exception into a warning: exit here, non-zero, instead
            lines = [f"expkit: error: {len(failed)} of {total} jobs of the sweep failed:"]
            lines += [f"expkit: job #{job} ({name}) failed: {error}" for job, name, error in failed]
            sys.stderr.write("\n".join(lines) + "\n")
            raise SystemExit(1)

    def abort(self, status: str) -> None:
        """The multirun stopped early (Ctrl-C, a launcher error): never leave the parent RUNNING."""
        if self.parent_id is None or self.uri is None:
            return
        from expkit.tracking import mlflow_client

        try:
            mlflow_client(self.uri).set_terminated(self.parent_id, status)
        except Exception as exc:  # the original error matters more
            log.warning("could not mark sweep run %s %s: %s", self.parent_id, status, exc)


_ACTIVE: list[SweepCallback] = []


def abort_active(status: str) -> None:
    """Called by the CLI when a multirun ends by an exception: mark open parents `status`."""
    while _ACTIVE:
        _ACTIVE.pop().abort(status)


def _previous_parent(client: Any, experiment_id: str, key: str) -> Any:
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`expkit.sweep_key` = '{key}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None


def _finished_child(client: Any, parent_id: str, key: str) -> Any:
    parent = client.get_run(parent_id)
    runs = client.search_runs(
        [parent.info.experiment_id],
        filter_string=(
            f"tags.`mlflow.parentRunId` = '{parent_id}' and tags.`expkit.job_key` = '{key}' "
            "and attributes.status = 'FINISHED'"
        ),
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None


def run_job(
    cfg: DictConfig, run_dir: Path, launch_dir: Path, job_overrides: list[str], job_num: int
) -> float:
    """One job of a sweep: a child run; returns the objective (NaN if the job failed)."""
    from expkit.distributed import world
    from expkit.run import RunHandle, run, run_name

    metric = str(cfg.objective.metric)
    parent_id = os.environ.get(PARENT_ENV)
    main = world().is_main  # a job of several processes: rank 0 records it
    key = job_key(job_overrides)
    own = _plain(job_overrides)
    # messages show the values as the config holds them, not escaped for Hydra
    shown = " ".join(map(overrides.plain, own))
    if parent_id and cfg.resume.checkpoint == "auto" and cfg.tracking.backend == "mlflow":
        from expkit.tracking import mlflow_client, store_uri, write_run_pointer

        uri = store_uri(cfg.tracking.uri, launch_dir)
        done = _finished_child(mlflow_client(uri), parent_id, key)
        if done is not None:
            log.info("job #%d skipped: FINISHED before, in run %s", job_num, done.info.run_id)
            if main:
                print(f"job #{job_num} ({shown}): skipped, FINISHED in run {done.info.run_id}")
                write_run_pointer(run_dir, done.info.run_id, uri, skipped=True)
            return float(done.data.metrics.get(metric, math.nan))
    tags = {"expkit.job_num": str(job_num), "expkit.job_key": key}
    if parent_id:
        tags["mlflow.parentRunId"] = parent_id
        tags["expkit.sweep_id"] = os.environ.get(SWEEP_ENV, "")
    swept = set(json.loads(os.environ.get(SWEPT_ENV, "[]")))
    named = [o for o in own if overrides.key(o) in swept] or own
    if not cfg.tracking.run_name:  # the child's name: its values of the swept keys
        cfg.tracking.run_name = run_name(cfg, named)
    handle = RunHandle()
    try:
        metrics = run(cfg, run_dir, launch_dir, own, extra_tags=tags, handle=handle)
    except Exception as exc:  # recorded; the sweep goes on (Ctrl-C still stops it)
        error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, ExpkitError) else str(exc)
        log.error("job #%d failed: %s", job_num, error)
        print(f"job #{job_num} ({shown}): FAILED: {error}", file=sys.stderr)
        if main and handle.run_id is None and parent_id and cfg.tracking.backend == "mlflow":
            _record_failed_job(cfg, launch_dir, run_dir, run_name(cfg, named), tags, own, error)
        return math.nan
    value = metrics.get(metric)
    if value is None:
        log.warning("the objective %s is not among this job's metrics", metric)
        return math.nan
    return float(value)


def _record_failed_job(
    cfg: DictConfig,
    launch_dir: Path,
    run_dir: Path,
    name: str,
    tags: dict[str, str],
    items: list[str],
    error: str,
) -> None:
    """A job that failed before its run could open (a bad value in its overrides) still gets a
    child run, FAILED, with its overrides and error, so the sweep shows every job it launched."""
    from expkit.tracking import MLflowTracker, store_uri, write_run_pointer

    try:
        uri = store_uri(cfg.tracking.uri, launch_dir)
        tracker = MLflowTracker(uri, str(cfg.tracking.experiment))
        record = {
            "expkit.overrides": " ".join(map(redact_override, items)),
            "expkit.run_dir": str(run_dir),
            "expkit.error": redact_text(error),
        }
        tracker.start(redact_text(name), {**tags, **record})
        tracker.end("FAILED")
        write_run_pointer(run_dir, tracker.run_id, uri)
    except Exception as exc:  # the job's own error is what matters
        log.warning("could not record the failed job in MLflow: %s", exc)
