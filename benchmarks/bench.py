"""Benchmark: the batch flow beside a raw asyncio + httpx baseline and a Scrapy peer,
on one local virtual-domain web farm, in one invocation.

    .venv/bin/python -m benchmarks.bench --n 1000 --n 10000 --latency 0.1 --concurrency 50
        [--repeat R] [--json PATH] [--contestants raw,scrapy,flow] [--database-url URL]

Contestants, each in a subprocess of its own (its CPU and peak RSS measured through
``os.wait4``, the farm's and the Prefect server's CPU not attributed to it):

- ``raw``: asyncio, one ``httpx.AsyncClient`` (limits = concurrency) and the project's
  own ``scrapersky.metadata.extract.extract_metadata``, one request a domain;
- ``scrapy``: ``benchmarks.spider``, a plain Scrapy spider extracting the same
  fields with Scrapy's selectors (CONCURRENT_REQUESTS = concurrency);
- ``flow``: ``flows.batch_scrape.batch_scrape(BatchRequest(...))`` against a real local
  Prefect server started here (temporary PREFECT_HOME, SQLite), recording into
  ``DATABASE_URL`` (a fresh SQLite file per run, or ``--database-url``); its batch row is
  read back and checked afterwards.

The farm (``_farm`` below, an ``asyncio.start_server`` HTTP/1.1 server on 127.0.0.1)
serves ``GET /`` for any ``site-<i>.test`` Host after ``--latency`` seconds: a 30-100 KB
homepage (size fixed by i) with the usual head (charset, title, description, keywords,
Open Graph, canonical, icons, JSON-LD Organization, scripts, stylesheets) and a body with
navigation, sections and a footer with an email, a phone and social links. Everything
else is 404. One connection a domain (``Connection: close``, as for distinct real
sites; ``--keep-alive`` lets clients reuse connections). The flow's https attempts go to
a bound socket that never listens: refused at once, then http, as against a site
without TLS.

Runs are interleaved per N (raw, scrapy, flow), ``--repeat`` times; the table shows
medians. Every contestant must fetch every page and extract every title, or the run
is flagged and the exit status is 1: the harness cannot silently measure nothing.
Only loopback addresses are used; no name is ever resolved.

``main(argv)`` is the whole command, ready to be wired as a CLI subcommand.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import resource
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = [
    "main",
    "page_for",
    "page_size",
    "expected_title",
    "title_ok",
    "Run",
    "run_benchmark",
]

REPO = Path(__file__).resolve().parents[1]
CONTESTANTS = ("raw", "scrapy", "flow")
_SITE = re.compile(r"site-(\d{1,9})\.test")
_MIN_PAGE, _MAX_PAGE = 30_000, 100_000


# --------------------------------------------------------------------------- pages


_WORDS = (
    "the of and to in our we for with your on that is are by from as at this be it an or "
    "service services customers quality team years experience business solutions local "
    "company products support contact about learn more trusted professional design build "
    "family owned since community projects clients results free quote today call us "
    "industry leading innovative reliable affordable custom home commercial residential "
    "sustainable people partners award winning delivery repair installation maintenance "
    "consulting management software platform data cloud security training growth"
).split()


@lru_cache(maxsize=1)
def _paragraphs() -> tuple[str, ...]:
    """A fixed pool of plain-text paragraphs (a deterministic word salad)."""
    state = 12345
    pool = []
    for _ in range(97):
        words = []
        state = (state * 1103515245 + 12345) & 0x7FFFFFFF
        for _ in range(70 + state % 90):
            state = (state * 1103515245 + 12345) & 0x7FFFFFFF
            words.append(_WORDS[state % len(_WORDS)])
        text = " ".join(words)
        pool.append(text[0].upper() + text[1:] + ".")
    return tuple(pool)


def page_size(i: int) -> int:
    """The target size of site i's homepage in bytes: 30-100 KB, fixed by i."""
    return _MIN_PAGE + (i * 7919 + 104_729) % (_MAX_PAGE - _MIN_PAGE - 2_000)


def expected_title(i: int) -> str:
    return f"Site {i} | Farm"


def title_ok(i: int, title: str | None) -> bool:
    """The <title> as written, or without its site-name suffix (og:title says "Site i")."""
    return title in (f"Site {i}", expected_title(i))


def page_for(i: int) -> bytes:
    """Site i's homepage: a realistic head and a body of page_size(i) bytes or so."""
    host = f"site-{i}.test"
    phone = f"+1415555{100 + i % 100:04d}"
    head = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{expected_title(i)}</title>
