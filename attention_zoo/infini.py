"""Infini-attention (Munkhdalai et al. 2024), adapted to an image's tokens: O(N * S).

The tokens, in raster order, are cut into segments of `segment` tokens (the last may be
shorter). Within a segment: dot-product softmax attention (`causal`: over the earlier tokens of
the segment only). Across segments: a compressive memory per head, M (d x d) and a normaliser z
(d), read before each segment and written after it (after the last there is no one to read
it, so it is not written):
  retrieval  A_mem = sigma(Q) M / (sigma(Q) z),  sigma = ELU + 1  (zero before any write)
  update     M += sigma(K)^T V                               (update="linear")
             M += sigma(K)^T (V - sigma(K) M / (sigma(K) z))  (update="delta", the paper's delta
                                                               rule; the first write is linear)
             z += sum over the segment's tokens of sigma(K)
  output     sigmoid(beta) * A_mem + (1 - sigmoid(beta)) * A_dot, beta learned per head.
The paper's: the segment-local softmax, the ELU + 1 memory with its normaliser, both update
rules and the learned gate. Ours: raster order as the segment order (an image has no time), the
choice of a non-causal segment (the paper's language model is causal; a vision encoder need not
be, so `causal` is an option, off by default) and the default `segment` of 256 tokens (a 224²
image at patch 16 is one segment: softmax scaled by the gate, the memory still empty; 9216² is
1,296 segments). Memory stays O(d^2)
per head whatever N. The loop runs over segments, never tokens: 1,296 iterations per block at
9216², about 0.15 s of loop overhead per block on a 2-core CPU (measured with head_dim 1), within
a 13.2 s forward of the small model there (Linear-InfSA: 8.8 s).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Attention, accum_dtype, full_precision
from .registry import register

UPDATES = ("linear", "delta")
_EPS = 1e-6


def _sigma(x: Tensor) -> Tensor:
    return F.elu(x) + 1


@register(
    "infini",
    tier="O(N*S)",
    paper="Leave No Context Behind: Efficient Infinite Context Transformers with Infini-attention",
    arxiv="2404.07143",
)
class InfiniAttention(Attention):
    def __init__(
        self,
        dim: int,
        num_heads: int,
        segment: int = 256,
        update: str = "linear",
        causal: bool = False,
    ) -> None:
        super().__init__(dim, num_heads)
        if segment < 1:
            raise ValueError(f"infini segment must be >= 1 token, got {segment}")
        if update not in UPDATES:
            raise ValueError(f"infini update {update!r} is unknown; valid choices: linear, delta")
        self.segment, self.update, self.causal = segment, update, causal
        self.beta = nn.Parameter(torch.zeros(num_heads))  # the gate starts at one half

    def mix(self, q: Tensor, k: Tensor, v: Tensor, hw: tuple[int, int]) -> Tensor:
        batch, heads, tokens, head_dim = q.shape
        acc = accum_dtype(q)
        gate = torch.sigmoid(self.beta).to(acc)[None, :, None, None]
        memory = q.new_zeros(batch, heads, head_dim, v.shape[-1], dtype=acc)
        norm = q.new_zeros(batch, heads, head_dim, 1, dtype=acc)
        out = []
        for start in range(0, tokens, self.segment):
            part = slice(start, min(start + self.segment, tokens))
            qs, ks, vs = q[:, :, part], k[:, :, part], v[:, :, part]
            local = F.scaled_dot_product_attention(qs, ks, vs, is_causal=self.causal)
            with full_precision(q):  # the memory accumulates in float32 under autocast too
                sq, sk = _sigma(qs.to(acc)), _sigma(ks.to(acc))
                if start:  # nothing is written before the first segment: nothing to read
                    retrieved = (sq @ memory) / (sq @ norm + _EPS)
                else:
                    retrieved = torch.zeros_like(local, dtype=acc)
                if part.stop < tokens:  # written for the segments after; the last has none
                    values = vs.to(acc)
                    if self.update == "delta" and start:
                        values = values - (sk @ memory) / (sk @ norm + _EPS)
                    memory = memory + sk.transpose(-2, -1) @ values
                    norm = norm + sk.sum(-2)[..., None]
                mixed = gate * retrieved + (1 - gate) * local.to(acc)
            out.append(mixed.to(q.dtype))
        return torch.cat(out, dim=2)
