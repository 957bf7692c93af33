"""A local web farm: any number of virtual domains served from one loopback server.

Used by the demo, the tests and the benchmark (``python -m benchmarks.bench``), together
with connect-to rules (``Farm.connect_to()``). One asyncio event loop, in a thread of
its own, serves every connection: thousands of domains at a time cost it no thread each.
What a domain serves is chosen by its first label's prefix:

    ok-*        a complete homepage (title, description, og tags, icon, canonical)
    notitle-*   a page without <title>           nested-*   markup inside <title>
    empty-*     200 with an empty body            binary-*   application/octet-stream
    notfound-*  404                               err500-*   500, always
    flaky-*     503 on the first request, then the homepage
    big-*       a 3 MB page (its head first)      loop-*     redirects to itself
    moved-*     redirects to ok-<rest>           refresh-*  a meta refresh to ok-<rest>
    chain-<n>.*  a meta refresh to chain-<n+1>.* (an endless chain)
    hops-<n>.*  an endless chain that alternates: an even n redirects (301) to
                hops-<n+1>.*, an odd n answers a meta refresh to it
    slowchain-<n>.*  a meta refresh to slowchain-<n+1>.* after 0.3 s
    real-<i>.*  a realistic web, behaviour fixed by a hash of the name (``real_host``):
                75% a 45-75 KB homepage dense with tags after a lognormal delay
                (median 0.5 s, capped at 3 s), 7% hang (30 s, then close), 5% 503
                once then the page, 5% 404, 8% a 301 to www.real-<i>.*, which
                serves the page (every answer after the host's delay; the 301 at once)
    site-<i>.*  a realistic 30-100 KB homepage (``site_page(i)``: size fixed by i, full
                head, JSON-LD, scripts, navigation, a footer with contacts) after
                ``Farm(latency=...)`` seconds, at ``/`` only (404 elsewhere)

Hostile ones, for the failure tests (each bounded in bytes and time):

    slowheaders-*  headers after 5 s               trickle-*   a body at one byte a second
    dribble-*      its status line and headers one byte every 0.2 s (for 20 s at most)
    bomb-*         1 GB of zeros gzipped to ~1 MB   huge-*      a 50 MB HTML page
    tolocal-*      redirects to the trap on 127.0.0.2 (a listener counting connections)
    binaryhtml-*   binary bytes served as text/html badcharset-*  charset=no-such-charset
    ratelimited-*  429 with Retry-After: 1, then the homepage
    reset-*        a connection reset in the middle of the body
    robots-*       a robots.txt that disallows everything
    delay-*        the homepage after 0.2 s (a batch that takes a while)
    giantmeta-*    a 3.5 MB head: megabytes of title, description and og:* values
    hang-*         accepts the request, answers nothing (for 60 s at most)

Domains under ``.refused.test`` get "connection refused"; under ``.selfsigned.test``
a TLS server with a self-signed certificate answers on 443. Port 443 is refused for
every other domain, so fetches fall back to http as they do against a site without
TLS. One request a connection (``Connection: close``, as for distinct real sites).
Only loopback addresses are ever used.
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import struct
import tempfile
import threading
import zlib
from collections import Counter, deque
from functools import cache
from http import HTTPStatus
from pathlib import Path
from types import TracebackType
from typing import Any

from .farm_pages import (
    REAL_HANG_SECONDS,
    giant_meta_page,
    homepage,
    real_host,
    real_page,
    real_title,
    site_page,
    site_page_size,
    site_title,
)

HUGE_PAGE_BYTES = 50 * 1024 * 1024
BOMB_BYTES = 1024 * 1024 * 1024
_HTML = "text/html; charset=utf-8"
_SITE = re.compile(r"site-(\d{1,9})")
_QUIET = (ConnectionError, TimeoutError, ssl.SSLError, asyncio.IncompleteReadError, asyncio.LimitOverrunError)

__all__ = ["Farm", "homepage", "real_host", "real_page", "real_title", "site_page", "site_page_size", "site_title"]


# --------------------------------------------------------------------------- the server


@cache
def gzip_bomb() -> bytes:
    """1 GB of zeros, gzipped (about 1 MB); made once per process."""
    compressor = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(1024 * 1024)
    parts = [compressor.compress(block) for _ in range(BOMB_BYTES // len(block))]
    return b"".join(parts) + compressor.flush()


def _self_signed_context() -> ssl.SSLContext:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "selfsigned.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("*.selfsigned.test")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    folder = Path(tempfile.mkdtemp(prefix="scrapersky-farm-tls-"))
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    return context


def _listening(host: str, port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(4096)
    sock.setblocking(False)
    return sock


class _Trap:
    """A listener on 127.0.0.2 that only counts the connections it receives."""

    def __init__(self) -> None:
        self.socket = _listening("127.0.0.2")
        self.connections = 0

    async def accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.close()


class Farm:
    """The farm server; use as a context manager. Its sockets listen from construction
    on; ``__enter__`` starts serving them, ``__exit__`` stops and closes them."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, latency: float = 0.1) -> None:
        self.latency = latency  # before a site-<i> page
        self._hits: Counter[str] = Counter()
        self._arrivals: deque[str] = deque(maxlen=100_000)  # the Host of each GET, in order
        self._lock = threading.Lock()
        self._counts = {"connections": 0, "bytes_sent": 0, "not_found": 0}
        self.trap = _Trap()
        self._plain = _listening(host, port)
        self._address: tuple[str, int] = self._plain.getsockname()
        self._tls = _listening(host)
        self._tls_context = _self_signed_context()
        # A bound socket that never listens: connecting to it is refused at once,
        # and no other process can take its port meanwhile.
        self._closed = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._closed.bind((host, 0))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._servers: list[asyncio.AbstractServer] = []

    @property
    def host(self) -> str:
        return self._address[0]

    @property
    def port(self) -> int:
        return self._address[1]

    @property
    def refused_port(self) -> int:
        return self._closed.getsockname()[1]

    @property
    def hits(self) -> Counter[str]:
        """GET requests received, by Host."""
        with self._lock:
            return Counter(self._hits)

    @property
    def arrivals(self) -> list[str]:
        """The Host of each GET request, in the order they arrived (the last 100,000)."""
        with self._lock:
            return list(self._arrivals)

    def stats(self, reset: bool = False) -> dict[str, int]:
        """Counters since the start (or the last reset): connections, requests, distinct
        hosts requested, 404s, bytes sent. ``reset`` also clears ``hits``."""
        with self._lock:
            counts = dict(self._counts, requests=sum(self._hits.values()), hosts=len(self._hits))
            if reset:
                self._hits.clear()
                self._arrivals.clear()
                self._counts = dict.fromkeys(self._counts, 0)
        return counts

    def connect_to(self, suffix: str = "test") -> list[str]:
        return [
            f"*.{suffix}:80:{self.host}:{self.port}",
            f"*.{suffix}:443:{self.host}:{self.refused_port}",
            f"*.refused.{suffix}::{self.host}:{self.refused_port}",
            f"*.selfsigned.{suffix}:443:{self.host}:{self._tls.getsockname()[1]}",
            f"*.selfsigned.{suffix}:80:{self.host}:{self.refused_port}",
        ]

    def __enter__(self) -> Farm:
        started = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, args=(started,), name="scrapersky-farm", daemon=True)
        self._thread.start()
        started.wait()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._loop is not None and self._thread is not None:
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=30)
            self._thread.join(timeout=30)
            self._loop.close()
        for sock in (self._plain, self._tls, self._closed, self.trap.socket):
            sock.close()

    # ------------------------------------------------------------------ the loop

    def _run(self, started: threading.Event) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        loop.set_exception_handler(self._exception)

        async def serve() -> None:
            self._servers = [
                await asyncio.start_server(self._connection, sock=self._plain, limit=256 * 1024),
                await asyncio.start_server(self._connection, sock=self._tls, ssl=self._tls_context),
                await asyncio.start_server(self.trap.accept, sock=self.trap.socket),
            ]

        loop.run_until_complete(serve())
        started.set()
        loop.run_forever()

    @staticmethod
    def _exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if not isinstance(context.get("exception"), _QUIET):  # a client hanging up is no error
            loop.default_exception_handler(context)

    async def _stop(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        asyncio.get_running_loop().call_soon(asyncio.get_running_loop().stop)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._counts["connections"] += 1
        try:
            raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30.0)
            lines = raw.decode("latin-1").split("\r\n")
            request = lines[0].split()
            headers = {}
            for line in lines[1:]:
                name, colon, value = line.partition(":")
                if colon:
                    headers[name.strip().lower()] = value.strip()
            if len(request) != 3 or request[0] != "GET":
                await _Response(writer, self).send(501, b"<h1>not implemented</h1>")
                return
            authority = headers.get("host", "").lower()
            host = authority.split(":")[0]
            with self._lock:
                self._hits[host] += 1
                self._arrivals.append(host)
                hits = self._hits[host]
            await self._answer(_Response(writer, self, authority), host, request[1], hits)
        except _QUIET + (asyncio.CancelledError,):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _answer(self, out: _Response, host: str, path: str, hits: int) -> None:
        name = host.split(".")[0]
        prefix = name.split("-", 1)[0] + "-" if "-" in name else ""
        site = _SITE.fullmatch(name)
        real = real_host(host)
        if real is not None:
            await self._real(out, real, host, path, hits)
        elif site:
            if path == "/":
                await asyncio.sleep(self.latency)
                await out.send(200, site_page(int(site.group(1))))
            else:
                await out.send(404, b"<!doctype html><html><head><title>404 Not Found</title></head>"
                                    b"<body><h1>Not found</h1></body></html>")
        elif prefix in _HOSTILE:
            await _HOSTILE[prefix](self, out, name, host, path, hits)
        elif prefix == "delay-":
            await asyncio.sleep(0.2)
            await out.send(200, homepage(host))
        elif prefix == "err500-":
            await out.send(500, b"<h1>boom</h1>")
        elif prefix == "notfound-":
            await out.send(404, b"<h1>not here</h1>")
        elif prefix == "flaky-" and hits == 1:
            await out.send(503, b"<h1>try later</h1>")
        elif prefix == "big-":
            await out.send(200, homepage(host) + b"<p>" + b"x" * 3_000_000 + b"</p>")
        elif prefix == "loop-":
            await out.redirect(f"http://{host}/")
        elif prefix == "moved-":
            await out.redirect(f"http://ok-{host.split('-', 1)[1]}/")
        elif prefix == "refresh-":
            target = f"http://ok-{host.split('-', 1)[1]}/"
            await out.send(200, f"<html><head><meta http-equiv='refresh' content='0; url={target}'>"
                                "<title>Moved</title></head><body></body></html>".encode())
        elif prefix == "chain-" and name[6:].isdigit():
            rest = host.split(".", 1)[1]
            await out.send(200, f"<html><head><meta http-equiv='refresh' content='0; url=http://chain-"
                                f"{int(name[6:]) + 1}.{rest}/'><title>Next</title></head></html>".encode())
        elif prefix == "hops-" and name[5:].isdigit():
            n, rest = int(name[5:]), host.split(".", 1)[1]
            if n % 2 == 0:
                await out.redirect(f"http://hops-{n + 1}.{rest}/")
            else:
                await out.send(200, f"<html><head><meta http-equiv='refresh' content='0; url=http://hops-"
                                    f"{n + 1}.{rest}/'><title>Next</title></head></html>".encode())
        elif prefix == "slowchain-" and name[10:].isdigit():
            rest = host.split(".", 1)[1]
            await asyncio.sleep(0.3)
            await out.send(200, f"<html><head><meta http-equiv='refresh' content='0; url=http://slowchain-"
                                f"{int(name[10:]) + 1}.{rest}/'><title>Next</title></head></html>".encode())
        elif prefix == "empty-":
            await out.send(200, b"")
        elif prefix == "binary-":
            await out.send(200, bytes(range(256)) * 8, "application/octet-stream")
        elif prefix == "notitle-":
            await out.send(200, b"<html><head><meta name='description' content='untitled'></head>"
                                b"<body>no title</body></html>")
        elif prefix == "nested-":
            await out.send(200, b"<html><head><title>Nested <b>bold</b> <i>title</i></title></head>"
                                b"<body></body></html>")
        else:
            await out.send(200, homepage(host))

    async def _real(self, out: _Response, real: Any, host: str, path: str, hits: int) -> None:
        """A host of the realistic web (``farm_pages.real_host``)."""
        if real.kind == "www" and not host.startswith("www."):
            # Built from the Host header, as servers do: a client that named the port
            # (the benchmark's peers, without connect-to rules) is sent back to it.
            await out.redirect(f"http://www.{out.authority or host}{path}")
            return
        if real.kind == "hang":
            await asyncio.sleep(REAL_HANG_SECONDS)
            return
        await asyncio.sleep(real.delay)
        if path != "/" or real.kind == "missing":
            await out.send(404, b"<!doctype html><html><head><title>404 Not Found</title></head>"
                                b"<body><h1>Not found</h1></body></html>")
        elif real.kind == "flaky" and hits == 1:
            await out.send(503, b"<h1>Service Unavailable</h1>")
        else:
            await out.send(200, real_page(real.index))

    # ------------------------------------------------------------------ hostile kinds

    async def _slowheaders(self, out: _Response, name: str, host: str, path: str, hits: int) -> None:
        await asyncio.sleep(5)
        await out.send(200, homepage(host))

    async def _trickle(self, out: _Response, name: str, host: str, path: str, hits: int) -> None:
        await out.head(200, "text/html", 100_000)
        for _ in range(30):  # bounded: 30 bytes, 30 seconds at most
            await out.write(b"<")
            await asyncio.sleep(1)

    async def _dribble(self, out: _Response, name: str, host: str, path: str, hits: int) -> None:
        head = out.response_head(200, _HTML, len(homepage(host)), {f"X-Filler-{i}": "x" * 40 for i in range(20)})
        for byte in head[:100]:  # bounded: 100 bytes, 20 seconds at most
            await out.write(bytes([byte]))
            await asyncio.sleep(0.2)

    async def _bomb(self, out: _Response, name: str, host: str, path: str, hits: int) -> None:
        body = await asyncio.to_thread(gzip_bomb)  # a few seconds the first time: not in the loop
        await out.send(200, body, "text/html", {"Content-Encoding": "gzip"})

    async def _huge(self, out: _Response, name: str, host: str, path: str, hits: int) -> None:
        head = f"<html><head><title>{name}</title></head><body>".encode()
        block = b"<p>" + b"lorem ipsum " * 85 + b"</p>\n"  # about 1 KB
        count = HUGE_PAGE_BYTES // len(block)
        await out.head(200, _HTML, len(head) + count * len(block))
        await out.write(head)
        for done in range(0, count, 256):  # the client stops reading at its cap
            await out.write(block * min(256, count - done))

    async def _tolocal(self, out: _Response, name: str, host: str, path: str, hits: int) -> None:
        address, port = self.trap.socket.getsockname()
        await out.redirect(f"http://{address}:{port}/")

    async def _binaryhtml(self, out: _Response, name: str, host: str, path: str, hits: int) -> None:
        await out.send(200, bytes(range(256)) * 16, "text/html")

    async def _badcharset(self, out: _Response, name: str, host: str, path: str, hits: int) -> None:
        await out.send(200, homepage(host), "text/html; charset=no-such-charset")

    async def _ratelimited(self, out: _Response, name: str, host: str, path: str, hits: int) -> None:
        if hits == 1:
            await out.send(429, b"", extra={"Retry-After": "1"})
        else:
            await out.send(200, homepage(host))

    async def _robots(self, out: _Response, name: str, host: str, path: str, hits: int) -> None:
        if path == "/robots.txt":
            await out.send(200, b"User-agent: *\nDisallow: /\n", "text/plain")
        else:
            await out.send(200, homepage(host))

    async def _giantmeta(self, out: _Response, name: str, host: str, path: str, hits: int) -> None:
        await out.send(200, giant_meta_page())

    async def _hang(self, out: _Response, name: str, host: str, path: str, hits: int) -> None:
        await asyncio.sleep(60)

    async def _reset(self, out: _Response, name: str, host: str, path: str, hits: int) -> None:
        await out.head(200, "text/html", 100_000)
        await out.write(homepage(host)[:300])
        # SO_LINGER 0: close with a TCP reset, mid-body.
        sock = out.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        out.writer.transport.abort()


