"""Batches of one split for one process.

The training order of an epoch is a permutation drawn from (seed, epoch) alone, the same in every
process: a global batch is a slice of it and each rank takes its share of that slice. So a resumed
run replays exactly the batches it missed, and N processes see together what one process would.
In-memory splits (`TensorData`) are moved to the device once and indexed there; file-backed splits
go through a DataLoader whose workers decode, and unreadable files are skipped and counted, or
stop the run with their path under `data.strict`.
"""

from __future__ import annotations

import math
from typing import Iterator

import torch
from torch.utils.data import DataLoader

from grove.data.base import TensorData
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
    ):
        if len(data) == 0:
            raise GroveError("a data split is empty: check the data set's path and contents")
        if train and batch_size > len(data):
            raise GroveError(
                f"data.batch_size={batch_size} is larger than the training split ({len(data)} items); lower it"
            )
        self.in_memory = isinstance(data, TensorData)
        self.data = data.to(device) if self.in_memory else data
        self.batch_size = batch_size  # global (train) or per-rank (eval)
        self.train = train
        self.device = device
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.num_workers = num_workers
        self.strict = strict
        self.skipped: set[str] = set()

    def __len__(self) -> int:
        if self.train:
            return len(self.data) // self.batch_size  # drop the ragged last batch
        return math.ceil(len(self._eval_indices()) / self.batch_size)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of `epoch`, beginning at batch `start` (to resume mid-epoch)."""
        if self.train:
            order = torch.randperm(len(self.data), generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))
            b = self.batch_size
            batches = [order[i * b : (i + 1) * b][self.rank :: self.world_size] for i in range(start, len(self))]
        else:
            indices = self._eval_indices()
            batches = [indices[i : i + self.batch_size] for i in range(0, len(indices), self.batch_size)][start:]
        if self.in_memory:
            for index in batches:
                yield self.data.take(index.to(self.device))
        else:
            yield from self._from_files(batches)

    def _eval_indices(self) -> torch.Tensor:
        return torch.arange(self.rank, len(self.data), self.world_size)

    def _from_files(self, batches):
        loader = DataLoader(
            _Indexed(self.data),
            batch_sampler=[b.tolist() for b in batches],
            num_workers=self.num_workers,
            collate_fn=_collate,
            pin_memory=self.device.type == "cuda",
        )
        for inputs, targets, bad in loader:
            for i in bad:
                self._unreadable(self.data.path(i))
            if inputs is None:
                continue
            yield inputs.to(self.device, non_blocking=True), targets.to(self.device, non_blocking=True)

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


def _collate(items):
    good = [(x, y) for _, item in items if item is not None for x, y in [item]]
    bad = [i for i, item in items if item is None]
    if not good:
        return None, None, bad
    inputs = torch.stack([x for x, _ in good])
    targets = torch.as_tensor([y for _, y in good], dtype=torch.long)
    return inputs, targets, bad
