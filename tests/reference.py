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


def neighbourhood_attention(
    q: Tensor, k: Tensor, v: Tensor, hw: tuple[int, int], kernel: int, dilation: int, table: Tensor
) -> Tensor:
    """NAT / DiNAT by brute force: for every token, its neighbours listed one by one from the
    definition (the k nearest of its own dilated sub-grid along each axis, the window slid
    inwards at the borders, the whole sub-grid where it is smaller than k), softmax over them
    with the relative-position bias table[head, dy + k - 1, dx + k - 1]."""
    height, width = hw
    out = torch.zeros_like(q)

    def along(i: int, size: int) -> list[tuple[int, int]]:
        line = list(range(i % dilation, size, dilation))  # the token's sub-grid on this axis
        own = line.index(i)
        span = min(kernel, len(line))
        start = min(max(own - span // 2, 0), len(line) - span)
        return [(line[start + a], start + a - own) for a in range(span)]

    for i in range(height):
        for j in range(width):
            near = [
                (y * width + x, dy, dx) for y, dy in along(i, height) for x, dx in along(j, width)
            ]
            index = torch.tensor([n for n, _, _ in near])
            bias = torch.stack(
                [table[:, dy + kernel - 1, dx + kernel - 1] for _, dy, dx in near], -1
            )
            token = i * width + j
            scores = (
                q[:, :, token : token + 1] @ k[:, :, index].transpose(-2, -1) / q.shape[-1] ** 0.5
            )
            weights = torch.softmax(scores + bias[None, :, None, :], dim=-1)
            out[:, :, token] = (weights @ v[:, :, index])[:, :, 0]
    return out


def infini_attention(
    q: Tensor, k: Tensor, v: Tensor, segment: int, update: str, causal: bool, beta: Tensor
) -> Tensor:
    """Infini-attention from the paper's equations, one segment after another: softmax inside
    the segment (causal or not), retrieval sigma(Q) M / (sigma(Q) z) from the memory of the
    segments before (none for the first), then the memory written (linear or delta rule),
    mixed by sigmoid(beta) per head."""
    import torch.nn.functional as F

    def sigma(x: Tensor) -> Tensor:
        return F.elu(x) + 1

    batch, heads, tokens, d = q.shape
    memory = torch.zeros(batch, heads, d, v.shape[-1], dtype=q.dtype)
    z = torch.zeros(batch, heads, d, dtype=q.dtype)
    gate = torch.sigmoid(beta)[None, :, None, None]
    out = []
    for first, start in enumerate(range(0, tokens, segment)):
        qs, ks, vs = (t[:, :, start : start + segment] for t in (q, k, v))
        scores = qs @ ks.transpose(-2, -1) / d**0.5
        if causal:
            n = scores.shape[-1]
            scores = scores.masked_fill(torch.ones(n, n).triu(1).bool(), float("-inf"))
        local = torch.softmax(scores, -1) @ vs
        if first == 0:
            read = torch.zeros_like(local)
        else:
            read = (sigma(qs) @ memory) / (
                (sigma(qs) * z[:, :, None, :]).sum(-1, keepdim=True) + 1e-6
            )
        written = vs
        if update == "delta" and first:
            old = (sigma(ks) @ memory) / (
                (sigma(ks) * z[:, :, None, :]).sum(-1, keepdim=True) + 1e-6
            )
            written = vs - old
        memory = memory + sigma(ks).transpose(-2, -1) @ written
        z = z + sigma(ks).sum(-2)
        out.append(gate * read + (1 - gate) * local)
    return torch.cat(out, dim=2)