<meta name="description" content="Site {i} offers reliable services for local businesses and families since {1990 + i % 30}.">
<meta name="keywords" content="site {i}, farm, services, quality, local business">
<meta name="generator" content="WordPress 6.4.{i % 4}">
<meta property="og:title" content="Site {i}">
<meta property="og:site_name" content="Farm">
<meta property="og:type" content="website">
<meta property="og:url" content="http://{host}/">
<meta property="og:image" content="http://{host}/static/og-{i}.png">
<meta property="og:description" content="Everything about Site {i}.">
<meta name="twitter:card" content="summary_large_image">
<meta name="twitter:site" content="@site{i}">
<link rel="canonical" href="http://{host}/">
<link rel="icon" type="image/png" sizes="32x32" href="/static/favicon-32.png">
<link rel="apple-touch-icon" href="/static/apple-touch-icon.png">
<link rel="stylesheet" href="/wp-content/themes/farm/style.css?ver={i % 9}">
<link rel="stylesheet" href="/static/css/main.{i % 7}.css">
<link rel="preload" href="/static/fonts/inter.woff2" as="font" crossorigin>
<script src="/wp-includes/js/jquery/jquery.min.js?ver=3.7.1"></script>
<script async src="/static/js/analytics.js"></script>
<script>window.dataLayer = window.dataLayer || []; function track() {{ dataLayer.push(arguments); }} track('js', new Date()); track('config', 'site-{i}');</script>
<script type="application/ld+json">{{"@context": "https://schema.org", "@type": "Organization", "name": "Site {i}", "url": "http://{host}/", "logo": "http://{host}/static/logo.png", "email": "hello@{host}", "telephone": "{phone}", "sameAs": ["https://twitter.com/site{i}", "https://www.linkedin.com/company/site-{i}"]}}</script>
<style>body {{ font-family: Inter, sans-serif; margin: 0 }} .hero {{ padding: 4rem 2rem }} .logo {{ height: 48px }}</style>
</head>
<body class="home page-template-default">
<header class="site-header">
<a href="/" class="brand"><img src="/static/logo.png" alt="Site {i} logo" class="logo" width="160" height="48"></a>
<nav class="main-nav"><ul>
""".encode()
    nav = "".join(
        f'<li><a href="/{slug}/">{slug.capitalize()}</a></li>\n'
        for slug in ("about", "services", "products", "pricing", "blog", "news", "careers", "faq", "support", "contact")
    )
    footer = f"""</main>
