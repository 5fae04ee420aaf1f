"""FLOP counts: fvcore with our handles == torch's flop_counter == the analytic formula."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import attention_zoo as zoo
from harness.measuring.flops import count_macs


def analytic_macs(attention, depth, d, hw, patch=16, mlp_ratio=4, classes=1000, batch=1):
    n = hw[0] * hw[1]
    patch_embed = n * 3 * patch * patch * d
    mlp = 2 * n * d * mlp_ratio * d
    if attention == "softmax":
        block = n * d * 3 * d + 2 * n * n * d + n * d * d + mlp  # qkv, QK^T and AV, proj
    elif attention == "linear_infsa":
        # qkv; three token sums of width d (q summary, k scores, pooled v); proj on one token
        block = n * d * 3 * d + 3 * n * d + d * d + mlp
    else:
        raise ValueError(attention)
    return batch * (patch_embed + depth * block + d * classes)


@pytest.mark.parametrize("attention", ["softmax", "linear_infsa"])
@pytest.mark.parametrize("hw", [(14, 14), (7, 9)])
def test_macs_match_the_analytic_count(attention, hw):
    with torch.device("meta"):
        model = zoo.ViT(attention, depth=2, dim=64, num_heads=4)
    assert count_macs(model, 2, 16 * hw[0], 16 * hw[1]) == analytic_macs(
        attention, 2, 64, hw, batch=2
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
