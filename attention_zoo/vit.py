"""The equal-depth Vision Transformer every mechanism is dropped into."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .registry import check_heads, create

# The paper's two models, a small one for CPUs, and the shapes people compare against (patch 16,
# MLP ratio 4; with the global-average-pool head these equal timm's VisionTransformer of the same
# name built with class_token=False, global_pool="avg").
PRESETS: dict[str, dict[str, int]] = {
    "paper_4l": {"depth": 4, "dim": 1024, "num_heads": 64},
    "paper_24l": {"depth": 24, "dim": 1024, "num_heads": 16},
    "small": {"depth": 4, "dim": 192, "num_heads": 3},
    "deit_tiny": {"depth": 12, "dim": 192, "num_heads": 3},
    "deit_small": {"depth": 12, "dim": 384, "num_heads": 6},
    "deit_base": {"depth": 12, "dim": 768, "num_heads": 12},
    "vit_base": {"depth": 12, "dim": 768, "num_heads": 12},
    "vit_large": {"depth": 24, "dim": 1024, "num_heads": 16},
}

BASE_GRID = 14  # the position embedding is learned for a 224² image at patch 16


class PatchEmbed(nn.Module):
    """Non-overlapping patches through one Linear: the stride=kernel convolution as a GEMM."""

    def __init__(self, patch_size: int, dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Linear(3 * patch_size * patch_size, dim)

    def forward(self, images: Tensor, hw: tuple[int, int]) -> Tensor:
        """(B, 3, H*p, W*p) -> (B, H*W, dim)."""
        batch, channels, p = images.shape[0], images.shape[1], self.patch_size
        patches = images.reshape(batch, channels, hw[0], p, hw[1], p).permute(0, 2, 4, 1, 3, 5)
        return self.proj(patches.reshape(batch, hw[0] * hw[1], channels * p * p))


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(
        self,
        attention: str,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        layer_index: int,
        **attention_options: object,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = create(attention, dim, num_heads, layer_index=layer_index, **attention_options)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor, hw: tuple[int, int]) -> Tensor:
        x = x + self.attn(self.norm1(x), hw)
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """Patch embedding, `depth` blocks of one attention mechanism, global-average-pool head."""

    def __init__(
        self,
        attention: str,
        depth: int,
        dim: int,
        num_heads: int,
        patch_size: int = 16,
        mlp_ratio: float = 4.0,
        num_classes: int = 1000,
        **attention_options: object,
    ) -> None:
        super().__init__()
        if depth < 1 or patch_size < 1:
            raise ValueError(f"depth and patch_size must be >= 1, got {depth} and {patch_size}")
        check_heads(dim, num_heads)
        self.attention, self.depth, self.dim, self.num_heads = attention, depth, dim, num_heads
        self.patch_size = patch_size
        self.patch_embed = PatchEmbed(patch_size, dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, dim, BASE_GRID, BASE_GRID))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.ModuleList(
            Block(attention, dim, num_heads, mlp_ratio, i, **attention_options)
            for i in range(depth)
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    @classmethod
    def from_preset(cls, preset: str, attention: str, **options: object) -> ViT:
        """A model from PRESETS; `options` go to the ViT (patch_size, ...) or the attention."""
        if preset not in PRESETS:
            raise ValueError(f"unknown model {preset!r}; valid choices: {', '.join(PRESETS)}")
        kwargs: dict[str, Any] = {**PRESETS[preset], **options}
        return cls(attention, **kwargs)

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """Token grid of an image, or a ValueError naming the resolutions that work."""
        p = self.patch_size
        if height < p or width < p or height % p or width % p:
            raise ValueError(
                f"resolution {height}x{width} is not a positive multiple of patch_size {p}; "
                f"valid sides are {p}, {2 * p}, {3 * p}, ..."
            )
        return height // p, width // p

    def position_embedding(self, hw: tuple[int, int], dtype: torch.dtype) -> Tensor:
        """(1, N, dim), resampled bicubically from the 14x14 base grid like timm's dynamic size."""
        pos: Tensor = self.pos_embed
        if hw != (BASE_GRID, BASE_GRID):
            pos = F.interpolate(pos.float(), size=hw, mode="bicubic", align_corners=False)
        return pos.flatten(2).transpose(1, 2).to(dtype)

    def forward_features(self, images: Tensor) -> Tensor:
        hw = self.grid(*images.shape[-2:])
        x = self.patch_embed(images, hw)
        x = x + self.position_embedding(hw, x.dtype)
        for block in self.blocks:
            x = block(x, hw)
        return self.norm(x)

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.forward_features(images).mean(dim=1))
