"""Name -> mechanism class, with the metadata a report needs (tier, paper, exactness)."""

from __future__ import annotations

import inspect
from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class Info:
    name: str
    tier: str
    paper: str
    arxiv: str
    exact_softmax: bool
    options: dict[str, object]


_REGISTRY: dict[str, tuple[type[nn.Module], Info]] = {}

# Arguments every mechanism takes positionally or from the ViT, never user options.
_FIXED_ARGS = {"self", "dim", "num_heads", "layer_index"}


def register(name: str, *, tier: str, paper: str, arxiv: str, exact_softmax: bool = False):
    """Class decorator: add a mechanism under `name`; its keyword arguments become its options."""

    def wrap(cls: type[nn.Module]) -> type[nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"attention {name!r} is registered twice")
        params = inspect.signature(cls.__init__).parameters
        options = {
            key: p.default
            for key, p in params.items()
            if key not in _FIXED_ARGS and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        }
        _REGISTRY[name] = (cls, Info(name, tier, paper, arxiv, exact_softmax, options))
        setattr(cls, "name", name)  # noqa: B010  (nn.Module subclasses declare no `name`)
        return cls

    return wrap


# Order of the tiers in listings and figures: the quadratic baselines first.
_TIER_ORDER = {"O(N^2)": 0, "O(N*w^2)": 1, "O(N log N)": 2, "O(N)": 3}


def available() -> list[str]:
    """Registered mechanism names: exact softmax first, then by complexity tier, then by name.

    The order comes from each mechanism's metadata, so a new file needs no place in a list.
    """

    def key(name: str) -> tuple[bool, int, str]:
        meta = _REGISTRY[name][1]
        return (not meta.exact_softmax, _TIER_ORDER.get(meta.tier, len(_TIER_ORDER)), name)

    return sorted(_REGISTRY, key=key)


def _lookup(name: str) -> tuple[type[nn.Module], Info]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown attention {name!r}; valid choices: {', '.join(available())}"
        ) from None


def info(name: str) -> Info:
    """Metadata of a mechanism: complexity tier, paper title and arXiv id, exactness, options."""
    return _lookup(name)[1]


def create(
    name: str, dim: int, num_heads: int, *, layer_index: int = 0, **options: object
) -> nn.Module:
    """One attention layer; `layer_index` lets a mechanism alternate per block (swin shift)."""
    cls, meta = _lookup(name)
    unknown = sorted(set(options) - set(meta.options))
    if unknown:
        valid = ", ".join(meta.options) or "none"
        raise ValueError(f"attention {name!r} has no option {', '.join(unknown)}; valid: {valid}")
    for key, value in options.items():
        check_option(name, key, value, meta.options[key])
    check_heads(dim, num_heads)
    if "layer_index" in inspect.signature(cls.__init__).parameters:
        options["layer_index"] = layer_index
    return cls(dim, num_heads, **options)


def check_heads(dim: int, num_heads: int) -> None:
    if num_heads < 1 or dim % num_heads:
        divisors = [h for h in range(1, dim + 1) if dim % h == 0]
        raise ValueError(
            f"num_heads={num_heads} does not divide dim={dim}; valid head counts: {divisors}"
        )


def check_option(name: str, key: str, value: object, default: object) -> None:
    """A value of the kind the constructor's default has (None defaults accept anything)."""
    if default is None:
        return
    kinds: tuple[type, ...]
    if isinstance(default, bool):
        kinds = (bool,)
    elif isinstance(default, int):
        kinds = (int,)
    elif isinstance(default, float):
        kinds = (int, float)
    elif isinstance(default, (list, tuple)):
        kinds = (list, tuple)
    else:
        kinds = (type(default),)
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        expected = " or ".join(k.__name__ for k in kinds)
        raise ValueError(
            f"attention {name!r} option {key}={value!r} must be {expected} (default {default!r})"
        )
