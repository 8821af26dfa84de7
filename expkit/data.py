"""Data builder: read the splits, pull out the text columns, tokenize once (cached).

What the labels are and how examples are encoded belong to the task (expkit.tasks); this module
reads the tables, checks the text columns, and tokenizes with the task's encoder, caching the
result under a key of everything the token ids depend on. Reading and checking import nothing
heavy, so every data error is found before the model loads and before a tracking run opens.
"""

from __future__ import annotations

import hashlib
import json
import logging
import numbers
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from expkit.errors import DataError
from expkit.tables import read_splits

log = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")


@dataclass
class RawData:
    """The splits as plain lists: text columns (one, or two for pairs) and each example's label
    as the task reads it (a class id, a score, a multi-hot list)."""

    texts: dict[str, list[list[str]]]
    labels: dict[str, list[Any]]
    label_names: list[str]  # in id order; empty where the label is a score
    sources: dict[str, str]
    notes: list[str] = field(default_factory=list)
    text_fields: list[str] = field(default_factory=lambda: ["text"])

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def splits(self) -> list[str]:
        return list(self.labels)

    def size(self, split: str) -> int:
        return len(self.labels.get(split, []))


def kind_of(value: Any) -> str:
    """How a value that is not text is named in an error (its JSON name where it has one)."""
    if isinstance(value, dict):
        return "JSON object (dict)"
    if isinstance(value, list):
        return "list"
    return type(value).__name__


def preview(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def text_column(col: list[Any], name: str, source: str, notes: list[str]) -> list[str]:
    """A text column as strings: numbers become their text (with a note), anything else stops."""
    if all(type(v) is str for v in col):  # the usual case, checked at C speed
        return col
    converted, first = 0, 0
    for row, value in enumerate(col, start=1):
        if isinstance(value, str):
            continue
        if value is None:
            raise DataError(f"{source}: data row {row} has no value for text column '{name}'")
        if not isinstance(value, numbers.Number):
            raise DataError(
                f"{source}: data row {row}: text column '{name}' holds a {kind_of(value)} "
                f"({preview(value)}), not text; text columns take strings (numbers are converted)"
            )
        converted += 1
        first = first or row
    notes.append(
        f"{source}: text column '{name}': {converted} number(s) read as text "
        f"(first in data row {first}: {col[first - 1]!r})"
    )
    return [v if isinstance(v, str) else str(v) for v in col]


def text_columns(
    rows: list[dict[str, Any]], columns: list[str], cfg: DictConfig, source: str, notes: list[str]
) -> tuple[list[list[str]], list[Any]]:
    """The text columns (as strings) and the label column's raw values, naming what is missing."""
    # plain values: a config lookup per row would cost more than reading the file
    text_fields, label_field = [str(f) for f in cfg.text_fields], str(cfg.label_field)
    for name in [*text_fields, label_field]:
        if name not in columns:
            what = "label column" if name == label_field else "text column"
            key = "data.label_field" if name == label_field else "data.text_fields"
            raise DataError(
                f"{source} has no {what} '{name}' ({key}); its columns are: {', '.join(columns)}"
            )
    texts = [text_column([r[name] for r in rows], name, source, notes) for name in text_fields]
    labels = [r[label_field] for r in rows]
    for row, value in enumerate(labels, start=1):
        if value is None or (isinstance(value, str) and not value.strip()):
            raise DataError(f"{source}: data row {row} has no label ('{label_field}')")
    return texts, labels


def _read_hub(cfg: DictConfig) -> tuple[dict[str, tuple[list[str], list[dict]]], dict[str, str]]:
    from expkit.hub import hub_endpoint, hub_reachable

    try:
        import datasets

        loaded = datasets.load_dataset(str(cfg.hub_id), cfg.hub_config)
    except Exception as exc:  # the datasets library raises many types for "not reachable"
        reach = "" if hub_reachable() else f" and the hub ({hub_endpoint()}) cannot be reached"
        raise DataError(
            f"could not load data set '{cfg.hub_id}' from the hub{reach} ({type(exc).__name__}); "
            "use data.path with local csv/tsv/jsonl/parquet files instead"
        ) from exc
    aliases = {"train": "train", "validation": "dev", "dev": "dev", "test": "test"}
    tables, sources = {}, {}
    for name, split in loaded.items():
        if name in aliases:
            tables[aliases[name]] = (list(split.column_names), split.to_list())
            sources[aliases[name]] = f"{cfg.hub_id}[{name}]"
    return tables, sources


def read_tables(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, str], list[str]]:
    """Every split's table, where it came from, and notes for the log (skipped splits)."""
    if cfg.path is not None:
        tables, sources, notes = read_splits(cfg)
    else:
        (tables, sources), notes = _read_hub(cfg), []
    if "train" not in tables:
        raise DataError(f"no train split in {cfg.path or cfg.hub_id}")
    notes += [
        f"no {s} split in {cfg.path or cfg.hub_id}: skipped" for s in SPLITS if s not in tables
    ]
    return tables, sources, notes


