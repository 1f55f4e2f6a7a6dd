"""Connectors are found by URI scheme through one registry (seed D1).

Built-in connectors register through the same ``kalla.connectors`` entry-point
group a third-party package would use, so adding one never edits the engine or
the runner.
"""

from __future__ import annotations

import re
from importlib.metadata import entry_points
from threading import Lock

from ..errors import MissingDependency, UnsupportedUri
from ._base import Connector
from ._redact import redact_uri

__all__ = ["ConnectorRegistry", "default_registry", "uri_scheme"]

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def uri_scheme(uri: str) -> str:
    """The URI's scheme, lower-cased; a bare path is ``file``."""
    m = _SCHEME.match(uri)
    return m.group(1).lower() if m else "file"


class ConnectorRegistry:
    """Maps URI schemes to connectors; connectors are imported on first use."""

    def __init__(self) -> None:
        self._factories: dict[str, object] = {}
        self._instances: dict[str, Connector] = {}
        self._lock = Lock()

    def register(self, connector: type[Connector] | Connector) -> None:
        """Register a connector class or instance for each of its schemes."""
        for scheme in connector.schemes:
            self._factories[scheme] = connector
            self._instances.pop(scheme, None)

    def load_entry_points(self) -> None:
        """Register every connector advertised under ``kalla.connectors`` (lazily imported)."""
        # One entry point per scheme (``postgres`` and ``postgresql`` both), named after it.
        for ep in entry_points(group="kalla.connectors"):
            self._factories.setdefault(ep.name, ep)

    @property
    def schemes(self) -> list[str]:
        return sorted(self._factories)

    def for_uri(self, uri: str) -> Connector:
        """The connector for ``uri``, or ``UnsupportedUri`` listing the schemes there are."""
        scheme = uri_scheme(uri)
        with self._lock:
            if scheme in self._instances:
                return self._instances[scheme]
            factory = self._factories.get(scheme)
            if factory is None:
                raise UnsupportedUri(
                    f"no connector for {redact_uri(uri)!r} (scheme {scheme!r}); "
                    f"supported schemes: {', '.join(self.schemes)}",
                    scheme=scheme,
                    supported=self.schemes,
                )
            instance = _instantiate(factory, scheme)
            for s in instance.schemes:
                self._instances[s] = instance
            return instance


def _instantiate(factory: object, scheme: str) -> Connector:
    if isinstance(factory, Connector):
        return factory
    if isinstance(factory, type):
        return factory()
    try:
        cls = factory.load()  # type: ignore[attr-defined]
    except ImportError as exc:
        name = getattr(factory, "name", scheme)
        raise MissingDependency(
            f"the {scheme!r} connector needs extra packages: pip install 'kalla[{name}]' ({exc.name})",
            scheme=scheme,
        ) from exc
    return cls()


_default: ConnectorRegistry | None = None


def default_registry() -> ConnectorRegistry:
    """The process-wide registry with every installed connector."""
    global _default
    if _default is None:
        reg = ConnectorRegistry()
        reg.load_entry_points()
        _default = reg
    return _default
