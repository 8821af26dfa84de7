"""Fail fast when a hub id is neither cached nor reachable (instead of a minute of retries)."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

OFFLINE_MODELS = (
    "model=minilm (offline pretrained), model=tiny, or model.name_or_path=/a/local/model/dir"
)


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def hub_reachable(timeout: float = 3.0) -> bool:
    """True when a TCP connection to the hub opens within `timeout` seconds (and not offline)."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False"):
        return False
    url = urlparse(hub_endpoint())
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def model_is_cached(repo_id: str, cache_dir: str | None) -> bool:
    """Whether the hub model's config.json is already in the local cache."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "config.json", cache_dir=cache_dir)
    return isinstance(found, str)


def unreachable_model_message(repo_id: str) -> str:
    return (
        f"model '{repo_id}' is not in the local cache and the Hugging Face hub "
        f"({hub_endpoint()}) cannot be reached; offline choices: {OFFLINE_MODELS}"
    )
