"""Nystromformer (Xiong et al.): softmax approximated through segment-mean landmarks.

Landmarks follow the official uneven segmentation when N is not a multiple of their count, the
Moore-Penrose iteration starts from the per-(batch, head) 1-norm bound, and the small landmark
matrices run in float32 even under half precision (the iteration amplifies rounding).
"""

import torch
from torch import Tensor

from .base import Attention, accum_dtype, full_precision
from .registry import register


def segment_means(x: Tensor, segments: int) -> Tensor:
    """(..., N, d) -> (..., m, d): the first segments hold N // m tokens, the rest one more."""
    size, longer = divmod(int(x.shape[-2]), int(segments))  # int(): sizes are traced as tensors
    shorter = segments - longer
    head = x[..., : shorter * size, :].unflatten(-2, (shorter, size)).mean(-2)
    if not longer:
        return head
    tail = x[..., shorter * size :, :].unflatten(-2, (longer, size + 1)).mean(-2)
    return torch.cat([head, tail], dim=-2)


def iterative_pinv(a: Tensor, iters: int) -> Tensor:
    """Newton-Schulz style pseudo-inverse of a row-stochastic matrix (Razavi et al. 2014)."""
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    z = a.transpose(-2, -1) / a.sum(-2).amax(-1)[..., None, None]
    for _ in range(iters):
        az = a @ z
        z = 0.25 * z @ (13 * eye - az @ (15 * eye - az @ (7 * eye - az)))
    return z


@register(
    "nystrom",
    tier="O(N)",
    paper="Nystromformer: A Nystrom-Based Algorithm for Approximating Self-Attention",
    arxiv="2102.03902",
)
class Nystrom(Attention):
    def __init__(
        self, dim: int, num_heads: int, num_landmarks: int = 64, pinv_iters: int = 6
    ) -> None:
        super().__init__(dim, num_heads)
        if num_landmarks < 1 or pinv_iters < 1:
            raise ValueError(
                f"nystrom needs num_landmarks >= 1 and pinv_iters >= 1, "
                f"got {num_landmarks} and {pinv_iters}"
            )
        self.num_landmarks = num_landmarks
        self.pinv_iters = pinv_iters

    def mix(self, q: Tensor, k: Tensor, v: Tensor, hw: tuple[int, int]) -> Tensor:
        q = q * self.head_dim**-0.5
        m = min(self.num_landmarks, q.shape[-2])
        q_land, k_land = segment_means(q, m), segment_means(k, m)
        kernel_1 = (q @ k_land.transpose(-2, -1)).softmax(dim=-1)
        acc = accum_dtype(q)
        kernel_3 = (q_land @ k.transpose(-2, -1)).softmax(dim=-1)
        landmarks_v = (kernel_3 @ v).to(acc)
        with full_precision(q):  # the pseudo-inverse amplifies rounding: float32 even in training
            kernel_2 = (q_land.to(acc) @ k_land.to(acc).transpose(-2, -1)).softmax(dim=-1)
            landmark_mix = iterative_pinv(kernel_2, self.pinv_iters) @ landmarks_v.to(acc)
        return kernel_1 @ landmark_mix.to(kernel_1.dtype)
