"""Exact softmax through torch's fused kernels (flash / memory-efficient / cuDNN): O(N) memory.

Which kernel runs is torch's choice, and it changes between torch versions and inputs; the
module records the one chosen (`kernel`, in every row as `attention_kernel`), and `backend`
pins one, so that "sdpa" cannot change meaning without a trace in the rows. A pinned backend
that cannot run these inputs fails the cell with torch's reason.
"""

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from .base import Attention
from .registry import register

BACKENDS = {
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "math": SDPBackend.MATH,
}


def chosen(q: Tensor, k: Tensor, v: Tensor) -> str:
    """The backend torch picks for these inputs (its own dispatcher's choice), by our name."""
    try:
        picked = SDPBackend(torch._fused_sdp_choice(q, k, v))
    except (RuntimeError, TypeError, ValueError):  # meta tensors, or a torch without it
        return "unknown"
    return next((name for name, b in BACKENDS.items() if b == picked), picked.name.lower())


@register(
    "sdpa",
    tier="O(N^2)",
    paper="FlashAttention: Fast and Memory-Efficient Exact Attention with IO-Awareness",
    arxiv="2205.14135",
    exact_softmax=True,
    role="reference",
)
class SDPAttention(Attention):
    def __init__(self, dim: int, num_heads: int, backend: str = "auto") -> None:
        super().__init__(dim, num_heads)
        if backend != "auto" and backend not in BACKENDS:
            raise ValueError(
                f"sdpa backend {backend!r} is unknown; valid choices: auto, {', '.join(BACKENDS)}"
            )
        self.backend = backend

    def mix(self, q: Tensor, k: Tensor, v: Tensor, hw: tuple[int, int]) -> Tensor:
        if self.backend == "auto":
            if not self.kernel and not torch.compiler.is_compiling():
                self.kernel = chosen(q, k, v)
            return F.scaled_dot_product_attention(q, k, v)
        self.kernel = self.backend
        with sdpa_kernel(BACKENDS[self.backend]):
            return F.scaled_dot_product_attention(q, k, v)
