"""Exact softmax through torch's fused kernels (flash / memory-efficient): O(N) memory."""

import torch.nn.functional as F
from torch import Tensor

from .base import Attention
from .registry import register


@register(
    "sdpa",
    tier="O(N^2)",
    paper="FlashAttention: Fast and Memory-Efficient Exact Attention with IO-Awareness",
    arxiv="2205.14135",
    exact_softmax=True,
    role="reference",
)
class SDPAttention(Attention):
    def mix(self, q: Tensor, k: Tensor, v: Tensor, hw: tuple[int, int]) -> Tensor:
        return F.scaled_dot_product_attention(q, k, v)
