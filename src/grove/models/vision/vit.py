"""Vision Transformer (Dosovitskiy et al., 2021): an image as a sequence of patch tokens.

patch_embed (a conv whose kernel and stride are patch_size: one linear map per patch) -> a class
token in front -> learned positions added -> dropout -> depth pre-norm Transformer blocks
(models/layers/attention.py) -> final LayerNorm -> the class token's vector (pool="cls") or the
mean of the patch tokens (pool="mean") -> dropout -> linear head.

    logits = model(images)          # (B, C, S, S), S = image_size -> (B, num_classes)
    maps = model.attention_maps(images)
    # depth tensors (B, heads, N+1, N+1): each block's softmax attention, token 0 = class token,
    # for attention rollout (Abnar & Zuidema, 2020); call model.eval() first

Names follow timm's vision_transformer.py where the shared blocks allow: patch_embed.proj,
cls_token, pos_embed (here `pos_embed.weight`, (N+1, dim), where timm has a (1, N+1, dim)
parameter), blocks.N, norm, head. Inside a block the shared layer's nanoGPT names stand for timm's:
ln_1/ln_2 for norm1/norm2, attn.c_attn/attn.c_proj for attn.qkv/attn.proj, mlp.c_fc/mlp.c_proj
for mlp.fc1/mlp.fc2 (c_attn's q, k, v layout is timm's qkv layout).

Contract: the feature layer is the final LayerNorm `norm`; `forward_features` returns its output,
all tokens (B, N+1, dim) before pooling; `reset_classifier` replaces `head`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from grove.models.layers.attention import TransformerBlock
from grove.models.layers.heads import ReplaceableHead
from grove.models.layers.inputs import ImageInput
from grove.models.layers.options import check_choice
from grove.models.layers.positions import LearnedPositions
from grove.models.layers.variants import register_variants
from grove.registry import register_model

POOLS = ("cls", "mean")


class PatchEmbed(nn.Module):
    """(B, C, S, S) images -> (B, N, dim) patch tokens, N = (S / patch_size)^2, in row-major order."""

    def __init__(self, image_size: int, patch_size: int, in_channels: int, dim: int):
        super().__init__()
        if patch_size < 1 or image_size % patch_size:
            raise ValueError(
                f"vit cuts images into patch_size x patch_size patches, so patch_size must divide "
                f"image_size; got patch_size={patch_size}, image_size={image_size}"
            )
        self.image_size = image_size
        self.num_patches = (image_size // patch_size) ** 2
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[-2:] != (self.image_size, self.image_size):
            # learned positions fix the number of patches; resizing belongs to the data transform
            raise ValueError(
                f"vit was built for {self.image_size}x{self.image_size} images; got shape {tuple(x.shape)} "
                f"(resize the images, or build the model with image_size={x.shape[-1]})"
            )
        x = self.proj(x)  # (B, dim, S/p, S/p)
        return x.flatten(2).transpose(1, 2)  # (B, N, dim)


@dataclass
class ViTConfig:
    image_size: int
    patch_size: int
    in_channels: int
    dim: int
    depth: int
    heads: int
    mlp_ratio: float
    dropout: float
    pool: str
    pos_init_std: float


class VisionTransformer(ImageInput, ReplaceableHead, nn.Module):
    feature_layer = "norm"
    head_layer = "head"

    def __init__(self, config: ViTConfig, num_classes: int):
        super().__init__()
        check_choice("pool", config.pool, POOLS)
        self.config = config
        self.num_classes = num_classes
        self.in_channels = config.in_channels
        self.image_size = config.image_size
        c = config
        self.patch_embed = PatchEmbed(c.image_size, c.patch_size, c.in_channels, c.dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.dim))
        self.pos_embed = LearnedPositions(self.patch_embed.num_patches + 1, c.dim)
        self.pos_drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(c.dim, c.heads, c.mlp_ratio, c.dropout) for _ in range(c.depth)
        )
        self.norm = nn.LayerNorm(c.dim)
        self.head_drop = nn.Dropout(c.dropout)
        self.head = nn.Linear(c.dim, num_classes)

        # timm's init: truncated-normal(0.02) Linear weights with zero biases, a tiny class token
        self.apply(self._init_linear)
        nn.init.normal_(self.cls_token, std=1e-6)
        nn.init.normal_(self.pos_embed.weight, std=c.pos_init_std)

    @staticmethod
    def _init_linear(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    init_head = _init_linear  # a fresh head starts as the built one did

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """The input to the first block: class token + patch tokens, with positions (B, N+1, dim)."""
        x = self.patch_embed(x)  # (B, N, dim)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # (B, N+1, dim)
        return self.pos_drop(self.pos_embed(x))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.tokens(x)
        for block in self.blocks:
            x = block(x)  # (B, N+1, dim)
        return self.norm(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)  # (B, N+1, dim)
        pooled = x[:, 0] if self.config.pool == "cls" else x[:, 1:].mean(dim=1)  # (B, dim)
        return self.head(self.head_drop(pooled))  # (B, num_classes)

    def attention_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each block's attention probabilities, in order: depth tensors (B, heads, N+1, N+1), fp32.

        Row i of a map is how token i (0 = class token, then patches in row-major order) spreads
        its attention over the tokens; every row sums to 1. Gradients flow (for gradient-weighted
        rollout); wrap in torch.no_grad() when they are not needed.
        """
        maps = []
        h = self.tokens(x)
        for block in self.blocks:
            maps.append(block.attention_weights(h))
            h = block(h)
        return maps


