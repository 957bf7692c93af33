"""``scrapersky``: run a batch, read its status, manage the database.

Every option also has an environment variable (``SCRAPERSKY_*``, ``DATABASE_URL``);
an option given on the command line wins.
"""

from __future__ import annotations

import asyncio
import atexit
import gc
import json
import os
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional
from uuid import UUID

# Prefect reads its logging level when imported: keep a CLI run's terminal readable
# (failures are in the summary); PREFECT_LOGGING_LEVEL still wins when set. (`up` gives
# the processes it starts the level the user gave, not this one.)
_GIVEN_LOGGING_LEVEL = os.environ.get("PREFECT_LOGGING_LEVEL")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "CRITICAL")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# Python's last garbage collections at exit walk every object Prefect's import made:
# 0.4-0.8 s of a finished command (2 cores). Skipped (the objects frozen) once every
# other exit handler - Prefect's flushes of logs and events among them - has run.
atexit.register(gc.freeze)

import typer  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import (  # noqa: E402
    BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn,
)
from rich.table import Table  # noqa: E402

from .batch import BatchOptions, BatchRequest  # noqa: E402
from .domains import entries_of, plan_domains  # noqa: E402
from .errors import BatchError, ScraperSkyError  # noqa: E402
from .settings import Settings, configured  # noqa: E402

class _Commands(typer.Typer):
    """The one error path: an error of ours (ScraperSkyError: a setting, a database URL,
    a refused batch, a file named on the command line) is one line, ``error: ...``, and
    exit status 2; a traceback only with ``--debug`` (or for a bug)."""

    debug = False

    def __call__(self, *args, **kwargs):
        try:
            return super().__call__(*args, **kwargs)
        except ScraperSkyError as exc:
            if _Commands.debug:
                raise
            err.print(f"[red]error:[/red] {exc}", highlight=False)
            sys.exit(2)


app = _Commands(
    help="ScraperSky Batch: scrape the homepages of batches of domains.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals may hold DATABASE_URL
)
db_app = typer.Typer(help="Manage the database.", no_args_is_help=True)
app.add_typer(db_app, name="db")

out = Console()
err = Console(stderr=True, soft_wrap=True)

TenantOption = Annotated[
    Optional[UUID], typer.Option("--tenant", help="Tenant id (env SCRAPERSKY_TENANT_ID).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the batch status object as JSON.")]
SUMMARY_ROWS = 25


@app.callback()
def _options(
    debug: Annotated[bool, typer.Option("--debug", help="On an error, show its traceback too.")] = False,
) -> None:
    _Commands.debug = debug


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(code)


def _settings(**overrides) -> Settings:
    """This command's settings: the environment's, with the options given on its line."""
    return Settings.load(**overrides)


def _database(work, database):
    """Run a coroutine against ``database``; a database that fails says so clearly.

    Messages name the URL with its password masked, and the driver's reason.
    """
    from sqlalchemy.exc import DBAPIError

    try:
        return asyncio.run(work)
    except (DBAPIError, OSError, asyncio.TimeoutError) as exc:
        reason = exc.orig if isinstance(exc, DBAPIError) else exc
        raise _fail(f"database {database.where}: {type(reason).__name__}: {reason}", 2) from None


def _read_status(settings: Settings, batch_id: UUID, tenant_id: UUID):
    from scrapersky.db.batches import get_batch_status

    database = settings.database()
    return _database(database.call(lambda session: get_batch_status(session, batch_id, tenant_id)), database)


def _stored_batch(batch_id: UUID, tenant: UUID | None):
    """The batch as stored, for ``status`` and ``export``; a missing one is one line."""
    settings = _settings()
    return _read_status(settings, batch_id, tenant or settings.tenant_id)


