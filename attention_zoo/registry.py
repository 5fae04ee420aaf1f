"""Name -> mechanism class, with the metadata a report needs (tier, paper, exactness, origin).

Mechanisms come from three places and obey one contract: the built-ins in this package; other
installed packages, through the entry-point group `attnbench.mechanisms` (each entry names a
class: `myattn = "mypkg.attention:MyAttention"`); and a class named ad hoc by its import path
(`pkg.module.Class`), the way Hydra users name a `_target_`. A plugin that breaks the contract
is left out with the reason kept, so the built-ins keep working and naming it says why.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, replace
from importlib import metadata

from torch import nn

ENTRY_POINTS = "attnbench.mechanisms"
BUILT_IN = "built-in"
# Complexity tiers in listing order (the quadratic baselines first), each with its colour in
# every figure; a tier not listed sorts last, in grey.
TIERS = {
    "O(N^2)": "#4c72b0",
    "O(N*w^2)": "#dd8452",
    "O(N*k^2)": "#937860",
    "O(N*S)": "#da8bc3",
    "O(N log N)": "#8172b3",
    "O(N)": "#55a868",
}
UNLISTED_TIER = "#999999"
# What a mechanism is to a report: a reference the others are measured against (speed-ups,
# crossovers), the one the report highlights, or neither.
ROLES = ("reference", "highlight", "")


@dataclass(frozen=True)
class Info:
    name: str
    tier: str
    paper: str
    arxiv: str
    exact_softmax: bool
    options: dict[str, object]
    module: str = ""  # the defining module; its top package is what revision= exports
    origin: str = BUILT_IN  # built-in | entry point <dist> <version> | import path
    role: str = ""  # one of ROLES

    @property
    def package(self) -> str:
        return self.module.partition(".")[0]


_REGISTRY: dict[str, tuple[type[nn.Module], Info]] = {}
_PROBLEMS: dict[str, str] = {}  # a plugin's name -> why it cannot be used
_PLUGINS_LOADED: list[bool] = []

# Arguments every mechanism takes positionally or from the ViT, never user options.
_FIXED_ARGS = {"self", "dim", "num_heads", "layer_index"}


class ContractError(ValueError):
    """A class that is not a mechanism of the documented layout: the message says why."""


def _options(cls: type) -> dict[str, object]:
    params = inspect.signature(cls).parameters
    return {
        key: p.default
        for key, p in params.items()
        if key not in _FIXED_ARGS and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def register(
    name: str, *, tier: str, paper: str, arxiv: str, exact_softmax: bool = False, role: str = ""
):
    """Class decorator: add a mechanism under `name`; its keyword arguments become its options.
    `role`: "reference" (speed-ups and crossovers are measured against it), "highlight" (the
    mechanism a report stars), or "" (neither)."""
    if role not in ROLES:
        raise ContractError(f"role {role!r} of {name!r} is not one of {ROLES}")

    def wrap(cls: type[nn.Module]) -> type[nn.Module]:
        _claim(name, cls, f"{cls.__module__}.{cls.__qualname__} needs another name")
        info = Info(
            name, tier, paper, arxiv, exact_softmax, _options(cls), cls.__module__, role=role
        )
        _REGISTRY[name] = (cls, info)
        setattr(cls, "name", name)  # noqa: B010  (nn.Module subclasses declare no `name`)
        return cls

    return wrap


def _claim(name: str, cls: type, advice: str) -> None:
    """ContractError when `name` is another class's already."""
    if name in _REGISTRY and _REGISTRY[name][0] is not cls:
        taken = _REGISTRY[name][1]
        raise ContractError(
            f"the name {name!r} is taken by {taken.module} ({taken.origin}); {advice}"
        )


