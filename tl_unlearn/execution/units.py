"""Units of work: small JSON specs (a component on a shard, or a shard) and how data is cut
into shards.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tl_unlearn.core.components import component_name

__all__ = ["ShardUnit", "Unit", "shard_rows", "shard_slices"]


@dataclass(frozen=True)
class Unit:
    """One unit of work: ablate ``component`` (``None``: the original model) on one shard.

    Examples:
        >>> Unit.from_dict(Unit((1, 2), 0).to_dict()) == Unit((1, 2), 0)
        True
    """

    component: tuple[int, int | None] | None
    shard: int

    @property
    def key(self) -> str:
        """A file name for the unit's result."""
        c = "original" if self.component is None else component_name(self.component)
        return f"{c}-shard{self.shard}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "component": None if self.component is None else list(self.component),
            "shard": self.shard,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Unit:
        c = d["component"]
        return cls(
            None if c is None else (int(c[0]), None if c[1] is None else int(c[1])), int(d["shard"])
        )


def shard_rows(n: int, shards: int, shard: int) -> np.ndarray:
    """The rows of shard ``shard`` when ``n`` rows are cut into ``shards`` contiguous pieces
    of sizes differing by at most one (in order): the one way data is sharded.

    Examples:
        >>> [shard_rows(5, 2, s).tolist() for s in range(2)]
        [[0, 1, 2], [3, 4]]
    """
    return np.array_split(np.arange(n), shards)[shard]


def shard_slices(sizes: dict[str, int], shards: int) -> list[dict[str, np.ndarray]]:
    """Each dataset's sequences cut into ``shards`` pieces by :func:`shard_rows`."""
    return [{name: shard_rows(n, shards, s) for name, n in sizes.items()} for s in range(shards)]


@dataclass(frozen=True)
class ShardUnit:
    """One shard of a job whose units differ only by their data.

    Examples:
        >>> from tl_unlearn.execution.units import ShardUnit
        >>> ShardUnit(2).key
        'shard2'
    """

    shard: int

    @property
    def key(self) -> str:
        return f"shard{self.shard}"

    def to_dict(self) -> dict[str, Any]:
        return {"shard": self.shard}
