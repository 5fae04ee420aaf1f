"""The plugin against its definition, and against attnbench's contract."""

import torch
from relu_linear_attention import ReluLinear

import attention_zoo as zoo


def test_it_equals_the_quadratic_definition_in_float64():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 50, 8, dtype=torch.float64) for _ in range(3))
    weights = q.relu() @ k.relu().transpose(-2, -1)
    expected = weights @ v / (weights.sum(-1, keepdim=True) + 1e-6)
    layer = ReluLinear(24, 3).double()
    torch.testing.assert_close(layer.mix(q, k, v, (5, 10)), expected)


def test_attnbench_finds_it_through_the_entry_point():
    assert "relu_linear" in zoo.available()
    assert zoo.info("relu_linear").origin.startswith("entry point of attnbench-relu-linear")
    zoo.check_contract(ReluLinear, "relu_linear")