_HOSTILE = {
    "slowheaders-": Farm._slowheaders, "trickle-": Farm._trickle, "bomb-": Farm._bomb, "huge-": Farm._huge,
    "tolocal-": Farm._tolocal, "dribble-": Farm._dribble, "binaryhtml-": Farm._binaryhtml, "badcharset-": Farm._badcharset,
    "ratelimited-": Farm._ratelimited, "robots-": Farm._robots, "reset-": Farm._reset,
    "giantmeta-": Farm._giantmeta, "hang-": Farm._hang,
}


class _Response:
    """Writes one response on a connection, counting its bytes."""

    def __init__(self, writer: asyncio.StreamWriter, farm: Farm, authority: str = "") -> None:
        self.writer = writer
        self._farm = farm
        self.authority = authority  # the request's Host header

    def _head(self, status: int, content_type: str | None, length: int, extra: dict[str, str] | None) -> bytes:
        if status == 404:
            self._farm._counts["not_found"] += 1
        lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", "Server: scrapersky-farm"]
        if content_type:
            lines.append(f"Content-Type: {content_type}")
        lines += [f"{key}: {value}" for key, value in (extra or {}).items()]
        lines += [f"Content-Length: {length}", "Connection: close", "", ""]
        return "\r\n".join(lines).encode("latin-1")

    def response_head(self, status: int, content_type: str | None, length: int,
                      extra: dict[str, str] | None = None) -> bytes:
        """The status line and headers, not sent."""
        return self._head(status, content_type, length, extra)

    async def head(self, status: int, content_type: str | None, length: int,
                   extra: dict[str, str] | None = None) -> None:
        await self.write(self._head(status, content_type, length, extra))

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        self._farm._counts["bytes_sent"] += len(data)
        await self.writer.drain()

    async def send(self, status: int, body: bytes, content_type: str = _HTML,
                   extra: dict[str, str] | None = None) -> None:
        await self.write(self._head(status, content_type, len(body), extra) + body)

    async def redirect(self, location: str) -> None:
        await self.head(301, None, 0, {"Location": location})