<footer class="site-footer">
<p>Contact us: <a href="mailto:contact@{host}">contact@{host}</a> or call <a href="tel:{phone}">{phone}</a>.</p>
<p>Write to sales@{host} for a quote.</p>
<p class="social">Follow us:
<a href="https://twitter.com/site{i}">Twitter</a>
<a href="https://www.facebook.com/site{i}">Facebook</a>
<a href="https://www.linkedin.com/company/site-{i}">LinkedIn</a>
<a href="https://www.instagram.com/site{i}/">Instagram</a></p>
<p>&copy; 2024 Site {i}. All rights reserved. <a href="/privacy/">Privacy</a> <a href="/terms/">Terms</a></p>
</footer>
<script src="/static/js/app.{i % 13}.js" defer></script>
<script>document.documentElement.classList.add('js');</script>
</body>
</html>
""".encode()
    nav_end = '</ul></nav>\n</header>\n<main id="content">\n<section class="hero"><h1>Welcome to Site ' + str(i) + "</h1></section>\n"
    parts = [head, nav.encode(), nav_end.encode()]
    size = sum(map(len, parts)) + len(footer)
    target = page_size(i)
    pool = _paragraphs()
    k = 0
    while size < target and k < 1000:
        first = pool[(i * 31 + k * 17) % len(pool)]
        second = pool[(i * 7 + k * 29 + 3) % len(pool)]
        section = (
            f'<section class="block block-{k}"><h2>Section {k + 1}</h2>\n<p>{first}</p>\n'
            f'<p>{second} <a href="/services/{k}/">Read more</a></p>\n'
            f'<img src="/static/img/photo-{k}.jpg" alt="Photo {k}" loading="lazy"></section>\n'
        ).encode()
        parts.append(section)
        size += len(section)
        k += 1
    parts.append(footer)
    return b"".join(parts)


# --------------------------------------------------------------------------- the farm


@dataclass
class _FarmState:
    latency: float
    keep_alive: bool
    connections: int = 0
    requests: int = 0
    homepages: int = 0
    not_found: int = 0
    bytes_sent: int = 0
    served: dict[int, int] = field(default_factory=dict)

    def snapshot(self, reset: bool) -> dict[str, Any]:
        counts = {
            "connections": self.connections,
            "requests": self.requests,
            "homepages": self.homepages,
            "unique_homepages": len(self.served),
            "duplicate_homepages": self.homepages - len(self.served),
            "not_found": self.not_found,
            "bytes_sent": self.bytes_sent,
        }
        if reset:
            self.connections = self.requests = self.homepages = self.not_found = self.bytes_sent = 0
            self.served = {}
        return counts


_NOT_FOUND = b"<!doctype html><html><head><title>404 Not Found</title></head><body><h1>Not found</h1></body></html>"
_MAX_REQUESTS_PER_CONNECTION = 1000
_IDLE_SECONDS = 30.0


async def _farm_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: _FarmState) -> None:
    state.connections += 1
    try:
        for _ in range(_MAX_REQUESTS_PER_CONNECTION):
            try:
                raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _IDLE_SECONDS)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, ConnectionError):
                return
            lines = raw.decode("latin-1").split("\r\n")
            request_line = lines[0].split()
            if len(request_line) != 3:
                return
            method, target, version = request_line
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, colon, value = line.partition(":")
                if colon:
                    headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length") or 0)
            if length:
                await reader.readexactly(min(length, 1_000_000))
            host = headers.get("host", "").rsplit(":", 1)[0].lower()
            path, _, query = target.partition("?")
            keep = (
                state.keep_alive
                and version == "HTTP/1.1"
                and headers.get("connection", "").lower() != "close"
            )
            state.requests += 1
            site = _SITE.fullmatch(host)
            content_type = "text/html; charset=utf-8"
            if path == "/" and site and method in ("GET", "HEAD"):
                await asyncio.sleep(state.latency)
                i = int(site.group(1))
                body, status = page_for(i), "200 OK"
                state.homepages += 1
                state.served[i] = state.served.get(i, 0) + 1
            elif path == "/__bench/stats":  # the harness's own request: not counted
                state.requests -= 1
                state.connections -= 1
                body = json.dumps(state.snapshot(reset="reset=1" in query)).encode()
                status, content_type = "200 OK", "application/json"
            else:
                body, status = _NOT_FOUND, "404 Not Found"
                state.not_found += 1
            head = (
                f"HTTP/1.1 {status}\r\nServer: bench-farm\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: {'keep-alive' if keep else 'close'}\r\n\r\n"
            ).encode()
            writer.write(head if method == "HEAD" else head + body)
            state.bytes_sent += len(head) + len(body)
            await writer.drain()
            if not keep:
                return
    except ConnectionError:
        return
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except Exception:  # the peer went away first: nothing to do
            pass


async def _serve_farm(latency: float, keep_alive: bool, max_seconds: float) -> None:
    state = _FarmState(latency=latency, keep_alive=keep_alive)
    # A bound socket that never listens: a connection to it is refused at once (port 443).
    refused = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    refused.bind(("127.0.0.1", 0))
    server = await asyncio.start_server(
        lambda r, w: _farm_connection(r, w, state), "127.0.0.1", 0, backlog=4096, limit=256 * 1024
    )
    port = server.sockets[0].getsockname()[1]
    print(json.dumps({"port": port, "refused_port": refused.getsockname()[1], "pid": os.getpid()}), flush=True)
    parent = os.getppid()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max_seconds
    try:
        while loop.time() < deadline and os.getppid() == parent:  # gone with the harness
            await asyncio.sleep(0.5)
    finally:
        server.close()
        refused.close()


def _farm_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.bench _farm")
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--keep-alive", action="store_true")
    parser.add_argument("--max-seconds", type=float, default=6 * 3600)
    args = parser.parse_args(argv)
    asyncio.run(_serve_farm(args.latency, args.keep_alive, args.max_seconds))
    return 0


# --------------------------------------------------------------------------- raw baseline


async def _raw(port: int, n: int, concurrency: int, results: Path) -> dict[str, Any]:
    import httpx

    from scrapersky.metadata.extract import extract_metadata

    url = f"http://127.0.0.1:{port}/"
    records: list[dict[str, Any]] = []
    pending = iter(range(n))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        limits=limits,
        timeout=httpx.Timeout(60.0),
        trust_env=False,  # no proxy: the farm is on loopback
        headers={"User-Agent": "ScraperSkyBench/0.1 (raw baseline)"},
    ) as client:

        async def worker() -> None:
            for i in pending:  # shared iterator: each index taken once
                host = f"site-{i}.test"
                try:
                    response = await client.get(url, headers={"Host": host})
                    if response.status_code != 200:
                        records.append({"domain": host, "error": f"HTTP {response.status_code}"})
                        continue
                    metadata = extract_metadata(response.content, response.headers, f"http://{host}/")
                    records.append({"domain": host, "status": 200, **metadata.model_dump(mode="json")})
                except Exception as error:  # recorded, counted by the harness
                    records.append({"domain": host, "error": f"{type(error).__name__}: {error}"})

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    with results.open("w") as out:
        for record in records:
            out.write(json.dumps(record) + "\n")
    return {"records": len(records)}


def _cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _raw_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.bench _raw")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--results", type=Path, required=True)
    args = parser.parse_args(argv)
    import httpx  # noqa: F401  (imports before the clock starts, as the other contestants)

    import scrapersky.metadata.extract  # noqa: F401

    cpu, started = _cpu_self(), time.perf_counter()
    summary = asyncio.run(_raw(args.port, args.n, args.concurrency, args.results))
    summary.update(work_seconds=time.perf_counter() - started, work_cpu_seconds=_cpu_self() - cpu)
    print(json.dumps(summary), flush=True)
    return 0


# --------------------------------------------------------------------------- the flow


def _flow_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.bench _flow")
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--batch-id", required=True)
    args = parser.parse_args(argv)

    from scrapersky.flows.batch_scrape import batch_scrape
    from scrapersky.batch import BatchOptions, BatchRequest

    request = BatchRequest(
        domains=[f"site-{i}.test" for i in range(args.n)],
        batch_id=uuid.UUID(args.batch_id),
        options=BatchOptions(concurrency=args.concurrency, retries=0),
    )
    cpu, started = _cpu_self(), time.perf_counter()
    state = batch_scrape(request, return_state=True)
    summary = {
        "work_seconds": time.perf_counter() - started,
        "work_cpu_seconds": _cpu_self() - cpu,
        "state": getattr(state, "name", None),
        "state_type": str(getattr(getattr(state, "type", None), "value", None)),
        "message": getattr(state, "message", None),
        "flow_run_id": str(getattr(getattr(state, "state_details", None), "flow_run_id", None)),
    }
    print(json.dumps(summary), flush=True)
    return 0


# --------------------------------------------------------------------------- processes


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _proc_stat(pid: int) -> tuple[int, float] | None:
    """(ppid, CPU seconds of the process and its reaped children), or None when gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()
    ticks = sum(int(fields[k]) for k in (11, 12, 13, 14))  # utime stime cutime cstime
    return int(fields[1]), ticks / _CLOCK_TICKS


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds used so far by a live process and its descendants (from /proc)."""
    stats: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _proc_stat(int(entry))
            if stat is not None:
                stats[int(entry)] = stat
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    total, todo, seen = 0.0, [root], set()
    while todo and len(seen) < 10_000:
        pid = todo.pop()
        if pid in seen or pid not in stats:
            continue
        seen.add(pid)
        total += stats[pid][1]
        todo.extend(children.get(pid, []))
    return total


def _kill_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM then SIGKILL to the process group of a process started here
    (start_new_session=True: its group id is its pid)."""
    if proc.returncode is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment of a child: no inherited Prefect/ScraperSky/database settings and
    no proxies (everything stays on loopback), plus ``extra``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PREFECT_", "SCRAPERSKY_"))
        and key != "DATABASE_URL"
        and key.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
    }
    env.update(extra)
    return env


