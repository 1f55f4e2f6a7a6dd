"""Credentials never leave a URI: the one place that strips them (seed S1)."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

_SECRET_PARAM = re.compile(r"pass|secret|token|key|credential|sig|auth", re.IGNORECASE)
REDACTED = "***"


def redact_uri(uri: str) -> str:
    """``uri`` with any password and secret-looking query values replaced by ``***``."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return REDACTED
    if not parts.scheme or "://" not in uri:
        return uri
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{REDACTED}@{host}" if ":" in userinfo else f"{user}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [(k, REDACTED if _SECRET_PARAM.search(k) else v) for k, v in pairs], safe="*"
        )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def secrets_in(uri: str) -> list[str]:
    """The secret values a URI carries, so messages can be scrubbed of them."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return []
    found = []
    if parts.password:
        found.append(parts.password)
    for k, v in parse_qsl(parts.query, keep_blank_values=True):
        if _SECRET_PARAM.search(k) and v:
            found.append(v)
    return found


def scrub(text: str, secrets: list[str]) -> str:
    """``text`` with every secret replaced, for messages built from foreign errors."""
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            text = text.replace(secret, REDACTED)
    return text
