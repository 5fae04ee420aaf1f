"""Attention mechanisms for Vision Transformers behind one registry, and the ViT they plug into.

Every module in this package is imported here, so a mechanism is one file with a `@register`
class: nothing else lists it. Mechanisms of other packages join through the entry-point group
`attnbench.mechanisms`, or by a class's import path (registry.py).
"""

import importlib
import pkgutil

from .base import Attention
from .registry import (
    TIERS,
    ContractError,
    Info,
    available,
    check_contract,
    create,
    info,
    problems,
    register,
    tier_colour,
    with_role,
)
from .vit import PRESETS, ViT

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "PRESETS",
    "TIERS",
    "Attention",
    "ContractError",
    "Info",
    "ViT",
    "available",
    "check_contract",
    "create",
    "info",
    "problems",
    "register",
    "tier_colour",
    "with_role",
]
