"""The shape every meter has: `begin()` and `end()` bracket the timed window, `source` says
where its number comes from. Timing, energy, memory and contention meters all take it."""

from __future__ import annotations

from typing import Protocol, TypeVar

T_co = TypeVar("T_co", covariant=True)


class Meter(Protocol[T_co]):
    source: str

    def begin(self) -> None: ...

    def end(self) -> T_co: ...
