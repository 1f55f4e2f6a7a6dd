"""The one exception hierarchy of kalla.

Every error a caller can see is a :class:`KallaError` with a stable ``code``
(for machines), a ``message`` a person can act on (never a secret), an HTTP
status for the runner, and whether retrying the same input could help::

    KallaError
    ├── InputError                      bad input: exit code 2, HTTP 4xx
    │   ├── RecipeInvalid               recipe_invalid
    │   ├── JobInvalid                  job_invalid
    │   ├── UnsupportedUri              unsupported_uri
    │   ├── SourceUriInvalid            source_uri_invalid
    │   ├── SourceNotFound              source_not_found
    │   ├── SchemaMismatch              schema_mismatch
    │   ├── PrimaryKeyMissing           primary_key_missing
    │   ├── DuplicatePrimaryKey         duplicate_primary_key
    │   ├── FilterInvalid               filter_invalid
    │   ├── MatchSqlInvalid             match_sql_invalid
    │   ├── MatchSqlForbidden           match_sql_forbidden
    │   ├── MatchSqlUnsupported         match_sql_unsupported
    │   ├── SourceOutsideAllowedRoots   source_not_allowed
    │   ├── CallbackHostNotAllowed      callback_host_not_allowed
    │   ├── OutputPathInvalid           output_path_invalid
    │   ├── MissingDependency           missing_dependency
    │   ├── TableNameInvalid            table_name_invalid    (library: Engine.register_*)
    │   ├── RunNotFound                 run_not_found         (evidence store: HTTP 404)
    │   ├── BroadcastTooLarge           broadcast_too_large   (ray engine)
    │   ├── Unauthorized                unauthorized          (runner: HTTP 401)
    │   ├── RequestTooLarge             request_too_large     (runner: HTTP 413)
    │   ├── JobNotFound                 job_not_found         (runner: HTTP 404)
    │   ├── RunIdConflict               run_id_conflict       (runner: HTTP 409)
    │   └── JobNotCancellable           job_not_cancellable   (runner: HTTP 409)
    └── RuntimeFailure                  the input was fine, running it failed: exit 1, HTTP 5xx
        ├── SourceReadFailed            source_read_failed
        ├── ConnectionFailed            connection_failed
        ├── PermissionDenied            permission_denied
        ├── ExecutionFailed             execution_failed
        ├── ResourcesExhausted          resources_exhausted
        ├── EvidenceWriteFailed         evidence_write_failed
        ├── EvidenceExists              evidence_exists
        ├── Cancelled                   cancelled
        ├── ClusterUnavailable          cluster_unavailable   (ray engine: HTTP 503)
        ├── QueueFull                   queue_full            (runner: HTTP 503)
        └── ShuttingDown                shutting_down         (runner: HTTP 503)

Errors are plain picklable values (they cross process and Ray boundaries).
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "BroadcastTooLarge",
    "CallbackHostNotAllowed",
    "Cancelled",
    "ClusterUnavailable",
    "ConnectionFailed",
    "DuplicatePrimaryKey",
    "EvidenceExists",
    "EvidenceWriteFailed",
    "ExecutionFailed",
    "FilterInvalid",
    "InputError",
    "JobInvalid",
    "JobNotCancellable",
    "JobNotFound",
    "KallaError",
    "MatchSqlForbidden",
    "MatchSqlInvalid",
    "MatchSqlUnsupported",
    "MissingDependency",
    "OutputPathInvalid",
    "PermissionDenied",
    "PrimaryKeyMissing",
    "QueueFull",
    "RecipeInvalid",
    "RequestTooLarge",
    "ResourcesExhausted",
    "RunIdConflict",
    "RunNotFound",
    "RuntimeFailure",
    "SchemaMismatch",
    "ShuttingDown",
    "SourceNotFound",
    "SourceOutsideAllowedRoots",
    "SourceReadFailed",
    "SourceUriInvalid",
    "TableNameInvalid",
    "Unauthorized",
    "UnsupportedUri",
]


class KallaError(Exception):
    """Base of every kalla error."""

    code: ClassVar[str] = "kalla_error"
    http_status: ClassVar[int] = 500
    retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, stage: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.stage = stage
        self.details = details

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only arguments do not survive the default pickling of exceptions.
        return (_rebuild, (type(self), self.message, self.stage, self.details))

    def to_dict(self) -> dict[str, Any]:
        """The error as the JSON object the CLI and the runner report."""
        out: dict[str, Any] = {"code": self.code, "error": self.message, "stage": self.stage}
        if self.details:
            out["details"] = self.details
        return out

    def __str__(self) -> str:
        return self.message


def _rebuild(
    cls: type[KallaError], message: str, stage: str | None, details: dict[str, Any]
) -> KallaError:
    err = cls.__new__(cls)
    KallaError.__init__(err, message, stage=stage, **details)
    return err


class InputError(KallaError):
    """The input (recipe, job, SQL, data) is wrong; running it again will not help."""

    code = "invalid_input"
    http_status = 400


class RecipeInvalid(InputError):
    """A recipe failed validation; ``problems`` lists every problem found."""

    code = "recipe_invalid"

    def __init__(self, problems: list[str], *, source: str | None = None, **kw: Any) -> None:
        where = f" ({source})" if source else ""
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"recipe is invalid{where}:\n{lines}", problems=problems, **kw)
        self.problems = problems

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self.stage, self.details))


class JobInvalid(InputError):
    """A job request is inconsistent (for example primary keys for an unknown alias)."""

    code = "job_invalid"


class UnsupportedUri(InputError):
    """No connector handles this URI."""

    code = "unsupported_uri"


class SourceNotFound(InputError):
    """A source (file, table, bucket key, index) does not exist or was not given."""

    code = "source_not_found"


class SchemaMismatch(InputError):
    """A source does not have the columns or types the recipe declares."""

    code = "schema_mismatch"


class PrimaryKeyMissing(InputError):
    """A primary key column is not in the source, or no primary key was given."""

    code = "primary_key_missing"


class DuplicatePrimaryKey(InputError):
    """A source has several records with the same primary key; matches would be ambiguous."""

    code = "duplicate_primary_key"


class FilterInvalid(InputError):
    """A source filter names an unknown column or has a value that does not fit its operator."""

    code = "filter_invalid"


class MatchSqlInvalid(InputError):
    """``match_sql`` does not parse or does not plan (unknown table, column or function)."""

    code = "match_sql_invalid"


class MatchSqlForbidden(InputError):
    """``match_sql`` is not a single read-only query."""

    code = "match_sql_forbidden"


class MatchSqlUnsupported(InputError):
    """``match_sql`` is read-only but its shape does not yield (left, right) record pairs."""

    code = "match_sql_unsupported"


class SourceOutsideAllowedRoots(InputError):
    """A local source path lies outside the folders this process may read."""

    code = "source_not_allowed"


class CallbackHostNotAllowed(InputError):
    """A callback URL points at a host this runner was not told to trust."""

    code = "callback_host_not_allowed"


class OutputPathInvalid(InputError):
    """An output path escapes the evidence root or is otherwise unusable."""

    code = "output_path_invalid"


class MissingDependency(InputError):
    """An optional dependency for a connector or engine is not installed."""

    code = "missing_dependency"


class TableNameInvalid(InputError):
    """A table name given to the engine is not a plain identifier, or is reserved by kalla."""

    code = "table_name_invalid"


class RunNotFound(InputError):
    """The evidence store has no published run with this run_id."""

    code = "run_not_found"
    http_status = 404


class RuntimeFailure(KallaError):
    """The input was valid but running it failed."""

    code = "runtime_failure"
    http_status = 500


class SourceReadFailed(RuntimeFailure):
    """Reading a source failed (malformed file, unparsable value, I/O error)."""

    code = "source_read_failed"


class ConnectionFailed(RuntimeFailure):
    """A database or object store could not be reached."""

    code = "connection_failed"
    http_status = 502
    retryable = True


class PermissionDenied(RuntimeFailure):
    """The credentials given may not read the source."""

    code = "permission_denied"
    http_status = 403


class ExecutionFailed(RuntimeFailure):
    """The matching query failed while running."""

    code = "execution_failed"


class ResourcesExhausted(RuntimeFailure):
    """The run needed more memory than its limit allows."""

    code = "resources_exhausted"
    retryable = True


class EvidenceWriteFailed(RuntimeFailure):
    """Evidence could not be written or published."""

    code = "evidence_write_failed"


class EvidenceExists(RuntimeFailure):
    """A completed run with this run_id has already been published."""

    code = "evidence_exists"
    http_status = 409


class Cancelled(RuntimeFailure):
    """The run was cancelled before it finished."""

    code = "cancelled"
    http_status = 499


def first_failure(errors: list[BaseException | None]) -> BaseException | None:
    """The error to report from work done in parallel: the first real failure, in order.

    When one part fails, the others are told to stop and end with :class:`Cancelled`; that
    is a consequence, never the cause, so it is reported only when nothing else failed.
    """
    real = [e for e in errors if e is not None and not isinstance(e, Cancelled)]
    return real[0] if real else next((e for e in errors if e is not None), None)


# --- Errors only the HTTP runner raises -------------------------------------------------------


class Unauthorized(InputError):
    """The runner needs a bearer token and the request had none, or a wrong one."""

    code = "unauthorized"
    http_status = 401


class RequestTooLarge(InputError):
    """The request body is over the runner's size limit."""

    code = "request_too_large"
    http_status = 413


