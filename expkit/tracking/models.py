"""The trained model as an MLflow Model: logged with a run, found again from a run id or URI.

A run's `model/` folder (save_pretrained files plus `expkit.json`, what prediction needs) becomes
a `pyfunc` model whose loader is `expkit.serving`: `mlflow models serve` and
`mlflow.pyfunc.load_model` answer with the records `expkit predict` writes. It is logged as the
run's LoggedModel named `model`, so `runs:/RUN_ID/model` names it and the MLflow UI lists it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MODEL_NAME = "model"  # the artifact name: runs:/RUN_ID/model
_REQUIREMENTS = ("expkit", "torch", "transformers", "mlflow", "pandas")


def _requirements() -> list[str]:
    """What serving imports, pinned to the versions that trained the model (no inference: that
    would load the model in a fresh interpreter at the end of every run)."""
    pins = []
    for dist in _REQUIREMENTS:
        try:
            pins.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            pins.append(dist)
    return pins


def signature_and_example(info: dict[str, Any]) -> tuple[Any, Any]:
    """Inputs: one unnamed string column (a request is `{"inputs": [text, ...]}`), or one named
    column per text field for sentence pairs (`{"inputs": [{"sentence1": ..., ...}]}`)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    fields = list(info["input_fields"])
    example = list(info.get("input_example") or [])
    if len(fields) == 1:
        schema = Schema([ColSpec("string")])
        rows = [row[0] for row in example]
    else:
        schema = Schema([ColSpec("string", f) for f in fields])
        rows = [dict(zip(fields, row, strict=True)) for row in example]
    return ModelSignature(inputs=schema), (rows or None)


def log_model(
    client: Any, run_id: str, experiment_id: str, model_dir: Path, info: dict, step: int
) -> str:
    """Log `model_dir` as the run's MLflow Model `model`; returns its model id. `info`: the
    task's name, its input fields and an input example.

    As mlflow.pyfunc.log_model does it, without the check that loads the model once more in the
    tracking process (expkit's tests serve the model instead): a LoggedModel linked to the run
    as an output, the pyfunc folder uploaded to it, then marked READY.
    """
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus

    signature, example = signature_and_example(info)
    logged = client.create_logged_model(
        experiment_id, name=MODEL_NAME, source_run_id=run_id, model_type=f"expkit-{info['task']}",
        tags={"expkit.task": info["task"]},
    )  # fmt: skip
    client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=step)])
    quiet = logging.getLogger("mlflow")  # its INFO lines (checking the example) say nothing here
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        _upload(client, logged, run_id, model_dir, signature, example)
    except BaseException:
        with contextlib.suppress(Exception):  # not left PENDING: the UI shows it failed
            client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
        raise
    finally:
        quiet.setLevel(level)
    client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    return logged.model_id


def _upload(
    client: Any, logged: Any, run_id: str, model_dir: Path, signature: Any, example: Any
) -> None:
    import mlflow.pyfunc
    from mlflow.models import Model

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / MODEL_NAME
        mlflow_model = Model(
            artifact_path=logged.artifact_location, model_uuid=logged.model_id, run_id=run_id,
            model_id=logged.model_id,
        )  # fmt: skip
        mlflow.pyfunc.save_model(
            str(path), loader_module="expkit.serving", data_path=str(model_dir),
            signature=signature, input_example=example, pip_requirements=_requirements(),
            mlflow_model=mlflow_model,
        )  # fmt: skip
        client.log_model_artifacts(logged.model_id, str(path))


def run_model_id(client: Any, run_id: str) -> str | None:
    """The id of the MLflow Model a run logged (its last), or None."""
    run = client.get_run(run_id)
    outputs = run.outputs.model_outputs if run.outputs is not None else []
    return outputs[-1].model_id if outputs else None


def download_model(uri: str, tracking_uri: str, dst: Path) -> Path:
    """A `runs:/` or `models:/` URI, downloaded into `dst`, as the local model folder (the
    pyfunc model's data folder). Raises LookupError with a message naming what is missing."""
    import mlflow
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    # the runs:/ resolver opens a client of the default store for a run's LoggedModel: this one
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per file
    try:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=uri, tracking_uri=tracking_uri, dst_path=str(dst)
        )
    except (MlflowException, OSError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if uri.startswith("models:/"):
            names = [m.name for m in MlflowClient(tracking_uri).search_registered_models()]
            known = f" (registered models: {', '.join(sorted(names))})" if names else ""
            raise LookupError(f"no model {uri} in {tracking_uri}{known}: {message}") from None
        raise LookupError(f"no model at {uri} in {tracking_uri}: {message}") from None
    return model_folder(Path(local))


def model_folder(local: Path) -> Path:
    """The model folder inside a downloaded MLflow Model (its pyfunc data); a folder that is no
    MLflow Model is returned as it is."""
    mlmodel = local / "MLmodel"
    if not mlmodel.is_file():
        return local
    from mlflow.models import Model

    pyfunc = Model.load(str(mlmodel)).flavors.get("python_function", {})
    if pyfunc.get("loader_module") != "expkit.serving" or not pyfunc.get("data"):
        raise LookupError(f"{local} is an MLflow Model, but not one expkit logged")
    return local / pyfunc["data"]
