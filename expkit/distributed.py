"""Several processes, one run: the process group a launcher (torchrun, accelerate launch) asks
for, and the few collectives the run needs.

The launcher's environment says where this process stands (RANK, LOCAL_RANK, WORLD_SIZE);
expkit starts the process group from it (gloo for CPU tensors, nccl for CUDA ones) and adds
nothing of its own: DistributedDataParallel trains, torch.distributed reduces. Rank 0 alone
writes the run dir's records, the MLflow run and the checkpoints.

`World` and `world()` import nothing heavy (the CLI asks them before torch is needed).
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from typing import Any

from expkit.errors import ConfigError


@dataclass(frozen=True)
class World:
    """This process's place among the processes of one run."""

    rank: int = 0
    local_rank: int = 0
    size: int = 1
    local_size: int = 1

    @property
    def active(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def world() -> World:
    """From the launcher's environment (torchrun and accelerate set these); one process if unset."""
    env = os.environ
    size = int(env.get("WORLD_SIZE", "1") or 1)
    if size <= 1:
        return World()
    return World(
        rank=int(env.get("RANK", "0")),
        local_rank=int(env.get("LOCAL_RANK", "0")),
        size=size,
        local_size=int(env.get("LOCAL_WORLD_SIZE", str(size))),
    )


def join_submitit_tasks() -> None:
    """The tasks of one submitit job (hydra.launcher.tasks_per_node > 1, one per GPU) are the
    processes of one run. submitit sets no RANK / WORLD_SIZE: its TorchDistributedEnvironment
    derives them from the job's (SLURM's, or the local executor's) variables."""
    if "WORLD_SIZE" in os.environ or not os.environ.get("SUBMITIT_EXECUTOR"):
        return
    try:
        from submitit import JobEnvironment
        from submitit.helpers import TorchDistributedEnvironment
    except ImportError:
        return
    if JobEnvironment().num_tasks > 1:
        TorchDistributedEnvironment().export()


def check_device(name: str, here: World) -> None:
    """Several processes on one machine share its GPUs by LOCAL_RANK: a fixed index would put
    them all on one device."""
    if here.active and name.startswith("cuda:"):
        raise ConfigError(
            f"trainer.device={name} names one GPU but this run has {here.size} processes; use "
            "trainer.device=cuda or auto (each process takes cuda:LOCAL_RANK)"
        )


def _uses_cuda(device_name: str) -> bool:
    import torch

    return device_name in ("auto", "cuda") and torch.cuda.is_available()


def setup(device_name: str) -> World:
    """Join the process group of this run (once; later calls return at once).

    gloo carries CPU tensors (and the small objects the run exchanges); nccl carries CUDA
    tensors when the run trains on GPUs, each process on cuda:LOCAL_RANK.
    """
    import torch
    import torch.distributed as dist

    here = world()
    if not here.active or dist.is_initialized():
        return here
    backend = "gloo"
    if _uses_cuda(device_name):
        torch.cuda.set_device(here.local_rank)
        backend = "cpu:gloo,cuda:nccl"
    dist.init_process_group(backend=backend)
    atexit.register(_teardown)
    return here


def _teardown() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def device_for(device: Any, here: World) -> Any:
    """Each process its own GPU (cuda:LOCAL_RANK); the CPU is shared."""
    import torch

    if here.active and device.type == "cuda":
        return torch.device("cuda", here.local_rank)
    return device


def broadcast(value: Any, here: World) -> Any:
    """Rank 0's `value`, on every rank."""
    if not here.active:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather(value: Any, here: World) -> list[Any]:
    """Every rank's `value`, in rank order, on every rank."""
    if not here.active:
        return [value]
    import torch.distributed as dist

    out: list[Any] = [None] * here.size
    dist.all_gather_object(out, value)
    return out


def barrier(here: World) -> None:
    if here.active:
        import torch.distributed as dist

        dist.barrier()


def step_totals(
    loss: float, samples: int, stop_asked: bool, device: Any, here: World
) -> tuple[float, int, bool]:
    """One optimizer step over all processes, in one all-reduce: the mean loss, the samples
    trained on, and whether any process was asked to stop (so all stop after the same step)."""
    if not here.active:
        return loss, samples, stop_asked
    import torch
    import torch.distributed as dist

    tensor = torch.tensor([loss, samples, float(stop_asked)], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    total, samples_sum, asks = tensor.tolist()
    return total / here.size, int(samples_sum), asks > 0


def agree_on_run_dir(run_dir: str, device_name: str) -> list[str]:
    """The overrides that make every rank of a launch use rank 0's run dir (Hydra would give
    each process its own time-stamped one), and keep the other ranks from writing Hydra's
    records and log file into it."""
    from expkit.overrides import value_string

    here = setup(device_name)
    agreed = broadcast(run_dir, here)
    args = [f"hydra.run.dir={value_string(agreed)}"]
    if not here.is_main:
        args += ["hydra.output_subdir=null", "hydra.job_logging.root.handlers=[console]"]
    return args


def quiet_other_ranks(here: World, log_all_ranks: bool) -> None:
    """Ranks other than 0 log warnings and errors only, unless asked (trainer.log_all_ranks);
    when they do log, each line says which rank wrote it."""
    import logging

    if here.is_main:
        return
    root = logging.getLogger()
    if log_all_ranks:
        for handler in root.handlers:
            fmt = handler.formatter._fmt if handler.formatter else "%(message)s"
            handler.setFormatter(logging.Formatter(f"[rank {here.rank}] {fmt}"))
        return
    root.setLevel(logging.WARNING)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
