"""DataFusion and Arrow exceptions become kalla errors here, and only here."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import pyarrow as pa

from ..errors import (
    ExecutionFailed,
    KallaError,
    MatchSqlInvalid,
    ResourcesExhausted,
    SourceReadFailed,
)

__all__ = ["translate"]

_NOISE = re.compile(
    r"^(DataFusion error: |Execution error: |Error during planning: |External error: )+"
)


def _clean(text: str) -> str:
    text = _NOISE.sub("", text.strip().splitlines()[0] if text.strip() else text)
    return text[:500]


@contextmanager
def translate(
    *, stage: str, source: str | None = None, sql: bool = False, what: str = "match_sql"
) -> Iterator[None]:
    """Run a block, turning foreign errors into typed kalla errors tagged with ``stage``.

    ``sql``: planning errors are the SQL's fault (``MatchSqlInvalid``, naming ``what``).
    """
    try:
        yield
    except KallaError as err:
        if err.stage is None:
            err.stage = stage
        raise
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        where = f"source {source!r}: " if source else ""
        raise SourceReadFailed(f"{where}{_clean(str(exc))}", stage=stage) from exc
    except OSError as exc:
        where = f"source {source!r}: " if source else ""
        raise SourceReadFailed(f"{where}{exc.strerror or exc}", stage=stage) from exc
    except Exception as exc:  # DataFusion raises plain Exceptions
        text = str(exc)
        msg = _clean(text)
        if "Resources exhausted" in text or "ResourcesExhausted" in text:
            raise ResourcesExhausted(
                f"the run needs more memory than its limit allows ({msg}); raise --memory-limit",
                stage=stage,
            ) from exc
        if sql and ("planning" in text or "Schema error" in text or "SQL error" in text):
            raise MatchSqlInvalid(f"{what} does not plan: {msg}", stage=stage) from exc
        if "Cast error" in text or "Cannot cast" in text or "Parser error" in text:
            raise ExecutionFailed(
                f"a value could not be converted while matching: {msg}", stage=stage
            ) from exc
        raise ExecutionFailed(f"{msg}", stage=stage) from exc