@register_model(modality="image", family="transformer")
def vit(
    num_classes: int = 10,  # CIFAR-10's
    in_channels: int = 3,  # RGB
    image_size: int = 32,  # CIFAR's; must be a multiple of patch_size
    patch_size: int = 4,  # 8x8 = 64 patches of a 32x32 image: small patches suit small images
    dim: int = 192,  # ViT-Tiny's width
    depth: int = 6,  # half of ViT-Tiny's 12 blocks: small data sets gain little from more
    heads: int = 3,  # ViT-Tiny's 64-channel heads
    mlp_ratio: float = 4,  # the paper's MLP width
    dropout: float = 0.0,  # on positions, inside blocks and before the head; 0.1 for small data sets
    pool: str = "cls",  # "cls" (the class token, as the paper) or "mean" over the patch tokens
    # timm's 0.02 suits 16x16x3 patches; a patch of a few pixels spans only a few directions of
    # dim, and positions that small are drowned: on 8x8 digits with 2x2 patches, 0.5 reached 97.5%
    # test accuracy in 20 epochs where 0.02 was at 89%
    pos_init_std: float = 0.02,
) -> VisionTransformer:
    """Vision Transformer with free options (patch size, width, depth, heads), sized by default for 32x32."""
    config = ViTConfig(image_size, patch_size, in_channels, dim, depth, heads, mlp_ratio, dropout, pool, pos_init_std)
    return VisionTransformer(config, num_classes)


def deit_builder(dim: int, heads: int) -> Callable[..., VisionTransformer]:
    """The registered builder of one DeiT size: `dim` wide, 12 blocks of `heads` heads, 16x16 patches at 224."""

    def build(
        num_classes: int = 1000,  # ImageNet's
        in_channels: int = 3,
        image_size: int = 224,  # the paper's ImageNet resolution
        patch_size: int = 16,  # /16: 14x14 = 196 patches at 224
        dropout: float = 0.0,
        pool: str = "cls",
    ) -> VisionTransformer:
        config = ViTConfig(image_size, patch_size, in_channels, dim, 12, heads, 4, dropout, pool, 0.02)
        return VisionTransformer(config, num_classes)

    return build


register_variants(
    {
        "vit_tiny": (
            deit_builder(192, 3),
            "ViT-Tiny/16 (DeiT-Ti: 192 wide, 12 blocks, 3 heads; 5.7M params at 1000 classes), timm-like names.",
        ),
        "vit_small": (
            deit_builder(384, 6),
            "ViT-Small/16 (DeiT-S: 384 wide, 12 blocks, 6 heads; 22.1M params at 1000 classes), timm-like names.",
        ),
    },
    modality="image",
    family="transformer",
)
