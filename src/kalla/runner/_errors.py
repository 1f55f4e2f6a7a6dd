"""Errors become HTTP answers here, and only here.

Routes raise :class:`~kalla.errors.KallaError`; these handlers turn them into an
:class:`ErrorBody` with the error's own HTTP status. Validation errors become 422
with the field errors but *without* the offending input, which could hold a
credential-bearing URI. Anything unexpected is a bare 500 ``internal_error``.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import KallaError, QueueFull, ShuttingDown, Unauthorized
from ._models import ErrorBody

__all__ = ["error_response", "install_error_handlers"]

log = logging.getLogger("kalla.runner")


def error_response(exc: KallaError, retry_after_s: int = 5) -> JSONResponse:
    """The HTTP answer for a kalla error."""
    headers: dict[str, str] = {}
    if isinstance(exc, QueueFull | ShuttingDown):
        headers["Retry-After"] = str(retry_after_s)
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    body = ErrorBody(code=exc.code, error=exc.message, stage=exc.stage)
    return JSONResponse(body.model_dump(), status_code=exc.http_status, headers=headers)


def _field_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type", "")}
        for err in exc.errors()
    ]


def install_error_handlers(app: FastAPI, retry_after_s: int) -> None:
    """Register the handlers that map every error to an :class:`ErrorBody` answer."""

    async def on_kalla_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, KallaError)
        return error_response(exc, retry_after_s)

    async def on_invalid(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        body = ErrorBody(
            code="request_invalid", error="the request is invalid", details=_field_errors(exc)
        )
        return JSONResponse(body.model_dump(), status_code=422)

    async def on_http(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        body = ErrorBody(code=code, error=str(exc.detail))
        return JSONResponse(
            body.model_dump(), status_code=exc.status_code, headers=getattr(exc, "headers", None)
        )

    async def on_unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error handling a request", exc_info=exc)
        body = ErrorBody(code="internal_error", error="internal error")
        return JSONResponse(body.model_dump(), status_code=500)

    app.add_exception_handler(KallaError, on_kalla_error)
    app.add_exception_handler(RequestValidationError, on_invalid)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)
