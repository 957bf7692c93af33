"""The old ``batch_page_scraper`` router's paths, served by our batches: every batch a
run of the ``batch-scrape`` deployment (``submit_batch``), read from ``batch_jobs``
(``get_status``), answered in the old models (``legacy``)."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from scrapersky.db.batches import recorded_domains
from scrapersky.db.engine import Database
from scrapersky.errors import Busy, WrongTenant

from ..batch import utcnow
from ..client import get_status, submit_batch
from ..settings import Settings
from .auth import Authenticator, Caller
from .legacy import (
    ROUTER_PREFIX,
    BatchResponse,
    BatchStatusResponse,
    JobStatusResponse,
    SitemapScrapingRequest,
    SitemapScrapingResponse,
    batch_request_model,
    batch_status_response,
    batch_status_url,
    job_status_response,
    job_status_url,
)

__all__ = ["Service", "batch_router", "SUBMISSIONS_AT_ONCE", "ADMISSION_WAIT"]

#: Submissions served at once (each a few statements and one request to the Prefect
#: API, which answers them one after another); more wait for a turn ...
SUBMISSIONS_AT_ONCE = 8
#: ... at most this many seconds, then are answered 429 with Retry-After: a crowd is
#: served in turns instead of timing out together (a 5xx).
ADMISSION_WAIT = 5.0
RETRY_AFTER = 2


@dataclass(frozen=True)
class Service:
    """What every route works with: the settings, the database (one for the process, with
    a request's short timeouts), the callers' authenticator, the deployment that runs
    batches and the work pool its workers serve."""

    settings: Settings
    database: Database
    authenticator: Authenticator
    deployment: str
    pool: str
    turns: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(SUBMISSIONS_AT_ONCE))

    @asynccontextmanager
    async def admitted(self) -> AsyncIterator[None]:
        """A submission's turn; Busy (429) when none comes within ADMISSION_WAIT seconds."""
        try:
            await asyncio.wait_for(self.turns.acquire(), ADMISSION_WAIT)
        except TimeoutError:
            raise Busy(f"{SUBMISSIONS_AT_ONCE} submissions are being served: try again in {RETRY_AFTER} s") from None
        try:
            yield
        finally:
            self.turns.release()


def service(request: Request) -> Service:
    return request.app.state.service


# Declared for the OpenAPI page's "Authorize" button; the header is read by the Authenticator.
_bearer = HTTPBearer(auto_error=False, description="A static API token or a Supabase JWT")


def current_caller(
    request: Request,
    _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    service: Annotated[Service, Depends(service)],
) -> Caller:
    """The request's caller, once its token is accepted and its rate allows (RateLimited: 429)."""
    caller = service.authenticator.caller(request.headers.get("authorization"))
    service.authenticator.rate_limit.take(caller.rate_key)
    return caller


ServiceDep = Annotated[Service, Depends(service)]
CallerDep = Annotated[Caller, Depends(current_caller)]

router = APIRouter(prefix=ROUTER_PREFIX, tags=["batch_page_scraper"])


def _tenant(requested: UUID | None, caller: Caller) -> UUID:
    """The tenant a request acts for: its token's; naming another one is refused."""
    if requested is not None and requested != caller.tenant_id:
        raise WrongTenant("tenant_id is not the tenant of this token")
    return caller.tenant_id


async def _submit(service: Service, caller: Caller, domains: list[str], *, tenant_id: UUID,
                  batch_id: UUID | None, max_pages: int, max_concurrent: int | None) -> UUID:
    settings = service.settings
    options = settings.batch_options(concurrency=max_concurrent) if max_concurrent is not None else None
    async with service.admitted():
        return await submit_batch(
            domains, tenant_id, options=options, batch_id=batch_id, deployment=service.deployment,
            settings=settings, created_by=caller.created_by, extra_options={"max_pages": max_pages},
            database=service.database,
        )


def batch_router(max_batch_size: int) -> APIRouter:
    """The old router's paths, ``POST /batch`` taking at most ENTRIES_PER_DOMAIN x
    ``max_batch_size`` entries (more are refused before any entry is read)."""
    routes = APIRouter()
    request_model = batch_request_model(max_batch_size)

    @routes.post(f"{ROUTER_PREFIX}/batch", response_model=BatchResponse, tags=["batch_page_scraper"],
                 summary="Submit a batch of domains")
    async def create_batch(body: request_model, caller: CallerDep, service: ServiceDep) -> BatchResponse:
        """Register the batch ``pending`` and have a worker run it (a run of the
        ``batch-scrape`` deployment, the batch id as its idempotency key: the same batch id
        again is the same batch and the same run)."""
        tenant_id = _tenant(body.tenant_id, caller)
        batch_id = await _submit(service, caller, body.domains, tenant_id=tenant_id, batch_id=body.batch_id,
                                 max_pages=body.max_pages, max_concurrent=body.max_concurrent)
        report = await get_status(batch_id, tenant_id, database=service.database)
        return BatchResponse(
            batch_id=str(batch_id),
            status_url=batch_status_url(batch_id),
            job_count=report.total_domains,
            created_at=report.created_at.isoformat() if report.created_at else None,
        )

    routes.include_router(router)
    return routes


@router.get("/batch/{batch_id}/status", response_model=BatchStatusResponse, summary="A batch's status")
async def batch_status(batch_id: UUID, caller: CallerDep, service: ServiceDep) -> BatchStatusResponse:
    """The batch as the old status route returned it, live while it runs: every domain
    finished so far is in ``domain_statuses``."""
    report = await get_status(batch_id, caller.tenant_id, database=service.database)
    return batch_status_response(report, now=utcnow())


@router.post("/scan", response_model=SitemapScrapingResponse, summary="Scrape one domain")
async def scan_domain(body: SitemapScrapingRequest, caller: CallerDep, service: ServiceDep) -> SitemapScrapingResponse:
    """A batch of one domain; its batch id is the job id."""
    tenant_id = _tenant(body.tenant_id, caller)
    job_id = await _submit(service, caller, [body.base_url], tenant_id=tenant_id, batch_id=None,
                           max_pages=body.max_pages, max_concurrent=None)
    report = await get_status(job_id, tenant_id, database=service.database)
    return SitemapScrapingResponse(
        job_id=str(job_id),
        status_url=job_status_url(job_id),
        created_at=report.created_at.isoformat() if report.created_at else None,
    )


@router.get("/status/{job_id}", response_model=JobStatusResponse, summary="A one-domain job's status")
async def job_status(job_id: UUID, caller: CallerDep, service: ServiceDep) -> JobStatusResponse:
    """The batch of ``POST /scan`` as the old job status route returned it."""
    report = await get_status(job_id, caller.tenant_id, database=service.database)
    domains = await service.database.call(lambda session: recorded_domains(session, job_id, caller.tenant_id))
    return job_status_response(report, domain=domains[0] if len(domains) == 1 else None)