def _print_status(report, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report.model_dump(mode="json"), indent=2))
        return
    out.print(
        f"batch [bold]{report.batch_id}[/bold]: [bold]{report.status}[/bold]  "
        f"{report.completed_domains} completed, {report.failed_domains} failed of "
        f"{report.total_domains} ({report.progress * 100:.0f}%)"
        + (f" in {report.processing_time:.1f}s" if report.processing_time else ""),
        highlight=False,
    )
    if report.error:
        out.print(f"error: {report.error}", highlight=False)
    entries = sorted(
        report.domain_statuses.items(), key=lambda item: (item[1].get("status") != "failed", item[0])
    )
    table = Table("domain", "status", "http", "attempts", "title / error")
    for domain, entry in entries[:SUMMARY_ROWS]:
        if entry.get("status") == "failed":
            detail = f"[red]{entry.get('error_type')}[/red]: {entry.get('error')}"
        else:
            detail = ((entry.get("metadata") or {}).get("title")) or ""
        table.add_row(
            domain, entry.get("status", ""), str(entry.get("http_status") or ""),
            str(entry.get("attempts", "")), detail,
        )
    out.print(table)
    if len(entries) > SUMMARY_ROWS:
        out.print(f"... {len(entries) - SUMMARY_ROWS} more: scrapersky status {report.batch_id} --json")


@contextmanager
def _prefect(quiet: bool = False) -> Iterator[str]:
    """The Prefect API flows of this command run against: PREFECT_API_URL, else a local
    server of this command's own (see scrapersky.local_server)."""
    import prefect  # noqa: F401  its first-run telemetry notice, if any, before any live display

    from .local_server import prefect_api

    starting = Progress(SpinnerColumn(), "{task.description}", TextColumn("{task.elapsed:.0f} s"),
                        console=err, transient=True)
    with starting if not quiet else nullcontext():
        if not quiet:
            starting.add_task("starting Prefect...")
        stack = ExitStack()
        url = stack.enter_context(prefect_api())
    with stack:
        yield url


def _run_batch(settings: Settings, domains: list[str], *, tenant_id: UUID, batch_id: UUID | None,
               options: BatchOptions, as_json: bool) -> None:
    """Run the flow in this process, with this command's settings; the bar follows the
    batch's progress as the flow saves it (what any other reader of the batch sees)."""
    import threading
    import uuid

    from scrapersky.db.batches import batch_progress
    from scrapersky.flows.batch_scrape import batch_scrape, stopping_cancels

    batch_id = batch_id or uuid.uuid4()
    database = settings.database()
    finished = threading.Event()

    def follow(bar: Progress, task) -> None:
        while not finished.wait(1.0):
            try:
                found = database.run(lambda session: batch_progress(session, batch_id))
            except Exception:  # the bar is a convenience: the flow reports what matters
                continue
            if found is not None:
                bar.update(task, completed=found[0], total=found[1] or None)

    with _prefect(as_json), Progress(
        "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), console=err, transient=True, disable=as_json,
    ) as bar:
        task = bar.add_task("scraping", total=None)
        follower = threading.Thread(target=follow, args=(bar, task), name="progress-bar", daemon=True)
        follower.start()
        try:
            # Stopped by its user (Ctrl-C, SIGTERM): what is known is saved, the batch ends
            # cancelled; the same command with --batch-id resumes it.
            with configured(settings), stopping_cancels():
                state = batch_scrape(_request(settings, domains, tenant_id, batch_id, options), return_state=True)
        except KeyboardInterrupt:
            err.print(f"stopped: batch {batch_id} cancelled; resume it with `scrapersky scrape --batch-id {batch_id}`",
                      highlight=False)
            raise typer.Exit(130) from None
        finally:
            finished.set()
            follower.join()
    refused = _refusal(state)
    if refused is not None:  # another run's batch, another tenant's: nothing of ours to show
        raise _fail(f"{refused.error_type}: {refused}", 2)
    try:
        report = _read_status(settings, batch_id, tenant_id)
    except ScraperSkyError:
        raise _fail(state.message or f"the batch did not start ({state.name})", 2) from None
    _print_status(report, as_json)
    if report.status == "failed":
        raise typer.Exit(1)


