"""Connecting to the Ray cluster: once per process, failing at once with a clear error.

The original probed its cluster with ``SELECT 1`` under a 10 s timeout before every job;
kalla checks once (``kalla serve`` at start-up, ``kalla run`` when the run begins) and an
unreachable address is an immediate :class:`~kalla.errors.ClusterUnavailable`, never a
silent fallback to local execution.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass

from ..errors import ClusterUnavailable, MissingDependency

__all__ = ["ClusterInfo", "cluster_info", "connect"]

#: Seconds to wait for the head's TCP port before calling the cluster unreachable.
CONNECT_TIMEOUT = 3.0


@dataclass(frozen=True)
class ClusterInfo:
    """What the run needs to know about the cluster it is connected to."""

    address: str
    nodes: int
    cpus: int


def _host_port(address: str) -> tuple[str, int] | None:
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]") or "127.0.0.1", int(port)


def _check_reachable(address: str) -> None:
    target = _host_port(address)
    if target is None:
        raise ClusterUnavailable(
            f"Ray address {address!r} is not HOST:PORT (or ray://HOST:PORT, or 'auto')",
            stage="connecting",
        )
    try:
        socket.create_connection(target, timeout=CONNECT_TIMEOUT).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ClusterUnavailable(
            f"cannot reach the Ray cluster at {address!r}: {reason}; start it "
            "(ray start --head) or fix --ray-address / KALLA_RAY_ADDRESS",
            stage="connecting",
            address=address,
        ) from None


def connect(address: str | None = None) -> ClusterInfo:
    """Join the Ray cluster at ``address`` (or this machine's) once; later calls are free.

    Raises:
        ClusterUnavailable: the address is malformed, nothing listens there, or Ray
            refuses the connection (for example a missing or wrong auth token).
    """
    try:
        import ray
    except ImportError:
        raise MissingDependency(
            "the ray engine needs Ray: pip install 'kalla[ray]'", package="ray"
        ) from None
    if ray.is_initialized():
        return cluster_info()
    if address and address not in ("auto", "local"):
        _check_reachable(address)
    try:
        ray.init(
            address=address,
            namespace="kalla",
            logging_level=logging.WARNING,
            log_to_driver=False,
            include_dashboard=False if address is None else None,
        )
    except Exception as exc:  # Ray raises ConnectionError, RuntimeError, its own types
        raise ClusterUnavailable(
            f"cannot join the Ray cluster at {address or 'this machine'!r}: "
            f"{type(exc).__name__}: {str(exc)[:300]}",
            stage="connecting",
        ) from None
    return cluster_info()


def cluster_info() -> ClusterInfo:
    """Nodes and CPUs of the cluster this process is connected to."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    cpus = int(ray.cluster_resources().get("CPU", 0))
    address = ray.get_runtime_context().gcs_address
    return ClusterInfo(address=address, nodes=len(nodes), cpus=cpus)
