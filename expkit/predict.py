"""`expkit predict` and `expkit evaluate`: a trained model on a file, as its run recorded it.

    expkit predict SOURCE [key=value ...] [--out FILE]
    expkit evaluate SOURCE [key=value ...] [--out FILE]

SOURCE is a run id, a `runs:/RUN_ID/model` or `models:/NAME/VERSION` URI, a run dir, or a model
folder. The task, tokenizer, max_length, text fields and label map come from the model's
`expkit.json`; `data.*` overrides change how the file is found and read (`data.path=/new/files`,
`data.files.test=new.tsv`, `data.text_fields=[review]`). The file is the folder's test file, the
only file there, or `data.files.test`; without a data override, the run's own test split.
`evaluate` also computes the task's metrics and logs them as a run of their own, tagged with
the source run. Everything is checked before the model loads and before a run is opened.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from expkit.errors import DataError, ExpkitError

_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
# options of the command itself (the data.* keys come from the model's run config)
OPTIONS = {
    "predict.batch_size": 64,
    "predict.device": "auto",
    "predict.precision": "fp32",
    "tracking.uri": None,
    "tracking.experiment": None,
}


@dataclass
class Source:
    """Where the model is: its local folder, and the MLflow run it came from (if known)."""

    model_dir: Path
    run_id: str | None
    tracking_uri: str | None


def _store_uri(uri: str | None) -> str:
    from expkit.tracking import store_uri

    return store_uri(uri, Path.cwd())


def resolve_source(source: str, tracking_uri: str | None, scratch: Path) -> Source:
    """The model a source names, downloaded from MLflow (into `scratch`) when it lives there."""
    from expkit.predictor import SPEC_FILE

    path = Path(source).expanduser()
    if path.exists():
        if (path / SPEC_FILE).is_file():  # a model folder
            return Source(path, _spec_run(path), tracking_uri)
        if (path / "config.yaml").is_file():  # a run dir
            pointer = _pointer(path)
            if not (path / "model" / SPEC_FILE).is_file():
                raise ExpkitError(
                    f"the run in {path} has no saved model ({path / 'model'} is missing: "
                    "trained with trainer.save_model=false, or it did not finish)"
                )
            return Source(path / "model", pointer.get("run_id"), pointer.get("tracking_uri"))
        if (path / "MLmodel").is_file():  # an MLflow Model downloaded by hand
            return Source(_folder(path), None, tracking_uri)
        raise ExpkitError(
            f"{path} is neither a run dir (with config.yaml and model/) nor a model folder (with "
            f"{SPEC_FILE})"
        )
    uri = _store_uri(tracking_uri)
    if source.startswith(("runs:/", "models:/")):
        return _download(source, uri, scratch)
    if _RUN_ID.match(source):
        from expkit.tracking import find_run, open_store
        from expkit.tracking.models import run_model_id

        client = open_store(uri, "tracking.uri")
        run = find_run(client, source)
        if run is None:
            raise ExpkitError(f"no run {source} in the MLflow store {_shown(uri)}")
        if run_model_id(client, source) is None:
            raise ExpkitError(
                f"run {source} ({run.info.run_name}) has no logged model (trained with "
                f"trainer.save_model=false, or it ended {run.info.status} before saving one)"
            )
        return _download(f"runs:/{source}/model", uri, scratch)
    raise ExpkitError(
        f"'{source}' names no model: give a run id, runs:/RUN_ID/model, models:/NAME/VERSION, "
        "a run dir or a model folder"
    )


def _shown(uri: str) -> str:
    from expkit.redact import redact_text

    return redact_text(uri)


def _pointer(run_dir: Path) -> dict[str, Any]:
    from expkit.tracking import RUN_POINTER

    file = run_dir / RUN_POINTER
    return json.loads(file.read_text(encoding="utf-8")) if file.is_file() else {}


def _spec_run(model_dir: Path) -> str | None:
    from expkit.predictor import read_spec

    return read_spec(model_dir).get("run_id")


def _folder(path: Path) -> Path:
    from expkit.tracking.models import model_folder

    try:
        return model_folder(path)
    except LookupError as exc:
        raise ExpkitError(str(exc)) from None


def _download(uri: str, tracking_uri: str, scratch: Path) -> Source:
    from expkit.tracking import open_store
    from expkit.tracking.models import download_model

    open_store(tracking_uri, "tracking.uri")  # a missing store is one line, not a new store
    try:
        folder = download_model(uri, tracking_uri, scratch)
    except LookupError as exc:
        raise ExpkitError(str(exc)) from None
    return Source(folder, _spec_run(folder), tracking_uri)  # download_model found the folder


# -- which file, read how -------------------------------------------------------------------


def data_config(spec: dict[str, Any], overrides: dict[str, Any]) -> tuple[DictConfig, bool]:
    """The run's data config with the `data.*` overrides; True when they name new files."""
    data = OmegaConf.create(spec["config"]["data"])
    given = {k[len("data.") :]: v for k, v in overrides.items() if k.startswith("data.")}
    for key in given:
        top = key.split(".")[0]
        if top not in data:
            raise ExpkitError(
                f"unknown key data.{key} (data keys: {', '.join(sorted(map(str, data)))}; "
                f"options: {', '.join(OPTIONS)})"
            )
    new_files = any(k == "path" or k.startswith("files") for k in given)
    if new_files and not any(k.startswith("files") for k in given):
        data.files = {}  # a new folder: its own test file, not the run's file names
    if new_files:
        data.dev_fraction = None
        data.max_eval_samples = None  # the run's evaluation cap: a new file is read whole
    for key, value in given.items():
        OmegaConf.update(data, key, value, merge=False)
    return data, new_files