def _request(settings: Settings, domains: list[str], tenant_id: UUID, batch_id: UUID,
             options: BatchOptions) -> BatchRequest:
    """The flow's parameter: the domains inline, or by reference (none given: the batch's
    recorded ones; too many for a flow-run parameter: registered first)."""
    if not domains or BatchRequest.fits_parameters(domains):
        return BatchRequest(domains=domains, tenant_id=tenant_id, batch_id=batch_id, options=options)
    from .client import register_batch

    created = _database(register_batch(domains, tenant_id, batch_id=batch_id, options=options,
                                       settings=settings), settings.database()).created
    if not created:
        raise _fail(f"batch {batch_id} exists already: resume it with `scrapersky scrape --batch-id {batch_id}` "
                    "(no domains: the ones it recorded)", 2)
    return BatchRequest(tenant_id=tenant_id, batch_id=batch_id, options=options)


def _refusal(state) -> BatchError | None:
    """The batch error a failed run was refused with (BatchAlreadyRunning: another live
    run owns the batch; BatchNotFound: another tenant's), or None."""
    if not state.is_failed():
        return None
    try:
        error = state.result(raise_on_failure=False)
    except Exception:  # the result could not be read: the report says what it can
        return None
    return error if isinstance(error, BatchError) else None


@app.command()
def scrape(
    domains: Annotated[Optional[list[str]], typer.Argument(help="Domains or URLs.")] = None,
    file: Annotated[Optional[Path], typer.Option("--file", "-f", help="One domain per line ('#' comments).")] = None,
    tenant: TenantOption = None,
    batch_id: Annotated[Optional[UUID], typer.Option("--batch-id", help="Adopt or resume this batch.")] = None,
    as_json: JsonOption = False,
    connect_to: Annotated[Optional[list[str]], typer.Option("--connect-to", help="HOST1:PORT1:HOST2:PORT2, repeatable (env SCRAPERSKY_CONNECT_TO).")] = None,
    concurrency: Annotated[Optional[int], typer.Option(help="(env SCRAPERSKY_CONCURRENCY)")] = None,
    retries: Annotated[Optional[int], typer.Option(help="(env SCRAPERSKY_RETRIES)")] = None,
    retry_backoff: Annotated[Optional[float], typer.Option(help="(env SCRAPERSKY_RETRY_BACKOFF)")] = None,
    connect_timeout: Annotated[Optional[float], typer.Option(help="(env SCRAPERSKY_CONNECT_TIMEOUT)")] = None,
    read_timeout: Annotated[Optional[float], typer.Option(help="(env SCRAPERSKY_READ_TIMEOUT)")] = None,
    total_timeout: Annotated[Optional[float], typer.Option(help="(env SCRAPERSKY_TOTAL_TIMEOUT)")] = None,
    max_page_bytes: Annotated[Optional[int], typer.Option(help="(env SCRAPERSKY_MAX_PAGE_BYTES)")] = None,
    max_redirects: Annotated[Optional[int], typer.Option(help="(env SCRAPERSKY_MAX_REDIRECTS)")] = None,
    user_agent: Annotated[Optional[str], typer.Option(help="(env SCRAPERSKY_USER_AGENT)")] = None,
) -> None:
    """Run a batch now and print its summary (or, with --json, its status object).
    With --batch-id and no domains: resume that batch's recorded domains."""
    entries = _entries(domains, file, required=batch_id is None)
    # --connect-to is the operator's routing, as SCRAPERSKY_CONNECT_TO is on a worker.
    settings = _settings(connect_to=tuple(connect_to) if connect_to else None)
    try:
        if entries:
            plan_domains(entries, max_batch_size=settings.max_batch_size)  # refuse before any work
        options = settings.batch_options(
            concurrency=concurrency, retries=retries, retry_backoff=retry_backoff,
            connect_timeout=connect_timeout, read_timeout=read_timeout,
            total_timeout=total_timeout, max_page_bytes=max_page_bytes,
            max_redirects=max_redirects, user_agent=user_agent,
        )
    except ValueError as exc:
        raise _fail(str(exc), 2) from None
    _run_batch(settings, entries, tenant_id=tenant or settings.tenant_id, batch_id=batch_id,
               options=options, as_json=as_json)


