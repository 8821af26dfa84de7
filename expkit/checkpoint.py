"""Checkpoints: `<run dir>/checkpoints/step_N`, written atomically, read back exactly.

A checkpoint is written into a hidden sibling (`.step_N.partial-PID`, by `atomic_dir`, which the
final model uses too); every file is fsynced, a manifest with each file's size and SHA-256 is
written last, and the directory is renamed into place. So a directory named `step_N` is complete,
and one damaged later (a truncated file, disk trouble) fails its manifest check and is skipped.
Loading never unpickles arbitrary objects: safetensors, JSON, and `torch.load(weights_only=True)`.

The files follow the Hugging Face Trainer's layout (model.safetensors, optimizer.pt,
scheduler.pt, scaler.pt, rng_state.pth, trainer_state.json), so `trainer=hf` resumes through
`Trainer.train(resume_from_checkpoint=...)`; expkit's own state is in expkit_state.json.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import traceback
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from expkit.errors import ExpkitError
from expkit.procs import process_alive

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
MANIFEST = "manifest.json"
STATE = "expkit_state.json"
MODEL = "model.safetensors"
BEST = "best_model.safetensors"  # the best evaluation's weights (trainer.load_best)
RNG = "rng_state.pth"  # the Trainer's name and format: {"python", "numpy", "cpu", "cuda"}
FORMAT = 1
_NAME = re.compile(r"^step_(\d+)$")
_PARTIAL = re.compile(r"^\.(.+)\.(partial|old)-(\d+)$")  # what atomic_dir leaves if killed
_NEARLY_FULL = 1 << 20  # bytes free below which a failed write is put down to a full disk


class CheckpointError(ExpkitError):
    """A checkpoint that cannot be used (incomplete, corrupt, or for another config)."""


class CheckpointNotSaved(ExpkitError):
    """Writing a checkpoint failed (disk full, ...); the partial one is removed."""


class WriteFailed(ExpkitError):
    """Writing a directory with `atomic_dir` failed; the partial one is removed."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path} not written ({reason}); the partial one was removed")
        self.path = path
        self.reason = reason


@dataclass
class Checkpoint:
    path: Path
    state: dict[str, Any]  # expkit_state.json

    @property
    def step(self) -> int:
        return int(self.state["step"])


