"""The layout every mechanism shares (timm's `qkv`/`proj`), and float32-safe token reductions."""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn

_HALF = (torch.float16, torch.bfloat16)
_CHUNK_TOKENS = 16384


class Attention(nn.Module):
    """One fused qkv GEMM, a token-mixing step `mix`, one output projection.

    `kernel`: what ran the token mixing, where a mechanism can tell (sdpa: the backend torch
    chose); empty otherwise. The harness records the first block's in each row."""

    name: str
    kernel: str = ""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def split_heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        batch, tokens, _ = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim)
        return qkv.permute(2, 0, 3, 1, 4).unbind(0)

    def forward(self, x: Tensor, hw: tuple[int, int]) -> Tensor:
        batch, tokens, dim = x.shape
        if hw[0] * hw[1] != tokens:
            raise ValueError(f"grid {hw[0]}x{hw[1]} does not hold {tokens} tokens")
        out = self.mix(*self.split_heads(x), hw)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))

    def mix(self, q: Tensor, k: Tensor, v: Tensor, hw: tuple[int, int]) -> Tensor:
        """(B, heads, N, head_dim) q, k, v -> (B, heads, N, head_dim) output."""
        raise NotImplementedError


def accum_dtype(x: Tensor) -> torch.dtype:
    """float32 for half-precision tensors, their own dtype otherwise (float64 tests stay exact)."""
    return torch.float32 if x.dtype in _HALF else x.dtype


def full_precision(x: Tensor) -> contextlib.AbstractContextManager[object]:
    """Autocast off, where it is on. Under autocast (training in bfloat16/float16), `@` casts
    float32 inputs down to half precision, which would undo every float32 accumulation below."""
    if x.device.type in ("cpu", "cuda") and torch.is_autocast_enabled(x.device.type):
        return torch.autocast(x.device.type, enabled=False)
    return contextlib.nullcontext()  # autocast off already, or a device it does not know (meta)


def token_sum(a: Tensor, b: Tensor) -> Tensor:
    """a^T b summed over tokens (dim -2), accumulated and returned in at least float32.

    O(N) sums over ~332k tokens overflow float16 (and lose bits in bfloat16), silently turning
    outputs into zeros; half-precision inputs are promoted a chunk at a time, so the extra memory
    is bounded by the chunk, not by N. Autocast is off inside, so it stays float32 in training.
    """
    with full_precision(a):
        return _token_sum(a, b)


def _token_sum(a: Tensor, b: Tensor) -> Tensor:
    acc = torch.promote_types(accum_dtype(a), accum_dtype(b))
    if a.dtype not in _HALF and b.dtype not in _HALF:
        return a.to(acc).transpose(-2, -1) @ b.to(acc)

    def part(start: int) -> Tensor:
        stop = start + _CHUNK_TOKENS
        return a[..., start:stop, :].to(acc).transpose(-2, -1) @ b[..., start:stop, :].to(acc)

    total = part(0)
    for start in range(_CHUNK_TOKENS, a.shape[-2], _CHUNK_TOKENS):
        total.add_(part(start))
    return total
