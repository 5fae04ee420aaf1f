"""Swin-style (shifted) window attention inside the plain ViT: O(N * w^2).

Windows of `window_size` tokens a side, a learned relative-position bias per head, and on odd
blocks (with `shift`) windows displaced by half a window so information crosses window borders.
A grid that is not a multiple of the window is zero-padded at the bottom/right; unlike timm, the
padded keys are masked out, so results do not depend on what the padding holds, and the shifted
mask is built on the true (unpadded) grid. A window larger than the grid shrinks to the grid and
drops the shift along that axis, as in timm.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Attention
from .registry import register

_MASKED = -1e4  # finite, so a fully masked row (never produced here) cannot make NaN


def _axis_layout(size: int, window: int, shift: int) -> tuple[int, int, int]:
    """(window, shift, padded size) along one axis."""
    if size <= window:
        return size, 0, size
    return window, shift, -(-size // window) * window


def _region_ids(size: int, padded: int, shift: int) -> Tensor:
    """Per position of the rolled, padded axis: 0 = original order, 1 = wrapped round, 2 = pad."""
    ids = torch.zeros(padded, dtype=torch.long)
    ids[size - shift : size] = 1
    ids[size:] = 2
    return ids


@register(
    "swin",
    tier="O(N*w^2)",
    paper="Swin Transformer: Hierarchical Vision Transformer using Shifted Windows",
    arxiv="2103.14030",
)
class SwinWindowAttention(Attention):
    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int = 7,
        shift: bool = True,
        layer_index: int = 0,
    ) -> None:
        super().__init__(dim, num_heads)
        if window_size < 1:
            raise ValueError(f"swin window_size must be >= 1, got {window_size}")
        self.window_size = window_size
        self.shift_size = window_size // 2 if shift and layer_index % 2 == 1 else 0
        self.bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.bias_table, std=0.02)
        self._cache: dict[tuple, Tensor] = {}

    def _cached(self, key: tuple, build) -> Tensor | None:
        """Index and mask tensors depend only on the grid: build once per grid and device."""
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    def relative_bias(self, wh: int, ww: int) -> Tensor:
        """(heads, wh*ww, wh*ww) bias, read from the table sized for the full window."""

        def build() -> Tensor:
            coords = torch.stack(torch.meshgrid(torch.arange(wh), torch.arange(ww), indexing="ij"))
            rel = (coords.flatten(1)[:, :, None] - coords.flatten(1)[:, None, :]).permute(1, 2, 0)
            offset, span = self.window_size - 1, 2 * self.window_size - 1
            return ((rel[..., 0] + offset) * span + rel[..., 1] + offset).to(self.bias_table.device)

        index = self._cached(("bias", wh, ww, self.bias_table.device), build)
        return self.bias_table[index].permute(2, 0, 1)

    def window_mask(self, layout: tuple, device: torch.device) -> Tensor | None:
        """(windows, w*w, w*w) additive mask: keys from another region or from padding."""
        (h, wh, sh, hp), (w, ww, sw, wp) = layout
        if hp == h and wp == w and not (sh or sw):
            return None

        def build() -> Tensor:
            ids = _region_ids(h, hp, sh)[:, None] * 3 + _region_ids(w, wp, sw)[None, :]
            ids = torch.where((ids // 3 == 2) | (ids % 3 == 2), -1, ids)
            ids = _partition(ids[None, :, :, None], wh, ww).squeeze(-1)
            blocked = (ids[:, :, None] != ids[:, None, :]) | (ids[:, None, :] == -1)
            return torch.where(blocked, _MASKED, 0.0).to(device)

        return self._cached(("mask", *layout, device), build)

    def mix(self, q: Tensor, k: Tensor, v: Tensor, hw: tuple[int, int]) -> Tensor:
        batch, heads, _, head_dim = q.shape
        h, w = hw
        wh, sh, hp = _axis_layout(h, self.window_size, self.shift_size)
        ww, sw, wp = _axis_layout(w, self.window_size, self.shift_size)

        def to_windows(t: Tensor) -> Tensor:
            t = t.transpose(1, 2).reshape(batch, h, w, heads * head_dim)
            if sh or sw:
                t = torch.roll(t, shifts=(-sh, -sw), dims=(1, 2))
            t = F.pad(t, (0, 0, 0, wp - w, 0, hp - h))
            return _partition(t, wh, ww).unflatten(-1, (heads, head_dim)).transpose(1, 2)

        qw, kw, vw = (to_windows(t) for t in (q, k, v))  # (B*nW, heads, wh*ww, head_dim)
        scores = (qw * head_dim**-0.5) @ kw.transpose(-2, -1)
        scores = scores + self.relative_bias(wh, ww).to(scores.dtype)
        mask = self.window_mask(((h, wh, sh, hp), (w, ww, sw, wp)), q.device)
        if mask is not None:
            windows = mask.shape[0]
            scores = scores.unflatten(0, (batch, windows)) + mask[:, None].to(scores.dtype)
            scores = scores.flatten(0, 1)
        out = scores.softmax(dim=-1) @ vw
        out = _unpartition(out.transpose(1, 2).flatten(-2), batch, hp, wp, wh, ww)[:, :h, :w]
        if sh or sw:
            out = torch.roll(out, shifts=(sh, sw), dims=(1, 2))
        return out.reshape(batch, h * w, heads, head_dim).transpose(1, 2)


def _partition(x: Tensor, wh: int, ww: int) -> Tensor:
    """(B, Hp, Wp, C) -> (B * windows, wh * ww, C)."""
    b, hp, wp, c = x.shape
    x = x.view(b, hp // wh, wh, wp // ww, ww, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, wh * ww, c)


def _unpartition(x: Tensor, batch: int, hp: int, wp: int, wh: int, ww: int) -> Tensor:
    """(B * windows, wh * ww, C) -> (B, Hp, Wp, C)."""
    c = x.shape[-1]
    x = x.view(batch, hp // wh, wp // ww, wh, ww, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(batch, hp, wp, c)
