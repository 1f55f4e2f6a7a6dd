"""The one place PostgreSQL driver errors become kalla errors.

Messages name the source alias, the table and the host (never the password: every message
is scrubbed of the URI's secrets) and keep the server's own first line, which says what
went wrong. The driver appends the SQL it ran ("Query was: …"); that is dropped — it is
long and says nothing the first line does not.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from ..errors import (
    Cancelled,
    ConnectionFailed,
    FilterInvalid,
    KallaError,
    PermissionDenied,
    SourceNotFound,
    SourceReadFailed,
    SourceUriInvalid,
)
from ._redact import scrub

__all__ = ["PgSite", "driver_errors"]


@dataclass(frozen=True)
class PgSite:
    """Where a failure happened, for messages: ``source 'x': table s.t on host h:p (database d)``."""

    alias: str
    table: str
    host: str
    database: str
    secrets: tuple[str, ...]

    def prefix(self) -> str:
        return f"source {self.alias!r}: table {self.table} on host {self.host} (database {self.database})"

    def details(self) -> dict[str, str]:
        return {"alias": self.alias, "table": self.table, "host": self.host}


def _first_lines(text: str) -> str:
    text = text.split("\nQuery was:", 1)[0]
    text = text.replace("IO: [libpq] ", "").strip()
    for marker in ("INVALID_DATA: ", "INVALID_ARGUMENT: ", "NOT_FOUND: ", "IO: ", "UNKNOWN: "):
        text = text.removeprefix(marker)
    return " ".join(line.strip() for line in text.splitlines() if line.strip())[:500]


def classify(exc: BaseException, where: PgSite, *, doing: str) -> KallaError:
    """The kalla error for a driver exception raised while ``doing`` something."""
    raw = scrub(str(exc), list(where.secrets))
    sqlstate = getattr(exc, "sqlstate", None) or ""
    text = _first_lines(raw)
    lower = text.lower()
    msg = f"{where.prefix()}: {doing} failed: {text}"
    details = where.details()
    if sqlstate:
        details["sqlstate"] = sqlstate
    if (
        "invalid uri query parameter" in lower
        or "invalid connection option" in lower
        or ("invalid" in lower and "value for parameter" in lower)
    ):
        return SourceUriInvalid(msg, **details)
    if (
        sqlstate.startswith("28")
        or "password authentication failed" in lower
        or ("role" in lower and "does not exist" in lower)
        or "no pg_hba.conf entry" in lower
    ):
        return PermissionDenied(msg, **details)
    if sqlstate == "42501" or "permission denied" in lower:
        return PermissionDenied(msg, **details)
    if sqlstate == "3D000" or ("database" in lower and "does not exist" in lower):
        return SourceNotFound(msg, **details)
    if sqlstate in ("42P01", "3F000"):
        return SourceNotFound(msg, **details)
    if sqlstate == "57014":
        return Cancelled(msg, **details)
    if (
        sqlstate.startswith("08")
        or sqlstate.startswith("57P")
        or "failed to connect" in raw.lower()
        or (
            "connection" in lower
            and ("refused" in lower or "timeout" in lower or "closed" in lower)
        )
    ):
        return ConnectionFailed(msg, **details)
    return SourceReadFailed(msg, **details)


@contextmanager
def driver_errors(where: PgSite, doing: str, *, filter_values: bool = False) -> Iterator[None]:
    """Translate driver exceptions raised inside the block; data errors blame the filters when
    ``filter_values`` (the block only casts filter values)."""
    try:
        yield
    except KallaError:
        raise
    except Exception as exc:
        if filter_values and (getattr(exc, "sqlstate", "") or "").startswith("22"):
            text = _first_lines(scrub(str(exc), list(where.secrets)))
            raise FilterInvalid(
                f"{where.prefix()}: filter {doing} does not fit its column's type: {text}",
                **where.details(),
            ) from exc
        raise classify(exc, where, doing=doing) from exc