SELF_DESCRIBING = ("jsonl", "json", "parquet")  # formats whose records name their own fields


def read_as_named(data: DictConfig, paths: list[Path], given: dict[str, Any]) -> None:
    """A new jsonl / json / parquet file is read as its extension says, not in the run's format
    (a model trained on CoNLL or header-less tsv files predicts on jsonl as it is), unless
    data.format is given."""
    from expkit.tables import file_format

    if "data.format" in given or data.get("format") in (None, *SELF_DESCRIBING):
        return
    if paths and all(file_format(p) in SELF_DESCRIBING for p in paths):
        data.format, data.header, data.columns = None, True, None


def input_file(data: DictConfig, new_files: bool) -> list[Path]:
    """The file(s) to predict: data.files.test, the folder's test file or its only file."""
    from expkit.tables import FORMATS, SPLIT_ALIASES, resolve_split_files

    root = Path(str(data.path)).expanduser() if data.path is not None else None
    if root is None:
        raise ExpkitError("the run read its data from the hub; give data.path=FOLDER_OR_FILE")
    if root.is_file():
        return [root]
    files = dict(data.get("files") or {})
    if files:
        if "test" not in files:
            raise ExpkitError(
                f"data.files names no test file ({', '.join(files)}); give data.files.test=FILE"
            )
        files = {"train": files["test"], "test": files["test"]}  # only test is read
        with_test = OmegaConf.merge(data, {"files": files})
        return resolve_split_files(with_test)["test"]
    if not root.is_dir():
        raise ExpkitError(f"data.path '{root}' is neither a folder nor a file")
    named = [root / f"{a}.{ext}" for a in SPLIT_ALIASES["test"] for ext in FORMATS]
    named = [p for p in named if p.is_file()]
    if named:
        return named[:1]
    present = sorted(p for p in root.iterdir() if p.suffix.lstrip(".").lower() in FORMATS)
    if len(present) == 1:
        return present
    which = ", ".join(p.name for p in present) or "no csv, tsv, jsonl or parquet file"
    where = "" if new_files else " (the run's data folder)"
    raise ExpkitError(
        f"no test file in '{root}'{where} and not one file to read ({which}): give "
        "data.files.test=FILE"
    )


