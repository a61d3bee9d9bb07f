import math

import torch
from torch import nn

from grove.engine.build import lr_factor
from grove.config import ScheduleConfig
from grove.tasks.lm import LanguageModelTask


def test_perplexity_and_bits_per_character():
    task = LanguageModelTask(chars_per_token=2.0)
    metrics = task.metrics("cpu")
    logits = torch.zeros(2, 3, 4)  # uniform over 4 tokens: loss ln 4
    targets = torch.zeros(2, 3, dtype=torch.long)
    metrics.update(logits, targets, torch.tensor(math.log(4)))
    out = metrics.compute()
    assert math.isclose(out["perplexity"], 4.0, rel_tol=1e-6)
    assert math.isclose(out["bits_per_char"], 1.0, rel_tol=1e-6)  # 2 bits per token, 2 chars per token
    assert out["count"] == 6


class Counter(nn.Module):
    """A stand-in recurrent model whose state counts the batches it has seen."""

    def forward(self, x, state=None, return_state=False):
        state = torch.zeros(()) if state is None else state
        state = state + 1
        logits = torch.zeros(*x.shape, 2, requires_grad=True) + state
        return (logits, state) if return_state else logits


def test_state_is_carried_detached_reset_and_kept_apart_for_evaluation():
    task = LanguageModelTask(stateful=True)
    x = torch.zeros(1, 3, dtype=torch.long)
    task.step(Counter(), x, x)
    task.step(Counter(), x, x)
    assert task.state.item() == 2 and not task.state.requires_grad
    with task.fresh_state():
        task.step(Counter(), x, x)
        assert task.state.item() == 1
    assert task.state.item() == 2
    saved = task.state_dict()
    task.reset()
    assert task.state is None
    task.load_state_dict(saved, "cpu")
    assert task.state.item() == 2


def test_step_schedule_holds_then_decays_each_epoch():
    factor = lr_factor(ScheduleConfig(name="step", hold_epochs=4, step_epochs=1, gamma=0.5), 1300, 100)
    assert [factor(e * 100) for e in range(7)] == [1, 1, 1, 1, 0.5, 0.25, 0.125]
