"""MACs per image with fvcore, on the meta device: no activation is allocated, so a cell that
runs out of memory still has its count.

Convention: only contractions count (linear layers, matmul / bmm / einsum, the two products of
scaled_dot_product_attention); elementwise work, softmax, norms, reductions and resampling count
zero. FLOPs = 2 x MACs (fvcore's "flops" are MACs). Handles below add what fvcore misses
(scaled_dot_product_attention counts 0) or gets wrong (matmul with broadcast batch dimensions)
and silence what it counts beyond contractions (norms, upsampling, pooling).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import torch
from fvcore.nn import FlopCountAnalysis
from fvcore.nn.jit_handles import get_shape
from torch import nn

NOT_CONTRACTIONS = [
    "aten::batch_norm",
    "aten::group_norm",
    "aten::layer_norm",
    "aten::instance_norm",
    "aten::upsample_nearest2d",
    "aten::upsample_bilinear2d",
    "aten::upsample_bicubic2d",
    "aten::adaptive_avg_pool2d",
    "aten::grid_sampler",
]


def matmul_macs(inputs: list[Any], outputs: list[Any]) -> int:
    """torch.matmul with broadcasting: MACs = output elements x contracted length."""
    a = get_shape(inputs[0])
    return math.prod(get_shape(outputs[0])) * a[-1]


def sdpa_macs(inputs: list[Any], outputs: list[Any]) -> int:
    """softmax(q k^T) v: N*S*d for the scores plus N*S*dv for the weighted values."""
    q, k, v = (get_shape(x) for x in inputs[:3])
    batch = math.prod(q[:-2])
    return batch * q[-2] * k[-2] * (q[-1] + v[-1])


def no_macs(inputs: list[Any], outputs: list[Any]) -> int:
    """Explicit zero: fvcore's `None` handle leaves its own default handle in place."""
    return 0


HANDLES: dict[str, Callable] = {
    "aten::matmul": matmul_macs,
    "aten::scaled_dot_product_attention": sdpa_macs,
    **dict.fromkeys(NOT_CONTRACTIONS, no_macs),
}


def count_macs(model: nn.Module, batch: int, height: int, width: int) -> int:
    """MACs of one forward of `model` (built on the meta device: nothing is allocated) on a
    (batch, 3, height, width) input."""
    with torch.device("meta"):
        images = torch.empty(batch, 3, height, width)
    analysis = FlopCountAnalysis(model.eval(), (images,)).set_op_handle(**HANDLES)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on int(size) are expected
        return int(analysis.total())


def macs_per_image(model: nn.Module, height: int, width: int) -> int:
    return count_macs(model, 1, height, width)


def warm_up() -> None:
    """The first fvcore trace in a process costs ~1 s of one-off set-up: pay it once, early."""
    from attention_zoo import ViT

    with torch.device("meta"):
        model = ViT("softmax", depth=1, dim=8, num_heads=1)
    macs_per_image(model, 16, 16)