@app.command()
def extract(
    source: Annotated[str, typer.Argument(help="A saved HTML page (a file), or one http(s) URL.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole SiteMetadata as JSON.")] = False,
    url: Annotated[Optional[str], typer.Option("--url", help="A saved page's address, for its relative links (default: its own canonical URL or og:url).")] = None,
    connect_to: Annotated[Optional[list[str]], typer.Option("--connect-to", help="HOST1:PORT1:HOST2:PORT2, repeatable (env SCRAPERSKY_CONNECT_TO).")] = None,
) -> None:
    """Extract the site metadata of one saved page or one URL, as a batch does.

    A URL is fetched by the batch's fetcher: the same address guard (no private
    network), timeouts, redirect and size limits. Exit 2 for bad input (no such file,
    not a page, not an http(s) URL), 1 when the fetch fails."""
    from .errors import DomainError
    from .metadata import extract_metadata

    settings = _settings(connect_to=tuple(connect_to) if connect_to else None)
    try:
        if source.lower().startswith(("http://", "https://")):
            from urllib.parse import urlsplit

            from .web import Fetcher

            try:
                if not urlsplit(source).hostname or urlsplit(source).port == 0:
                    raise ValueError("no host")
            except ValueError as error:
                raise _fail(f"not a URL: {source} ({error})", 2) from None
            with Fetcher(settings.batch_options(), settings.reach()) as fetcher:
                try:
                    page = fetcher.follow(source)
                except DomainError as error:
                    raise _fail(f"{error.error_type}: {error}", 1) from None
            metadata = extract_metadata(page.body, page.headers, page.url)
        else:
            path = Path(source)
            if not path.is_file():
                raise _fail(f"no such file: {source} (give a saved HTML page or an http(s) URL)", 2)
            body = path.read_bytes()
            headers = {"content-type": "text/html"}  # the charset: the page's own, or detected
            metadata = extract_metadata(body, headers, url or path.resolve().as_uri())
            own = metadata.canonical_url or metadata.open_graph.get("og:url")
            if url is None and own and own.lower().startswith(("http://", "https://")):
                metadata = extract_metadata(body, headers, own)  # its relative links, resolved
    except (ValueError, OSError, ScraperSkyError) as exc:
        message = f"{exc.error_type}: {exc}" if isinstance(exc, ScraperSkyError) else str(exc)
        raise _fail(message, 2) from None
    if as_json:
        print(metadata.model_dump_json(indent=2))
        return
    table = Table(show_header=False, box=None)
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")  # URLs whole, to copy
    for name in ("title", "description", "site_name", "language", "canonical_url", "image",
                 "logo_url", "favicon_url", "keywords", "emails", "phones", "social_links"):
        value = getattr(metadata, name)
        if value:
            table.add_row(name, value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))
    stack = [t.name for category in ("cms", "builders_plugins", "analytics", "frameworks", "widgets")
             for t in getattr(metadata.tech_stack, category)]
    if stack:
        table.add_row("tech_stack", ", ".join(stack))
    out.print(table)


def _entries(domains: list[str] | None, file: Path | None, *, required: bool = True) -> list[str]:
    entries = list(domains or [])
    if file is not None:
        try:
            entries += entries_of(file.read_text(encoding="utf-8"))
        except OSError as exc:
            raise _fail(f"cannot read {file}: {exc.strerror}", 2) from None
        except UnicodeDecodeError as exc:
            raise _fail(f"cannot read {file}: not UTF-8 text (byte {exc.start})", 2) from None
    if not entries and required:
        raise _fail("no domains given (arguments or --file)", 2)
    return entries