class JobNotFound(InputError):
    """The runner has no job with this run_id."""

    code = "job_not_found"
    http_status = 404


class RunIdConflict(InputError):
    """A job with this run_id was already accepted with a different body."""

    code = "run_id_conflict"
    http_status = 409


class JobNotCancellable(InputError):
    """The job already finished, so there is nothing to cancel."""

    code = "job_not_cancellable"
    http_status = 409


class QueueFull(RuntimeFailure):
    """The runner's job queue is full; retry after a while."""

    code = "queue_full"
    http_status = 503
    retryable = True


class ShuttingDown(RuntimeFailure):
    """The runner is shutting down and accepts no new jobs; retry on another instance."""

    code = "shutting_down"
    http_status = 503
    retryable = True


class SourceUriInvalid(InputError):
    """A source URI is malformed or carries an option its connector (or driver) rejects."""

    code = "source_uri_invalid"


# --- Errors only the Ray engine raises ----------------------------------------------------------


class BroadcastTooLarge(InputError):
    """match_sql has no equality between the sides and the side to broadcast is over the limit."""

    code = "broadcast_too_large"


class ClusterUnavailable(RuntimeFailure):
    """The Ray cluster cannot be reached or refused the connection (checked once, at start)."""

    code = "cluster_unavailable"
    http_status = 503
    retryable = True