def read_rows(data: DictConfig, paths: list[Path]) -> tuple[list[str], list[dict], str]:
    from expkit.tables import read_options, read_split

    columns, rows = read_split(paths, read_options(data), [])
    limit = data.get("max_eval_samples")
    if limit is not None:
        rows = rows[: int(limit)]
    source = str(paths[0]) if len(paths) == 1 else f"{paths[0].parent} ({len(paths)} files)"
    return columns, rows, source


def _ids(columns: list[str], rows: list[dict]) -> list[Any]:
    """Each row's own id (an `id` or `idx` column), else its position in the file."""
    key = next((c for c in ("id", "idx", "guid") if c in columns), None)
    return [r[key] for r in rows] if key else list(range(len(rows)))


# -- output ---------------------------------------------------------------------------------


def write_outputs(records: list[dict], out: Path) -> list[Path]:
    """predictions.jsonl (one object per row) and a CSV beside it (scores as columns)."""
    from expkit.checkpoint import write_text_atomic

    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExpkitError(f"cannot write {out}: {exc.strerror or exc}") from None
    write_text_atomic(out, lines)
    table = out.with_suffix(".csv")
    flat = [_flat(r) for r in records]
    header: list[str] = []
    for row in flat:
        header += [k for k in row if k not in header]
    import io

    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=header)
    writer.writeheader()
    writer.writerows(flat)
    write_text_atomic(table, text.getvalue())
    return [out, table]


def _flat(record: dict) -> dict:
    row: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, dict):
            row.update({f"{key}.{k}": v for k, v in value.items()})
        elif isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
            row[key] = json.dumps(value, ensure_ascii=False)  # entities: a JSON list in a cell
        elif isinstance(value, list):
            row[key] = "|".join(map(str, value))
        else:
            row[key] = value
    return row


# -- the commands ---------------------------------------------------------------------------


def _parse(argv: list[str], command: str) -> tuple[argparse.Namespace, dict[str, Any]]:
    from expkit.overrides import key, value_as_written

    parser = argparse.ArgumentParser(
        prog=f"expkit {command}",
        description=(
            "Predict every row of a file with a trained model"
            if command == "predict"
            else "Predict a labelled file and log the task's metrics as an MLflow run"
        ),
    )
    parser.add_argument(
        "source", help="run id, runs:/ID/model, models:/NAME/V, run dir or model dir"
    )
    parser.add_argument("overrides", nargs="*", help="data.KEY=VALUE, predict.batch_size=N, ...")
    parser.add_argument("--out", type=Path, default=Path("predictions.jsonl"))
    args = parser.parse_args(argv)
    given: dict[str, Any] = {}
    for item in args.overrides:
        if "=" not in item:
            raise ExpkitError(f"'{item}' is not key=value (e.g. data.path=/new/files)")
        name = key(item)
        if not name.startswith("data.") and name not in OPTIONS:
            raise ExpkitError(
                f"unknown key {name} for expkit {command} (valid: data.*, {', '.join(OPTIONS)})"
            )
        given[name] = _value(value_as_written(item))
    if args.out.is_dir():
        raise ExpkitError(f"--out {args.out} is a directory; give a file, e.g. {args.out}/p.jsonl")
    return args, given


def _value(text: str | None) -> Any:
    """A value as Hydra would read it (numbers, null, lists), via OmegaConf's YAML."""
    if text is None:
        return None
    return OmegaConf.create({"v": text} if text.startswith(("'", '"')) else f"v: {text}").v


def _option(given: dict[str, Any], name: str) -> Any:
    return given.get(name, OPTIONS[name])


def _check_options(given: dict[str, Any]) -> None:
    from expkit.predictor import PRECISIONS

    precision = _option(given, "predict.precision")
    if precision not in PRECISIONS:
        raise ExpkitError(f"predict.precision={precision} (valid: {', '.join(PRECISIONS)})")
    size = _option(given, "predict.batch_size")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ExpkitError(f"predict.batch_size={size!r} must be a whole number >= 1")


