"""Dependencies of the routes, as ``Annotated`` aliases."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..config import Settings
from ..errors import Unauthorized
from ._service import JobRunner

__all__ = ["RunnerDep", "SettingsDep", "require_token"]

_bearer = HTTPBearer(auto_error=False, description="Needed when the runner has --api-token.")


def _runner(request: Request) -> JobRunner:
    runner: JobRunner = request.app.state.runner
    return runner


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


RunnerDep = Annotated[JobRunner, Depends(_runner)]
SettingsDep = Annotated[Settings, Depends(_settings)]


def require_token(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Refuse the request unless it carries the configured bearer token (when one is set)."""
    if settings.api_token is None:
        return
    expected = settings.api_token.get_secret_value().encode()
    given = credentials.credentials.encode() if credentials else b""
    if (
        credentials is None
        or credentials.scheme.lower() != "bearer"
        or not hmac.compare_digest(given, expected)
    ):
        raise Unauthorized("missing or wrong API token (Authorization: Bearer <token>)")
