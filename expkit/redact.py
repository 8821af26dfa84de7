"""Secrets never reach the tracking store or the run dir's records.

A config value under a key that looks like a credential (`token`, `password`, `secret`,
`api_key`, ...), a password inside a URI (`http://user:PASSWORD@host`), and the value of any
credential-like environment variable (`HF_TOKEN`, `MLFLOW_TRACKING_PASSWORD`, ...) are replaced by
`REDACTED` in what expkit records: params, tags, run names, the logged config and overrides, and
Hydra's own copies in `.hydra/`. The run itself still uses the real values.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REDACTED = "REDACTED"
# whole words of a key (`hub_token`, `HF_TOKEN`, `aws_secret_access_key`), not `tokenizer`
_SECRET_KEY = re.compile(
    r"(?:^|[_-])(?:token|passw(?:or)?d|secrets?|api[_-]?key|apikey|access[_-]?key"
    r"|private[_-]?key|credentials?|auth)(?:$|[_-])",
    re.IGNORECASE,
)
_URI_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]+:)(?P<pw>[^@\s]+)(?=@)", re.I)
MIN_SECRET_LENGTH = 6  # shorter environment values are too likely to occur by chance


def secret_key(key: str) -> bool:
    """True for a config or environment key that names a credential."""
    return bool(_SECRET_KEY.search(key.rsplit(".", 1)[-1]))


def _env_secrets() -> list[str]:
    values = [v for k, v in os.environ.items() if secret_key(k) and len(v) >= MIN_SECRET_LENGTH]
    return sorted(set(values), key=len, reverse=True)


_ASSIGNMENT = re.compile(r"(?P<key>[\w.+~-]+)=(?P<value>[^,\s]+)")


def redact_text(text: str) -> str:
    """URI passwords, `secret_key=value` pairs and credential environment values in free text."""
    text = _URI_PASSWORD.sub(lambda m: m.group("head") + REDACTED, text)
    text = _ASSIGNMENT.sub(
        lambda m: (
            f"{m.group('key')}={REDACTED}"
            if secret_key(m.group("key").lstrip("+~"))
            else m.group(0)
        ),
        text,
    )
    for value in _env_secrets():
        text = text.replace(value, REDACTED)
    return text


def redact_config(node: Any, key: str = "") -> Any:
    """A copy of a plain config container with every secret replaced."""
    if isinstance(node, Mapping):
        return {k: redact_config(v, str(k)) for k, v in node.items()}
    if isinstance(node, list):
        return [redact_config(v, key) for v in node]
    if node is not None and key and secret_key(key):
        return REDACTED
    return redact_text(node) if isinstance(node, str) else node


def redact_override(item: str) -> str:
    """`a.hub_token=abc` -> `a.hub_token=REDACTED`; other overrides get redact_text."""
    from expkit import overrides

    if overrides.has_value(item) and secret_key(overrides.key(item)):
        return overrides.format(overrides.key_element(item), REDACTED)
    return redact_text(item)


def redact_file(path: Path) -> None:
    """Rewrite a YAML record (Hydra's .hydra/*.yaml, multirun.yaml) with secrets replaced."""
    if not path.is_file():
        return
    text = path.read_text(encoding="utf-8")
    lines = []
    for line in text.splitlines(keepends=True):
        match = re.match(r"^(\s*-?\s*)([\w.+~-]+)(\s*[:=]\s*)(.+?)(\s*)$", line)
        if match and secret_key(match.group(2).lstrip("+~")):
            head, key, sep, _value, tail = match.groups()
            line = f"{head}{key}{sep}{REDACTED}{tail}"
        lines.append(redact_text(line))
    new = "".join(lines)
    if new != text:
        path.write_text(new, encoding="utf-8")
