"""`resume=auto|PATH`: which checkpoint a run continues from, and whether its config still fits.

Only light modules are imported here: the checkpoint is found and its config compared before
the data, torch or the model are loaded, so a refused resume answers at once.
"""

from __future__ import annotations

import logging
import shlex
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from expkit.checkpoint import Checkpoint, checkpoints_dir, latest, load
from expkit.errors import ConfigError

log = logging.getLogger(__name__)

# keys that change how a run is watched, saved or tracked, never what it computes
FREE = (
    "trainer.log_every",
    "trainer.eval_every",
    "trainer.eval_batch_size",
    "trainer.save_every",
    "trainer.keep_checkpoints",
    "trainer.progress",
    "trainer.num_workers",
    "trainer.save_model",
    "trainer.device",
    "trainer.on_nan",
    "trainer.log_all_ranks",
    "tracking",
    "resume",
    "objective",
)


def _under(key: str, prefixes: Any) -> bool:
    return any(key == p or key.startswith(f"{p}.") for p in prefixes)


def find_checkpoint(cfg: DictConfig, run_dir: Path) -> Checkpoint | None:
    """The checkpoint `resume.checkpoint` names: auto takes the newest good one in the run dir
    (none there: a fresh start); a path must be a complete checkpoint (CheckpointError if not)."""
    where = cfg.resume.checkpoint
    if where is None:
        return None
    if where == "auto":
        found = latest(run_dir)
        if found is None:
            log.info("resume=auto: no checkpoint in %s; starting fresh", checkpoints_dir(run_dir))
        return found
    return load(Path(str(where)))


def check_changes(
    checkpoint: Checkpoint, current: dict[str, Any], allowed: list[str]
) -> dict[str, tuple[Any, Any]]:
    """The config keys that differ from the checkpoint's: (saved, now) for each allowed one;
    a ConfigError naming the others (values are compared as recorded: flattened, redacted)."""
    saved = checkpoint.state.get("config", {})
    # keys on one side only came or went with another expkit version: their defaults applied
    differ = {
        key: (saved[key], current[key])
        for key in sorted(set(saved) & set(current))
        if not _under(key, FREE) and saved[key] != current[key]
    }
    refused = [key for key in differ if not _under(key, allowed)]
    if refused:
        shown = ", ".join(f"{k} ({differ[k][0]} -> {differ[k][1]})" for k in refused[:8])
        more = f" and {len(refused) - 8} more" if len(refused) > 8 else ""
        raise ConfigError(
            f"resume: the config differs from checkpoint {checkpoint.path} in {shown}{more}; "
            "resume with the checkpoint's values, or allow the change: "
            f"resume.allow_changes=[{','.join(refused)}]"
        )
    return differ


def check_world(checkpoint: Checkpoint, size: int) -> None:
    """A checkpoint's data position is per process: it resumes with as many processes."""
    saved = int(checkpoint.state.get("world_size", 1))
    if saved != size:
        raise ConfigError(
            f"resume: checkpoint {checkpoint.path} was written by a run of {saved} process(es) "
            f"and this one has {size}; relaunch with {saved} (e.g. torchrun "
            f"--nproc_per_node={saved})"
        )


def resume_command(overrides: list[str], run_dir: Path) -> str:
    """The command that continues this run from its newest checkpoint."""
    from expkit.distributed import world
    from expkit.overrides import section

    kept = [o for o in overrides if section(o) != "resume"]
    args = [*kept, f"hydra.run.dir={run_dir}", "resume=auto"]
    here = world()
    launcher = ["expkit"]
    if here.active:  # a launch resumes under the same launcher, with as many processes
        nodes = here.size // here.local_size
        launcher = ["torchrun", *([f"--nnodes={nodes}"] if nodes > 1 else []),
                    f"--nproc_per_node={here.local_size}", "-m", "expkit"]  # fmt: skip
    return " ".join([*launcher, *(shlex.quote(a) for a in args)])