@dataclass
class _Exit:
    wall_seconds: float
    cpu_seconds: float
    max_rss_mb: float
    exit_code: int | None
    timed_out: bool
    stdout: Path
    stderr: Path


def _high_water_kib(pid: int) -> int:
    """VmHWM (peak resident set, KiB) of a running process; 0 when it cannot be read."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _run_measured(cmd: list[str], env: dict[str, str], timeout: float, logs: Path, name: str) -> _Exit:
    """Run cmd to completion (or timeout), measuring wall time and, through wait4, the
    CPU of the process (its waited-for children included) and its peak RSS."""
    stdout, stderr = logs / f"{name}.out", logs / f"{name}.err"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(
            cmd, env=env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True
        )
        deadline = started + timeout
        timed_out = False
        peak_kib = 0
        try:
            while True:
                peak_kib = max(peak_kib, _high_water_kib(proc.pid))
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if time.perf_counter() > deadline:
                    timed_out = True
                    os.killpg(proc.pid, signal.SIGKILL)
                    pid, status, usage = os.wait4(proc.pid, 0)
                    break
                time.sleep(0.02)
        except BaseException:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
                os.wait4(proc.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            proc.returncode = -9
            raise
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        # Children it left behind (it should leave none) go with it.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return _Exit(
        wall_seconds=wall,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        # The kernel's high-water mark of the process's own memory, sampled while it runs:
        # wait4's ru_maxrss would also count this (large) process's image it was forked from.
        max_rss_mb=(peak_kib or usage.ru_maxrss) / 1024,
        exit_code=None if timed_out else proc.returncode,
        timed_out=timed_out,
        stdout=stdout,
        stderr=stderr,
    )


def _last_json(path: Path) -> dict[str, Any]:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return {}
    for line in reversed(lines[-50:]):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return {}


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class BenchFarm:
    """The farm subprocess: its address, its counters, its CPU."""

    def __init__(self, *, latency: float, keep_alive: bool, max_seconds: float, logs: Path) -> None:
        cmd = [sys.executable, "-m", "benchmarks.bench", "_farm", "--latency", str(latency),
               "--max-seconds", str(max_seconds)]
        if keep_alive:
            cmd.append("--keep-alive")
        self._stderr = (logs / "farm.err").open("wb")
        self.proc = subprocess.Popen(
            cmd, env=_clean_env(), cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=self._stderr, start_new_session=True,
        )
        try:
            ready, _, _ = select.select([self.proc.stdout], [], [], 30.0)
            line = self.proc.stdout.readline() if ready else b""
            if not line:
                raise RuntimeError(f"the farm did not start: {_tail(logs / 'farm.err')}")
            info = json.loads(line)
        except BaseException:
            self.stop()
            raise
        self.port: int = info["port"]
        self.refused_port: int = info["refused_port"]

    def stats(self, reset: bool = False) -> dict[str, Any]:
        import httpx

        response = httpx.get(
            f"http://127.0.0.1:{self.port}/__bench/stats" + ("?reset=1" if reset else ""),
            headers={"Host": "farm.stats"}, timeout=10.0, trust_env=False,
        )
        response.raise_for_status()
        return response.json()

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        _kill_group(self.proc, grace=3.0)
        if self.proc.stdout:
            self.proc.stdout.close()
        self._stderr.close()


class PrefectServer:
    """``prefect server start`` on a free loopback port, with its own PREFECT_HOME."""

    def __init__(self, home: Path, logs: Path, startup_timeout: float) -> None:
        self.port = _free_port()
        self.home = home
        self.log = logs / "prefect-server.log"
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self._log = self.log.open("wb")
        prefect = shutil.which("prefect", path=str(Path(sys.executable).parent)) or "prefect"
        self.proc = subprocess.Popen(
            [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
            env=_clean_env(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false"),
            cwd=home, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            self.startup_seconds = self._wait_healthy(startup_timeout)
            self.idle_cpu_per_second = self._cpu_rate(3.0)
        except BaseException:
            self.stop()
            raise

    def _cpu_rate(self, seconds: float) -> float:
        before = self.cpu_seconds()
        time.sleep(seconds)
        return (self.cpu_seconds() - before) / seconds

    def wait_idle(self, max_seconds: float = 300.0) -> float:
        """Seconds until the server is back to its idle CPU (two quiet seconds in a row):
        it still records the events and task runs of a finished flow run for a while."""
        threshold = max(0.1, 2 * self.idle_cpu_per_second + 0.05)
        started = time.perf_counter()
        quiet = 0
        while time.perf_counter() - started < max_seconds:
            quiet = quiet + 1 if self._cpu_rate(1.0) <= threshold else 0
            if quiet >= 2:
                return time.perf_counter() - started - 2.0
        return time.perf_counter() - started

    def _wait_healthy(self, timeout: float) -> float:
        import httpx

        started = time.perf_counter()
        while time.perf_counter() - started < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the Prefect server exited ({self.proc.returncode}):\n{_tail(self.log)}")
            try:
                if httpx.get(f"{self.api_url}/health", timeout=2.0, trust_env=False).status_code == 200:
                    return time.perf_counter() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"the Prefect server was not healthy after {timeout:.0f} s:\n{_tail(self.log)}")

    def log_size(self) -> int:
        self._log.flush()
        return self.log.stat().st_size

    def log_since(self, offset: int) -> str:
        with self.log.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        _kill_group(self.proc, grace=15.0)
        self._log.close()


# --------------------------------------------------------------------------- checks


#: Lines that say the Prefect API (or the client's talk with it) went wrong.
API_ERROR_PATTERNS: dict[str, re.Pattern[str]] = {
    "503": re.compile(r"(?<![\w.:-])503(?![\w:-])|Service Unavailable"),
    "subscription queue full": re.compile(r"Subscription queue is full"),
    "PrefectHTTPStatusError": re.compile(r"PrefectHTTPStatusError"),
    "httpx error": re.compile(r"httpx\.\w*(?:Error|Timeout)|\b(?:Read|Connect|Pool|Write)Timeout\b|RemoteProtocolError"),
    "ERROR": re.compile(r"\bERROR\b"),
    # "Error flushing 3 events (0 to retry, 3 dropped)", "... dropping message for topic=..."
    "dropped events": re.compile(r"\b[1-9]\d* dropped\b|dropping message|(?i:\bevents? (?:were |was )?dropped)"),
    "Traceback": re.compile(r"Traceback \(most recent call last\)"),
}


def count_api_errors(text: str) -> tuple[int, dict[str, int], list[str]]:
    """(lines matching any pattern, lines per pattern, the first few such lines)."""
    lines, per, samples = 0, dict.fromkeys(API_ERROR_PATTERNS, 0), []
    for line in text.splitlines():
        hits = [name for name, pattern in API_ERROR_PATTERNS.items() if pattern.search(line)]
        if hits:
            lines += 1
            for name in hits:
                per[name] += 1
            if len(samples) < 8 and line.strip() not in samples:
                samples.append(line.strip()[:300])
    return lines, {k: v for k, v in per.items() if v}, samples


def _check_records(path: Path, n: int) -> tuple[int, int, list[str]]:
    """(pages fetched OK, titles right, a few problems) from a contestant's JSON lines."""
    by_domain: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    try:
        with path.open() as lines:
            for line in lines:
                if line.strip():
                    record = json.loads(line)
                    by_domain[str(record.get("domain"))] = record
    except (OSError, ValueError) as error:
        return 0, 0, [f"results unreadable: {error}"]
    ok = titles = 0
    for i in range(n):
        record = by_domain.get(f"site-{i}.test")
        if record is None:
            if len(problems) < 5:
                problems.append(f"site-{i}.test: no record")
            continue
        if record.get("error") or record.get("status") != 200:
            if len(problems) < 5:
                problems.append(f"site-{i}.test: {record.get('error') or record.get('status')}")
            continue
        ok += 1
        if title_ok(i, record.get("title")):
            titles += 1
        elif len(problems) < 5:
            problems.append(f"site-{i}.test: title {record.get('title')!r}")
    return ok, titles, problems