def load_raw(cfg: DictConfig, task: Any) -> RawData:
    """Read and check every split as `task` (expkit.tasks) reads examples; raise DataError naming
    the file, row and problem."""
    tables, sources, notes = read_tables(cfg)
    raw = task.read(tables, sources, cfg, notes)
    limits = {
        "train": cfg.max_train_samples,
        "dev": cfg.max_eval_samples,
        "test": cfg.max_eval_samples,
    }
    for split, limit in limits.items():
        if limit is not None and split in raw.labels:
            raw.texts[split] = [col[:limit] for col in raw.texts[split]]
            raw.labels[split] = raw.labels[split][:limit]
    return raw


def column_bytes(col: list[Any]) -> bytes:
    """An input column as bytes to hash: texts joined (the usual case, fast), else as JSON (a
    list of words per example)."""
    if all(type(v) is str for v in col):
        return "\x1f".join(col).encode("utf-8", "surrogatepass")
    return json.dumps(col, ensure_ascii=False).encode("utf-8", "surrogatepass")


def split_digest(raw: RawData, split: str) -> str:
    """A content hash of one split as read: its text columns and its labels (as the task reads
    them), so the same examples give the same digest whatever file they came from."""
    h = hashlib.sha256()
    for col in raw.texts[split]:
        h.update(b"\x1e")
        h.update(column_bytes(col))
    h.update(b"\x1d")
    h.update(json.dumps(raw.labels[split]).encode())
    return h.hexdigest()[:16]


_HUB_SPLIT = re.compile(r"^(?P<id>.*)\[(?P<split>[^\]]+)\]$")  # _read_hub's "id[split]"


def dataset_records(raw: RawData, data_cfg: DictConfig) -> list[dict[str, Any]]:
    """Each split read as a plain record for the tracker's `log_datasets`: name (data.name and
    the split), source, source type, digest, row count and context (the split)."""
    records = []
    for split in raw.splits:
        where = raw.sources[split]
        hub = data_cfg.path is None and _HUB_SPLIT.match(where)
        if hub:
            source_type = "hugging_face"
            source: dict[str, Any] = {
                "path": str(data_cfg.hub_id),
                "config_name": data_cfg.hub_config,
                "split": hub["split"],
            }
        else:
            source_type, source = "local", {"uri": where}
        records.append({
            "name": f"{data_cfg.name}-{split}",
            "source_type": source_type,
            "source": source,
            "digest": split_digest(raw, split),
            "rows": raw.size(split),
            "context": split,
        })  # fmt: skip
    return records


# where a tokenizer was loaded from, not what it does: a copy elsewhere gives the same tokens
_LOCATION_KWARGS = frozenset(
    ("name_or_path", "cache_dir", "is_local", "local_files_only", "revision", "_commit_hash",
     "subfolder", "token", "force_download", "proxies", "trust_remote_code")
)  # fmt: skip


def _json_default(value: Any) -> Any:
    # sets print in hash order, which changes from one process to the next
    return sorted(map(repr, value)) if isinstance(value, (set, frozenset)) else repr(value)


