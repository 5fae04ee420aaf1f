"""Attention mechanisms for Vision Transformers behind one registry, and the ViT they plug into."""
# ruff: noqa: I001  (import order is registration order: the paper's set, baselines first)

from . import softmax, sdpa, infsa, linear_infsa, linear, performer, linformer, nystrom, swin  # noqa: F401
from .base import Attention
from .registry import Info, available, create, info, register
from .vit import PRESETS, ViT

__all__ = ["PRESETS", "Attention", "Info", "ViT", "available", "create", "info", "register"]