def main(argv: list[str], command: str) -> int:
    """`expkit predict|evaluate ...`; bad input raises ExpkitError (one line, exit 2)."""
    args, given = _parse(argv, command)
    _check_options(given)
    with tempfile.TemporaryDirectory(prefix="expkit-model-") as scratch:
        return _predict(args, given, command, Path(scratch))


def _predict(args: argparse.Namespace, given: dict[str, Any], command: str, scratch: Path) -> int:
    from expkit.predictor import Predictor, read_spec, task_from_spec

    source = resolve_source(args.source, _option(given, "tracking.uri"), scratch)
    spec = read_spec(source.model_dir)
    data, new_files = data_config(spec, given)
    paths = input_file(data, new_files)
    if new_files:
        read_as_named(data, paths, given)
    columns, rows, where = read_rows(data, paths)
    predictor_task = task_from_spec(spec)
    texts = predictor_task.read_inputs(columns, rows, data, where)
    gold = predictor_task.read_gold(columns, rows, data, where) if command == "evaluate" else None
    predictor = Predictor(
        source.model_dir, data, device=str(_option(given, "predict.device")),
        precision=str(_option(given, "predict.precision")),
        batch_size=int(_option(given, "predict.batch_size")), progress=True,
    )  # fmt: skip
    # opened once the file and the model are read: bad input leaves no run behind
    tracker = _open_evaluation(source, args, given, where, len(rows)) if gold is not None else None
    status = "FAILED"
    try:
        scores, outputs = predictor.run(texts, scoring=gold is not None)
        records = predictor.to_records(texts, scores, _ids(columns, rows))
        written = write_outputs(records, args.out)
        print(f"{len(records)} predictions of {where}: {' and '.join(map(str, written))}")
        if gold is not None and tracker is not None:
            scored = predictor.task.metrics(outputs, gold, "test")
            metrics = {f"test_{k}": v for k, v in scored.items()}
            tracker.log_metrics(metrics, step=0)
            for file in written:
                tracker.log_artifact(file)
            width = max(map(len, metrics))
            print("\n".join(f"{k.ljust(width)}  {v:.4f}" for k, v in metrics.items()))
            if tracker.run_id:
                print(f"logged as MLflow run {tracker.run_id} (evaluation of {source.run_id})")
        status = "FINISHED"
        return 0
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        if tracker is not None:
            tracker.end(status)


def _open_evaluation(
    source: Source, args: argparse.Namespace, given: dict[str, Any], where: str, rows: int
) -> Any:
    """The MLflow run an evaluation is logged as: in the source run's store and experiment."""
    from expkit.tracking import make_tracker

    uri = _store_uri(given.get("tracking.uri") or source.tracking_uri)
    experiment = given.get("tracking.experiment") or _experiment_name(source, uri) or "expkit"
    tracker = make_tracker("mlflow", uri, str(experiment))
    tracker.open()
    tags = {
        "expkit.role": "evaluation",
        "expkit.source": args.source,
        "mlflow.source.name": "expkit evaluate",
    }
    if source.run_id:
        tags["expkit.evaluation_of"] = source.run_id
    tracker.start(f"evaluate {Path(where).name}", tags)
    tracker.log_params({"source": args.source, "data.file": where, "examples": rows,
                        **{k: v for k, v in given.items() if k.startswith("data.")}})  # fmt: skip
    return tracker


def _experiment_name(source: Source, uri: str) -> str | None:
    if source.run_id is None:
        return None
    from expkit.tracking import find_run, mlflow_client

    client = mlflow_client(uri)
    run = find_run(client, source.run_id)
    return client.get_experiment(run.info.experiment_id).name if run is not None else None


def entry(argv: list[str], command: str) -> None:
    try:
        code = main(argv, command)
    except (ExpkitError, DataError) as exc:
        sys.stderr.write(f"expkit {command}: error: {exc}\n")
        sys.exit(2)
    sys.exit(code)
