"""What every data set builder returns, and the in-memory split types.

A builder is registered with `@register_dataset(modality=...)`, one of MODALITIES, and returns a
`DataBundle`. Every builder takes `splits` (build only those; the others are None); builders
whose bundle has `files` (the text ones: a fitted tokenizer) take `saved_dir` (a trained run's
data/ folder: reuse what is saved there instead of fitting it again); classification builders
take `classes` (the names label ids map to, in order), as does a CTC set whose alphabet is
fitted (its classes are the alphabet).

Splits are either a `TensorData` (everything in memory; the loader indexes it on the
training device, no workers) or a map-style dataset whose `__getitem__` returns
`(input, target)`, or `None` for an unreadable file. Every split's `path(i)` says where item i
came from (a file's path, or the data set and index for data made in memory), so the loader can
report an unreadable file and the engine can list the skipped ones.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import torch

from grove.errors import GroveError

# The one spelling of each modality, in registry tags and in DataBundle.meta["modality"].
MODALITIES = ("image", "audio", "text")
SPLITS = ("train", "val", "test")
Split = Literal["train", "val", "test"]
_SHOWN_CLASSES = 20  # how many known classes an unknown-label error lists


def wanted_splits(splits: Sequence[str] | None) -> frozenset[str]:
    """The splits a builder's `splits` option asks for: every one for None."""
    if splits is None:
        return frozenset(SPLITS)
    unknown = [s for s in splits if s not in SPLITS]
    if unknown:
        raise GroveError(f"splits: unknown split {unknown[0]!r}; choose from {', '.join(SPLITS)}")
    return frozenset(splits)


def class_index(classes: Sequence[str]) -> dict[str, int]:
    """label -> id for a builder's `classes` option, which must name distinct classes."""
    names = list(classes)
    if not names or not all(isinstance(c, str) and c for c in names) or len(set(names)) != len(names):
        raise GroveError(f"classes must be distinct non-empty class names, got {names[:_SHOWN_CLASSES]}")
    return {c: i for i, c in enumerate(names)}


def unknown_label(label, where: str, classes: Sequence[str], given: bool) -> GroveError:
    """The one-line error for an item whose label is not a known class; `given`: the classes came
    from the builder's `classes` option, not from the training split."""
    shown = ", ".join(repr(c) for c in list(classes)[:_SHOWN_CLASSES])
    more = f" and {len(classes) - _SHOWN_CLASSES} more" if len(classes) > _SHOWN_CLASSES else ""
    known = "known classes" if given else "labels seen in training"
    return GroveError(f"unknown label {label!r} in {where}; {known}: {shown}{more}")


class TensorData:
    """A split held in memory as two tensors; `take(idx)` gathers a batch in one indexing op."""

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor, source: str = "in-memory data"):
        if len(inputs) != len(targets):
            raise ValueError("inputs and targets differ in length")
        self.inputs = inputs
        self.targets = targets
        self.source = source

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i):
        return self.inputs[i], self.targets[i]

    def path(self, i: int) -> str:
        return f"{self.source} #{i}"

    def take(self, index: torch.Tensor):
        return self.inputs[index], self.targets[index]

    def to(self, device) -> "TensorData":
        moved = copy.copy(self)  # keeps a subclass's own attributes (voices ...)
        moved.inputs, moved.targets = self.inputs.to(device), self.targets.to(device)
        return moved


def relabel(data: TensorData, names: Sequence[str], classes: Sequence[str]) -> TensorData:
    """`data` with its targets (indices into `names`) as indices into `classes`, by name; an item
    whose name is not among `classes` is an unknown_label error."""
    index = class_index(classes)
    lookup = torch.tensor([index.get(name, -1) for name in names], dtype=torch.long)
    targets = lookup[data.targets.long()]
    unknown = (targets < 0).nonzero()
    if len(unknown):
        i = int(unknown[0])
        raise unknown_label(names[int(data.targets[i])], data.path(i), classes, given=True)
    relabelled = copy.copy(data)  # keeps a subclass's own attributes (voices ...)
    relabelled.targets = targets
    return relabelled


