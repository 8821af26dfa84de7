"""Config and tag names made acceptable to MLflow: flattened, cleaned, clipped, batched."""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping, Sequence
from typing import Any

# MLflow's limits (mlflow.utils.validation); copied so importing this module stays mlflow-free.
MAX_PARAMS_PER_BATCH = 100  # MAX_PARAMS_TAGS_PER_BATCH
MAX_METRICS_PER_BATCH = 1000  # MAX_METRICS_PER_BATCH
MAX_PARAM_LENGTH = 6000  # MAX_PARAM_VAL_LENGTH
MAX_KEY_LENGTH = 250  # MAX_ENTITY_KEY_LENGTH
MAX_TAG_LENGTH = 5000  # below MLflow's 8000, so older servers accept them too
TRUNCATED = "...(truncated)"
_BAD_KEY_CHARS = re.compile(r"[^/\w.\- :]")  # MLflow rejects names with anything else


def flatten(cfg: Mapping, prefix: str = "") -> dict[str, object]:
    """Nested mappings -> dotted keys; lists stay one value (their str), None -> "None"."""
    out: dict[str, object] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            if value:
                out.update(flatten(value, f"{name}."))
            else:
                out[name] = "{}"  # keep the key: an empty section is still a setting
        elif value is None:
            out[name] = "None"
        elif isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
            out[name] = str(value)  # lists (ListConfig too): one readable value, not one per item
        else:
            out[name] = value
    return out


def _clip(value: str, limit: int) -> str:
    """Keep the start of an over-long value and say it was cut, so MLflow never rejects it."""
    return value if len(value) <= limit else value[: limit - len(TRUNCATED)] + TRUNCATED


def _key(name: object) -> str:
    """A name MLflow accepts: bad characters -> "_", no path tricks ("a/../b", "/x"), <= 250."""
    key = _BAD_KEY_CHARS.sub("_", str(name)) or "_"
    norm = posixpath.normpath(key)
    if norm != key or norm == "." or norm.startswith(("..", "/")):
        key = key.replace("/", "_").replace("..", "__")
    return _clip(key, MAX_KEY_LENGTH)


def log_params(client: Any, run_id: str, params: dict[str, object]) -> None:
    """Params in batches, names and values made acceptable to MLflow."""
    from mlflow.entities import Param

    # a dict: two keys that clean up to the same name must not clash in one batch
    clean = {_key(k): _clip(str(v), MAX_PARAM_LENGTH) for k, v in params.items()}
    items = [Param(k, v) for k, v in clean.items()]
    for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
        client.log_batch(run_id, params=items[i : i + MAX_PARAMS_PER_BATCH])


def clean_tags(tags: dict[str, str]) -> dict[str, str]:
    return {_key(k): _clip(str(v), MAX_TAG_LENGTH) for k, v in tags.items()}
