import pytest
import torch

from grove.models import count_params
from grove.registry import create_model


def small_vit(**options):
    torch.manual_seed(0)
    options = dict(num_classes=5, in_channels=1, image_size=8, patch_size=2, dim=32, depth=2, heads=4, **options)
    return create_model("vit", **options)


@pytest.mark.parametrize("name, params", [("vit_tiny", 5_717_416), ("vit_small", 22_050_664)])
def test_parameter_count_matches_timm(name, params):
    with torch.device("meta"):
        assert count_params(create_model(name)) == params  # timm's vit_*_patch16_224 at 1000 classes


def test_names_follow_timm_where_the_shared_blocks_allow():
    with torch.device("meta"):
        state = create_model("vit_tiny").state_dict()
    assert tuple(state["patch_embed.proj.weight"].shape) == (192, 3, 16, 16)
    assert tuple(state["cls_token"].shape) == (1, 1, 192)
    assert tuple(state["pos_embed.weight"].shape) == (197, 192)  # 14 * 14 patches + the class token
    for key in ["blocks.11.ln_1.weight", "blocks.0.attn.c_attn.weight", "blocks.0.mlp.c_proj.bias", "norm.weight"]:
        assert key in state
    assert tuple(state["head.weight"].shape) == (1000, 192)


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_forward_pools_the_normed_tokens(pool):
    model = small_vit(pool=pool).eval()
    x = model.example_input(3)
    with torch.no_grad():
        tokens = model.forward_features(x)  # (B, N+1, D)
        assert tokens.shape == (3, 17, 32)
        pooled = tokens[:, 0] if pool == "cls" else tokens[:, 1:].mean(1)
        torch.testing.assert_close(model(x), model.head(pooled))


def test_attention_maps_are_each_block_s_attention():
    model = small_vit().eval()
    x = model.example_input(2)
    with torch.no_grad():
        maps = model.attention_maps(x)
        assert len(maps) == 2 and all(m.shape == (2, 4, 17, 17) for m in maps)
        for m in maps:
            torch.testing.assert_close(m.sum(-1), torch.ones(2, 4, 17))
        # the first map rebuilds the first block's attention output from its values
        block, h = model.blocks[0], model.tokens(x)
        attn_input = block.ln_1(h)
        _, _, v = block.attn.project(attn_input)
        rebuilt = block.attn.c_proj((maps[0] @ v).transpose(1, 2).reshape(h.shape))
        torch.testing.assert_close(rebuilt, block.attn(attn_input), atol=1e-5, rtol=1e-5)


def test_attention_maps_carry_gradients_for_weighted_rollout():
    model = small_vit().eval()
    maps = model.attention_maps(model.example_input(1))
    maps[-1][:, :, 0].sum().backward()
    assert model.patch_embed.proj.weight.grad is not None


def test_sizes_that_do_not_fit_are_clear_errors():
    with pytest.raises(ValueError, match="patch_size must divide image_size"):
        create_model("vit", image_size=30, patch_size=4)
    with pytest.raises(ValueError, match="built for 8x8 images"):
        small_vit()(torch.randn(1, 1, 16, 16))
    with pytest.raises(ValueError, match="unknown pool"):
        small_vit(pool="max")
