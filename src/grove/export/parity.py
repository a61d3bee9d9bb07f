"""Proof that an exported graph computes what the eager model computes, on the run's own data.

The eager wrapper (the model behind its preprocessing, graphs.py) and the exported graph run on
the same held-out inputs at batch sizes 1, 7 and all, and sequences also cut to an odd length.
Compared are logits (log-probabilities for CTC) at every valid position: the largest absolute
difference, and how often the top-1 class agrees (per input, per frame, per token). Language
models are also run incrementally: a prompt, then one token at a time through the exported
state, against the eager model's logits for the whole sequence at once.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from grove.errors import GroveError
from grove.export.graphs import GraphSpec, empty_state
from grove.runtime.manifest import Parity

MAX_ABS_DIFF = 1e-4  # fp32 logits
Runner = Callable[[Sequence[np.ndarray]], list[np.ndarray]]  # the graph: inputs -> outputs, in order


class Comparison:
    """Running max |diff| and top-1 agreement over (reference, candidate) logits with classes last."""

    def __init__(self):
        self.max_abs, self.agree, self.total = 0.0, 0, 0

    def add(self, reference: np.ndarray, candidate: np.ndarray) -> None:
        if reference.shape != candidate.shape:
            raise GroveError(f"the exported graph gives shape {candidate.shape} where the model gives {reference.shape}")
        if reference.size:
            self.max_abs = max(self.max_abs, float(np.abs(reference - candidate).max()))
            self.agree += int((reference.argmax(-1) == candidate.argmax(-1)).sum())
            self.total += reference[..., 0].size

    @property
    def agreement(self) -> float:
        return self.agree / max(self.total, 1)


def graph_inputs(task: str, modality: str, batch) -> list[torch.Tensor]:
    """A loader batch (raw, before the run's transform) as the graph's inputs."""
    if task == "ctc":
        return [_waveform(batch["audio"]), batch["lengths"].long()]
    if modality == "audio":
        return [_waveform(batch)]
    return [batch]


def _waveform(x: torch.Tensor) -> torch.Tensor:
    """The graph takes float32 samples in [-1, 1]; in-memory sets keep int16."""
    return x.float() / 32768 if x.dtype == torch.int16 else x.float()


def variants(task: str, modality: str, inputs: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    """The batches parity runs on: sizes 1, 7 and all; sequences also cut to an odd length."""
    n = inputs[0].shape[0]
    out = [[x[:b] for x in inputs] for b in sorted({1, min(7, n), n})]
    if task == "ctc":
        audio, lengths = inputs
        odd = audio.shape[1] - 1 if audio.shape[1] % 2 == 0 else audio.shape[1] - 2
        out.append([audio[:, :odd], lengths.clamp(max=odd)])
    elif modality == "text" and inputs[0].shape[1] > 2:
        ids = inputs[0]
        odd = ids.shape[1] - 1 if ids.shape[1] % 2 == 0 else ids.shape[1] - 2
        out.append([ids[:, :odd]])
    return out


@torch.no_grad()
def check_parity(spec: GraphSpec, task: str, modality: str, inputs: list[torch.Tensor], run: Runner,
                 split: str, enforce: bool = True) -> Parity:
    """Compares the eager wrapper and the graph; a GroveError when they disagree beyond
    MAX_ABS_DIFF, unless not `enforce`d (an int8 graph is judged by its metrics)."""
    eager = spec.module.eval()
    cmp = Comparison()
    batches = variants(task, modality, inputs)
    for args in batches:
        if task == "lm":
            _compare_lm(spec, args[0], run, cmp)
            continue
        reference = [t.numpy() for t in _as_tuple(eager(*args))]
        candidate = run([a.numpy() for a in args])
        if task == "ctc":
            if not np.array_equal(reference[1], candidate[1]):
                raise GroveError("export parity failed: the graph counts other output frames than the model")
            for row, frames in enumerate(reference[1]):
                cmp.add(reference[0][row, :frames], candidate[0][row, :frames])
        else:
            cmp.add(reference[0], candidate[0])
    parity = Parity(split=split, inputs=inputs[0].shape[0], batch_sizes=sorted({a[0].shape[0] for a in batches}),
                    max_abs_diff=cmp.max_abs, top1_agreement=cmp.agreement)
    if enforce and (cmp.max_abs > MAX_ABS_DIFF or cmp.agreement < 1.0):
        raise GroveError(
            f"export parity failed: max |diff| {cmp.max_abs:.1e} (limit {MAX_ABS_DIFF:.0e}), top-1 agreement "
            f"{cmp.agreement:.2%} on {parity.inputs} {split} inputs: the exported graph does not compute what the model does"
        )
    return parity


def _compare_lm(spec: GraphSpec, ids: torch.Tensor, run: Runner, cmp: Comparison) -> None:
    """Whole sequence at once, then a prompt and one token at a time through the graph's state."""
    eager = spec.module
    full = eager(ids, *empty_state(spec, ids.shape[0]))[0].numpy()  # (B, T, V)
    cmp.add(full, run([ids.numpy(), *(s.numpy() for s in empty_state(spec, ids.shape[0]))])[0])
    T = ids.shape[1]
    prompt = max(1, T // 2) | 1  # an odd length
    outputs = run([ids[:, :prompt].numpy(), *(s.numpy() for s in empty_state(spec, ids.shape[0]))])
    cmp.add(full[:, :prompt], outputs[0])
    state = outputs[1:]
    for t in range(prompt, min(T, prompt + 8)):
        outputs = run([ids[:, t : t + 1].numpy(), *state])
        cmp.add(full[:, t : t + 1], outputs[0])
        state = outputs[1:]


def _as_tuple(out) -> tuple:
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)
