"""Data builder (S3): read the splits, map labels to ids, tokenize once (cached), pad per batch.

Reading and label checks import nothing heavy, so every data error is found before the model
loads and before a tracking run opens; tokenization needs the tokenizer and comes after.
"""

from __future__ import annotations

import hashlib
import logging
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


def _label_set(train_values: list[Any], names: list[str] | None, source: str) -> list[str]:
    """The label names in id order: data.label_names, the ints 0..max, or the sorted strings."""
    as_str = [str(v).strip() for v in train_values]
    if names is not None and all(v in names for v in as_str):
        return list(names)
    if all(_INT.match(v) for v in as_str):
        ids = [int(v) for v in as_str]
        if min(ids) < 0:
            raise DataError(
                f"{source}: label {min(ids)} is negative (integer labels are class ids)"
            )
        if names is not None:
            return list(names)
        return [str(i) for i in range(max(ids) + 1)]
    if names is not None:
        bad = next(v for v in as_str if v not in names)
        raise DataError(
            f"{source}: label '{bad}' is not in the label set ({', '.join(names)}) "
            "given by data.label_names"
        )
    return sorted(set(as_str))


def _label_ids(values: list[Any], names: list[str], source: str) -> list[int]:
    index = {name: i for i, name in enumerate(names)}
    ids = []
    for row, value in enumerate(values, start=1):
        text = str(value).strip()
        if text in index:
            ids.append(index[text])
        elif _INT.match(text) and 0 <= int(text) < len(names):
            ids.append(int(text))
        else:
            raise DataError(
                f"{source}: data row {row}: label '{text}' is not in the label set "
                f"({', '.join(names)})"
            )
    return ids


def _columns(rows: list[dict[str, Any]], columns: list[str], cfg: DictConfig, source: str):
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
    texts = []
    for name in text_fields:
        col = [r[name] for r in rows]
        if any(v is None for v in col):
            row = next(i for i, v in enumerate(col, start=1) if v is None)
            raise DataError(f"{source}: data row {row} has no value for text column '{name}'")
        texts.append([v if isinstance(v, str) else str(v) for v in col])
    labels = [r[label_field] for r in rows]
    for row, value in enumerate(labels, start=1):
        if value is None or (isinstance(value, str) and not value.strip()):
            raise DataError(f"{source}: data row {row} has no label ('{label_field}')")
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
    train_texts, train_labels = _columns(rows, columns, cfg, sources["train"])
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
            texts[split], raw_labels = _columns(rows, columns, cfg, sources[split])
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


def _fingerprint(raw: RawData, split: str, tokenizer: Any, max_length: int) -> str:
    """Content hash of one split plus everything tokenization depends on."""
    h = hashlib.sha256()
    ident = f"{type(tokenizer).__name__}|{tokenizer.name_or_path}|{len(tokenizer)}|{max_length}"
    h.update(ident.encode())
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
    named by the content fingerprint; a later run with the same data and tokenizer memory-maps it.
    """
    import datasets

    datasets.disable_progress_bars()
    out = {}
    for split in raw.labels:
        cache_file = None
        if cache_dir is not None and cfg.cache:
            cache_dir.mkdir(parents=True, exist_ok=True)
            key = _fingerprint(raw, split, tokenizer, cfg.max_length)
            cache_file = cache_dir / f"{split}-{key}.arrow"
            if cache_file.is_file():
                out[split] = datasets.Dataset.from_file(str(cache_file))
                continue
        columns = raw.texts[split]
        # sentence pairs go in as pairs (token_type_ids 0/1), as in the tutorial
        second = columns[1] if len(columns) == 2 else None
        encoded = tokenizer(columns[0], second, truncation=True, max_length=cfg.max_length)
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
