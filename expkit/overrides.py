"""Override strings (`a.b=1`, `+key=`, `~key`, `a=1,2`, `hydra/launcher=joblib`), read and
written with Hydra's own parser: the one place in expkit that takes an override apart.

Items from the command line have passed Hydra's parser before they get here; items read back from
a record (an MLflow tag, a value shown plain) may not be overrides at all. So the readers never
raise: what Hydra cannot parse is read as `key=value` split at its first `=`.

Only Hydra's parser is imported, and only when an override is read.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from expkit.errors import ExpkitError

if TYPE_CHECKING:
    from hydra.core.override_parser.types import Override


@functools.cache
def _parser(config_loader: Any = None) -> Any:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create(config_loader=config_loader)


def parse(items: Iterable[str], config_loader: Any = None) -> list[Override]:
    """Hydra's reading of the overrides; raises Hydra's own error for one it cannot read.

    A `config_loader` lets `glob()` sweeps list the options of their config group.
    """
    return _parser(config_loader).parse_overrides(list(items))


@functools.lru_cache(maxsize=4096)
def parse_one(item: str) -> Override | None:
    """Hydra's reading of one override; None when it is not one."""
    from hydra.errors import HydraException

    try:
        return _parser().parse_override(item)
    except HydraException:
        return None


def _fallback(item: str) -> tuple[str, str | None]:
    """A string Hydra cannot read, as (what precedes the first `=`, what follows it or None)."""
    head, sep, value = item.partition("=")
    return head, value if sep else None


def key(item: str) -> str:
    """The config key or group an override names: `+a.b=1` -> `a.b`, `~x` -> `x`."""
    parsed = parse_one(item)
    return parsed.key_or_group if parsed is not None else _fallback(item)[0].lstrip("+~")


def key_element(item: str) -> str:
    """The key as written, with its `+`, `++` or `~` and its `@package`: `+a.b=1` -> `+a.b`."""
    parsed = parse_one(item)
    return parsed.get_key_element() if parsed is not None else _fallback(item)[0]


def section(item: str) -> str:
    """The top-level section an override is in: `resume.checkpoint=x` -> `resume`,
    `hydra/launcher=joblib` -> `hydra`."""
    return key(item).replace("/", ".").partition(".")[0]


def is_hydra(item: str) -> bool:
    """True for an override of Hydra's own settings (`hydra.run.dir=...`, `hydra/launcher=...`)."""
    return section(item) == "hydra"


def is_override(item: str) -> bool:
    """True when Hydra reads `item` as an override (`-m`, `--cfg` and `job` are not)."""
    return parse_one(item) is not None


def is_sweep(item: str) -> bool:
    """True for a sweep: `a=1,2`, `range()`, `choice()`, `glob()`, `interval()`."""
    parsed = parse_one(item)
    return parsed is not None and parsed.is_sweep_override()


def has_value(item: str) -> bool:
    """False only for a deletion without a value (`~key`)."""
    return value_as_written(item) is not None


def value_as_written(item: str) -> str | None:
    """The part after the `=`, as typed (`'a b'` keeps its quotes); None for a bare `~key`."""
    parsed = parse_one(item)
    if parsed is None:
        return _fallback(item)[1]
    return None if parsed.value_type is None else parsed.get_value_string()


def value_text(item: str) -> str | None:
    """The value as the config holds it: a string with Hydra's quotes and escapes undone
    (`'x: y'` -> `x: y`, `sqlite\\://` -> `sqlite://`); numbers, lists, `null` and sweeps as
    written; None for a bare `~key`."""
    parsed = parse_one(item)
    if parsed is None or parsed.is_sweep_override():
        return value_as_written(item)
    value = parsed.value()
    return value if isinstance(value, str) else value_as_written(item)


def plain(item: str) -> str:
    """`key=value` with the value as the config holds it (see value_text), for names and tables."""
    value = value_text(item)
    return item if value is None else f"{key_element(item)}={value}"


def _encoded(value: Any) -> Any:
    """`value` as Hydra's renderer takes it: strings quoted, so that '42' stays a string."""
    from hydra.core.override_parser.types import Quote, QuotedString

    if isinstance(value, str):
        return QuotedString(text=value, quote=Quote.single)
    if isinstance(value, list):
        return [_encoded(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _encoded(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float)):
        return value
    raise ExpkitError(f"cannot express {value!r} as an override")


def value_string(value: Any) -> str:
    """`value` in Hydra's grammar, read back equal: a string bare where Hydra reads it back as the
    same string, quoted and escaped otherwise (`'42'`, `'null'`, `'a,b'`, `'x y'`)."""
    from hydra.core.override_parser.types import Override, ValueType

    if isinstance(value, str):
        parsed = parse_one(f"k={value}")
        if (
            parsed is not None
            and parsed.value_type == ValueType.ELEMENT
            and parsed.value() == value
            and " " not in value  # a record joins overrides with spaces
        ):
            return value
    return Override._get_value_element_as_str(_encoded(value))


def format(key: str, value: Any) -> str:
    """An override that sets `key` (with any `+`, `++` prefix) to `value`; see value_string."""
    return f"{key}={value_string(value)}"


def split(text: str) -> list[str]:
    """The overrides of a record that joined them with spaces: a space within a value (escaped,
    quoted, in a list) stays in it."""
    pieces = text.split(" ")
    items: list[str] = []
    i = 0
    while i < len(pieces):
        end = _override_end(pieces, i)
        if end is not None:
            items.append(" ".join(pieces[i:end]))
            i = end
            continue
        if items:  # not the start of an override: the last value goes on
            items[-1] += " " + pieces[i]
        elif pieces[i]:
            items.append(pieces[i])
        i += 1
    return items


def _override_end(pieces: list[str], start: int) -> int | None:
    """The end of the fewest pieces from `start` that Hydra reads as one override, if any."""
    first = pieces[start]
    # every override has its `=` in its first piece (keys hold no space), or is a bare `~key`
    if "=" not in first and not first.startswith("~"):
        return None
    for end in range(start + 1, len(pieces) + 1):
        if parse_one(" ".join(pieces[start:end])) is not None:
            return end
    return None
