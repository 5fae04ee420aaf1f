"""Linformer (Wang et al.): keys and values projected from N tokens down to k along the tokens.

E and F are learned on a base token grid (a 224² image by default) and resampled bilinearly to
the input grid, the way a ViT resamples its position embedding, then scaled by N_base / N so a
projected key stays a weighted average at every resolution. The model therefore runs at any
token count with a fixed parameter count, 2 * k * base_tokens per layer, which `params` reports.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Attention
from .registry import register


@register(
    "linformer",
    tier="O(N)",
    paper="Linformer: Self-Attention with Linear Complexity",
    arxiv="2006.04768",
)
class Linformer(Attention):
    def __init__(
        self,
        dim: int,
        num_heads: int,
        k: int = 128,
        base_grid: tuple[int, int] | list[int] = (14, 14),
    ) -> None:
        super().__init__(dim, num_heads)
        gh, gw = base_grid
        if not 1 <= k <= gh * gw:
            raise ValueError(
                f"linformer k must be in [1, {gh * gw}] for base_grid {gh}x{gw}, not {k}"
            )
        self.base_grid = (gh, gw)
        self.proj_k = nn.Parameter(torch.empty(k, gh, gw))
        self.proj_v = nn.Parameter(torch.empty(k, gh, gw))
        for weight in (self.proj_k, self.proj_v):
            nn.init.xavier_normal_(weight.view(k, gh * gw), gain=2**-0.5)

    def projection(self, weight: Tensor, hw: tuple[int, int], dtype: torch.dtype) -> Tensor:
        """(k, N) projection for the grid hw, resampled from the base grid when it differs."""
        k = weight.shape[0]
        if tuple(hw) != self.base_grid:
            weight = F.interpolate(
                weight[None].float(), size=hw, mode="bilinear", align_corners=False
            )[0]
            weight = weight * (self.base_grid[0] * self.base_grid[1] / (hw[0] * hw[1]))
        return weight.reshape(k, hw[0] * hw[1]).to(dtype)

    def mix(self, q: Tensor, k: Tensor, v: Tensor, hw: tuple[int, int]) -> Tensor:
        keys = self.projection(self.proj_k, hw, k.dtype) @ k
        values = self.projection(self.proj_v, hw, v.dtype) @ v
        scores = (q * self.head_dim**-0.5) @ keys.transpose(-2, -1)
        return scores.softmax(dim=-1) @ values
