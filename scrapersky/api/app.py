"""The HTTP service: ``create_app(settings)``, served by ``scrapersky api``.

Every 4xx and 5xx answer is JSON ``{"error": <stable code>, "detail": <what to do>}``
(the old dashboard shows ``detail``); our errors are translated here, at the boundary,
by class:

    NotAuthenticated          401  (with WWW-Authenticate: Bearer)
    WrongTenant, NoTenant,    403  (a JWT's tenants disagree; it names none; its role is not
    RoleNotAllowed                  one of SCRAPERSKY_JWT_ROLES)
    BatchNotFound             404  (also another tenant's batch)
    BatchIdTaken              409
    BatchFinished             409  (domains a finished batch never had)
    EmptyBatch, BatchTooLarge 422
    malformed JSON            400
    a field out of its bounds 422  (``errors`` lists each one)
    a body over the cap       413  (before it is parsed: body_limit)
    Busy, RateLimited         429  (with Retry-After: a crowd is served in turns; a caller past its
                                    rate waits; nothing recorded)
    SubmitFailed              503  (Prefect could not be asked; the batch is failed, not left pending;
                                    ``batch_id`` names it, and ``job_id`` too on /scan)
    the database unreachable  503  (also: no pooled connection free in time)
    anything unexpected       500  internal_error

Starlette's own refusals keep their status, their code named after it: an unknown
path is 404 ``not_found``, a wrong method 405 ``method_not_allowed`` (with Allow), a
body that cannot be read 400 ``bad_request``.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as NoPooledConnection

from scrapersky.db.engine import REQUEST_COMMAND_TIMEOUT, Database

from scrapersky.errors import (
    AccessError,
    Busy,
    BatchError,
    BatchIdTaken,
    BatchNotFound,
    BatchTooLarge,
    EmptyBatch,
    NotAuthenticated,
    ScraperSkyError,
    SchemaMismatch,
    SubmitFailed,
    WrongTenant,
)

from ..client import DEFAULT_DEPLOYMENT
from ..settings import Settings, current_settings
from .access_log import redact_access_log
from .auth import Authenticator
from .batch_page_scraper import RETRY_AFTER, Service, batch_router
from .body_limit import DEFAULT_MAX_BODY_BYTES, BodyLimit
from .health import check_health
from .legacy import ROUTER_PREFIX

__all__ = ["create_app", "DEFAULT_WORK_POOL", "HTTP_STATUS"]

DEFAULT_WORK_POOL = "scrapersky"

#: Our errors as HTTP statuses; the nearest class in an error's MRO decides.
HTTP_STATUS: dict[type[ScraperSkyError], int] = {
    Busy: 429,
    NotAuthenticated: 401,
    WrongTenant: 403,
    AccessError: 403,
    BatchNotFound: 404,
    BatchIdTaken: 409,
    EmptyBatch: 422,
    BatchTooLarge: 422,
    SubmitFailed: 503,
    BatchError: 409,
    SchemaMismatch: 503,
}

logger = logging.getLogger("scrapersky.api")
#: Pages served under /static: batch-domain-scanner.html, the old dashboard's page.
STATIC_DIR = Path(__file__).parent / "static"


def _status_of(error: ScraperSkyError) -> int:
    for cls in type(error).__mro__:
        if cls in HTTP_STATUS:
            return HTTP_STATUS[cls]
    return 500


def _refusal(status: int, error: str, detail: str, **extra: Any) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {"Retry-After": str(RETRY_AFTER)} if (
        status == 429) else None
    return JSONResponse({"error": error, "detail": detail, **extra}, status_code=status, headers=headers)


async def _our_error(request: Request, error: ScraperSkyError) -> JSONResponse:
    response = _refusal(_status_of(error), error.error_type, str(error), **_batch_named(request, error))
    if isinstance(retry_after := getattr(error, "retry_after", None), int):  # RateLimited's own wait
        response.headers["Retry-After"] = str(retry_after)
    return response


def _batch_named(request: Request, error: ScraperSkyError) -> dict[str, str]:
    """The batch a refused submission created or opened (SubmitFailed's), so that its
    caller can read it or submit it again; on /scan also as the job id."""
    batch_id = error.batch_id if isinstance(error, SubmitFailed) else None
    if batch_id is None:
        return {}
    if request.url.path == f"{ROUTER_PREFIX}/scan":
        return {"batch_id": str(batch_id), "job_id": str(batch_id)}
    return {"batch_id": str(batch_id)}


async def _http_error(request: Request, error: HTTPException) -> JSONResponse:
    """Starlette's own refusals (an unknown path, a wrong method, a body that cannot be
    read) in our shape, the code named after the status."""
    try:
        code = HTTPStatus(error.status_code).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        code = f"http_{error.status_code}"
    headers = dict(error.headers or {})
    if error.status_code == 404:
        detail = "no such route (the routes are listed at /docs)"
    elif error.status_code == 405:
        detail = f"{request.method} is not allowed here; allowed: {headers.get('Allow', 'none')}"
    else:
        detail = str(error.detail)
    response = _refusal(error.status_code, code, detail)
    response.headers.update(headers)
    return response


def _where(loc: tuple[Any, ...]) -> str:
    """``body.domains.3`` as ``domains.3``; ``path.batch_id`` as ``batch_id``."""
    if not loc:
        return "request"
    return ".".join(str(part) for part in loc[1:]) or str(loc[0])


async def _invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
    problems = error.errors()
    malformed = next((p for p in problems if p.get("type") == "json_invalid"), None)
    if malformed is not None:
        context = malformed.get("ctx") or {}
        return _refusal(400, "malformed_json",
                        f"the request body is not valid JSON ({context.get('error', 'cannot be parsed')})")
    # Each problem by where and what; the values sent are never echoed back.
    listed = [{"loc": list(p.get("loc", ())), "msg": p.get("msg", ""), "type": p.get("type", "")} for p in problems]
    detail = "; ".join(f"{_where(tuple(p['loc']))}: {p['msg']}" for p in listed)
    return _refusal(422, "invalid_request", detail, errors=listed)


async def _unexpected(request: Request, error: Exception) -> JSONResponse:
    # Logged with its traceback by the server; the caller gets the kind of failure only.
    return _refusal(500, "internal_error", f"the request failed unexpectedly ({type(error).__name__})")


async def _database_down(request: Request, error: Exception) -> JSONResponse:
    reason = getattr(error, "orig", None) or error
    logger.warning("database unreachable: %s", type(reason).__name__)
    return _refusal(503, "database_unavailable", f"the database cannot be reached ({type(reason).__name__})")


def create_app(
    settings: Settings | None = None,
    *,
    deployment: str = DEFAULT_DEPLOYMENT,
    pool: str = DEFAULT_WORK_POOL,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> FastAPI:
    """The service, with these settings (the environment's when None)."""
    settings = settings or current_settings()
    authenticator = Authenticator(settings)
    if not authenticator.accepts_anything:
        logger.warning("neither SCRAPERSKY_API_TOKENS nor SCRAPERSKY_JWT_SECRET is set: every request is refused")
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        logger.warning("PREFECT_API_URL is not set: batches cannot be handed to a worker")
    app = FastAPI(
        title="ScraperSky Batch API",
        description=(
            "ScraperSky's batch_page_scraper routes, served by Prefect runs of the batch-scrape"
            " deployment. Send `Authorization: Bearer <token>` (a static API token or a Supabase JWT)."
        ),
        version="3",
    )
    database = Database(settings.database_url, command_timeout=REQUEST_COMMAND_TIMEOUT)
    app.state.service = Service(settings=settings, database=database, authenticator=authenticator,
                                deployment=deployment, pool=pool)
    app.include_router(batch_router(settings.max_batch_size))
    app.add_exception_handler(ScraperSkyError, _our_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(DBAPIError, _database_down)
    app.add_exception_handler(OSError, _database_down)
    app.add_exception_handler(NoPooledConnection, _database_down)
    app.add_exception_handler(Exception, _unexpected)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)

    secrets = _secrets(settings)
    redact_access_log(secrets)

    async def health() -> JSONResponse:
        """The service, the database, the Prefect API and a live worker of the work pool,
        each ok or error with a short reason; 503 when one is not ok. No token needed."""
        checks = await check_health(database, pool=pool, secrets=secrets)
        healthy = all(check.ok for check in checks)
        return JSONResponse(
            {
                "status": "ok" if healthy else "error",
                "checks": {check.name: check.as_json() for check in checks},
                "timestamp": datetime.now(UTC).isoformat(),
            },
            status_code=200 if healthy else 503,
        )

    app.add_api_route("/health", health, methods=["GET"], tags=["health"], summary="Health of each part")
    app.add_api_route(f"{ROUTER_PREFIX}/health", health, methods=["GET"], tags=["health"],
                      summary="Health of each part (the old router's path)")
    # The old dashboard's page, from this origin (no token needed to load it; it sends one).
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def _secrets(settings: Settings) -> tuple[str, ...]:
    """What must never appear in an answer: the database password, the tokens, the JWT secret."""
    found = [settings.database().url.password or ""]
    found += list(settings.api_token_tenants())
    if settings.jwt_secret is not None:
        found.append(settings.jwt_secret.get_secret_value())
    return tuple(secret for secret in found if secret)