def checkpoints_dir(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINTS


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def verify(path: Path) -> dict[str, Any]:
    """The checkpoint's state, once every file matches its manifest; else CheckpointError."""
    path = Path(path)
    manifest_file = path / MANIFEST
    if not manifest_file.is_file():
        raise CheckpointError(f"checkpoint {path} is incomplete (no {MANIFEST})")
    try:
        manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
        files = dict(manifest["files"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"checkpoint {path}: {MANIFEST} is unreadable ({exc})") from None
    for name, (size, digest) in files.items():
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"checkpoint {path} is incomplete ({name} is missing)")
        actual = file.stat().st_size
        if actual != size:
            raise CheckpointError(
                f"checkpoint {path} is truncated ({name} has {actual} of {size} bytes)"
            )
        if _sha256(file) != digest:
            raise CheckpointError(f"checkpoint {path} is corrupt ({name} fails its checksum)")
    if STATE not in files:
        raise CheckpointError(f"checkpoint {path} has no {STATE}")
    state = json.loads((path / STATE).read_text(encoding="utf-8"))
    if state.get("format") != FORMAT:
        raise CheckpointError(
            f"checkpoint {path} has format {state.get('format')}; this expkit reads {FORMAT}"
        )
    return state


def load(path: Path) -> Checkpoint:
    """A verified checkpoint (CheckpointError names what is wrong with it)."""
    path = Path(path).expanduser().resolve()
    return Checkpoint(path, verify(path))


def _listed(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, dir) of every `step_N` directory, newest first."""
    folder = checkpoints_dir(run_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found, reverse=True)


def latest(run_dir: Path) -> Checkpoint | None:
    """The newest checkpoint that passes its check; damaged ones are named and skipped."""
    for _, path in _listed(run_dir):
        try:
            return load(path)
        except CheckpointError as exc:
            log.warning("%s; skipped, trying the previous one", exc)
    return None


def rng_state() -> dict[str, Any]:
    """Every RNG state, in the Trainer's rng_state.pth layout."""
    import random

    import numpy as np
    import torch

    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "cpu": torch.random.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.random.get_rng_state_all()
    return states


def rng_file(rank: int, world_size: int) -> str:
    """The Trainer's names: rng_state.pth for one process, rng_state_<rank>.pth for several."""
    return RNG if world_size == 1 else f"rng_state_{rank}.pth"


def restore_rng(path: Path, rank: int = 0, world_size: int = 1) -> None:
    """Set every RNG from the checkpoint's rng_state.pth (weights_only: no arbitrary objects)."""
    import random

    import numpy as np
    import torch
    from transformers.trainer_pt_utils import safe_globals  # numpy's state types, allow-listed

    with safe_globals():
        states = torch.load(Path(path) / rng_file(rank, world_size), weights_only=True)
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.random.set_rng_state(states["cpu"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.random.set_rng_state_all(states["cuda"])


def load_model_weights(model: Any, path: Path) -> None:
    """The checkpoint's weights into `model` (safetensors; tied copies are re-tied); an
    adapter's checkpoint holds the adapter and the modules it trains in full."""
    from safetensors.torch import load_file

    from expkit.adapter import load_adapter_weights

    if load_adapter_weights(model, Path(path)):
        return
    tensors = load_file(str(Path(path) / MODEL))
    result = model.load_state_dict(tensors, strict=False)
    if result.unexpected_keys:
        extra = ", ".join(result.unexpected_keys[:5])
        raise CheckpointError(f"checkpoint {path} has weights this model lacks: {extra}")
    loaded = {t.data_ptr() for k, t in model.state_dict().items() if k in tensors}
    state = model.state_dict()
    untied = [k for k in result.missing_keys if state[k].data_ptr() not in loaded]
    if untied:  # save_pretrained leaves out tied copies only
        raise CheckpointError(f"checkpoint {path} lacks weights: {', '.join(untied[:5])}")


def load_best_weights(path: Path) -> dict[str, Any] | None:
    """The best evaluation's weights kept in the checkpoint (CPU tensors), or None."""
    from safetensors.torch import load_file

    file = Path(path) / BEST
    return load_file(str(file)) if file.is_file() else None


def load_training_state(path: Path, optimizer: Any, scheduler: Any, scaler: Any = None) -> None:
    """Optimizer, scheduler and gradient-scaler state (weights_only)."""
    import torch

    path = Path(path)
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    if scaler is not None and (path / "scaler.pt").is_file():
        scaler.load_state_dict(torch.load(path / "scaler.pt", weights_only=True))


def _write_files(
    folder: Path,
    model: Any,
    optimizer: Any,
    scheduler: Any,
    scaler: Any,
    state: dict[str, Any],
    trainer_state: str | None,
    rng_states: list[dict[str, Any]] | None = None,
    best_weights: dict[str, Any] | None = None,
) -> None:
    import torch

    from expkit.model import quiet_transformers

    with quiet_transformers():
        model.save_pretrained(folder)  # model.safetensors + config.json
    torch.save(optimizer.state_dict(), folder / "optimizer.pt")
    torch.save(scheduler.state_dict(), folder / "scheduler.pt")
    if scaler is not None and scaler.is_enabled():
        torch.save(scaler.state_dict(), folder / "scaler.pt")
    every = rng_states or [rng_state()]  # one per process
    for rank, states in enumerate(every):
        torch.save(states, folder / rng_file(rank, len(every)))
    if trainer_state is not None:
        (folder / "trainer_state.json").write_text(trainer_state, encoding="utf-8")
    if best_weights is not None:
        from safetensors.torch import save_file

        save_file(best_weights, str(folder / BEST))
    (folder / STATE).write_text(json.dumps({**state, "format": FORMAT}, indent=1), "utf-8")


def _remove_stale(folder: Path) -> None:
    """Partial directories of processes that are gone (killed mid-write)."""
    for path in folder.iterdir():
        m = _PARTIAL.match(path.name)
        pid = int(m.group(3)) if m else 0
        if m and path.is_dir() and (pid == os.getpid() or not process_alive(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and the exceptions it was raised from or while handling."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _reason(exc: BaseException, folder: Path) -> str:
    """Why a write failed, in words: a full disk named as such, whatever the library raised."""
    for cause in _causes(exc):
        if isinstance(cause, OSError) and cause.errno == errno.ENOSPC:
            return "the disk is full"
        if isinstance(cause, OSError) and cause.errno == errno.EDQUOT:
            return "the disk quota is used up"
    text = " ".join(f"{type(exc).__name__}: {exc}".split())  # one line
    if "No space left on device" in text:  # safetensors (Rust) names it in its message only
        return "the disk is full"
    # torch's zip writer reports a short write as "unexpected pos" with no errno: ask the disk
    with suppress(OSError):
        free = shutil.disk_usage(folder).free
        if free < _NEARLY_FULL:
            return f"the disk is full, {free} bytes free"
    return text


def write_text_atomic(path: Path, text: str) -> None:
    """`path` holds `text` whole or is as it was (a temporary sibling, renamed); WriteFailed."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with suppress(OSError):
            tmp.unlink()
        raise WriteFailed(path, _reason(exc, path.parent)) from exc


def _seal(folder: Path, manifest: bool) -> None:
    """fsync every file (and write the manifest of sizes and SHA-256 when asked), then the dir."""
    files = {}
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        _fsync(file)
        if manifest:
            files[str(file.relative_to(folder))] = [file.stat().st_size, _sha256(file)]
    if manifest:
        (folder / MANIFEST).write_text(json.dumps({"files": files}, indent=1), encoding="utf-8")
        _fsync(folder / MANIFEST)
    _fsync(folder)


@contextmanager
def atomic_dir(final: Path, manifest: bool = True) -> Iterator[Path]:
    """A hidden sibling of `final` to write into, renamed to `final` once complete and fsynced.

    So `final` is either complete or as it was. Any failure while writing (an OSError, or what a
    library raises for a short write: torch's RuntimeError, safetensors' SafetensorError) removes
    the partial directory and raises WriteFailed; an interrupt removes it and goes on.
    """
    final = Path(final)
    parent = final.parent
    tmp = parent / f".{final.name}.partial-{os.getpid()}"
    try:
        parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(parent)
        tmp.mkdir()
        yield tmp
        _seal(tmp, manifest)
        if final.exists():  # one from an earlier attempt: replaced only by a complete one
            old = parent / f".{final.name}.old-{os.getpid()}"
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(final)
        _fsync(parent)
    except Exception as exc:
        reason = _reason(exc, parent)  # before the partial files go and free the disk
        log.debug("writing %s failed", final, exc_info=True)
        # the failed write's frames hold its file open (torch's zip writer), and a removed file
        # that is open keeps its space: let them go, so the disk is free again at once
        for cause in _causes(exc):
            traceback.clear_frames(cause.__traceback__)
        shutil.rmtree(tmp, ignore_errors=True)
        raise WriteFailed(final, reason) from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save(
    run_dir: Path,
    step: int,
    *,
    model: Any,
    optimizer: Any,
    scheduler: Any,
    scaler: Any,
    state: dict[str, Any],
    keep: int,
    trainer_state: str | None = None,
    rng_states: list[dict[str, Any]] | None = None,
    best_weights: dict[str, Any] | None = None,
) -> Path:
    """Write `checkpoints/step_<step>` atomically; keep the newest `keep` (0: all).

    On any failure to write (disk full, whatever the library raises) the partial directory is
    removed, the existing checkpoints stay, and CheckpointNotSaved says what happened.
    """
    final = checkpoints_dir(run_dir) / f"step_{step}"
    try:
        with atomic_dir(final) as tmp:
            _write_files(tmp, model, optimizer, scheduler, scaler, {**state, "step": step},
                         trainer_state, rng_states, best_weights)  # fmt: skip
    except WriteFailed as exc:
        raise CheckpointNotSaved(
            f"checkpoint at step {step} not saved ({exc.reason}); the partial one was removed "
            "and the earlier checkpoints are kept"
        ) from exc
    prune(run_dir, keep)
    return final


def prune(run_dir: Path, keep: int) -> None:
    """Remove all but the newest `keep` checkpoints (0: keep all)."""
    if keep <= 0:
        return
    for _, path in _listed(run_dir)[keep:]:
        shutil.rmtree(path, ignore_errors=True)
