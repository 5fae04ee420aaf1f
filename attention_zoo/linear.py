"""Linear Transformer (Katharopoulos et al.): elu+1 feature map, right-associated products."""

import torch.nn.functional as F
from torch import Tensor

from .base import Attention, accum_dtype, token_sum
from .registry import register


def kernel_attention(phi_q: Tensor, phi_k: Tensor, v: Tensor, eps: float) -> Tensor:
    """phi(Q) (phi(K)^T V) / (phi(Q) . sum_j phi(k_j) + eps), right-associated: O(N).

    Both token sums are taken in float32, then divided by the largest entry of sum_j phi(k_j)
    before they meet phi(Q): the factor cancels between numerator and denominator and brings
    both back into half-precision range, where raw sums over ~332k tokens overflow and means
    underflow.
    """
    acc = accum_dtype(phi_k)
    kv = token_sum(phi_k, v)
    k_sum = phi_k.sum(-2, keepdim=True, dtype=acc)  # a reduction: float32 under autocast too
    scale = k_sum.amax(-1, keepdim=True)
    num = phi_q @ (kv / scale).to(phi_q.dtype)
    den = phi_q @ (k_sum / scale).to(phi_q.dtype).transpose(-2, -1)
    return (num / (den + (eps / scale).to(den.dtype))).to(v.dtype)


@register(
    "linear",
    tier="O(N)",
    paper="Transformers are RNNs: Fast Autoregressive Transformers with Linear Attention",
    arxiv="2006.16236",
)
class LinearAttention(Attention):
    def mix(self, q: Tensor, k: Tensor, v: Tensor, hw: tuple[int, int]) -> Tensor:
        return kernel_attention(F.elu(q) + 1, F.elu(k) + 1, v, eps=1e-6)
