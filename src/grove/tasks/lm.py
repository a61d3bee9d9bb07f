"""Language modelling: next-token cross-entropy, perplexity and bits per character.

With a recurrent model on a token stream (truncated BPTT) the task carries the hidden state from
one batch to the next, detached so gradients stop at the batch boundary (Zaremba et al.); the
state is part of every checkpoint, so a resumed run continues the same streams.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from grove.tasks.base import Task, sum_across_processes


def detach(state):
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return state.detach()
    return type(state)(detach(s) for s in state)


class LanguageModelTask(Task):
    name = "lm"
    monitor = "loss"
    monitor_mode = "min"

    def __init__(self, stateful: bool = False, chars_per_token: float | None = None):
        self.stateful = stateful
        self.chars_per_token = chars_per_token
        self.state = None

    def step(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor):
        if self.stateful:
            logits, state = model(inputs, state=self.state, return_state=True)
            self.state = detach(state)
        else:
            logits = model(inputs)
        loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
        return loss, logits

    def reset(self) -> None:
        """A new pass over the streams starts from a zero state."""
        self.state = None

    @contextmanager
    def fresh_state(self):
        """Evaluation reads its own streams without disturbing the training state."""
        saved, self.state = self.state, None
        try:
            yield
        finally:
            self.state = saved

    def state_dict(self) -> dict:
        return {"state": self.state}

    def load_state_dict(self, saved: dict, device) -> None:
        state = saved["state"]
        move = lambda s: s.to(device) if isinstance(s, torch.Tensor) else type(s)(move(t) for t in s)  # noqa: E731
        self.state = None if state is None else move(state)

    def metrics(self, device) -> "LanguageModelMetrics":
        return LanguageModelMetrics(device, self.chars_per_token)


class LanguageModelMetrics:
    def __init__(self, device, chars_per_token: float | None):
        self.chars_per_token = chars_per_token
        self.sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss*tokens, tokens, correct

    @torch.no_grad()
    def update(self, logits: torch.Tensor, targets: torch.Tensor, loss: torch.Tensor) -> None:
        tokens = targets.numel()
        self.sums[0] += loss.detach().double() * tokens
        self.sums[1] += tokens
        self.sums[2] += (logits.argmax(-1) == targets).sum()

    def all_reduce(self) -> None:
        sum_across_processes(self.sums)

    @property
    def count(self) -> int:
        return int(self.sums[1])

    def compute(self, per_class: bool = False) -> dict:
        loss_sum, tokens, correct = self.sums.tolist()
        loss = loss_sum / max(tokens, 1)
        out = {"loss": loss, "perplexity": math.exp(min(loss, 50)), "accuracy": correct / max(tokens, 1), "count": int(tokens)}
        if self.chars_per_token:
            out["bits_per_char"] = loss / math.log(2) / self.chars_per_token
        return out
