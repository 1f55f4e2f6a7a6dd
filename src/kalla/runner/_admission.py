"""Admission: the checks a job passes before the runner accepts it (no I/O beyond ``stat``).

A job is refused with a typed 400 when its callback URL points at a host the runner
was not told to trust (no SSRF), when a local source lies outside the allowed roots,
when its URI scheme has no connector, when ``match_sql`` is not one read-only query,
or when ``output_path`` would leave the evidence root. Checking here, not in the
worker, means a bad job never takes a queue slot and the caller learns at once.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from ..config import Settings
from ..connectors import default_registry, redact_uri
from ..errors import CallbackHostNotAllowed, OutputPathInvalid, SourceOutsideAllowedRoots
from ..sql import check_read_only
from ._models import RunnerJobRequest

__all__ = ["admit", "admit_source", "check_callback_url", "resolve_run_dir"]


def admit(request: RunnerJobRequest, settings: Settings) -> Path:
    """Check ``request`` against the runner's policy; return the run folder its evidence goes to.

    Raises:
        CallbackHostNotAllowed, SourceOutsideAllowedRoots, UnsupportedUri, MissingDependency,
        MatchSqlForbidden, MatchSqlInvalid, OutputPathInvalid: each an ``InputError`` (HTTP 400).
    """
    check_callback_url(request.callback_url, settings.allowed_callback_hosts)
    for source in request.sources:
        admit_source(source.alias, source.uri, settings)
    if request.match_sql is not None:  # rules check their own SQL when the body is parsed
        check_read_only(request.match_sql)
    return resolve_run_dir(request.output_path or f"runs/{request.run_id}", settings.evidence_root)


def admit_source(alias: str, uri: str, settings: Settings) -> None:
    """Refuse a source URI without a connector, malformed, or local outside the allowed roots.

    Raises:
        UnsupportedUri, MissingDependency, SourceUriInvalid, SourceOutsideAllowedRoots.
    """
    connector = default_registry().for_uri(uri)
    connector.check(uri)
    local = connector.local_path(uri)
    if local is not None:
        _check_under_roots(alias, local, settings.source_roots)


def check_callback_url(url: str, allowed_hosts: list[str]) -> None:
    """Refuse a callback URL that is not plain http(s) to an allowed host."""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise CallbackHostNotAllowed(
            f"callback_url {redact_uri(url)!r} is not a valid URL"
        ) from None
    if parts.scheme not in ("http", "https") or not host:
        raise CallbackHostNotAllowed(
            f"callback_url {redact_uri(url)!r} must be an http:// or https:// URL with a host"
        )
    if parts.username or parts.password:
        raise CallbackHostNotAllowed("callback_url must not carry credentials")
    if "*" not in allowed_hosts and host not in allowed_hosts:
        raise CallbackHostNotAllowed(
            f"callback host {host!r} is not allowed; allowed hosts: {', '.join(allowed_hosts)} "
            "(set --allowed-callback-hosts)",
            host=host,
        )


def _check_under_roots(alias: str, path: Path, roots: list[Path]) -> None:
    # resolve() follows symlinks, so a link inside a root that points outside is refused.
    resolved = path.resolve()
    if not any(resolved.is_relative_to(root) for root in roots):
        raise SourceOutsideAllowedRoots(
            f"source {alias!r}: {str(path)!r} is outside the folders this runner may read "
            "(set --allowed-source-roots)",
            alias=alias,
        )


def resolve_run_dir(output_path: str, evidence_root: Path) -> Path:
    """``{evidence_root}/{output_path}``, refusing absolute paths, ``..`` and symlink escapes."""
    pure = PurePosixPath(output_path.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts or not pure.parts or "\x00" in output_path:
        raise OutputPathInvalid(
            f"output_path {output_path!r} must be a relative path inside the evidence root, "
            "without '..'"
        )
    if any(part.startswith(".") for part in pure.parts):
        raise OutputPathInvalid(f"output_path {output_path!r} must not contain hidden folders")
    run_dir = (evidence_root / pure).resolve()
    if run_dir == evidence_root or not run_dir.is_relative_to(evidence_root):
        raise OutputPathInvalid(f"output_path {output_path!r} leaves the evidence root")
    return run_dir