@app.command()
def submit(
    domains: Annotated[Optional[list[str]], typer.Argument(help="Domains or URLs.")] = None,
    file: Annotated[Optional[Path], typer.Option("--file", "-f", help="One domain per line ('#' comments).")] = None,
    tenant: TenantOption = None,
    batch_id: Annotated[Optional[UUID], typer.Option("--batch-id", help="The batch id (default: a new one); submitting it again is the same batch.")] = None,
    deployment: Annotated[str, typer.Option("--deployment", help="flow/deployment to run.")] = "batch-scrape/batch-scrape",
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the batch to end and print its summary.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Hand a batch to the batch-scrape deployment (a worker runs it); print its id."""
    import time

    from .batch import BatchStatus
    from .client import get_status, submit_batch

    entries = _entries(domains, file)
    settings = _settings()
    tenant_id = tenant or settings.tenant_id
    submitted = _database(
        submit_batch(entries, tenant_id, batch_id=batch_id, deployment=deployment, settings=settings),
        settings.database(),
    )
    if not wait:
        if as_json:
            out.print_json(data={"batch_id": str(submitted), "status": "pending"})
        else:
            out.print(f"{submitted}", highlight=False)
            err.print(f"submitted; recorded in {settings.database().where}; read it with: "
                      f"scrapersky status {submitted}", highlight=False)
        return
    while True:
        report = _database(get_status(submitted, tenant_id, settings=settings), settings.database())
        if BatchStatus(report.status).is_final:
            break
        time.sleep(1.0)
    _print_status(report, as_json)
    if report.status == "failed":
        raise typer.Exit(1)


@app.command()
def doctor(
    canary: Annotated[Optional[str], typer.Option("--canary", help="Also run a one-domain batch end to end through the deployment.")] = None,
    pool: Annotated[str, typer.Option("--pool", help="The work pool the deployment runs on.")] = "scrapersky",
    deployment: Annotated[str, typer.Option("--deployment", help="flow/deployment to check.")] = "batch-scrape/batch-scrape",
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds the canary may take.")] = 180.0,
) -> None:
    """Check the database, schema, Prefect API, work pool, worker and deployment (and
    run a canary batch); exit 1 when a check fails."""
    from .doctor import run_checks

    settings = _settings()

    async def run() -> bool:
        healthy = True
        async for check in run_checks(pool=pool, deployment=deployment, canary=canary, canary_timeout=timeout,
                                      settings=settings):
            healthy &= check.ok
            mark = "[green]PASS[/green]" if check.ok else "[red]FAIL[/red]"
            out.print(f"{mark} {check.name:<12} {check.detail}", highlight=False, soft_wrap=True)
        return healthy

    if not asyncio.run(run()):
        raise typer.Exit(1)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []})
def bench(ctx: typer.Context) -> None:
    """The benchmark, from a checkout: the flow beside raw asyncio and Scrapy (one process
    and one a core) on the local web farm. `scrapersky bench --realistic`; `--help` for
    its options (it is `python -m benchmarks.bench`)."""
    checkout = Path(__file__).resolve().parents[1]
    if not (checkout / "benchmarks" / "bench.py").is_file():
        raise _fail("scrapersky bench runs from a checkout: benchmarks/ is not next to scrapersky/")
    if str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))
    from benchmarks.bench import main as bench_main

    raise typer.Exit(bench_main(ctx.args))


@app.command()
def api(
    host: Annotated[str, typer.Option("--host", help="Address to listen on (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8000,
    pool: Annotated[str, typer.Option("--pool", help="The work pool whose workers /health looks for.")] = "scrapersky",
    deployment: Annotated[str, typer.Option("--deployment", help="flow/deployment that runs the batches.")] = "batch-scrape/batch-scrape",
) -> None:
    """Serve the HTTP API (ScraperSky's /api/v3/batch_page_scraper routes; docs at /docs).

    Callers send a bearer token: SCRAPERSKY_API_TOKENS (TOKEN=TENANT_UUID[:USER_UUID]) or a JWT signed
    with SCRAPERSKY_JWT_SECRET. Batches run on the deployment's workers (PREFECT_API_URL)."""
    import uvicorn

    from .api import create_app

    settings = _settings()
    err.print(f"API on http://{host}:{port} (docs: http://{host}:{port}/docs)", highlight=False)
    uvicorn.run(create_app(settings, deployment=deployment, pool=pool), host=host, port=port,
                log_level="info", server_header=False)


@app.command()
def express(
    deployment: Annotated[str, typer.Option("--deployment", help="flow/deployment whose express runs to run.")] = "batch-scrape/batch-scrape",
    slots: Annotated[int, typer.Option("--slots", min=1, max=64, help="Runs at once.")] = 4,
) -> None:
    """Run small batches at once: a long-lived runner for the runs tagged express.

    Beside a worker (`up` starts both): it claims each scheduled express run of the
    deployment within a fraction of a second and runs it in a forked process that has
    Prefect and the flow imported already. Needs PREFECT_API_URL."""
    import logging

    from prefect.settings import PREFECT_API_URL

    from .express import run_express

    api_url = PREFECT_API_URL.value()
    if not api_url:
        raise _fail("PREFECT_API_URL is not set: the express runner asks the Prefect API for runs")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line for each look
    run_express(api_url, deployment, slots=slots)


@app.command()
def status(
    batch_id: Annotated[UUID, typer.Argument(help="The batch id.")],
    tenant: TenantOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show a batch's status and its domains' outcomes."""
    report = _stored_batch(batch_id, tenant)
    _print_status(report, as_json)


class ExportFormat(str, Enum):
    csv = "csv"
    jsonl = "jsonl"


@app.command()
def export(
    batch_id: Annotated[UUID, typer.Argument(help="The batch id.")],
    tenant: TenantOption = None,
    format: Annotated[ExportFormat, typer.Option("--format", help="csv (flattened) or jsonl (nested).")] = ExportFormat.csv,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="File to write (default: stdout).")] = None,
) -> None:
    """Write one row per domain: its status and its metadata."""
    from .export import write_csv, write_jsonl

    report = _stored_batch(batch_id, tenant)
    write = write_csv if format is ExportFormat.csv else write_jsonl
    if output is None:
        write(report, sys.stdout)
        return
    try:
        with output.open("w", encoding="utf-8", newline="") as handle:
            count = write(report, handle)
    except OSError as exc:
        raise _fail(f"cannot write {output}: {exc.strerror}", 2) from None
    err.print(f"{count} domains written to {output}", highlight=False)


@app.command()
def demo(as_json: JsonOption = False) -> None:
    """Run a small batch against a local web farm of virtual domains (no network needed)."""
    from .farm import Farm

    domains = [f"ok-{i}.test" for i in range(1, 9)] + [
        "nested-1.test", "notitle-1.test", "flaky-1.test", "notfound-1.test",
        "err500-1.test", "down-1.refused.test", "not a domain",
    ]
    with Farm() as farm:
        settings = _settings(connect_to=tuple(farm.connect_to()))
        options = settings.batch_options(retry_backoff=0.2)
        _run_batch(settings, domains, tenant_id=settings.tenant_id, batch_id=None, options=options,
                   as_json=as_json)


#: What `scrapersky farm` suggests scraping: one of each kind a newcomer meets.
FARM_EXAMPLE = ("ok-1.test", "ok-2.test", "nested-1.test", "flaky-1.test", "notfound-1.test")


@app.command()
def farm(
    port: Annotated[int, typer.Option("--port", help="Its http port on 127.0.0.1 (0: a free one).", min=0, max=65535)] = 0,
    serve_for: Annotated[Optional[float], typer.Option("--for", help="Stop after this many seconds (default: on Ctrl-C or SIGTERM).", min=0)] = None,
) -> None:
    """Serve the demo's web farm (any number of virtual *.test domains, on loopback) and
    print the scrape command that reaches it: no real site is ever asked."""
    import shlex
    import signal
    import threading

    from .farm import Farm

    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    with Farm(port=port) as running:
        rules = running.connect_to()  # *.test on ports 80 and 443, and the special kinds
        routing = " ".join(f"--connect-to {shlex.quote(rule)}" for rule in rules)
        for line in (
            f"# the farm on {running.host}:{running.port}: ok-N.test, notfound-N.test, flaky-N.test, ... "
            "(every kind: scrapersky/farm.py); " + ("Ctrl-C stops it" if serve_for is None else f"for {serve_for:g} s"),
            "# scrape it (another terminal):",
            f"{_scrapersky_command()} scrape {' '.join(FARM_EXAMPLE)} {routing}",
            "# a worker's routing to it (submit, the Prefect UI's Run form):",
            f"export SCRAPERSKY_CONNECT_TO={shlex.quote(' '.join(rules))}",
        ):
            out.print(line, highlight=False, soft_wrap=True)
        try:
            stopped.wait(serve_for)
        except KeyboardInterrupt:
            pass


def _scrapersky_command() -> str:
    """How to run this command again: ``scrapersky`` when that is on PATH, else its path."""
    import shutil

    installed = Path(sys.executable).parent / "scrapersky"
    if not installed.exists() or shutil.which("scrapersky") == str(installed):
        return "scrapersky"
    return os.path.relpath(installed) if not os.path.relpath(installed).startswith("../..") else str(installed)


@app.command()
def recover(
    stale_after: Annotated[Optional[float], typer.Option("--stale-after", help="Seconds without an update (env SCRAPERSKY_STALE_AFTER, 900).")] = None,
    max_attempts: Annotated[int, typer.Option("--max-attempts", help="Recoveries of one batch before it is marked failed.")] = 3,
) -> None:
    """Run the recovery flow once: batches whose run is gone are resumed here, or ended
    with the reason (README, "When a run stops")."""
    from scrapersky.flows.recover_stale_batches import recover_stale_batches

    settings = _settings()
    with _prefect(), configured(settings):
        state = recover_stale_batches(stale_after=stale_after, max_attempts=max_attempts, return_state=True)
    if not state.is_completed():
        raise _fail(state.message or "the recovery flow failed", 1)
    summary = state.result()
    out.print(f"resumed {len(summary['resumed'])} batch(es), failed {len(summary['failed'])}, "
              f"cancelled {len(summary['cancelled'])}", highlight=False)
    for word in ("resumed", "failed", "cancelled"):
        for batch_id in summary[word]:
            out.print(f"  {word:<7} {batch_id}", highlight=False)


@app.command()
def up(
    api_port: Annotated[int, typer.Option("--api-port", help="The HTTP API's port.", min=1, max=65535)] = 8000,
    ui_port: Annotated[int, typer.Option("--ui-port", help="The Prefect server's port (UI and Prefect API).", min=1, max=65535)] = 4200,
    host: Annotated[str, typer.Option("--host", help="The address every part listens on (loopback by default).")] = "127.0.0.1",
    prefect_home: Annotated[Optional[Path], typer.Option("--prefect-home", envvar="SCRAPERSKY_PREFECT_HOME", help="The Prefect server's home (default ~/.scrapersky/prefect).")] = None,
) -> None:
    """Start the local stack: a Prefect server, the work pool, the deployments, a worker
    and the HTTP API; keep the worker and the API up; stop them all, in order, on Ctrl-C
    or SIGTERM."""
    from .stack import StackConfig, default_prefect_home, prefect_database, run_stack, shared_database_url

    settings = _settings()
    database_url = shared_database_url(settings.database_url)
    from scrapersky.db.engine import Database

    database = Database(database_url)
    # The embedded SQLite default is brought to the head revision here, once, before the
    # parts start (not by several of them at once); PostgreSQL is left to `db upgrade`.
    _database(database.prepare(), database)
    environ = dict(os.environ)
    if _GIVEN_LOGGING_LEVEL is None:
        environ.pop("PREFECT_LOGGING_LEVEL", None)
    config = StackConfig(host=host, api_port=api_port, ui_port=ui_port,
                         prefect_home=(prefect_home or default_prefect_home()).expanduser().absolute(),
                         database_url=database_url, environ=environ,
                         prefect_database=prefect_database(database_url, environ))
    if host not in ("127.0.0.1", "localhost", "::1"):
        err.print(f"[yellow]warning:[/yellow] listening on {host}: the Prefect server has no authentication",
                  highlight=False)

    def say(line: str) -> None:
        # Plain text: a reason quoted from a log or a driver may hold [brackets].
        err.print(line, highlight=False, markup=False, soft_wrap=True)

    def announce(config: StackConfig) -> None:
        api = config.url(config.api_port)
        for line in (
            f"Prefect UI   {config.url(config.ui_port)}",
            f"API          {api}/api/v3/batch_page_scraper  (docs {api}/docs)",
            f"dashboard    {api}/static/batch-domain-scanner.html",
            f"database     {database.where}",
            f"Prefect db   {config.prefect_database.where(config.prefect_home)}  (the server's state)",
            f"logs         {config.prefect_home / 'scrapersky-up'}",
            "ready; Ctrl-C stops everything",
        ):
            out.print(line, highlight=False, markup=False, soft_wrap=True)

    run_stack(config, say, announce=announce)
    say("stopped")


@db_app.command("check")
def db_check(
    drift: Annotated[bool, typer.Option("--drift", help="Also run Alembic's drift check (models vs database).")] = False,
) -> None:
    """Compare the live tables with what the code writes, and the database's Alembic
    revision with the head; exit 1 on a mismatch or a missing revision."""
    from scrapersky.db.engine import create_engine
    from scrapersky.db.migrate import drift as drift_of, revision_state
    from scrapersky.db.schema import check_schema

    database = _settings().database()

    async def check():
        engine = create_engine(database.url)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(check_schema), await connection.run_sync(revision_state)
        finally:
            await engine.dispose()

    report, revision = _database(check(), database)
    for line in report.message().splitlines() + revision.lines():
        out.print(line, highlight=False, soft_wrap=True)
    if not report.ok:
        raise _fail(f"schema mismatch in {database.where} (run `scrapersky db upgrade`)", 1)
    if not revision.at_head:
        raise _fail(f"{database.where} is not at revision {revision.head} (run `scrapersky db upgrade`)", 1)
    if drift:
        found = _database(drift_of(database.url), database)
        for line in found:
            out.print(f"drift: {line}", highlight=False, soft_wrap=True)
        if found:
            raise _fail(f"the models and the migrations differ in {database.where}", 1)
        out.print("no drift: the migrations make what the models define", highlight=False)
    out.print(f"schema ok in {database.where}", highlight=False)


def _upgrade(verb: str) -> None:
    database = _settings().database()
    try:
        done = _database(database.upgrade(), database)
    except ScraperSkyError as exc:
        raise _fail(f"{database.where}: {exc}", 2) from None
    if done.before.shape not in (None, "empty"):
        from scrapersky.db.migrate import SHAPES

        out.print(f"adopted: {SHAPES[done.before.shape]}", highlight=False)
    for revision in done.applied:
        out.print(f"applied {revision}", highlight=False)
    state = "already at" if not done.applied else "now at"
    out.print(f"schema {verb} in {database.where}: {state} revision {done.after.head}", highlight=False)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Bring the database to the current schema (Alembic, idempotent): creates missing
    tables, adopts ScraperSky's batch_jobs without touching its rows, converts rows
    written by earlier versions of ScraperSky Batch."""
    _upgrade("upgraded")


@db_app.command("init")
def db_init() -> None:
    """Create the schema in an empty database (the same upgrade to the head revision)."""
    _upgrade("ready")


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
