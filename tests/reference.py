"""Plain-formula references the mechanisms are checked against, written from ZOO.md / PAPER.md."""

import torch
from torch import Tensor


def softmax_attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None = None) -> Tensor:
    scores = q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5
    if bias is not None:
        scores = scores + bias
    return torch.softmax(scores, dim=-1) @ v


def official_pure_infsa(q: Tensor, k: Tensor, v: Tensor, rho: float) -> Tensor:
    """infsa/core.py: A = rho * R / (||R||_F + 1e-6), R = ReLU((q/sqrt d)(k/sqrt d)^T); A @ v."""
    d = q.shape[-1]
    r = torch.relu((q / d**0.5) @ (k / d**0.5).transpose(-2, -1))
    norm = torch.linalg.norm(r, dim=(-2, -1), keepdim=True)
    return rho * r / (norm + 1e-6) @ v


def official_linear_infsa(q: Tensor, k: Tensor, v: Tensor, rho: float) -> Tensor:
    """infsa/core.py linear path, including the materialised broadcast."""
    d = q.shape[-1]
    qs, ks = q / d**0.5, k / d**0.5
    e = torch.relu(qs.norm(dim=-1))  # the official ReLU, a no-op on a norm
    w = e / (e.sum(-1, keepdim=True) + 1e-6)
    q_bar = (w.unsqueeze(-1) * qs).sum(-2, keepdim=True)
    a = torch.relu((q_bar * ks).sum(-1))
    a = a / (a.sum(-1, keepdim=True) + 1e-6)
    pooled = rho * (a.unsqueeze(-1) * v).sum(-2, keepdim=True)
    return pooled.expand_as(v).contiguous()


def windowed_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    hw: tuple[int, int],
    window: int,
    shift: int,
    bias_table: Tensor,
) -> Tensor:
    """Brute force: each query attends to the real tokens of its (shifted) window and region."""
    h, w = hw
    wh, ww = min(window, h), min(window, w)
    sh = shift if h > window else 0
    sw = shift if w > window else 0
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    r, c = ((rows - sh) % h).flatten(), ((cols - sw) % w).flatten()  # position after the roll
    window_id = (r // wh) * 10_000 + c // ww
    region = (r >= h - sh).long() * 2 + (c >= w - sw).long()
    allowed = (window_id[:, None] == window_id[None]) & (region[:, None] == region[None])
    # relative position inside the rolled grid, as the window sees it
    dr = r[:, None] - r[None, :]
    dc = c[:, None] - c[None, :]
    span = 2 * window - 1
    index = (dr + window - 1).clamp(0, span - 1) * span + (dc + window - 1).clamp(0, span - 1)
    bias = bias_table[index].permute(2, 0, 1).to(q.dtype)  # (heads, N, N)
    scores = q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5 + bias
    scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v
