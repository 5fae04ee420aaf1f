"""Neighborhood attention (NAT, with DiNAT's dilation): each token attends to a k x k
neighbourhood of the token grid, with a learned relative-position bias per head: O(N * k^2).

As in NAT, the neighbourhood is clamped at the borders rather than cut off, so a token near an
edge has as many neighbours as one in the middle (its window slides inwards); with `dilation`
d the grid is d x d interleaved sub-grids and the neighbourhood is taken within the token's own
sub-grid (DiNAT). Where a (sub-)grid is smaller than the kernel along an axis, the
neighbourhood along it is the whole (sub-)grid: NATTEN refuses such inputs; here they run, and
the neighbours a smaller sub-grid lacks are masked out, never made up.

Queries are processed in chunks whose gathered keys and values stay within a fixed budget, so
working memory is O(N * k^2) for the scores at most, never O(N^2), at any resolution. The
plain PyTorch path is the only one: the `natten` package's fused kernels are not used.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import Attention, accum_dtype, full_precision
from .registry import register

_MASKED = -1e4  # finite: a row always has at least one valid neighbour (the token itself)
# elements of gathered keys (and values) per chunk of queries: small enough to stay in cache
# (on a 2-core CPU at 896², 2^24 took 2.1x as long per forward as 2^19-2^21)
_GATHER_BUDGET = 2**20


def axis_neighbours(size: int, kernel: int, dilation: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per position along one axis: its neighbours' positions, their offsets from it (in
    sub-grid steps, for the bias), and which are real; (size, k) each, k = the widest
    neighbourhood any sub-grid allows."""
    width = min(kernel, -(-size // dilation))
    index, offset, valid = [], [], []  # lists, made tensors once (a traced model sees 3 ops)
    for i in range(size):
        residue, own = i % dilation, i // dilation
        count = len(range(residue, size, dilation))  # positions in this sub-grid
        span = min(kernel, count)
        start = min(max(own - span // 2, 0), count - span)
        pad = [0] * (width - span)
        index.append([residue + dilation * (start + a) for a in range(span)] + pad)
        offset.append([start + a - own for a in range(span)] + pad)
        valid.append([True] * span + [False] * (width - span))
    return (
        torch.tensor(index, dtype=torch.long),
        torch.tensor(offset, dtype=torch.long),
        torch.tensor(valid, dtype=torch.bool),
    )


@register(
    "neighborhood",
    tier="O(N*k^2)",
    paper="Neighborhood Attention Transformer",
    arxiv="2204.07143",
)
class NeighborhoodAttention(Attention):
    def __init__(self, dim: int, num_heads: int, kernel_size: int = 7, dilation: int = 1) -> None:
        super().__init__(dim, num_heads)
        if kernel_size < 1:
            raise ValueError(f"neighborhood kernel_size must be >= 1, got {kernel_size}")
        if dilation < 1:
            raise ValueError(f"neighborhood dilation must be >= 1, got {dilation}")
        self.kernel_size, self.dilation = kernel_size, dilation
        self.bias_table = nn.Parameter(
            torch.zeros(num_heads, 2 * kernel_size - 1, 2 * kernel_size - 1)
        )
        nn.init.trunc_normal_(self.bias_table, std=0.02)
        self._cache: dict[tuple, tuple[Tensor, Tensor, Tensor]] = {}

    def neighbours(
        self, hw: tuple[int, int], device: torch.device
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(N, K) neighbour indices into the flattened grid, bias indices and validity."""
        key = (hw, device)
        if key not in self._cache:
            k, d = self.kernel_size, self.dilation
            rows, row_off, row_ok = axis_neighbours(hw[0], k, d)
            cols, col_off, col_ok = axis_neighbours(hw[1], k, d)
            index = rows[:, None, :, None] * hw[1] + cols[None, :, None, :]
            bias = (
                (row_off[:, None, :, None] + k - 1) * (2 * k - 1)
                + col_off[None, :, None, :]
                + k
                - 1
            )
            valid = row_ok[:, None, :, None] & col_ok[None, :, None, :]
            n = hw[0] * hw[1]
            self._cache[key] = tuple(t.reshape(n, -1).to(device) for t in (index, bias, valid))  # type: ignore[assignment]
        return self._cache[key]

    def mix(self, q: Tensor, k: Tensor, v: Tensor, hw: tuple[int, int]) -> Tensor:
        index, bias_index, valid = self.neighbours(hw, q.device)
        batch, heads, tokens, head_dim = q.shape
        width = index.shape[1]
        chunk = max(1, _GATHER_BUDGET // max(batch * heads * width * head_dim, 1))
        table = self.bias_table.reshape(heads, -1)
        scale = head_dim**-0.5
        out = []
        for start in range(0, tokens, chunk):
            rows = slice(start, min(start + chunk, tokens))
            near = index[rows]  # (c, K)
            keys, values = k[:, :, near], v[:, :, near]  # (B, h, c, K, d)
            scores = (q[:, :, rows, None, :] * scale) @ keys.transpose(-1, -2)  # (B, h, c, 1, K)
            with full_precision(q):
                scores = scores.squeeze(-2).to(accum_dtype(q)) + table[:, bias_index[rows]].to(
                    accum_dtype(q)
                )
                scores = scores.masked_fill(~valid[rows], _MASKED)
                weights = scores.softmax(-1).to(v.dtype)
            out.append((weights[..., None, :] @ values).squeeze(-2))  # (B, h, c, d)
        return torch.cat(out, dim=2)
