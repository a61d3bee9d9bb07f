"""What gets exported: the run's model behind its preprocessing, as one `nn.Module` per task.

The tensor arithmetic of preprocessing goes inside the graph, so a deployment feeds what it can
decode without grove: uint8 images (the /255, normalisation and center crop run in the graph),
raw waveforms (the whole log-mel/MFCC front end and its per-utterance normalisation), token ids.
Language models take and return their recurrent state (key/value caches, LSTM states) so
generation is incremental. Inputs and outputs are named as in grove/runtime/manifest.py.

Each wrapper keeps the trained model as its `model` submodule, so graph nodes that come from it
sit under the "model" name scope (int8 quantises those and leaves the front end in float).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.export import Dim

from grove.models.layers.attention import KVCache
from grove.rundir import LoadedRun


@dataclass
class GraphSpec:
    """A wrapper with what export needs to trace it: names, dynamic axes, the generation facts."""

    module: nn.Module
    input_names: list[str]
    output_names: list[str]
    dynamic: list[dict[int, str]]  # per input: axis -> dynamic axis name
    generation: dict | None = None


class Classifier(nn.Module):
    """Raw input (uint8 image, waveform clip or token ids) -> logits."""

    def __init__(self, model: nn.Module, transform):
        super().__init__()
        self.model, self.transform = model, transform

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.transform(x, False))


class Transcriber(nn.Module):
    """Padded waveforms (B, L) and their lengths in samples -> CTC log-probabilities and frame counts."""

    def __init__(self, model: nn.Module, transform):
        super().__init__()
        self.model, self.transform = model, transform

    def forward(self, audio: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.transform({"audio": audio, "lengths": lengths}, False)
        log_probs, out_lengths = self.model(features["features"], features["lengths"])
        return log_probs, out_lengths


class KVCacheLM(nn.Module):
    """GPT with its key/value caches as tensors: (ids, past k, past v) -> (logits, present k, present v).

    The caches are stacked over layers, (n_layer, B, n_head, past, head_dim); past may be 0."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids, past_keys, past_values):
        caches = []
        for layer in range(past_keys.shape[0]):
            cache = KVCache()
            cache.k, cache.v = past_keys[layer], past_values[layer]
            caches.append(cache)
        logits = self.model(input_ids, caches)
        return logits, torch.stack([c.k for c in caches]), torch.stack([c.v for c in caches])


class RNNStateLM(nn.Module):
    """lstm_lm with its state as tensors: (ids, h[, c]) -> (logits, next h[, next c])."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids, state_h, state_c=None):
        state = state_h if state_c is None else (state_h, state_c)  # GRU: h alone
        logits, new = self.model(input_ids, state, return_state=True)
        return (logits, new) if isinstance(new, torch.Tensor) else (logits, *new)


def graph_for(loaded: LoadedRun) -> GraphSpec:
    """The wrapper that exports this run, by task and modality."""
    model, meta = loaded.model, loaded.meta
    if meta.task == "ctc":
        return GraphSpec(
            Transcriber(model, loaded.transform), ["audio", "lengths"], ["log_probs", "output_lengths"],
            [{0: "batch", 1: "samples"}, {0: "batch"}],
        )
    if meta.task == "lm":
        return _lm_graph(model)
    dynamic = {0: "batch", 1: "tokens"} if meta.modality == "text" else {0: "batch"}
    return GraphSpec(Classifier(model, loaded.transform), [_input_name(meta.modality)], ["logits"], [dynamic])


def _input_name(modality: str) -> str:
    return {"image": "image", "audio": "audio", "text": "input_ids"}[modality]


def _lm_graph(model: nn.Module) -> GraphSpec:
    cache_axes = {1: "batch", 3: "past"}
    if hasattr(model, "config"):  # gpt
        c = model.config
        generation = dict(kind="kv_cache", block_size=c.block_size, n_layer=c.n_layer, n_head=c.n_head,
                          head_dim=c.n_embd // c.n_head)
        return GraphSpec(
            KVCacheLM(model), ["input_ids", "past_keys", "past_values"], ["logits", "present_keys", "present_values"],
            [{0: "batch", 1: "tokens"}, cache_axes, cache_axes], generation,
        )
    rnn = model.rnn
    cell = "lstm" if isinstance(rnn, nn.LSTM) else "gru"
    states = ["state_h", "state_c"] if cell == "lstm" else ["state_h"]
    generation = dict(kind="rnn_state", n_layer=rnn.num_layers, hidden=rnn.hidden_size, cell=cell)
    return GraphSpec(
        RNNStateLM(model), ["input_ids", *states], ["logits", *(f"next_{s}" for s in states)],
        [{0: "batch", 1: "tokens"}, *({1: "batch"} for _ in states)], generation,
    )


def empty_state(spec: GraphSpec, batch: int) -> list[torch.Tensor]:
    """The state inputs of a language model's first call: empty caches or zero RNN states."""
    g = spec.generation
    if g["kind"] == "kv_cache":
        shape = (g["n_layer"], batch, g["n_head"], 0, g["head_dim"])
        return [torch.zeros(shape), torch.zeros(shape)]
    return [torch.zeros(g["n_layer"], batch, g["hidden"]) for _ in spec.input_names[1:]]


def dynamic_shapes(spec: GraphSpec) -> tuple:
    """torch.export's dynamic_shapes: one Dim per axis name, so inputs sharing "batch" share it and
    the ONNX graph names its axes; the past of a cache may be 0 (min=0). torch.export specialises
    an axis whose example size is 0 or 1, so examples are chosen larger."""
    dims: dict[str, Dim] = {}
    for name in {axis for axes in spec.dynamic for axis in axes.values()}:
        dims[name] = Dim(name, min=0) if name == "past" else Dim(name)
    return tuple({i: dims[axis] for i, axis in axes.items()} for axes in spec.dynamic)
