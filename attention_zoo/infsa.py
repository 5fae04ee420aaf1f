"""Pure InfSA (Roffo & Palmer): Frobenius-normalised ReLU scores, rho-scaled, no row softmax."""

import math

import torch
from torch import Tensor, nn

from .base import Attention, accum_dtype
from .registry import register

PAPER = (
    "Self-Attention And Beyond the Infinite: "
    "Towards Linear Transformers with Infinite Self-Attention"
)
ARXIV = "2603.00175"
RHO_INIT = 0.95


def rho_parameter() -> nn.Parameter:
    """rho = sigmoid(logit) starts at 0.95 and stays a tensor, so it trains and never syncs."""
    return nn.Parameter(torch.tensor(math.log(RHO_INIT / (1 - RHO_INIT))))


@register("infsa", tier="O(N^2)", paper=PAPER, arxiv=ARXIV)
class PureInfSA(Attention):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__(dim, num_heads)
        self.rho_logit = rho_parameter()

    def mix(self, q: Tensor, k: Tensor, v: Tensor, hw: tuple[int, int]) -> Tensor:
        scores = torch.relu_((q / self.head_dim) @ k.transpose(-2, -1))
        # ||R||_F over ~N^2 entries overflows float16: take it in float32.
        norm = torch.linalg.vector_norm(
            scores, dim=(-2, -1), keepdim=True, dtype=accum_dtype(scores)
        )
        scale = (torch.sigmoid(self.rho_logit) / (norm + 1e-6)).to(scores.dtype)
        # Normalise before A @ v so the product stays bounded (||A||_F = rho < 1).
        weights = scores * scale if torch.is_grad_enabled() else scores.mul_(scale)
        return weights @ v