def _check_batch(database_url: str, batch_id: str, n: int) -> dict[str, Any]:
    """The batch as the database has it (db.batches.get_batch_status), with its titles checked."""
    from scrapersky.db import batches
    from scrapersky.db.engine import unit_of_work
    from scrapersky.batch import DEFAULT_TENANT_ID

    async def read() -> Any:
        async with unit_of_work(database_url) as session:
            return await batches.get_batch_status(session, uuid.UUID(batch_id), DEFAULT_TENANT_ID)

    try:
        report = asyncio.run(read())
    except Exception as error:
        return {"error": f"{type(error).__name__}: {error}", "pages_ok": 0, "titles_ok": 0}
    ok = titles = 0
    problems: list[str] = []
    error_types: dict[str, int] = {}
    for i in range(n):
        entry = report.domain_statuses.get(f"site-{i}.test") or {}
        if entry.get("status") != "completed":
            kind = entry.get("error_type") or "missing"
            error_types[kind] = error_types.get(kind, 0) + 1
            if len(problems) < 5:
                problems.append(f"site-{i}.test: {kind}: {entry.get('error')}")
            continue
        ok += 1
        if title_ok(i, (entry.get("metadata") or {}).get("title")):
            titles += 1
        elif len(problems) < 5:
            problems.append(f"site-{i}.test: title {(entry.get('metadata') or {}).get('title')!r}")
    return {
        "status": str(report.status),
        "total_domains": report.total_domains,
        "completed_domains": report.completed_domains,
        "failed_domains": report.failed_domains,
        "progress": report.progress,
        "processing_time": report.processing_time,
        "error": report.error,
        "error_types": error_types,
        "pages_ok": ok,
        "titles_ok": titles,
        "problems": problems,
    }


async def _init_schema(database_url: str) -> None:
    from scrapersky.db.engine import create_engine, init_schema

    engine = create_engine(database_url)
    try:
        await init_schema(engine)
    finally:
        await engine.dispose()


# --------------------------------------------------------------------------- a run


@dataclass
class Run:
    """One contestant at one N, once."""

    contestant: str
    n: int
    repeat: int
    wall_seconds: float
    work_seconds: float | None
    cpu_seconds: float
    work_cpu_seconds: float | None
    max_rss_mb: float
    exit_code: int | None
    timed_out: bool
    pages_ok: int
    titles_ok: int
    farm: dict[str, Any]
    farm_cpu_seconds: float
    server_cpu_seconds: float | None = None
    server_drain_seconds: float | None = None
    api_errors: int | None = None
    api_error_kinds: dict[str, int] = field(default_factory=dict)
    api_error_samples: list[str] = field(default_factory=list)
    state: str | None = None
    batch: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return (
            not self.timed_out
            and self.exit_code == 0
            and self.pages_ok == self.n
            and self.titles_ok == self.n
            and (self.batch is None or self.batch.get("status") == "completed")
        )

    def numbers(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            complete=self.complete,
            domains_per_second=self.n / self.wall_seconds if self.wall_seconds else None,
            cpu_seconds_per_1k=1000 * self.cpu_seconds / self.n,
            work_cpu_seconds_per_1k=(
                1000 * self.work_cpu_seconds / self.n if self.work_cpu_seconds is not None else None
            ),
            server_cpu_seconds_per_1k=(
                1000 * self.server_cpu_seconds / self.n if self.server_cpu_seconds is not None else None
            ),
        )
        return data


