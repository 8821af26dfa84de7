"""The `expkit` command: a Hydra app that composes the run config and hands it to expkit.run
(one run) or expkit.sweeps.sweep (a job of a multirun, which runs through expkit.run in turn).

Only hydra and omegaconf are imported here, so `--help`, `--cfg job` and config errors answer at
once; torch, transformers, datasets and mlflow are imported by the code that needs them.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

from expkit.config.schema import register_configs
from expkit.distributed import world
from expkit.errors import ExpkitError


def config_dir() -> Path:
    """The config tree: inside the package in a wheel, ./conf beside it in an editable install."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise RuntimeError(f"expkit's config tree is missing (looked in {here / 'conf'})")


def _task(cfg: Any) -> float | None:
    """The Hydra task: one run, or one job of a sweep; run dir, launch dir and overrides come
    from Hydra's runtime config. Returns the objective, for a sweeper."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from expkit.distributed import join_submitit_tasks, quiet_other_ranks

    join_submitit_tasks()
    here = world()
    quiet_other_ranks(here, bool(cfg.trainer.log_all_ranks))
    hc = HydraConfig.get()
    run_dir, launch_dir = Path(hc.runtime.output_dir), Path(hc.runtime.cwd)
    overrides = list(hc.overrides.task)
    if hc.mode == RunMode.MULTIRUN:
        from expkit.sweeps.sweep import run_job

        return run_job(cfg, run_dir, launch_dir, overrides, int(hc.job.num))
    from expkit.run import run

    try:
        metrics = run(cfg, run_dir=run_dir, launch_dir=launch_dir, overrides=overrides)
    except KeyboardInterrupt:
        if here.is_main:
            _say_how_to_resume(run_dir, overrides)
        raise
    except ExpkitError as exc:
        # one line, before Hydra adds its own "Error executing job" banner around it
        if here.is_main:
            sys.stderr.write(f"expkit: error: {exc}\n")
        raise SystemExit(2) from None
    value = metrics.get(str(cfg.objective.metric))
    return None if value is None else float(value)


def _say_how_to_resume(run_dir: Path, overrides: list[str]) -> None:
    """After Ctrl-C: the newest checkpoint, and the command that continues from it."""
    from contextlib import suppress

    from expkit.checkpoint import latest
    from expkit.resume import resume_command

    with suppress(Exception):  # never hide the interruption itself
        found = latest(run_dir)
        if found is not None:
            sys.stderr.write(
                f"expkit: checkpoint at step {found.step} in {found.path}; continue with:\n"
                f"  {resume_command(overrides, run_dir)}\n"
            )


def _one_line(exc: BaseException) -> str:
    """Hydra's and OmegaConf's multi-line messages, folded into one line a person can read."""
    from hydra.errors import MissingConfigException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

    if isinstance(exc, MissingConfigException) and exc.options is not None:
        missing = exc.missing_cfg_file or "?/?"
        group, _, wanted = missing.rpartition("/")
        valid = ", ".join(o for o in exc.options if not o.startswith("schema_"))
        return f"unknown option '{wanted}' for config group '{group}' (valid: {valid})"
    cause = exc.__cause__
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError)) and cause.full_key:
        valid = _valid_keys(cause.object_type)
        hint = f" (valid keys: {', '.join(valid)})" if valid else ""
        return f"unknown config key '{cause.full_key}'{hint}"
    if isinstance(cause, ValidationError) and cause.full_key:
        return f"invalid value for '{cause.full_key}': {str(cause).splitlines()[0]}"
    parts = [str(exc)]
    cause = exc.__cause__
    if cause is not None and str(cause) not in parts[0]:
        parts.append(str(cause))
    lines = []
    for part in parts:
        for line in part.splitlines():
            line = line.strip()
            # OmegaConf's debugging detail (types, object ids) says nothing to a user
            if not line or line.startswith(("reference_type", "object_type", "full_key")):
                continue
            if line.startswith(("Config search path", "provider=", "Set the environment")):
                break
            lines.append(line)
    return " ".join(lines)


def _valid_keys(schema: Any) -> list[str]:
    import dataclasses

    if isinstance(schema, type) and dataclasses.is_dataclass(schema):
        return [f.name for f in dataclasses.fields(schema)]
    return []


def _install_error_reporter() -> None:
    """Print user errors as one line and exit 2; everything else keeps Hydra's own reporting.

    A multirun that stops early (Ctrl-C, an error) marks its open parent run KILLED or FAILED.
    """
    import hydra._internal.utils as hydra_utils
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    original = hydra_utils.run_and_report
    if getattr(original, "_expkit", False):
        return
    _redact_job_banner()

    def run_and_report(func: Any) -> Any:
        try:
            return func()
        except BaseException as exc:
            from expkit.sweeps.sweep import abort_active

            abort_active("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
            # every process of a launch meets the same bad input: one of them says so
            say = world().is_main
            if isinstance(exc, ExpkitError):
                if say:
                    sys.stderr.write(f"expkit: error: {exc}\n")
                sys.exit(2)
            if isinstance(exc, (HydraException, OmegaConfBaseException)):
                if say:
                    sys.stderr.write(f"expkit: config error: {_one_line(exc)}\n")
                sys.exit(2)
            if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit
                raise

            error = exc  # Hydra's own report of anything else (traceback, HYDRA_FULL_ERROR)

            def reraise() -> Any:
                raise error

            return _redacted_stderr(lambda: original(reraise))

    run_and_report._expkit = True  # type: ignore[attr-defined]
    hydra_utils.run_and_report = run_and_report


def _redact_job_banner() -> None:
    """Hydra's `Error executing job with overrides: [...]` line, with the overrides' secrets
    redacted: Hydra writes it itself, as a failed job's exception is re-raised."""
    from hydra.core.utils import JobReturn, JobStatus

    from expkit.redact import redact_override

    plain = JobReturn.return_value

    def return_value(self: JobReturn) -> Any:
        if self.status != JobStatus.FAILED:
            return plain.fget(self)
        shown = [redact_override(str(o)) for o in self.overrides or []]
        sys.stderr.write(f"Error executing job with overrides: {shown}{os.linesep}")
        raise self._return_value

    JobReturn.return_value = property(return_value, plain.fset)  # type: ignore[method-assign]


