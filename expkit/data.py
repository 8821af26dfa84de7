"""Data builder (S3): read the splits, map labels to ids, tokenize once (cached), pad per batch.

Reading and label checks import nothing heavy, so every data error is found before the model
loads and before a tracking run opens; tokenization needs the tokenizer and comes after.
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
from expkit.tables import find_split_files, read_table

log = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")
_INT = re.compile(r"^-?\d+$")


@dataclass
class RawData:
    """The splits as plain lists: text columns (one, or two for pairs) and label ids."""

    texts: dict[str, list[list[str]]]
    labels: dict[str, list[int]]
    label_names: list[str]
    sources: dict[str, str]
    notes: list[str] = field(default_factory=list)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def size(self, split: str) -> int:
        return len(self.labels.get(split, []))


# a number written as text: "1", " 1 ", "1.0", "-2", ".5" (no exponent: "1e3" stays a name)
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)$")


def _label_key(value: Any) -> int | float | str:
    """A label as labels are compared: numbers by value (1, 1.0 and " 1 " are one class id),
    everything else as its text with the surrounding spaces removed."""
    if isinstance(value, bool):  # a JSON true/false is a name, not the class id 1/0
        return str(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
    else:
        text = str(value).strip()
        if not _NUMBER.match(text):
            return text
        if _INT.match(text.lstrip("+")):
            return int(text)
        number = float(text)
    return int(number) if number.is_integer() else number


def _name_index(names: list[str]) -> dict[int | float | str, int]:
    """Label name -> id, keyed as `_label_key` keys values (a name "1" matches a value 1.0)."""
    return {_label_key(name): i for i, name in enumerate(names)}


def _not_whole(source: str, row: int, value: Any) -> DataError:
    return DataError(
        f"{source}: data row {row}: label '{str(value).strip()}' is not a whole number; a "
        "classification label is a class id (0, 1, 2, ...) or a name (a score to predict is "
        "regression, which expkit does not train)"
    )


def _warn_case(labels: list[str], source: str) -> None:
    """Labels that differ only in case are separate classes; most often that is a typo."""
    groups: dict[str, list[str]] = {}
    for name in labels:
        groups.setdefault(name.casefold(), []).append(name)
    for group in groups.values():
        if len(group) > 1:
            log.warning(
                "%s: labels %s differ only in case and are separate classes "
                "(fix the file, or set data.label_names, if they are meant to be one)",
                source,
                " and ".join(f"'{g}'" for g in group),
            )


def _label_set(train_values: list[Any], names: list[str] | None, source: str) -> list[str]:
    """The label names in id order: data.label_names, the ints 0..max, or the sorted strings."""
    keys = [_label_key(v) for v in train_values]
    index = _name_index(names) if names is not None else {}
    for row, key in enumerate(keys, start=1):
        if isinstance(key, float) and key not in index:
            raise _not_whole(source, row, train_values[row - 1])
    if names is not None and all(k in index for k in keys):
        return list(names)
    if all(isinstance(k, int) for k in keys):
        lowest = min(keys)
        if lowest < 0:
            raise DataError(f"{source}: label {lowest} is negative (integer labels are class ids)")
        if names is not None:
            return list(names)
        return [str(i) for i in range(max(keys) + 1)]
    if names is not None:
        bad = next(v for v, k in zip(train_values, keys, strict=True) if k not in index)
        raise DataError(
            f"{source}: label '{str(bad).strip()}' is not in the label set ({', '.join(names)}) "
            "given by data.label_names"
        )
    labels = sorted({str(k) for k in keys})
    _warn_case(labels, source)
    return labels


def _label_ids(values: list[Any], names: list[str], source: str) -> list[int]:
    index = _name_index(names)
    ids = []
    for row, value in enumerate(values, start=1):
        key = _label_key(value)
        if key in index:
            ids.append(index[key])
        elif isinstance(key, int) and 0 <= key < len(names):
            ids.append(key)
        elif isinstance(key, float):
            raise _not_whole(source, row, value)
        else:
            raise DataError(
                f"{source}: data row {row}: label '{str(value).strip()}' is not in the label set "
                f"({', '.join(names)})"
            )
    return ids


def _kind(value: Any) -> str:
    """How a value that is not text is named in an error (its JSON name where it has one)."""
    if isinstance(value, dict):
        return "JSON object (dict)"
    if isinstance(value, list):
        return "list"
    return type(value).__name__


def _preview(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def _text_column(col: list[Any], name: str, source: str, notes: list[str]) -> list[str]:
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
                f"{source}: data row {row}: text column '{name}' holds a {_kind(value)} "
                f"({_preview(value)}), not text; text columns take strings (numbers are converted)"
            )
        converted += 1
        first = first or row
    notes.append(
        f"{source}: text column '{name}': {converted} number(s) read as text "
        f"(first in data row {first}: {col[first - 1]!r})"
    )
    return [v if isinstance(v, str) else str(v) for v in col]


def _columns(
    rows: list[dict[str, Any]], columns: list[str], cfg: DictConfig, source: str, notes: list[str]
) -> tuple[list[list[str]], list[Any]]:
    """Pull the text and label columns out of the rows, naming what is missing."""
    # plain values: a config lookup per row would cost more than reading the file
    text_fields, label_field = [str(f) for f in cfg.text_fields], str(cfg.label_field)
    for name in [*text_fields, label_field]:
        if name not in columns:
            what = "label column" if name == label_field else "text column"
            key = "data.label_field" if name == label_field else "data.text_fields"
            raise DataError(
                f"{source} has no {what} '{name}' ({key}); its columns are: {', '.join(columns)}"
            )
    texts = [_text_column([r[name] for r in rows], name, source, notes) for name in text_fields]
    labels = [r[label_field] for r in rows]
    for row, value in enumerate(labels, start=1):
        if value is None or (isinstance(value, str) and not value.strip()):
            raise DataError(f"{source}: data row {row} has no label ('{label_field}')")
        if isinstance(value, (dict, list)):
            raise DataError(
                f"{source}: data row {row}: label ('{label_field}') is a {_kind(value)} "
                f"({_preview(value)}); a label is one class id or name"
            )
    return texts, labels


def _read_local(cfg: DictConfig) -> tuple[dict[str, tuple[list[str], list[dict]]], dict[str, str]]:
    files = find_split_files(Path(str(cfg.path)).expanduser())
    tables = {split: read_table(path) for split, path in files.items()}
    return tables, {split: str(path) for split, path in files.items()}


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


def load_raw(cfg: DictConfig) -> RawData:
    """Read and check every split; raise DataError naming the file, row and problem."""
    tables, sources = _read_local(cfg) if cfg.path is not None else _read_hub(cfg)
    if "train" not in tables:
        raise DataError(f"no train split in {cfg.path or cfg.hub_id}")
    notes = [
        f"no {s} split in {cfg.path or cfg.hub_id}: skipped" for s in SPLITS if s not in tables
    ]
    columns, rows = tables["train"]
    train_texts, train_labels = _columns(rows, columns, cfg, sources["train"], notes)
    names = list(cfg.label_names) if cfg.label_names is not None else None
    label_names = _label_set(train_labels, names, sources["train"])
    if len(label_names) < 2:
        raise DataError(
            f"{sources['train']}: only one label ({label_names[0]}); "
            "classification needs two or more"
        )
    texts = {"train": train_texts}
    labels = {"train": _label_ids(train_labels, label_names, sources["train"])}
    for split in ("dev", "test"):
        if split in tables:
            columns, rows = tables[split]
            texts[split], raw_labels = _columns(rows, columns, cfg, sources[split], notes)
            labels[split] = _label_ids(raw_labels, label_names, sources[split])
    limits = {
        "train": cfg.max_train_samples,
        "dev": cfg.max_eval_samples,
        "test": cfg.max_eval_samples,
    }
    for split, limit in limits.items():
        if limit is not None and split in labels:
            texts[split] = [col[:limit] for col in texts[split]]
            labels[split] = labels[split][:limit]
    return RawData(texts, labels, label_names, sources, notes)


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
        h.update("\x1f".join(col).encode("utf-8", "surrogatepass"))
    h.update(",".join(map(str, raw.labels[split])).encode())
    return h.hexdigest()[:24]


def tokenize(
    raw: RawData, tokenizer: Any, cfg: DictConfig, cache_dir: Path | None
) -> dict[str, Any]:
    """One `datasets.Dataset` per split with input ids and labels, tokenized once and cached.

    Each split is tokenized in one call of the (fast, Rust) tokenizer and kept as an Arrow file
    named by the content fingerprint; a later run with the same data, tokenizer and encoding
    arguments memory-maps it.
    """
    import datasets

    datasets.disable_progress_bars()
    # one set of arguments for the call and for the cache key: the key cannot miss one
    encode_kwargs = {"truncation": True, "max_length": int(cfg.max_length)}
    cache = cache_dir if cfg.cache else None
    encoding = encoding_key(tokenizer, encode_kwargs) if cache is not None else ""
    out = {}
    for split in raw.labels:
        cache_file = None
        if cache is not None:
            cache.mkdir(parents=True, exist_ok=True)
            cache_file = cache / f"{split}-{_fingerprint(raw, split, encoding)}.arrow"
            if cache_file.is_file():
                out[split] = datasets.Dataset.from_file(str(cache_file))
                continue
        columns = raw.texts[split]
        # sentence pairs go in as pairs (token_type_ids 0/1), as in the tutorial
        second = columns[1] if len(columns) == 2 else None
        encoded = tokenizer(columns[0], second, **encode_kwargs)
        ds = datasets.Dataset.from_dict({**encoded, "labels": raw.labels[split]})
        if cache_file is not None:
            _write_arrow(ds, cache_file)
            ds = datasets.Dataset.from_file(str(cache_file))  # memory-mapped, as when cached
        out[split] = ds
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


def make_collator(tokenizer: Any) -> Any:
    """Dynamic padding per batch (pads to the longest sequence in the batch)."""
    from transformers import DataCollatorWithPadding

    return DataCollatorWithPadding(tokenizer)
