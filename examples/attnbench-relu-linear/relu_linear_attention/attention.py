"""ReLU linear attention (Cai et al., EfficientViT, arXiv 2205.14756): softmax replaced by
ReLU feature maps, so attention is ReLU(Q) (ReLU(K)^T V) / (ReLU(Q) ReLU(K)^T 1), O(N)."""

from __future__ import annotations

from torch import Tensor

from attention_zoo import Attention, register
from attention_zoo.base import full_precision, token_sum


@register(
    "relu_linear",
    tier="O(N)",
    paper="EfficientViT: Multi-Scale Linear Attention for High-Resolution Dense Prediction",
    arxiv="2205.14756",
)
class ReluLinear(Attention):
    """The timm layout attnbench expects: `qkv`, `proj`, `forward(x, hw)`, `mix(q, k, v, hw)`."""

    def __init__(self, dim: int, num_heads: int, eps: float = 1e-6) -> None:
        super().__init__(dim, num_heads)
        self.eps = eps

    def mix(self, q: Tensor, k: Tensor, v: Tensor, hw: tuple[int, int]) -> Tensor:
        q, k = q.relu(), k.relu()
        kv = token_sum(k, v)  # (B, h, d, d), float32 for half-precision inputs
        k_sum = token_sum(k, k.new_ones(*k.shape[:-1], 1))  # (B, h, d, 1)
        with full_precision(q):
            out = (q.to(kv.dtype) @ kv) / (q.to(kv.dtype) @ k_sum + self.eps)
        return out.to(v.dtype)
