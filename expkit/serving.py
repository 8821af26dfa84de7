"""The loader of expkit's MLflow Models (`loader_module: expkit.serving` in their MLmodel).

`mlflow models serve -m runs:/RUN_ID/model` and `mlflow.pyfunc.load_model(...)` call
`_load_pyfunc(data_path)`; the model it returns answers a request with the records
`expkit predict` writes, one per input, in order. Inputs: a list of texts (`{"inputs": ["a fine
movie"]}`), for sentence pairs a list of {field: text} objects, or a table with the text fields
as columns (`dataframe_records`, `dataframe_split`). Called in Python, pairs may also be given
as [first, second] lists.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _value(value: Any) -> Any:
    """An input value as text; a list of words (token classification) as a list of texts."""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "ndarray":
        return [str(v) for v in value]
    return str(value)


def inputs_from(model_input: Any, fields: list[str]) -> list[list[Any]]:
    """The text columns (one per field) of what a request or a caller hands the model."""
    columns = getattr(model_input, "columns", None)
    if columns is not None:  # a pandas DataFrame: by name, or the only column for one field
        names = [str(c) for c in columns]
        if all(f in names for f in fields):
            return [[_value(v) for v in model_input[f]] for f in fields]
        if len(fields) == len(names):
            return [[_value(v) for v in model_input[c]] for c in columns]
        raise ValueError(
            f"the input has columns {', '.join(names)}; this model reads {', '.join(fields)}"
        )
    if isinstance(model_input, dict):
        model_input = model_input.get("inputs", model_input)
        if isinstance(model_input, dict):  # {field: [texts]}
            return inputs_from(_frame(model_input), fields)
    if isinstance(model_input, str):
        model_input = [model_input]
    rows = list(model_input)
    if all(isinstance(r, dict) for r in rows):
        missing = sorted({f for r in rows for f in fields if f not in r})
        if missing:
            raise ValueError(f"an input has no field {', '.join(missing)} (needs {fields})")
        return [[_value(r[f]) for r in rows] for f in fields]
    if len(fields) == 1 and all(isinstance(r, str) for r in rows):
        return [rows]
    if all(isinstance(r, (list, tuple)) and len(r) == len(fields) for r in rows):
        return [[str(r[c]) for r in rows] for c in range(len(fields))]
    raise ValueError(
        f"inputs must be a list of texts{'' if len(fields) == 1 else ' pairs'} or of objects "
        f"with the fields {', '.join(fields)}"
    )


def _frame(columns: dict[str, Any]) -> Any:
    import pandas as pd

    return pd.DataFrame(columns)


class ExpkitModel:
    """A pyfunc model over expkit's Predictor."""

    def __init__(self, data_path: str) -> None:
        from expkit.predictor import Predictor

        self.predictor = Predictor(Path(data_path))

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> list[dict]:
        texts = inputs_from(model_input, self.predictor.fields)
        return self.predictor.records(texts)


def _load_pyfunc(data_path: str) -> ExpkitModel:
    return ExpkitModel(data_path)
