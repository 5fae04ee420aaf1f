"""Performer FAVOR+ (Choromanski et al.): positive orthogonal random features for softmax.

The projection is drawn once from a fixed seed and kept in a buffer (no redraw, so no host sync
and no run-to-run drift); key features are stabilised per (batch, head), query features per row,
so the stabilisers cancel exactly in the normalised ratio.
"""

import math

import torch
from torch import Tensor

from .base import Attention
from .linear import kernel_attention
from .registry import register


def orthogonal_features(num_features: int, head_dim: int, seed: int) -> Tensor:
    """Stacked blocks of QR-orthogonalised Gaussians, rows rescaled to chi(head_dim) norms."""
    gen = torch.Generator().manual_seed(seed)
    blocks = []
    for _ in range(math.ceil(num_features / head_dim)):
        q, _ = torch.linalg.qr(torch.randn(head_dim, head_dim, generator=gen, dtype=torch.float64))
        blocks.append(q.T)
    w = torch.cat(blocks)[:num_features]
    norms = torch.randn(num_features, head_dim, generator=gen, dtype=torch.float64).norm(dim=1)
    return (w * norms[:, None]).float()


@register(
    "performer",
    tier="O(N)",
    paper="Rethinking Attention with Performers",
    arxiv="2009.14794",
)
class Performer(Attention):
    features: Tensor  # (num_features, head_dim) buffer

    def __init__(
        self, dim: int, num_heads: int, num_features: int | None = None, seed: int = 0
    ) -> None:
        super().__init__(dim, num_heads)
        d = self.head_dim
        num_features = num_features or max(1, int(d * math.log(d)))
        if num_features < 1:
            raise ValueError(f"performer num_features must be >= 1, got {num_features}")
        self.register_buffer("features", orthogonal_features(num_features, d, seed))

    def feature_map(self, x: Tensor, is_query: bool) -> Tensor:
        x = x * self.head_dim**-0.25
        logits = x @ self.features.to(x.dtype).T
        stab = logits.amax(dim=-1 if is_query else (-2, -1), keepdim=True).detach()
        sq_norm = x.pow(2).sum(-1, keepdim=True) / 2
        m = self.features.shape[0]
        return (torch.exp(logits - sq_norm - stab) + 1e-4) * m**-0.5

    def mix(self, q: Tensor, k: Tensor, v: Tensor, hw: tuple[int, int]) -> Tensor:
        return kernel_attention(self.feature_map(q, True), self.feature_map(k, False), v, eps=0.0)
