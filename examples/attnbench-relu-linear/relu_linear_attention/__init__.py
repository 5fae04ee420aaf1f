"""ReLU linear attention, packaged as an attnbench plugin."""

from .attention import ReluLinear

__all__ = ["ReluLinear"]