@dataclass
class DataBundle:
    """Splits plus what the rest of grove needs to know about them.

    transform(x, train) runs on batches on the training device (augmentation and normalisation),
    so it is the same code on CPU and GPU; `meta` is JSON-able and is saved in the run directory so
    that evaluate/predict can rebuild the transform and name the classes without the data.
    """

    # A split the data set lacks, or that the builder's `splits` did not ask for, is None.
    train: Any | None
    val: Any | None
    test: Any | None
    classes: list[str]
    transform: Callable[[torch.Tensor, bool], torch.Tensor]
    meta: dict = field(default_factory=dict)
    # Model options the data decides (in_channels, image_size, num_classes ...); a recipe's own
    # model options take precedence.
    model_defaults: dict = field(default_factory=dict)
    # Files later commands need (a tokenizer ...): written into the run directory's data/ folder.
    files: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


class WindowData:
    """Next-token windows over one token stream: item i is (tokens[s:s+T], tokens[s+1:s+T+1]) with
    s = i * stride. stride 1 gives every window (training draws them in random order, as nanoGPT
    samples random offsets); stride T gives non-overlapping windows for evaluation."""

    def __init__(self, tokens: torch.Tensor, block_size: int, stride: int = 1, source: str = "token stream"):
        if len(tokens) <= block_size:
            raise ValueError(f"{len(tokens)} tokens cannot fill one window of {block_size}")
        self.tokens = tokens.long()
        self.block_size = block_size
        self.stride = stride
        self.source = source

    def __len__(self) -> int:
        return (len(self.tokens) - self.block_size - 1) // self.stride + 1

    def __getitem__(self, i):
        return self.take(torch.as_tensor([i]))

    def path(self, i: int) -> str:
        start = i * self.stride
        return f"{self.source} tokens {start}-{start + self.block_size}"

    def take(self, index: torch.Tensor):
        starts = index.to(self.tokens.device) * self.stride
        pos = starts[:, None] + torch.arange(self.block_size + 1, device=self.tokens.device)  # (B, T+1)
        window = self.tokens[pos]
        return window[:, :-1], window[:, 1:]

    def to(self, device) -> "WindowData":
        return WindowData(self.tokens.to(device), self.block_size, self.stride, self.source)


class StreamData:
    """A token stream laid out as `rows` parallel streams read in order, `bptt` steps at a time, so a
    recurrent model's state at the end of one batch is the right start for the next (truncated
    backpropagation through time, Zaremba et al.). Item i is already a whole batch (rows, <=bptt);
    the loader reads items in order and gives each process its share of the rows."""

    sequential = True

    def __init__(self, tokens: torch.Tensor, rows: int, bptt: int, source: str = "token stream"):
        length = (len(tokens) - 1) // rows
        if length < 1:
            raise ValueError(f"{len(tokens)} tokens cannot fill {rows} rows")
        self.inputs = tokens[: rows * length].long().view(rows, length)  # (rows, L)
        self.targets = tokens[1 : rows * length + 1].long().view(rows, length)
        self.bptt = bptt
        self.source = source

    def __len__(self) -> int:
        return -(-self.inputs.shape[1] // self.bptt)

    def __getitem__(self, i):
        cut = slice(i * self.bptt, (i + 1) * self.bptt)
        return self.inputs[:, cut], self.targets[:, cut]

    def path(self, i: int) -> str:
        return f"{self.source} steps {i * self.bptt}-{(i + 1) * self.bptt} of {len(self.inputs)} rows"

    def to(self, device) -> "StreamData":
        moved = copy.copy(self)
        moved.inputs, moved.targets = self.inputs.to(device), self.targets.to(device)
        return moved