@dataclass
class _Setup:
    farm: BenchFarm
    server: PrefectServer | None
    concurrency: int
    timeout: float | None
    logs: Path
    work: Path
    database_url: str | None
    prefect_home: Path | None
    flow_env: dict[str, str] = field(default_factory=dict)


def _timeout_for(setup: _Setup, n: int) -> float:
    return setup.timeout if setup.timeout else 120.0 + 0.18 * n  # 10k: 32 min


def _run_one(setup: _Setup, contestant: str, n: int, repeat: int) -> Run:
    name = f"{contestant}-n{n}-r{repeat}"
    results = setup.work / f"{name}.jsonl"
    c = str(setup.concurrency)
    server_cpu = server_log = None
    batch_id = str(uuid.uuid4())
    database_url = None
    if contestant == "raw":
        cmd = [sys.executable, "-m", "benchmarks.bench", "_raw", "--port", str(setup.farm.port),
               "--n", str(n), "--concurrency", c, "--results", str(results)]
        env = _clean_env()
    elif contestant == "scrapy":
        cmd = [sys.executable, "-m", "benchmarks.spider", "--port", str(setup.farm.port),
               "--n", str(n), "--concurrency", c, "--results", str(results)]
        env = _clean_env()
    elif contestant == "flow":
        assert setup.server is not None and setup.prefect_home is not None
        database_url = setup.database_url or f"sqlite+aiosqlite:///{setup.work / (name + '.db')}"
        if database_url.startswith(("postgres", "postgresql")):
            asyncio.run(_init_schema(database_url))  # a PostgreSQL schema is created on purpose
        cmd = [sys.executable, "-m", "benchmarks.bench", "_flow", "--n", str(n), "--concurrency", c,
               "--batch-id", batch_id]
        env = _clean_env(
            PREFECT_API_URL=setup.server.api_url,
            PREFECT_HOME=str(setup.prefect_home),
            PREFECT_LOGGING_LEVEL="WARNING",
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            SCRAPERSKY_CONNECT_TO=(
                f"*.test:80:127.0.0.1:{setup.farm.port} *.test:443:127.0.0.1:{setup.farm.refused_port}"
            ),
            DATABASE_URL=database_url,
        )
        env.update(setup.flow_env)  # e.g. SCRAPERSKY_* settings under comparison
        server_cpu = setup.server.cpu_seconds()
        server_log = setup.server.log_size()
    else:
        raise ValueError(f"unknown contestant {contestant!r}")

    setup.farm.stats(reset=True)
    farm_cpu = setup.farm.cpu_seconds()
    done = _run_measured(cmd, env, _timeout_for(setup, n), setup.logs, name)
    farm_cpu = setup.farm.cpu_seconds() - farm_cpu
    farm = setup.farm.stats(reset=True)
    summary = _last_json(done.stdout)
    run = Run(
        contestant=contestant, n=n, repeat=repeat,
        wall_seconds=done.wall_seconds, work_seconds=summary.get("work_seconds"),
        cpu_seconds=done.cpu_seconds, work_cpu_seconds=summary.get("work_cpu_seconds"),
        max_rss_mb=done.max_rss_mb, exit_code=done.exit_code, timed_out=done.timed_out,
        pages_ok=0, titles_ok=0, farm=farm, farm_cpu_seconds=farm_cpu,
    )
    if done.timed_out:
        run.problems.append(f"timed out after {_timeout_for(setup, n):.0f} s")
    elif done.exit_code != 0:
        run.problems.append(f"exit code {done.exit_code}: {_tail(done.stderr, 8)}")
    if contestant in ("raw", "scrapy"):
        run.pages_ok, run.titles_ok, problems = _check_records(results, n)
        run.problems += problems
        if contestant == "scrapy":
            errors, kinds, samples = count_api_errors(done.stderr.read_text(errors="replace"))
            if errors:
                run.problems.append(f"{errors} error lines on stderr: {samples[:2]}")
    else:
        assert setup.server is not None and server_cpu is not None and server_log is not None
        # The server goes on recording the run's events after the flow process exits:
        # its CPU and its log lines are counted until it is idle again.
        run.server_drain_seconds = setup.server.wait_idle()
        run.server_cpu_seconds = setup.server.cpu_seconds() - server_cpu
        text = (
            done.stdout.read_text(errors="replace")
            + "\n" + done.stderr.read_text(errors="replace")
            + "\n" + setup.server.log_since(server_log)
        )
        run.api_errors, run.api_error_kinds, run.api_error_samples = count_api_errors(text)
        run.state = summary.get("state") or ("timed out" if done.timed_out else "no state")
        run.batch = _check_batch(database_url, batch_id, n)
        run.pages_ok, run.titles_ok = run.batch.pop("pages_ok"), run.batch.pop("titles_ok")
        run.problems += run.batch.pop("problems", [])
        if run.batch.get("error") and run.batch.get("status") is None:
            run.problems.append(f"batch unreadable: {run.batch['error']}")
    if farm.get("unique_homepages") != n:
        run.problems.append(f"the farm served {farm.get('unique_homepages')} of {n} homepages")
    return run


