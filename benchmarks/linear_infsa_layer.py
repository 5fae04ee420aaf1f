"""Linear-InfSA: our layer and mixing step against the official module's computation (CPU).

The official module (giorgioroffo/infinite-self-attention, as PAPER.md describes it) is written
out here as the comparison point: separate q/k/v projections, q and k scaled as full tensors,
rho read with `.item()`, and the rank-1 output materialised with `expand_as` + `contiguous`.

    python -m benchmarks.linear_infsa_layer [--tokens 4096 65536] [--repeats 15]
    python -m benchmarks.linear_infsa_layer --vit 9216   # small ViT forward, time + peak RSS
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import statistics
import time

import torch
from torch import Tensor, nn

import attention_zoo as zoo
from tests.reference import official_linear_infsa as official_infsa_attention


class OfficialLinearInfSA(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.q_proj, self.k_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.v_proj, self.out_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.rho_logit = nn.Parameter(torch.tensor(2.944))

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        heads = [
            p(x).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
            for p in (self.q_proj, self.k_proj, self.v_proj)
        ]
        rho = torch.sigmoid(self.rho_logit).item()
        out = official_infsa_attention(*heads, rho)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, c))


def gbps(nbytes: int, seconds: float) -> str:
    return f"{nbytes / seconds / 1e9:.1f}"


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@torch.no_grad()
def compare(tokens: int, dim: int, heads: int, repeats: int) -> None:
    ours = zoo.create("linear_infsa", dim, heads).eval()
    official = OfficialLinearInfSA(dim, heads).eval()
    x = torch.randn(1, tokens, dim)
    grid = (tokens // 64, 64)
    t_ours = median_seconds(lambda: ours(x, grid), repeats)
    t_official = median_seconds(lambda: official(x), repeats)

    q, k, v = (torch.randn(1, heads, tokens, dim // heads) for _ in range(3))
    rho = torch.sigmoid(ours.rho_logit).item()
    m_ours = median_seconds(lambda: ours.mix(q, k, v, grid), repeats)
    m_official = median_seconds(lambda: official_infsa_attention(q, k, v, rho), repeats)
    qkv_bytes = 3 * q.numel() * q.element_size()
    src, dst = torch.randn(3 * q.numel()), torch.empty(3 * q.numel())
    t_copy = median_seconds(lambda: dst.copy_(src), repeats)
    print(
        f"N={tokens:>6}  layer: ours {t_ours * 1e3:8.2f} ms  official {t_official * 1e3:8.2f} ms"
        f"  speed-up {t_official / t_ours:5.2f}x\n"
        f"          mix:   ours {m_ours * 1e3:8.2f} ms  official {m_official * 1e3:8.2f} ms"
        f"  speed-up {m_official / m_ours:5.2f}x\n"
        f"          q,k,v = {qkv_bytes / 2**20:.0f} MiB read once:"
        f" ours {gbps(qkv_bytes, m_ours)} GB/s, official {gbps(qkv_bytes, m_official)} GB/s;"
        f" plain copy of the same bytes {t_copy * 1e3:.2f} ms = {gbps(2 * qkv_bytes, t_copy)} GB/s"
        f" (read + write); ours takes {m_ours / t_copy:.2f}x the copy's time"
    )


def _vit_forward(resolution: int, out: mp.Queue) -> None:
    torch.manual_seed(0)
    model = zoo.ViT.from_preset("small", "linear_infsa").eval()
    images = torch.randn(1, 3, resolution, resolution)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with torch.no_grad():
        logits = model(images)
    out.put(
        (
            time.perf_counter() - start,
            before,
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            bool(torch.isfinite(logits).all()),
        )
    )


def vit(resolution: int) -> None:
    """One forward in a fresh process, so its peak RSS belongs to this forward alone."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_vit_forward, args=(resolution, queue))
    proc.start()
    seconds, before_kib, peak_kib, finite = queue.get()
    proc.join()
    tokens = (resolution // 16) ** 2
    print(
        f"small linear_infsa ViT, batch 1, {resolution}² ({tokens} tokens), CPU float32: "
        f"{seconds:.1f} s, peak RSS {peak_kib / 2**20:.2f} GiB "
        f"({(peak_kib - before_kib) / 2**20:.2f} GiB above the process before the forward), "
        f"finite logits: {finite}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[4096, 65536])
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--heads", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--vit", type=int, metavar="RESOLUTION")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, batch 1")
    if args.vit:
        vit(args.vit)
        return
    for tokens in args.tokens:
        compare(tokens, args.dim, args.heads, args.repeats)


if __name__ == "__main__":
    main()
