import math

import pytest
import torch

from grove.models.layers.attention import KVCache, MultiHeadAttention, TransformerBlock, merge_masks
from grove.models.layers.positions import LearnedPositions, RotaryEmbedding, apply_rotary

B, T, DIM, HEADS = 2, 6, 16, 4


def naive_attention(attn: MultiHeadAttention, x, keep=None):
    """softmax(QK^T / sqrt(d)) V with a bool `keep` mask (B or 1, 1, T, T), written out by hand."""
    q, k, v = attn.c_attn(x).split(DIM, dim=2)
    heads = lambda t: t.view(x.shape[0], -1, HEADS, DIM // HEADS).transpose(1, 2)  # noqa: E731
    q, k, v = heads(q), heads(k), heads(v)
    scores = q @ k.transpose(-2, -1) / math.sqrt(DIM // HEADS)  # (B, nh, T, T)
    if keep is not None:
        scores = scores.masked_fill(~keep, float("-inf"))
    y = torch.softmax(scores, dim=-1) @ v  # (B, nh, T, hs)
    return attn.c_proj(y.transpose(1, 2).reshape(x.shape))


@pytest.fixture
def attn():
    torch.manual_seed(0)
    return MultiHeadAttention(DIM, HEADS).eval()


def test_matches_naive_attention_without_mask(attn):
    x = torch.randn(B, T, DIM)
    torch.testing.assert_close(attn(x), naive_attention(attn, x), atol=1e-5, rtol=1e-5)


def test_causal_matches_naive(attn):
    x = torch.randn(B, T, DIM)
    keep = torch.ones(T, T, dtype=torch.bool).tril()
    torch.testing.assert_close(attn(x, causal=True), naive_attention(attn, x, keep), atol=1e-5, rtol=1e-5)


def test_padding_and_causal_together_match_naive(attn):
    x = torch.randn(B, T, DIM)
    pad = torch.zeros(B, T, dtype=torch.bool)
    pad[0, 4:] = True  # the first row has 4 tokens, the second 6
    keep = torch.ones(T, T, dtype=torch.bool).tril() & ~pad[:, None, None, :]
    out = attn(x, key_padding_mask=pad, causal=True)
    ref = naive_attention(attn, x, keep)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(attn(x, key_padding_mask=pad)[1], naive_attention(attn, x)[1], atol=1e-5, rtol=1e-5)


def test_bool_and_float_attn_masks_match_naive(attn):
    x = torch.randn(B, T, DIM)
    keep = torch.rand(T, T) > 0.3
    keep[:, 0] = True  # every query keeps a key that is never padding below
    ref = naive_attention(attn, x, keep)
    torch.testing.assert_close(attn(x, attn_mask=keep), ref, atol=1e-5, rtol=1e-5)
    additive = torch.zeros(T, T).masked_fill(~keep, float("-inf"))
    torch.testing.assert_close(attn(x, attn_mask=additive), ref, atol=1e-5, rtol=1e-5)
    pad = torch.zeros(B, T, dtype=torch.bool)
    pad[:, -1] = True  # float mask + padding: the padding is added as -inf
    out = attn(x, attn_mask=additive, key_padding_mask=pad)
    torch.testing.assert_close(out, naive_attention(attn, x, keep & ~pad[:, None, None, :]), atol=1e-5, rtol=1e-5)


def test_fully_masked_query_gives_zeros_not_nan(attn):
    x = torch.randn(1, T, DIM)
    out = attn(x, key_padding_mask=torch.ones(1, T, dtype=torch.bool))
    assert torch.isfinite(out).all()


def test_causal_alone_uses_sdpa_causal_path_so_flash_kernels_apply():
    assert merge_masks(5, 5, None, None, True, "cpu") == (None, True)
    assert merge_masks(1, 5, None, None, True, "cpu") == (None, False)  # one new query sees the whole cache
    mask, is_causal = merge_masks(2, 5, None, None, True, "cpu")
    assert not is_causal and mask.tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]


def test_padding_mask_must_cover_cached_keys(attn):
    cache = KVCache()
    attn(torch.randn(1, 3, DIM), kv_cache=cache)
    with pytest.raises(ValueError, match="cached keys"):
        attn(torch.randn(1, 1, DIM), key_padding_mask=torch.zeros(1, 1, dtype=torch.bool), kv_cache=cache)


@pytest.mark.parametrize("rotary", [False, True])
@pytest.mark.parametrize("chunks", [[6], [1] * 6, [3, 1, 2]])
def test_kv_cache_decoding_matches_full_causal_attention(rotary, chunks):
    torch.manual_seed(0)
    attn = MultiHeadAttention(DIM, HEADS, rotary=rotary).eval()
    x = torch.randn(B, T, DIM)
    full = attn(x, causal=True)
    cache, outs, start = KVCache(), [], 0
    for n in chunks:
        outs.append(attn(x[:, start : start + n], causal=True, kv_cache=cache))
        start += n
    assert cache.seq_len == T
    torch.testing.assert_close(torch.cat(outs, dim=1), full, atol=1e-5, rtol=1e-5)


def test_rotary_scores_depend_only_on_distance():
    rope = RotaryEmbedding(8)
    q, k = torch.randn(8), torch.randn(8)
    cos, sin = rope(20)

    def score(i, j):
        return apply_rotary(q, cos[i], sin[i]) @ apply_rotary(k, cos[j], sin[j])

    torch.testing.assert_close(score(3, 1), score(15, 13), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(apply_rotary(q, cos[5], sin[5]).norm(), q.norm())  # a rotation
    torch.testing.assert_close(apply_rotary(q, cos[0], sin[0]), q)  # position 0 is unrotated


def test_rotary_cache_grows_and_ignores_model_dtype():
    rope = RotaryEmbedding(8)
    rope(4)
    cos, sin = rope(3, offset=10)  # beyond the cache: it grows
    reference = RotaryEmbedding(8)(13)
    torch.testing.assert_close(cos, reference[0][10:])
    torch.testing.assert_close(sin, reference[1][10:])
    rope.to(torch.bfloat16)
    assert rope(4)[0].dtype == torch.float32
    assert apply_rotary(torch.randn(2, 4, 8, dtype=torch.bfloat16), *rope(4)).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="even"):
        RotaryEmbedding(7)


def test_learned_positions_offset_and_limit():
    pos = LearnedPositions(8, 4)
    x = torch.randn(2, 3, 4)
    torch.testing.assert_close(pos(x, offset=5), x + pos.weight[5:8])  # added to every row of the batch
    with pytest.raises(ValueError, match="8 learned positions"):
        pos(torch.randn(2, 4, 4), offset=5)


@pytest.mark.parametrize("norm", ["layer", "rms"])
@pytest.mark.parametrize("norm_first", [True, False])
def test_transformer_block_shapes_and_gradients(norm, norm_first):
    block = TransformerBlock(DIM, HEADS, mlp_ratio=2, dropout=0.1, rotary=True, norm=norm, norm_first=norm_first)
    x = torch.randn(B, T, DIM, requires_grad=True)
    out = block(x, causal=True)
    assert out.shape == (B, T, DIM)
    out.sum().backward()
    assert all(p.grad is not None for p in block.parameters())


def test_pre_norm_block_is_residual_around_attention_and_mlp():
    torch.manual_seed(0)
    block = TransformerBlock(DIM, HEADS).eval()
    x = torch.randn(B, T, DIM)
    h = x + block.attn(block.ln_1(x))
    torch.testing.assert_close(block(x), h + block.mlp(block.ln_2(h)))


def test_bad_options_are_clear_errors():
    with pytest.raises(ValueError, match="multiple"):
        MultiHeadAttention(10, 3)
    with pytest.raises(ValueError, match="unknown norm"):
        TransformerBlock(DIM, HEADS, norm="batch")
    with pytest.raises(ValueError, match="unknown activation"):
        TransformerBlock(DIM, HEADS, activation="tanh")


def output_from_weights(attn: MultiHeadAttention, x, weights):
    """What forward returns, rebuilt from attention probabilities (B, nh, T, T) and the values."""
    _, _, v = attn.project(x)  # (B, nh, T, hs)
    return attn.c_proj((weights @ v).transpose(1, 2).reshape(x.shape))


@pytest.mark.parametrize("rotary", [False, True])
@pytest.mark.parametrize("masks", ["none", "causal", "padding", "padding+causal", "bool", "float"])
def test_attention_weights_are_the_probabilities_forward_uses(rotary, masks):
    torch.manual_seed(0)
    attn = MultiHeadAttention(DIM, HEADS, rotary=rotary).eval()
    x = torch.randn(B, T, DIM)
    pad = torch.zeros(B, T, dtype=torch.bool)
    pad[0, 4:] = True
    keep = torch.rand(T, T) > 0.3
    keep[:, 0] = True
    kwargs = {
        "none": {},
        "causal": dict(causal=True),
        "padding": dict(key_padding_mask=pad),
        "padding+causal": dict(key_padding_mask=pad, causal=True),
        "bool": dict(attn_mask=keep),
        "float": dict(attn_mask=torch.zeros(T, T).masked_fill(~keep, float("-inf"))),
    }[masks]
    weights = attn.attention_weights(x, **kwargs)
    assert weights.shape == (B, HEADS, T, T) and weights.dtype == torch.float32
    torch.testing.assert_close(weights.sum(-1), torch.ones(B, HEADS, T))
    if masks in ("causal", "padding+causal"):
        assert (weights.triu(diagonal=1) == 0).all()
    if "padding" in masks:
        assert (weights[0, :, :, 4:] == 0).all()
    torch.testing.assert_close(output_from_weights(attn, x, weights), attn(x, **kwargs), atol=1e-5, rtol=1e-5)


def test_attention_weights_of_fully_masked_queries_are_zero(attn):
    weights = attn.attention_weights(torch.randn(1, T, DIM), key_padding_mask=torch.ones(1, T, dtype=torch.bool))
    assert (weights == 0).all()


@pytest.mark.parametrize("norm_first", [True, False])
def test_block_attention_weights_read_the_attention_input(norm_first):
    torch.manual_seed(0)
    block = TransformerBlock(DIM, HEADS, norm_first=norm_first).eval()
    x = torch.randn(B, T, DIM)
    attn_input = block.ln_1(x) if norm_first else x
    expected = block.attn.attention_weights(attn_input, causal=True)
    torch.testing.assert_close(block.attention_weights(x, causal=True), expected)
