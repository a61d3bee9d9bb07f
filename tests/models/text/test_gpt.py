import math

import pytest
import torch

from grove.models.layers.attention import KVCache
from grove.models.layers.tokens import sample_next_token
from grove.registry import create_model

SMALL = dict(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16)
POSITIONS = ["learned", "rotary"]


def small_gpt(**kw):
    torch.manual_seed(0)
    return create_model("gpt", **{**SMALL, **kw}).eval()


def test_default_size_is_nanogpt_shakespeare_char_scale():
    model = create_model("gpt")
    n = sum(p.numel() for p in model.parameters())
    assert 0.75e6 < n < 0.85e6  # 4 layers x 12 x 128^2 + tables
    assert model.get_num_params() == n - 64 * 128  # without the learned position table
    c = model.config
    assert model.flops_per_token() == 6 * model.get_num_params() + 12 * c.n_layer * c.n_embd * c.block_size


@pytest.mark.parametrize("positions", POSITIONS)
def test_logits_are_per_token(positions):
    model = small_gpt(positions=positions)
    assert model(torch.randint(0, 11, (3, 5))).shape == (3, 5, 11)
    assert model.example_input(2).shape == (2, 8)
    assert model.num_classes == 11


@pytest.mark.parametrize("positions", POSITIONS)
def test_changing_a_token_never_changes_earlier_logits(positions):
    model = small_gpt(positions=positions)
    idx = torch.randint(0, 11, (2, 8))
    base = model(idx)
    for t in range(7):
        changed = idx.clone()
        changed[:, t + 1] = (changed[:, t + 1] + 1) % 11
        out = model(changed)
        torch.testing.assert_close(out[:, : t + 1], base[:, : t + 1], atol=1e-6, rtol=0)
        assert not torch.allclose(out[:, t + 1], base[:, t + 1])


@pytest.mark.parametrize("positions", POSITIONS)
def test_kv_cache_decoding_equals_full_recomputation(positions):
    model = small_gpt(positions=positions)
    idx = torch.randint(0, 11, (2, 8))
    full = model(idx)
    caches = KVCache.for_layers(2)
    steps = [model(idx[:, :3], caches)] + [model(idx[:, t : t + 1], caches) for t in range(3, 8)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("positions", POSITIONS)
def test_longer_than_block_size_is_a_clear_error(positions):
    model = small_gpt(positions=positions)
    with pytest.raises(ValueError, match="block_size=8"):
        model(torch.zeros(1, 9, dtype=torch.long))
    caches = KVCache.for_layers(2)
    model(torch.zeros(1, 8, dtype=torch.long), caches)
    with pytest.raises(ValueError, match="block_size=8"):
        model(torch.zeros(1, 1, dtype=torch.long), caches)


def greedy_reference(model, idx, n):
    """nanoGPT's generate with argmax: full forward over the last block_size tokens each step."""
    for _ in range(n):
        next_id = model(idx[:, -model.config.block_size :])[:, -1].argmax(-1, keepdim=True)
        idx = torch.cat((idx, next_id), dim=1)
    return idx


@pytest.mark.parametrize("positions", POSITIONS)
@pytest.mark.parametrize("prompt_len", [1, 5, 8, 12])
def test_greedy_generate_equals_argmax_of_full_forward_past_block_size(positions, prompt_len):
    model = small_gpt(positions=positions)
    idx = torch.randint(0, 11, (2, prompt_len))
    tokens = list(model.generate(idx, 14, top_k=1))
    assert len(tokens) == 14 and all(t.shape == (2, 1) and t.dtype == torch.long for t in tokens)
    assert torch.equal(torch.cat([idx, *tokens], dim=1), greedy_reference(model, idx, 14))


def test_generate_is_lazy_and_samples_within_the_vocabulary():
    model = small_gpt()
    gen = model.generate(torch.zeros(3, 1, dtype=torch.long), 20, temperature=0.8, top_k=5, top_p=0.9)
    first = next(gen)
    assert first.shape == (3, 1)
    rest = torch.cat(list(gen), dim=1)
    assert rest.shape == (3, 19) and rest.min() >= 0 and rest.max() < 11


def test_sampling_rules():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]]).repeat(500, 1)
    assert torch.equal(sample_next_token(logits, temperature=0), torch.full((500, 1), 1))
    assert torch.equal(sample_next_token(logits, top_k=1), torch.full((500, 1), 1))
    assert set(sample_next_token(logits, top_k=2).flatten().tolist()) == {1, 3}
    # probabilities ~ (0.03, 0.64, 0.09, 0.24): 0.7 of the mass needs tokens 1 and 3
    assert set(sample_next_token(logits, top_p=0.7).flatten().tolist()) == {1, 3}
    assert set(sample_next_token(logits, top_p=0.5).flatten().tolist()) == {1}
    for bad in (dict(temperature=-1), dict(top_k=0), dict(top_p=0.0), dict(top_p=1.5)):
        with pytest.raises(ValueError):
            sample_next_token(logits, **bad)


def test_tied_weights_share_one_tensor():
    model = small_gpt()
    assert model.lm_head.weight is model.transformer.wte.weight
    untied = small_gpt(tie_weights=False)
    assert untied.lm_head.weight is not untied.transformer.wte.weight
    n_tied = sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for p in untied.parameters()) == n_tied + 11 * 16


def test_rotary_has_no_position_table():
    model = small_gpt(positions="rotary")
    assert "wpe" not in model.transformer
    assert model.get_num_params() == sum(p.numel() for p in model.parameters())


def test_nanogpt_init_scales_residual_projections():
    model = create_model("gpt", n_layer=8, n_embd=256, bias=False)
    std = model.transformer.h[0].attn.c_proj.weight.std().item()
    assert abs(std - 0.02 / math.sqrt(16)) < 1e-3
    assert abs(model.transformer.h[0].attn.c_attn.weight.std().item() - 0.02) < 1e-3
    assert model.transformer.h[0].attn.c_attn.bias is None


def test_bad_options_are_clear_errors():
    with pytest.raises(ValueError, match="num_classes must equal vocab_size"):
        create_model("gpt", vocab_size=65, num_classes=10)
    assert create_model("gpt", vocab_size=10, num_classes=10, **{k: v for k, v in SMALL.items() if k != "vocab_size"})
    with pytest.raises(ValueError, match="unknown positions"):
        create_model("gpt", positions="sinusoidal")
