"""How a Ray run is shaped: a small validated value object, not a dict."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RayOptions"]


@dataclass(frozen=True)
class RayOptions:
    """Settings of the Ray engine.

    Attributes:
        address: ``HOST:PORT`` of the cluster's head (or ``ray://HOST:PORT``, or ``auto``);
            ``None`` starts or joins a Ray instance on this machine.
        partitions: hash buckets (reduce tasks) per run; ``None`` means one per cluster CPU,
            at least two. More buckets bound each worker's memory more tightly.
        chunk_rows: rows per map task input; a source is split into chunks of this size.
        broadcast_limit: bytes; a query with no equality between the sides ships the smaller
            side to every reduce task, and is refused when that side is larger than this.
    """

    address: str | None = None
    partitions: int | None = None
    chunk_rows: int = 250_000
    broadcast_limit: int = 512 << 20

    def __post_init__(self) -> None:
        if self.partitions is not None and self.partitions < 1:
            raise ValueError("partitions must be at least 1")
        if self.chunk_rows < 1:
            raise ValueError("chunk_rows must be at least 1")
        if self.broadcast_limit < 0:
            raise ValueError("broadcast_limit must not be negative")