def check_contract(cls: object, name: str) -> None:
    """The documented layout, checked before anything is measured: an nn.Module subclass with
    `forward(x, hw)` and `mix(q, k, v, hw)`, building `qkv: Linear(dim, 3 dim)` and
    `proj: Linear(dim, dim)` with its defaults. ContractError names what is wrong."""
    if not (inspect.isclass(cls) and issubclass(cls, nn.Module)):
        raise ContractError(f"{name} is not an nn.Module subclass (it is {type(cls).__name__})")
    for method, wanted in (("forward", ("x", "hw")), ("mix", ("q", "k", "v", "hw"))):
        function = getattr(cls, method, None)
        if function is None or function is getattr(nn.Module, method, None):
            raise ContractError(f"{name} has no {method}{_spelt(wanted)} method")
        params = [
            p
            for p in list(inspect.signature(function).parameters.values())[1:]
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        required = [p for p in params if p.default is p.empty]
        if len(required) > len(wanted) or len(params) < len(wanted):
            got = "(" + ", ".join(p.name for p in params) + ")"
            raise ContractError(f"{name}.{method}{got} must be {method}{_spelt(wanted)}")
    import torch

    dim, heads = 64, 2
    try:
        with torch.device("meta"):
            layer = cls(dim, heads)
    except Exception as err:  # noqa: BLE001  (whatever it raises, it cannot be measured)
        raise ContractError(f"{name}(dim={dim}, num_heads={heads}) fails: {err!r}") from None
    for attr, shape in (("qkv", (dim, 3 * dim)), ("proj", (dim, dim))):
        part = getattr(layer, attr, None)
        if not isinstance(part, nn.Linear) or (part.in_features, part.out_features) != shape:
            raise ContractError(
                f"{name} has no {attr}: nn.Linear{shape} (the timm layout: qkv = Linear(dim, "
                f"3*dim), proj = Linear(dim, dim)); found {type(part).__name__}"
            )


def _spelt(args: tuple[str, ...]) -> str:
    return "(" + ", ".join(args) + ")"


def _adopt(cls: object, name: str, origin: str) -> None:
    """A plugin class under `name`: checked, then registered (keeping its decorator's metadata)."""
    check_contract(cls, name)
    assert inspect.isclass(cls) and issubclass(cls, nn.Module)
    decorated = getattr(cls, "name", None)
    if decorated in _REGISTRY and _REGISTRY[decorated][0] is cls:
        if _REGISTRY[decorated][1].package == __package__:
            raise ContractError(f"{name} is the built-in {decorated!r}: use attention={decorated}")
        info = _REGISTRY.pop(decorated)[1]
    else:
        info = Info(
            name,
            str(getattr(cls, "tier", "unstated")),
            str(getattr(cls, "paper", "")),
            str(getattr(cls, "arxiv", "")),
            bool(getattr(cls, "exact_softmax", False)),
            _options(cls),
            role=str(getattr(cls, "role", "")),
        )
    _claim(name, cls, "rename the plugin's entry point")
    _REGISTRY[name] = (cls, replace(info, name=name, module=cls.__module__, origin=origin))
    setattr(cls, "name", name)  # noqa: B010


def load_plugins() -> None:
    """Every mechanism other installed packages declare (once per process); a broken one is
    kept out with its reason (see problems())."""
    if _PLUGINS_LOADED:
        return
    _PLUGINS_LOADED.append(True)
    for point in metadata.entry_points(group=ENTRY_POINTS):
        dist = point.dist
        origin = f"entry point of {dist.name} {dist.version}" if dist else "entry point"
        try:
            _adopt(point.load(), point.name, origin)
        except Exception as err:  # noqa: BLE001  (a broken plugin must not break the rest)
            why = str(err) if isinstance(err, ContractError) else f"{point.value}: {err!r}"
            _PROBLEMS[point.name] = f"{origin}: {why}"


def is_import_path(name: str) -> bool:
    """'pkg.module.Class': a class named by its import path rather than a registered name."""
    return "." in name and all(part.isidentifier() for part in name.split("."))


def load_target(path: str) -> None:
    """Register the class at an import path under that path (ContractError: why it cannot)."""
    if path in _REGISTRY:
        return
    module, _, attr = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except ImportError as err:
        raise ContractError(f"{path}: module {module!r} fails to import: {err}") from None
    except AttributeError:
        raise ContractError(f"{path}: module {module!r} has no {attr!r}") from None
    except Exception as err:  # noqa: BLE001  (importing it ran code that failed)
        raise ContractError(f"{path}: module {module!r} fails to import: {err!r}") from None
    _adopt(cls, path, "import path")


def forget(package: str) -> None:
    """Drop the mechanisms a package defines (before importing another revision of it)."""
    for name in [n for n, (_, i) in _REGISTRY.items() if i.package == package]:
        del _REGISTRY[name]
    _PLUGINS_LOADED.clear()
    _PROBLEMS.clear()


def problems() -> dict[str, str]:
    """Plugins that are installed but cannot be used, and why."""
    load_plugins()
    return dict(_PROBLEMS)


def available() -> list[str]:
    """Registered mechanism names: exact softmax first, then by complexity tier, then by name.

    The order comes from each mechanism's metadata, so a new file needs no place in a list.
    """
    load_plugins()

    order = list(TIERS)

    def key(name: str) -> tuple[bool, int, str]:
        meta = _REGISTRY[name][1]
        tier = order.index(meta.tier) if meta.tier in TIERS else len(order)
        return (not meta.exact_softmax, tier, name)

    return sorted(_REGISTRY, key=key)


def with_role(role: str) -> list[str]:
    """The registered mechanisms of a role, in listing order (e.g. the reference baselines)."""
    return [name for name in available() if _REGISTRY[name][1].role == role]


def tier_colour(tier: str) -> str:
    return TIERS.get(tier, UNLISTED_TIER)


def _lookup(name: str) -> tuple[type[nn.Module], Info]:
    if name not in _REGISTRY:
        load_plugins()
    if name not in _REGISTRY and name in _PROBLEMS:
        raise ContractError(f"attention {name!r} cannot be used: {_PROBLEMS[name]}")
    if name not in _REGISTRY and is_import_path(name):
        load_target(name)
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown attention {name!r}; valid choices: {', '.join(available())}, "
            "or a class by its import path (pkg.module.Class)"
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
