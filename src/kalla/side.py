"""Which side of a reconciliation a source or record is on (seed D3: an enum, not a string)."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Side"]


class Side(StrEnum):
    """The left or the right source of a reconciliation."""

    LEFT = "left"
    RIGHT = "right"

    @property
    def other(self) -> Side:
        return Side.RIGHT if self is Side.LEFT else Side.LEFT
