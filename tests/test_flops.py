"""FLOP counts: fvcore with our handles == torch's flop_counter == the analytic formula."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import attention_zoo as zoo
from harness.measuring.flops import count_macs


def analytic_macs(
    attention, depth, d, hw, patch=16, mlp_ratio=4, classes=1000, batch=1, heads=4, **options
):
    n = hw[0] * hw[1]
    patch_embed = n * 3 * patch * patch * d
    mlp = 2 * n * d * mlp_ratio * d
    dh = d // heads
    if attention == "softmax":
        block = n * d * 3 * d + 2 * n * n * d + n * d * d + mlp  # qkv, QK^T and AV, proj
    elif attention == "neighborhood":  # a grid of at least k x k: k^2 neighbours each
        k = options.get("kernel_size", 7)
        block = n * d * 3 * d + 2 * n * k * k * d + n * d * d + mlp
    elif attention == "infini":  # per segment of L: softmax 2 L^2 d; read and write L dh d each
        segment, delta = options.get("segment", 256), options.get("update") == "delta"
        lengths = [min(segment, n - s) for s in range(0, n, segment)]
        mix = 0
        for i, length in enumerate(lengths):
            mix += 2 * length * length * d  # local attention
            if i:  # the read: sigma(Q) M and sigma(Q) z
                mix += length * dh * d + length * d
            if i < len(lengths) - 1:  # the write, for the segments after (and the delta's read)
                mix += length * dh * d + (length * dh * d + length * d if delta and i else 0)
        block = n * d * 3 * d + mix + n * d * d + mlp
    elif attention == "linear_infsa":
        # qkv; three token sums of width d (q summary, k scores, pooled v); proj on one token
        block = n * d * 3 * d + 3 * n * d + d * d + mlp
    else:
        raise ValueError(attention)
    return batch * (patch_embed + depth * block + d * classes)


@pytest.mark.parametrize(
    "attention,options",
    [
        ("softmax", {}),
        ("linear_infsa", {}),
        ("neighborhood", {}),
        ("neighborhood", {"kernel_size": 3}),
        ("infini", {}),  # one segment at these sizes
        ("infini", {"segment": 16}),  # several, the last shorter
        ("infini", {"segment": 16, "update": "delta"}),
    ],
)
@pytest.mark.parametrize("hw", [(14, 14), (7, 9)])
def test_macs_match_the_analytic_count(attention, options, hw):
    with torch.device("meta"):
        model = zoo.ViT(attention, depth=2, dim=64, num_heads=4, **options)
    assert count_macs(model, 2, 16 * hw[0], 16 * hw[1]) == analytic_macs(
        attention, 2, 64, hw, batch=2, **options
    )


@pytest.mark.parametrize("attention", zoo.available())
def test_fvcore_with_handles_equals_torch_flop_counter(attention):
    with torch.device("meta"):
        model, images = (
            zoo.ViT(attention, depth=2, dim=64, num_heads=4),
            torch.empty(1, 3, 160, 128),
        )
    macs = count_macs(model, 1, 160, 128)
    with FlopCounterMode(display=False) as counter:
        model(images)
    assert 2 * macs == counter.get_total_flops()


def test_count_at_9216_allocates_nothing():
    with torch.device("meta"):
        model = zoo.ViT.from_preset("paper_4l", "softmax")
    # would need ~10^13 bytes of scores if it ran for real
    assert count_macs(model, 1, 9216, 9216) == analytic_macs("softmax", 4, 1024, (576, 576))