# --------------------------------------------------------------------------- report


def _median(values: list[Any]) -> Any:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(runs: list[Run]) -> list[dict[str, Any]]:
    """Medians per (contestant, N), in run order."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run.contestant, run.n), []).append(run.numbers())
    rows = []
    for (contestant, n), items in groups.items():
        row: dict[str, Any] = {"contestant": contestant, "n": n, "repeats": len(items)}
        for key in ("wall_seconds", "work_seconds", "domains_per_second", "cpu_seconds_per_1k",
                    "work_cpu_seconds_per_1k", "server_cpu_seconds_per_1k", "server_drain_seconds",
                    "max_rss_mb", "api_errors",
                    "farm_cpu_seconds"):
            row[key] = _median([item[key] for item in items])
        row["pages_ok"] = min(item["pages_ok"] for item in items)
        row["titles_ok"] = min(item["titles_ok"] for item in items)
        row["complete"] = all(item["complete"] for item in items)
        row["states"] = sorted({item["state"] for item in items if item["state"]})
        rows.append(row)
    return rows


def ratios(rows: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """flow/raw and flow/scrapy per N: wall time and CPU per 1,000 domains."""
    by = {(row["contestant"], row["n"]): row for row in rows}
    result: dict[str, dict[str, float | None]] = {}
    for n in sorted({row["n"] for row in rows}):
        flow = by.get(("flow", n))
        if flow is None:
            continue
        entry: dict[str, float | None] = {}
        for peer in ("raw", "scrapy"):
            other = by.get((peer, n))
            if other is None:
                continue
            for key, label in (("wall_seconds", "wall"), ("cpu_seconds_per_1k", "cpu")):
                a, b = flow.get(key), other.get(key)
                entry[f"{label}_flow_over_{peer}"] = a / b if a and b else None
            a, b = flow.get("cpu_seconds_per_1k"), other.get("cpu_seconds_per_1k")
            server = flow.get("server_cpu_seconds_per_1k") or 0.0
            entry[f"cpu_with_server_flow_over_{peer}"] = (a + server) / b if a and b else None
        if entry:
            result[str(n)] = entry
    return result


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def print_report(rows: list[dict[str, Any]], ratio: dict[str, dict[str, float | None]], header: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(170, shutil.get_terminal_size((170, 40)).columns), highlight=False)
    table = Table(title=header, title_justify="left")
    for column, justify in (
        ("N", "right"), ("contestant", "left"), ("wall s", "right"), ("work s", "right"),
        ("domains/s", "right"), ("CPU s/1k", "right"), ("work CPU s/1k", "right"),
        ("server CPU s/1k", "right"), ("server drain s", "right"), ("peak RSS MB", "right"), ("pages OK", "right"),
        ("titles OK", "right"), ("API errors", "right"), ("final state", "left"),
    ):
        table.add_column(column, justify=justify)
    for row in rows:
        style = None if row["complete"] else "bold red"
        table.add_row(
            str(row["n"]), row["contestant"], _fmt(row["wall_seconds"]), _fmt(row["work_seconds"]),
            _fmt(row["domains_per_second"], 1), _fmt(row["cpu_seconds_per_1k"]),
            _fmt(row["work_cpu_seconds_per_1k"]), _fmt(row["server_cpu_seconds_per_1k"]),
            _fmt(row["server_drain_seconds"], 1),
            _fmt(row["max_rss_mb"], 0), f"{row['pages_ok']}/{row['n']}", f"{row['titles_ok']}/{row['n']}",
            _fmt(row["api_errors"]), ",".join(row["states"]) or "-", style=style,
        )
    console.print(table)
    for n, entry in ratio.items():
        parts = [f"{key.replace('_', ' ')} = {_fmt(value)}" for key, value in entry.items()]
        console.print(f"N={n}: " + "; ".join(parts))


def _git_revision() -> str | None:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


# --------------------------------------------------------------------------- main


def run_benchmark(args: argparse.Namespace) -> tuple[list[Run], dict[str, Any]]:
    """Start the farm (and the Prefect server when the flow runs), run every contestant
    at every N, interleaved, ``args.repeat`` times; everything started is stopped."""
    contestants = [c for c in CONTESTANTS if c in args.contestants]
    keep = args.keep_logs
    work = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="scrapersky-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    budget = sum(
        (args.timeout or 120.0 + 0.18 * n) for n in args.n for _ in contestants
    ) * args.repeat + 600
    farm = server = None
    runs: list[Run] = []
    meta: dict[str, Any] = {}
    previous_handler = None
    if threading.current_thread() is threading.main_thread():
        # SIGTERM unwinds like Ctrl-C, so the farm and the server are stopped (finally).
        def interrupted(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt(f"signal {signum}")

        previous_handler = signal.signal(signal.SIGTERM, interrupted)
    try:
        if "flow" in contestants:  # the slow one first: it starts while the farm does
            home = work / "prefect-home"
            home.mkdir(exist_ok=True)
            server_started = time.perf_counter()
            server = PrefectServer(home, logs, args.prefect_startup_timeout)
            meta["prefect_server_startup_seconds"] = time.perf_counter() - server_started
        farm = BenchFarm(latency=args.latency, keep_alive=args.keep_alive, max_seconds=budget, logs=logs)
        setup = _Setup(
            farm=farm, server=server, concurrency=args.concurrency, timeout=args.timeout, logs=logs,
            work=work, database_url=args.database_url, prefect_home=server.home if server else None,
            flow_env=dict(args.flow_env),
        )
        for repeat in range(args.repeat):
            for n in args.n:
                for contestant in contestants:
                    if not args.quiet:
                        print(f"[bench] {contestant} N={n} repeat {repeat + 1}/{args.repeat} ...",
                              file=sys.stderr, flush=True)
                    run = _run_one(setup, contestant, n, repeat)
                    runs.append(run)
                    if not args.quiet:
                        busy = run.farm_cpu_seconds / run.wall_seconds if run.wall_seconds else 0.0
                        print(
                            f"[bench]   {run.wall_seconds:.2f} s, {run.pages_ok}/{n} pages, "
                            f"{run.titles_ok}/{n} titles, CPU {run.cpu_seconds:.2f} s"
                            + (f", server CPU {run.server_cpu_seconds:.2f} s (drained"
                               f" {run.server_drain_seconds:.1f} s after)" if run.server_cpu_seconds else "")
                            + f", farm {100 * busy:.0f}% of a core"
                            + (f"; problems: {run.problems[:3]}" if run.problems else ""),
                            file=sys.stderr, flush=True,
                        )
    finally:
        if farm is not None:
            farm.stop()
        if server is not None:
            offset = server.log_size()
            server.stop()
            # What the server logs as it stops (e.g. a recorder cancelled mid-flush) is no run's.
            lines, kinds, samples = count_api_errors(server.log_since(offset))
            meta["server_shutdown_error_lines"] = {"lines": lines, "kinds": kinds, "samples": samples[:3]}
            meta["prefect_server_idle_cpu_per_second"] = server.idle_cpu_per_second
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            meta["work_dir"] = str(work)
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
    return runs, meta


def _key_value(text: str) -> tuple[str, str]:
    key, equals, value = text.partition("=")
    if not equals or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key.strip(), value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench",
        description="The batch flow beside a raw asyncio+httpx baseline and a Scrapy peer, on one local web farm.",
    )
    parser.add_argument("--n", type=int, action="append", help="domains per run (repeatable; default 1000)")
    parser.add_argument("--latency", type=float, default=0.1, help="seconds before the farm answers (default 0.1)")
    parser.add_argument("--concurrency", type=int, default=50, help="fetches at the same time (default 50)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each contestant at each N; medians shown")
    parser.add_argument("--contestants", default="raw,scrapy,flow",
                        help="comma-separated subset of raw,scrapy,flow (default all)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds per contestant run (default 120 + 0.18 N: 32 min at 10k)")
    parser.add_argument("--database-url", default=None,
                        help="the flow's DATABASE_URL (default: a fresh SQLite file per run)")
    parser.add_argument("--flow-env", action="append", default=[], metavar="KEY=VALUE", type=_key_value,
                        help="an environment variable for the flow process (repeatable), e.g."
                             " SCRAPERSKY_READ_TIMEOUT=5; inherited PREFECT_*/SCRAPERSKY_* are not passed")
    parser.add_argument("--keep-alive", action="store_true", help="let clients reuse farm connections")
    parser.add_argument("--prefect-startup-timeout", type=float, default=180.0)
    parser.add_argument("--json", dest="json_path", default=None, help="write every number to this file")
    parser.add_argument("--keep-logs", default=None, metavar="DIR",
                        help="keep logs, results and databases in DIR (default: a temporary dir, removed)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return parser


_ROLES = {"_farm": _farm_main, "_raw": _raw_main, "_flow": _flow_main}


def main(argv: list[str] | None = None) -> int:
    """The benchmark command; 0 when every contestant fetched every page and title."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in _ROLES:
        return _ROLES[argv[0]](argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    args.n = args.n or [1000]
    args.contestants = [c.strip() for c in args.contestants.split(",") if c.strip()]
    unknown = set(args.contestants) - set(CONTESTANTS)
    if unknown or not args.contestants:
        parser.error(f"--contestants: unknown {sorted(unknown)}; choose among {', '.join(CONTESTANTS)}")
    if any(n < 1 or n > 100_000 for n in args.n) or args.repeat < 1 or args.concurrency < 1:
        parser.error("--n must be 1..100000, --repeat and --concurrency at least 1")

    started = time.time()
    runs, meta = run_benchmark(args)
    rows = summarize(runs)
    ratio = ratios(rows)
    revision = _git_revision()
    header = (
        f"scrapersky bench @ {revision or '?'}: latency {args.latency} s, concurrency {args.concurrency}, "
        f"repeat {args.repeat}, {os.cpu_count()} CPUs"
        + (", keep-alive" if args.keep_alive else ", one connection a domain")
    )
    print_report(rows, ratio, header)
    incomplete = [row for row in rows if not row["complete"]]
    for run in runs:
        if not run.complete:
            print(f"INCOMPLETE {run.contestant} N={run.n} repeat {run.repeat + 1}: "
                  f"{run.pages_ok}/{run.n} pages, {run.titles_ok}/{run.n} titles; {run.problems[:5]}")
        if run.api_error_samples:
            print(f"{run.contestant} N={run.n} repeat {run.repeat + 1}: {run.api_errors} API error lines "
                  f"{run.api_error_kinds}; first: {run.api_error_samples[:3]}")
    if args.json_path:
        document = {
            "git": revision,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
            "duration_seconds": time.time() - started,
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "platform": platform.platform()},
            "args": {k: v for k, v in vars(args).items() if k != "database_url"},
            "database": "postgresql" if (args.database_url or "").startswith("postgres") else "sqlite",
            **meta,
            "summary": rows,
            "ratios": ratio,
            "runs": [run.numbers() for run in runs],
        }
        Path(args.json_path).write_text(json.dumps(document, indent=2, default=str))
    return 1 if incomplete else 0


if __name__ == "__main__":
    sys.exit(main())
