"""Running an nn.LSTM/nn.GRU over right-padded sequences, in eager mode and under torch.export.

    out, h = run_rnn(rnn, x, lengths)   # x (B, T, F) batch-first; lengths (B,) valid steps, or None
    # out (B, T, dirs * H), zero past each length; h (layers * dirs, B, H), each row's final states

In eager mode the batch is packed (`pack_padded_sequence`, unsorted), so the recurrence stops at
each sequence's own end; cuDNN runs that fast, and training keeps exactly today's numerics.
Packing cannot be exported: the packed RNN kernels loop over the per-step batch sizes, which are
data (torch.export fails with "zeros(): argument 'size' failed to unpack ... FakeTensor"). So
while `torch.compiler.is_exporting()`, the same result is computed without packing, one layer and
one direction at a time, reusing the module's own parameters (no copies; state-dict keys are the
module's):

- forward direction: the padded batch as it is. The recurrence is causal, so every valid step is
  exact whatever the padding holds; the final state is the output at step length - 1.
- backward direction: each sequence reversed within its own length (step t reads t' =
  length - 1 - t, padding stays where it is, after the valid steps), run forwards, and put back
  in order. Its final state, the one after the first step, is then the output at step 0.
- the next layer reads both directions side by side, after the module's inter-layer dropout.

Each single-direction call is an ordinary `aten.lstm`/`aten.gru`, which the ONNX exporter turns
into a native ONNX LSTM/GRU node. For LSTMs only the final hidden state h is returned (not c):
the export path has no access to the per-step cell states, and no model here reads c.

`rnn_export_decompositions()` is the context to export RNN models in: see its docstring.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


def run_rnn(
    rnn: nn.LSTM | nn.GRU, x: torch.Tensor, lengths: torch.Tensor | None, *, exporting: bool | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(outputs (B, T, dirs * H) zero past each length, final hidden states (layers * dirs, B, H)).

    `lengths` (B,) are each row's valid steps, 1 to T, on any device; None means all T are valid
    (no packing needed, so the module is simply called). `exporting` defaults to
    `torch.compiler.is_exporting()`; tests pass True to check the export path against packing.
    """
    # Opacus' DPLSTM/DPGRU (private training) take the same inputs and give the same outputs.
    if not getattr(rnn, "batch_first", False):
        raise ValueError(f"run_rnn takes a batch-first nn.LSTM or nn.GRU; got {rnn}")
    if lengths is None:
        out, h = rnn(x)
        return out, h[0] if isinstance(h, tuple) else h
    if exporting is None:
        exporting = torch.compiler.is_exporting()
    if exporting:
        return _run_unpacked(rnn, x, lengths)
    # The packed kernels need the lengths on the host: one small device-to-host copy on a GPU.
    packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
    out, h = rnn(packed)  # h back in the batch's order
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    return out, h[0] if isinstance(h, tuple) else h


def _run_unpacked(rnn: nn.LSTM | nn.GRU, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if getattr(rnn, "proj_size", 0):
        raise ValueError("run_rnn's export path does not support LSTMs with proj_size")
    T = x.shape[1]
    lengths = lengths.to(device=x.device, dtype=torch.long)
    steps = torch.arange(T, device=x.device)[None, :]  # (1, T)
    valid = steps < lengths[:, None]  # (B, T)
    # reverses each row within its length and leaves its padding in place (its own inverse)
    flip = torch.where(valid, lengths[:, None] - 1 - steps, steps)  # (B, T)
    last = (lengths - 1)[:, None]  # (B, 1)
    directions = 2 if rnn.bidirectional else 1
    finals = []
    for layer in range(rnn.num_layers):
        if layer > 0 and rnn.dropout and rnn.training:
            x = F.dropout(x, rnn.dropout, training=True)  # as nn.LSTM/GRU: between layers only
        outs = []
        for direction in range(directions):
            params = _layer_params(rnn, layer, direction)
            if direction == 0:
                out = _one_direction(rnn, x, params)  # (B, T, H)
                finals.append(_time_gather(out, last)[:, 0])  # (B, H): the state at length - 1
            else:
                out = _time_gather(_one_direction(rnn, _time_gather(x, flip), params), flip)
                finals.append(out[:, 0])  # the state after reading back to the first step
            outs.append(out)
        x = torch.cat(outs, dim=2) if directions == 2 else outs[0]  # (B, T, dirs * H)
    out = x * valid[:, :, None].to(x.dtype)  # zero padding, as pad_packed_sequence leaves it
    return out, torch.stack(finals)  # (layers * dirs, B, H)


def _layer_params(rnn: nn.LSTM | nn.GRU, layer: int, direction: int) -> list[torch.Tensor]:
    suffix = f"l{layer}" + ("_reverse" if direction else "")
    names = [f"weight_ih_{suffix}", f"weight_hh_{suffix}"]
    if rnn.bias:
        names += [f"bias_ih_{suffix}", f"bias_hh_{suffix}"]
    return [getattr(rnn, name) for name in names]


def _one_direction(rnn: nn.LSTM | nn.GRU, x: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
    """One layer, one direction, from zero state: outputs (B, T, H) (what nn.LSTM/GRU itself calls)."""
    h0 = x.new_zeros(1, x.shape[0], rnn.hidden_size)
    # (input, state, params, has_biases, num_layers, dropout, train, bidirectional, batch_first)
    if isinstance(rnn, nn.LSTM):
        return torch._VF.lstm(x, (h0, h0), params, rnn.bias, 1, 0.0, rnn.training, False, True)[0]
    return torch._VF.gru(x, h0, params, rnn.bias, 1, 0.0, rnn.training, False, True)[0]


def _time_gather(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (B, T, H) read at steps index (B, T') per row -> (B, T', H)."""
    return x.gather(1, index[:, :, None].expand(-1, -1, x.shape[2]))


@contextlib.contextmanager
def rnn_export_decompositions() -> Iterator[None]:
    """Export models with an LSTM/GRU and a dynamic time axis inside this context.

    Exported programs keep aten.lstm/aten.gru as single ops (the ONNX exporter turns them into
    native LSTM/GRU nodes), but torch.export works out their output shapes on fake tensors through
    torch's Python decompositions, which loop over the time steps. So plain `torch.export.export`
    specialises the time axis to the example's length (a constraint violation for a dynamic one),
    and `torch.onnx.export(dynamo=True)` runs that unrolled loop at every shape propagation after
    its capture (its decomposition and type-promotion passes): for crnn's 2 bidirectional GRU
    layers over 101 frames, over a thousand cell steps on symbolic shapes, ~100 s of its ~110 s
    export on two cores. torch ships while_loop decompositions of both (torch.export._patches),
    which the ONNX exporter itself switches on around its capture only (pytorch/pytorch#193192
    is about doing the same for its decomposition step); inside this context they hold for the
    whole export, so each layer and direction is traced once, whatever the length. The exported
    RNN ops, and so the numerics, are the same; `run_decompositions()` inside the context would write the recurrence
    as a while_loop (inference only: while_loop has no autograd).
    """
    from torch.export._patches import register_gru_while_loop_decomposition, register_lstm_while_loop_decomposition

    with register_lstm_while_loop_decomposition(), register_gru_while_loop_decomposition():
        yield
