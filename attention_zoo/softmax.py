"""Standard ViT attention with the N x N score matrix materialised: the paper's baseline."""

from torch import Tensor

from .base import Attention
from .registry import register


@register(
    "softmax",
    tier="O(N^2)",
    paper="An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale",
    arxiv="2010.11929",
    exact_softmax=True,
    role="reference",
)
class SoftmaxAttention(Attention):
    def mix(self, q: Tensor, k: Tensor, v: Tensor, hw: tuple[int, int]) -> Tensor:
        scores = (q * self.head_dim**-0.5) @ k.transpose(-2, -1)
        return scores.softmax(dim=-1) @ v
