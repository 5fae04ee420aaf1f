"""Linear-InfSA: one norm-weighted query summary, ReLU-scored pooling, the same output per token.

The official module scales q and k (two full copies), syncs on `rho.item()`, and materialises the
rank-1 broadcast. Here the 1/sqrt(d) scales fold into d-sized vectors, rho stays a tensor, sums
over tokens run in float32, the output projection runs once on the pooled vector, and the
broadcast stays a view.
"""

import torch
from torch import Tensor

from .base import Attention, accum_dtype, token_sum
from .infsa import ARXIV, PAPER, rho_parameter
from .registry import register


@register("linear_infsa", tier="O(N)", paper=PAPER, arxiv=ARXIV, role="highlight")
class LinearInfSA(Attention):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__(dim, num_heads)
        self.rho_logit = rho_parameter()

    def pool(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """(B, heads, N, head_dim) -> the pooled (B, heads, 1, head_dim) output."""
        inv_sqrt_d = self.head_dim**-0.5
        energy = torch.linalg.vector_norm(q, dim=-1, keepdim=True).to(accum_dtype(q))
        weights = energy / (energy.sum(-2, keepdim=True) + 1e-6 / inv_sqrt_d)
        q_bar = token_sum(weights, q) * (inv_sqrt_d * inv_sqrt_d)  # already scaled for k / sqrt(d)
        scores = torch.relu(k @ q_bar.to(k.dtype).transpose(-2, -1)).to(weights.dtype)
        scores = scores / (scores.sum(-2, keepdim=True) + 1e-6)
        pooled = torch.sigmoid(self.rho_logit) * token_sum(scores, v)
        return pooled.to(v.dtype)

    def mix(self, q: Tensor, k: Tensor, v: Tensor, hw: tuple[int, int]) -> Tensor:
        return self.pool(q, k, v).expand_as(v)

    def forward(self, x: Tensor, hw: tuple[int, int]) -> Tensor:
        batch, tokens, dim = x.shape
        pooled = self.pool(*self.split_heads(x))
        return self.proj(pooled.transpose(1, 2).reshape(batch, 1, dim)).expand(batch, tokens, dim)
