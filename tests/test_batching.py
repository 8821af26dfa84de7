"""The shared training order: the sampler, the accumulation windows, the step count."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from expkit.batching import EpochSampler, step_windows, steps_per_epoch, train_loader
from expkit.run import plan_total_steps


def test_the_sampler_is_a_permutation_fixed_by_seed_and_epoch():
    sampler = EpochSampler(50, seed=3)
    first = list(sampler)
    assert sorted(first) == list(range(50)) and first != list(range(50))
    assert list(sampler) == first  # the same epoch again: the same order
    sampler.set_epoch(1)
    second = list(sampler)
    assert sorted(second) == list(range(50)) and second != first
    other = EpochSampler(50, seed=3)
    other.set_epoch(1)
    assert list(other) == second  # epoch 1's order without replaying epoch 0
    before = torch.random.get_rng_state()
    list(EpochSampler(50, seed=4))
    assert torch.equal(torch.random.get_rng_state(), before)  # dropout's RNG untouched


def test_group_by_length_batches_similar_lengths_in_shuffled_buckets():
    lengths = [(i * 37) % 97 + 3 for i in range(1000)]
    grouped = EpochSampler(1000, seed=1, lengths=lengths, batch_size=4)
    order = list(grouped)
    assert sorted(order) == list(range(1000))  # still every example once
    buckets = [order[i : i + 200] for i in range(0, 1000, 200)]  # 50 batches of 4
    for bucket in buckets:
        assert [lengths[i] for i in bucket] == sorted((lengths[i] for i in bucket), reverse=True)

    def padding(order):  # padded tokens per batch of 4, summed
        batches = [order[i : i + 4] for i in range(0, 1000, 4)]
        return sum(4 * max(lengths[i] for i in b) - sum(lengths[i] for i in b) for b in batches)

    plain = list(EpochSampler(1000, seed=1))
    assert padding(order) < padding(plain) / 5
    grouped.set_epoch(1)
    assert list(grouped) != order  # reshuffled each epoch
    grouped.set_epoch(0)
    assert list(grouped) == order  # and fixed by (seed, epoch)
    grouped.skip_next(8)
    assert list(grouped) == order[8:]  # a resumed epoch: skipped by index


def test_windows_never_span_an_epoch():
    data = [{"x": i} for i in range(10)]

    def collate(rows):
        return [r["x"] for r in rows]

    loader = train_loader(data, collate, 2, EpochSampler(10, seed=0))  # 5 micro-batches an epoch
    windows = step_windows(loader, accum=2)
    got = [next(windows) for _ in range(6)]
    assert [(epoch, len(w)) for epoch, w in got] == [(0, 2), (0, 2), (0, 1), (1, 2), (1, 2), (1, 1)]
    for epoch in (0, 1):
        seen = [x for e, w in got if e == epoch for batch in w for x in batch]
        assert sorted(seen) == list(range(10))  # each epoch: every example once
    assert steps_per_epoch(10, 2, 2) == 3


@pytest.mark.parametrize(
    ("examples", "batch", "accum", "epochs"),
    [(200, 8, 2, 3.0), (200, 8, 2, 1.5), (320, 16, 1, 3.0), (7, 8, 4, 2.0), (100, 3, 5, 0.25)],
)
def test_planned_steps_are_the_trainers_count(examples, batch, accum, epochs):
    trainer = OmegaConf.create(
        {"max_steps": -1, "epochs": epochs, "batch_size": batch, "grad_accum_steps": accum}
    )
    # transformers.Trainer.set_initial_training_values, for a sized loader and max_steps=-1
    batches = math.ceil(examples / batch)
    per_epoch = max(batches // accum + int(batches % accum > 0), 1)
    assert plan_total_steps(examples, trainer) == math.ceil(epochs * per_epoch)
    trainer.max_steps = 11
    assert plan_total_steps(examples, trainer) == 11


@pytest.mark.parametrize("num", [64, 61])
@pytest.mark.parametrize("lengths", [None, "random"])
def test_each_process_takes_its_part_of_every_batch(num, lengths):
    """Batch b of each of W processes together is batch b of one process with W x the batch."""
    gen = torch.Generator().manual_seed(0)
    lens = torch.randint(1, 50, (num,), generator=gen).tolist() if lengths else None
    world, batch = 2, 4
    whole = EpochSampler(num, seed=3, lengths=lens, batch_size=world * batch)
    parts = [EpochSampler(num, 3, lens, world * batch, rank, world) for rank in range(world)]
    for sampler in (whole, *parts):
        sampler.set_epoch(1)
    order, shards = list(whole), [list(p) for p in parts]
    assert all(
        len(s) == len(p) == math.ceil(num / world) for s, p in zip(shards, parts, strict=True)
    )
    for b in range(math.ceil(num / (world * batch)) - 1):  # every full batch
        together = sorted(i for s in shards for i in s[b * batch : (b + 1) * batch])
        assert together == sorted(order[b * world * batch : (b + 1) * world * batch])
    covered = {i for s in shards for i in s}
    assert covered == set(range(num))  # none missed; an odd count pads one repeated example
    assert sum(len(s) for s in shards) == num + (num % world)
    # a resumed epoch skips the same batches on every process
    parts[1].skip_next(batch * 3)
    assert list(parts[1]) == shards[1][batch * 3 :]


def test_steps_per_epoch_count_every_process():
    # 61 examples, batch 4, two processes: ceil(61 / 8) = 8 micro-batches each
    assert steps_per_epoch(61, 4, 1, world_size=2) == 8
    assert steps_per_epoch(61, 4, 3, world_size=2) == 3
    assert steps_per_epoch(61, 8, 1) == 8