def encoding_key(tokenizer: Any, encode_kwargs: dict[str, Any]) -> str:
    """A hash of everything token ids depend on besides the text: the tokenizer's serialised
    state (normaliser, pre-tokenizer, vocabulary, added tokens, post-processor), its settings,
    the arguments of the call, and the library versions."""
    import tokenizers
    import transformers

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        state: Any = json.loads(backend.to_str())
        # each call sets these again from its own arguments (truncation, max_length, padding)
        state.pop("truncation", None)
        state.pop("padding", None)
    else:  # a Python tokenizer: its vocabulary and the files it was built from
        state = {"vocab": sorted(tokenizer.get_vocab().items())}
        for key, value in tokenizer.init_kwargs.items():
            if key.endswith("_file") and value and Path(str(value)).is_file():
                state[key] = hashlib.sha256(Path(str(value)).read_bytes()).hexdigest()
    settings = {
        k: v
        for k, v in tokenizer.init_kwargs.items()
        if k not in _LOCATION_KWARGS and not k.endswith("_file")
    }
    ident = {
        "class": type(tokenizer).__qualname__,
        "versions": [transformers.__version__, tokenizers.__version__],
        "backend": state,
        "settings": settings,
        # attributes a user may change after loading, which init_kwargs does not follow
        "sides": [tokenizer.truncation_side, tokenizer.padding_side],
        "inputs": list(tokenizer.model_input_names),
        "added": {str(i): repr(t) for i, t in tokenizer.added_tokens_decoder.items()},
        "call": encode_kwargs,
    }
    text = json.dumps(ident, default=_json_default, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _fingerprint(raw: RawData, split: str, encoding: str) -> str:
    """Content hash of one split plus the encoding key (the tokenizer and the call)."""
    h = hashlib.sha256(encoding.encode())
    for col in raw.texts[split]:
        h.update(b"\x1e")
        h.update(column_bytes(col))
    h.update(",".join(map(str, raw.labels[split])).encode())
    return h.hexdigest()[:24]


def tokenize(
    raw: RawData, tokenizer: Any, task: Any, cfg: DictConfig, cache_dir: Path | None
) -> dict[str, Any]:
    """One `datasets.Dataset` per split, encoded by `task` once and cached.

    Each split is encoded in one call of the (fast, Rust) tokenizer and kept as an Arrow file
    named by the content fingerprint; a later run with the same data, task, tokenizer and
    encoding arguments memory-maps it.
    """
    import datasets

    datasets.disable_progress_bars()
    # one set of arguments for the call and for the cache key: the key cannot miss one
    encode_kwargs = task.encode_kwargs(cfg)
    cache = cache_dir if cfg.cache else None
    key_kwargs = {"task": task.name, **encode_kwargs}  # two tasks never share an encoding
    encoding = encoding_key(tokenizer, key_kwargs) if cache is not None else ""
    out = {}
    for split in raw.splits:
        cache_file = None
        if cache is not None:
            cache.mkdir(parents=True, exist_ok=True)
            cache_file = cache / f"{split}-{_fingerprint(raw, split, encoding)}.arrow"
            if cache_file.is_file():
                out[split] = datasets.Dataset.from_file(str(cache_file))
                continue
        ds = datasets.Dataset.from_dict(task.encode(raw, split, tokenizer, encode_kwargs))
        if cache_file is not None:
            _write_arrow(ds, cache_file)
            ds = datasets.Dataset.from_file(str(cache_file))  # memory-mapped, as when cached
        out[split] = ds
    for split, ds in out.items():
        for note in task.encoded_notes(split, ds):
            log.info(note)
    return out


def _write_arrow(ds: Any, path: Path) -> None:
    """The dataset's table as an Arrow stream file, written to a temporary name then renamed
    (a run killed mid-write leaves no half file under the cache name)."""
    import os

    import pyarrow as pa

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    table = ds.data.table
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    os.replace(tmp, path)