def _redacted_stderr(report: Any) -> Any:
    """Run `report` (Hydra's traceback printer), writing what it prints redacted: an
    exception's message may quote a URI with its password."""
    import io
    from contextlib import redirect_stderr

    from expkit.redact import redact_text

    printed = io.StringIO()
    try:
        with redirect_stderr(printed):
            return report()
    finally:
        sys.stderr.write(redact_text(printed.getvalue()))


def _subcommand(argv: list[str]) -> None:
    """`expkit compare|replay ...`, and `expkit rerun ...` (which goes on into the Hydra app)."""
    try:
        if argv[0] == "compare":
            from expkit.sweeps.compare import main as compare

            sys.exit(compare(argv[1:]))
        if argv[0] == "replay":
            from expkit.tracking.replay import main as replay

            sys.exit(replay(argv[1:]))
        from expkit.sweeps.rerun import prepare

        args, source = prepare(argv[1:])
    except ExpkitError as exc:
        sys.stderr.write(f"expkit {argv[0]}: error: {exc}\n")
        sys.exit(2)
    from expkit.run import RERUN_ENV

    os.environ[RERUN_ENV] = source
    sys.argv = [sys.argv[0], *args]


def _compose(overrides: list[str], hydra_config: bool = False) -> Any:
    """The config, composed once through Hydra's compose API (no run dir, no logging)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir())):
        return compose("config", overrides=overrides, return_hydra_config=hydra_config)


def _help(overrides: list[str]) -> None:
    """`expkit [overrides] --help`: Hydra's help layout, rendered directly.

    Hydra's own `--help` copies the whole config repository once per option of every group, the
    sweeper and launcher plugins' included: 0.9 s. This composes the job config once.
    """
    from omegaconf import OmegaConf

    cfg = _compose(overrides)
    texts = OmegaConf.load(config_dir() / "config.yaml").hydra.help
    groups = []
    for folder in sorted(p for p in config_dir().rglob("*") if p.is_dir()):
        options = sorted(f.stem for f in folder.glob("*.yaml"))
        if options:  # hydra/launcher: the launcher presets
            groups.append(f"{folder.relative_to(config_dir()).as_posix()}: {', '.join(options)}")
    print(
        f"{texts.header}== Config groups (group=option) ==\n" + "\n".join(groups)
        + "\n\n== The composed config (override any key: key=value) ==\n"
        + f"{OmegaConf.to_yaml(cfg)}\n{texts.footer}"
    )  # fmt: skip


def _print_job_config(overrides: list[str], resolve: bool) -> None:
    """`expkit [overrides] --cfg job [--resolve]`, as Hydra prints it, from one composition."""
    from omegaconf import OmegaConf

    print(OmegaConf.to_yaml(_compose(overrides), resolve=resolve), end="")


def _check_before_launch(overrides: list[str]) -> None:
    """A single run's config, composed and validated before Hydra sets up the job: a bad value
    answers at once and leaves no run dir behind.

    Hydra composes the config once to learn the run mode and once more to run; the mode is read
    here, from this composition, so a valid run still costs two compositions, not three.
    """
    from hydra._internal.hydra import Hydra
    from hydra.types import RunMode
    from omegaconf import open_dict

    from expkit.config.validate import check_run_dir, validate

    cfg = _compose(overrides, hydra_config=True)
    mode = cfg.hydra.mode
    run_dir = str(cfg.hydra.run.dir)
    with open_dict(cfg):
        del cfg["hydra"]
    validate(cfg)
    if mode != RunMode.MULTIRUN:  # a sweep's dirs are checked when it starts (validate_objective)
        check_run_dir(Path(run_dir), cfg.resume.checkpoint)
    Hydra.get_mode = lambda self, config_name, overrides: mode  # type: ignore[method-assign]
    if world().active:  # every process of a torchrun launch trains in rank 0's run dir
        from expkit.distributed import agree_on_run_dir

        sys.argv += agree_on_run_dir(run_dir, str(cfg.trainer.device))


def _quick_path(args: list[str]) -> bool:
    """`--help`, `--cfg job [--resolve]` and single-run config checks, without Hydra's app.

    Anything else (other flags, multirun) goes to Hydra as it is. True when the command is done.
    """
    import hydra._internal.utils as hydra_utils

    from expkit.overrides import is_override, is_sweep

    flags = [a for a in args if not is_override(a)]  # `-m`, `--cfg job`, `-cn NAME`, ...
    overrides = [a for a in args if is_override(a)]
    if flags in (["--help"], ["-h"]):
        hydra_utils.run_and_report(lambda: _help(overrides))
        return True
    if flags[:2] == ["--cfg", "job"] and flags[2:] in ([], ["--resolve"]):
        hydra_utils.run_and_report(lambda: _print_job_config(overrides, flags[2:] != []))
        return True
    if world().active:  # one run in several processes (torchrun, accelerate launch)
        if any(f.startswith("-") for f in flags):
            hydra_utils.run_and_report(lambda: _not_under_launcher(flags))
        # all overrides, then: Hydra's parser names any it cannot read
        hydra_utils.run_and_report(lambda: _check_before_launch(args))
    elif not flags and not any(map(is_sweep, overrides)):  # a single run (no sweep syntax)
        hydra_utils.run_and_report(lambda: _check_before_launch(overrides))
    return False


def _not_under_launcher(flags: list[str]) -> None:
    raise ExpkitError(
        f"{' '.join(flags)} cannot run under a distributed launcher (WORLD_SIZE="
        f"{world().size}): a launch trains one run; sweep with `expkit -m` and a Hydra launcher"
    )


def expand_shorthands(args: list[str]) -> list[str]:
    """`resume=auto|PATH|null` is short for `resume.checkpoint=...`.

    `resume` is a section (`resume.checkpoint`, `resume.allow_changes`), and Hydra cannot set a
    section to a string, so the short form is rewritten before Hydra parses the command.
    """
    from expkit.overrides import key_element, value_as_written

    expanded = []
    for item in args:
        value = value_as_written(item) if key_element(item) == "resume" else None
        expanded.append(item if value is None else f"resume.checkpoint={value}")
    return expanded


def main() -> None:
    """Console-script entry point (`expkit ...` and `python -m expkit ...`)."""
    import hydra

    if len(sys.argv) > 1 and sys.argv[1] in ("predict", "evaluate"):
        from expkit.predict import entry

        entry(sys.argv[2:], sys.argv[1])
    if len(sys.argv) > 1 and sys.argv[1] in ("compare", "rerun", "replay"):
        _subcommand(sys.argv[1:])
    sys.argv = [sys.argv[0], *expand_shorthands(sys.argv[1:])]
    register_configs()
    _install_error_reporter()
    if _quick_path(sys.argv[1:]):
        return
    app = hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")(_task)
    try:
        app()
    except KeyboardInterrupt as exc:  # the run is already marked KILLED in MLflow
        signum = getattr(exc, "signum", signal.SIGINT)
        sys.stderr.write(
            f"expkit: interrupted by {signal.Signals(signum).name}; run marked KILLED\n"
        )
        sys.exit(128 + signum)


def entry() -> None:
    """The process's entry point (the `expkit` script, `python -m expkit`): `main`, and then,
    once every exit handler has run (logs flushed, child processes joined), the interpreter's
    own teardown of torch, transformers and their modules skipped: it takes seconds and does
    nothing a finished process needs. `main` called in a process of its own making (a test, a
    notebook) exits normally."""
    import atexit

    status: list[Any] = []

    def skip_teardown() -> None:
        # registered first, so it runs after the handlers registered since (torch's, ...);
        # logging's was registered before it, so it is called here
        if not status:  # an uncaught exception: the interpreter reports it as usual
            return
        import contextlib
        import logging

        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):  # closed, or the reader has gone
                stream.flush()
        code = status[0]
        os._exit(code if isinstance(code, int) else 0 if code is None else 1)

    atexit.register(skip_teardown)
    try:
        main()
    except SystemExit as exc:
        status.append(exc.code)
        raise
    status.append(0)
