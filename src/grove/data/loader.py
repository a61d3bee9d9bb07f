"""Batches of one split for one process.

The training order of an epoch is a permutation drawn from (seed, epoch) alone, the same in every
process: a global batch is a slice of it and each rank takes its share of that slice. So a resumed
run replays exactly the batches it missed, and N processes see together what one process would.
Splits with a `lengths` attribute are batched by similar length (less padding) within that order.
With `poisson` (private training) each batch is instead an independent Poisson draw from
(seed, epoch): every example in it with probability batch_size / N.
Splits with `take` (in memory) are moved to the device once and indexed there; `sequential`
splits (token streams for truncated BPTT) are read in order, each rank taking its rows; other
splits go through a DataLoader whose workers decode (with the split's own `collate` when it has
one), and unreadable files are skipped and remembered (`skipped`, a set of paths;
`skipped_files`, the same sorted, for the run directory's skipped_files.txt), or stop the run
with their path under `data.strict`. Inputs and targets are tensors or dicts of tensors.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Iterator

import torch
from torch.utils.data import DataLoader

from grove.errors import GroveError


class BatchLoader:
    def __init__(
        self,
        data,
        batch_size: int,
        *,
        train: bool,
        device: torch.device,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
        strict: bool = False,
        poisson: bool = False,
    ):
        if len(data) == 0:
            raise GroveError("a data split is empty: check the data set's path and contents")
        self.sequential = getattr(data, "sequential", False)
        if train and not self.sequential and batch_size > len(data):
            raise GroveError(
                f"data.batch_size={batch_size} is larger than the training split ({len(data)} items); lower it"
            )
        self.in_memory = hasattr(data, "take") or self.sequential
        self.data = data.to(device) if self.in_memory else data
        self.batch_size = batch_size  # global (train) or per-rank (eval)
        self.train = train
        self.device = device
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.num_workers = num_workers
        self.strict = strict
        # Private training: every example joins each batch independently with probability
        # batch_size / N, so batch sizes vary around batch_size (see grove/privacy).
        self.poisson = poisson and train
        self.skipped: set[str] = set()  # the path(i) of every unreadable item met so far

    @property
    def skipped_files(self) -> list[str]:
        """The paths of the unreadable files skipped so far, sorted, each once."""
        return sorted(self.skipped)

    def __len__(self) -> int:
        if self.sequential:
            return len(self.data)
        if self.train:
            return len(self.data) // self.batch_size  # drop the ragged last batch
        return math.ceil(len(self._eval_indices()) / self.batch_size)

    def epoch(self, epoch: int, start: int = 0) -> Iterator:
        """The (inputs, targets) batches of `epoch`, beginning at batch `start` (to resume mid-epoch)."""
        if self.sequential:
            for i in range(start, len(self)):
                inputs, targets = self.data[i]
                yield inputs[self.rank :: self.world_size], targets[self.rank :: self.world_size]
            return
        if self.train:
            batches = [b[self.rank :: self.world_size] for b in self._train_batches(epoch)[start:]]
        else:
            indices = self._eval_indices()
            batches = [indices[i : i + self.batch_size] for i in range(0, len(indices), self.batch_size)][start:]
        if self.in_memory:
            for index in batches:
                yield self.data.take(index.to(self.device))
        else:
            yield from self._from_files(batches)

    def _train_batches(self, epoch: int) -> list[torch.Tensor]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        if self.poisson:
            q, n = self.batch_size / len(self.data), len(self.data)
            return [(torch.rand(n, generator=generator) < q).nonzero().squeeze(1) for _ in range(len(self))]
        order = torch.randperm(len(self.data), generator=generator)
        b = self.batch_size
        batches = [order[i * b : (i + 1) * b] for i in range(len(self))]
        lengths = getattr(self.data, "lengths", None)
        if lengths is None:
            return batches
        # Sort each run of 50 batches by length, cut again, and shuffle the batch order.
        lengths = torch.as_tensor(lengths)
        pool = 50 * b
        order = order[: len(self) * b]
        chunks = [order[i : i + pool] for i in range(0, len(order), pool)]
        order = torch.cat([c[lengths[c].argsort(stable=True)] for c in chunks])
        batches = [order[i * b : (i + 1) * b] for i in range(len(self))]
        return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]

    def _eval_indices(self) -> torch.Tensor:
        return torch.arange(self.rank, len(self.data), self.world_size)

    def _from_files(self, batches):
        loader = DataLoader(
            _Indexed(self.data),
            batch_sampler=[b.tolist() for b in batches],
            num_workers=self.num_workers,
            collate_fn=partial(_collate, getattr(self.data, "collate", _stack)),
            pin_memory=self.device.type == "cuda",
        )
        for inputs, targets, bad in loader:
            for i in bad:
                self._unreadable(self.data.path(i))
            if inputs is None:
                continue
            yield to_device(inputs, self.device), to_device(targets, self.device)

    def _unreadable(self, path: str) -> None:
        if self.strict:
            raise GroveError(
                f"cannot read {path} (data.strict is on): fix or remove the file, "
                "or set data.strict=false to skip unreadable files"
            )
        self.skipped.add(path)


class _Indexed:
    """Pairs each item with its index, so the main process can name an unreadable file."""

    def __init__(self, data):
        self.data = data

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        return i, self.data[i]


def _collate(collate, items):
    bad = [i for i, item in items if item is None]
    good = [item for _, item in items if item is not None]
    if not good:
        return None, None, bad
    return (*collate(good), bad)


def _stack(items):
    return torch.stack([x for x, _ in items]), torch.as_tensor([y for _, y in items], dtype=torch.long)


def to_device(batch, device: torch.device):
    """A tensor, or a dict of tensors, on the device (asynchronously from pinned memory)."""
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch.to(device, non_blocking=True)
