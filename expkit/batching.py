"""The training order, shared by every backend: which examples form each batch, and each step.

Both backends draw their training batches from `EpochSampler`, so for one seed they see the same
examples in the same order. An epoch is split into optimizer steps of `grad_accum_steps`
micro-batches; a window never spans two epochs (the last one of an epoch may be shorter), as in
the Hugging Face Trainer.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any


class EpochSampler:
    """A random permutation of the training set per epoch, from (seed, epoch) alone.

    Its own generator leaves the global RNG (dropout) untouched, and epoch e's order is known
    without replaying epochs 0..e-1. The Trainer calls `set_epoch` through accelerate.

    With `lengths` (data.group_by_length), the permutation is cut into buckets of 50 batches and
    each bucket is sorted by length: a batch holds examples of similar length, so padding costs
    little, while the buckets and their contents stay shuffled epoch to epoch.
    """

    BUCKET_BATCHES = 50  # as the Trainer's LengthGroupedSampler

    def __init__(
        self,
        num_samples: int,
        seed: int,
        lengths: list[int] | None = None,
        batch_size: int = 1,
        rank: int = 0,
        world_size: int = 1,
        collator: Any = None,
    ) -> None:
        self.num_samples = num_samples
        self.collator = collator
        self.seed = seed
        self.lengths = lengths
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        # a collator that draws at random per epoch (masked LM) draws for this one
        if hasattr(self.collator, "set_epoch"):
            self.collator.set_epoch(epoch)

    def skip_next(self, count: int) -> None:
        """The next pass starts `count` samples in (a resumed epoch): nothing is loaded for them."""
        self._skip = count

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self.world_size)

    def order(self) -> list[int]:
        """This epoch's order of example indices (all processes')."""
        import torch

        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        indices = torch.randperm(self.num_samples, generator=generator).tolist()
        if self.lengths is None:
            return indices
        size = self.BUCKET_BATCHES * self.batch_size
        lengths = self.lengths
        out: list[int] = []
        for start in range(0, len(indices), size):
            out += sorted(indices[start : start + size], key=lambda i: -lengths[i])
        return out

    def shard(self) -> list[int]:
        """This process's examples: every world_size-th of the epoch's order, from its rank, the
        order padded from its start to a multiple of world_size (as DistributedSampler does).
        Batch b of each rank together are batch b of one process with world_size x the batch."""
        order = self.order()
        if self.world_size == 1:
            return order
        pad = -len(order) % self.world_size
        order += (order * (pad // max(len(order), 1) + 1))[:pad]
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[int]:
        skip, self._skip = self._skip, 0
        yield from self.shard()[skip:]


def epoch_sampler(
    dataset: Any,
    seed: int,
    batch_size: int,
    group_by_length: bool,
    rank: int = 0,
    world_size: int = 1,
    collator: Any = None,
) -> EpochSampler:
    """The training order of both backends (lengths read once when grouping by length).

    The manual loop shards it per process (rank, world_size); the Trainer gets it whole and
    accelerate deals its batches out to the processes. A `collator` with `set_epoch` (one that
    masks at random) is told each epoch as the sampler is.
    """
    lengths = [len(ids) for ids in dataset["input_ids"]] if group_by_length else None
    return EpochSampler(
        len(dataset), seed, lengths, world_size * batch_size, rank, world_size, collator
    )


def train_loader(
    dataset: Any,
    collator: Any,
    batch_size: int,
    sampler: EpochSampler,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> Any:
    """The training DataLoader over `sampler`; call `loader.sampler.set_epoch(e)` per epoch."""
    from torch.utils.data import DataLoader

    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=collator,
        num_workers=num_workers,
        pin_memory=pin_memory,
    )


def steps_per_epoch(num_examples: int, batch_size: int, accum: int, world_size: int = 1) -> int:
    """Optimizer steps per epoch: micro-batches in windows of `accum`, the last maybe shorter.

    With several processes each takes every `world_size`-th example (or batch, under
    accelerate): ceil(N / (batch x world)) micro-batches each, either way.
    """
    return max(1, math.ceil(math.ceil(num_examples / (batch_size * world_size)) / accum))


def step_windows(
    loader: Any, accum: int, start_epoch: int = 0, skip_steps: int = 0
) -> Iterator[tuple[int, list]]:
    """(epoch, micro-batches of one optimizer step), epoch after epoch, reshuffled each time.

    A resumed run starts in `start_epoch` after its first `skip_steps` steps: their samples are
    skipped in the sampler's index order, so resuming late costs no more than resuming early.
    """
    epoch = start_epoch
    if skip_steps:
        loader.sampler.skip_next(skip_steps * accum * loader.batch_size)
    while True:
        loader.sampler.set_epoch(epoch)
        window: list = []
        for batch in loader:
            window.append(batch)
            if len(window) == accum:
                yield epoch, window
                window = []
        if window:
            yield epoch, window
        epoch += 1
