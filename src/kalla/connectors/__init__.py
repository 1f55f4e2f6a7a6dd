"""Source connectors, chosen by URI scheme through one registry (seed D1).

Built-ins: local files (``file``, bare paths). Others register under the
``kalla.connectors`` entry-point group.
"""

from ._base import Connector, ConnectorContext, ObjectStoreSpec, TableSource
from ._redact import redact_uri, scrub, secrets_in
from ._registry import ConnectorRegistry, default_registry, uri_scheme

__all__ = [
    "Connector",
    "ConnectorContext",
    "ConnectorRegistry",
    "ObjectStoreSpec",
    "TableSource",
    "default_registry",
    "redact_uri",
    "scrub",
    "secrets_in",
    "uri_scheme",
]
