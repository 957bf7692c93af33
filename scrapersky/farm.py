"""A local web farm: any number of virtual domains served from one loopback server.

Used by the demo, the tests and the benchmarks, together with connect-to rules
(``Farm.connect_to()``). What a domain serves is chosen by its first label's prefix:

    ok-*        a complete homepage (title, description, og tags, icon, canonical)
    notitle-*   a page without <title>           nested-*   markup inside <title>
    empty-*     200 with an empty body            binary-*   application/octet-stream
    notfound-*  404                               err500-*   500, always
    flaky-*     503 on the first request, then the homepage
    big-*       a 3 MB page (its head first)      loop-*     redirects to itself
    moved-*     redirects to ok-<rest>           refresh-*  a meta refresh to ok-<rest>
    chain-<n>.*  a meta refresh to chain-<n+1>.* (an endless chain)

Hostile ones, for the failure tests (each bounded in bytes and time):

    slowheaders-*  headers after 5 s               trickle-*   a body at one byte a second
    bomb-*         1 GB of zeros gzipped to ~1 MB   huge-*      a 50 MB HTML page
    tolocal-*      redirects to the trap on 127.0.0.2 (a listener counting connections)
    binaryhtml-*   binary bytes served as text/html badcharset-*  charset=no-such-charset
    ratelimited-*  429 with Retry-After: 1, then the homepage
    reset-*        a connection reset in the middle of the body
    robots-*       a robots.txt that disallows everything
    delay-*        the homepage after 0.2 s (a batch that takes a while)

Domains under ``.refused.test`` get "connection refused"; under ``.selfsigned.test``
a TLS server with a self-signed certificate answers on 443. Port 443 is refused for
every other domain, so fetches fall back to http as they do against a site without
TLS. Only loopback addresses are ever used.
"""

from __future__ import annotations

import socket
import ssl
import struct
import tempfile
import threading
import time
import zlib
from collections import Counter
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType

HUGE_PAGE_BYTES = 50 * 1024 * 1024
BOMB_BYTES = 1024 * 1024 * 1024

__all__ = ["Farm", "homepage"]


def homepage(host: str) -> bytes:
    name = host.split(".")[0]
    return f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>{name} | Farm</title>
  <meta name="description" content="The homepage of {host}.">
  <meta name="keywords" content="farm, {name}">
  <meta property="og:title" content="{name}">
  <meta property="og:site_name" content="{name} site">
  <meta property="og:image" content="/img/og.png">
  <link rel="canonical" href="http://{host}/">
  <link rel="icon" href="/static/favicon.png">
</head>
<body><h1>{name}</h1><p>Welcome to {host}.</p></body>
</html>""".encode()


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


class _Handler(BaseHTTPRequestHandler):
    server: _FarmServer
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        host = (self.headers.get("Host") or "").split(":")[0].lower()
        with self.server.lock:
            self.server.hits[host] += 1
            hits = self.server.hits[host]
        name = host.split(".")[0]
        if self._hostile(name, host, hits):
            return
        if name.startswith("delay-"):
            time.sleep(0.2)
            self._send(200, homepage(host))
            return
        if name.startswith("err500-"):
            self._send(500, b"<h1>boom</h1>")
        elif name.startswith("notfound-"):
            self._send(404, b"<h1>not here</h1>")
        elif name.startswith("flaky-") and hits == 1:
            self._send(503, b"<h1>try later</h1>")
        elif name.startswith("big-"):
            self._send(200, homepage(host) + b"<p>" + b"x" * 3_000_000 + b"</p>")
        elif name.startswith("loop-"):
            self._redirect(f"http://{host}/")
        elif name.startswith("moved-"):
            self._redirect(f"http://ok-{host.split('-', 1)[1]}/")
        elif name.startswith("refresh-"):
            target = f"http://ok-{host.split('-', 1)[1]}/"
            self._send(200, f"<html><head><meta http-equiv='refresh' content='0; url={target}'>"
                            "<title>Moved</title></head><body></body></html>".encode())
        elif name.startswith("chain-") and name[6:].isdigit():
            rest = host.split(".", 1)[1]
            self._send(200, f"<html><head><meta http-equiv='refresh' content='0; url=http://chain-"
                            f"{int(name[6:]) + 1}.{rest}/'><title>Next</title></head></html>".encode())
        elif name.startswith("empty-"):
            self._send(200, b"")
        elif name.startswith("binary-"):
            self._send(200, bytes(range(256)) * 8, "application/octet-stream")
        elif name.startswith("notitle-"):
            self._send(200, b"<html><head><meta name='description' content='untitled'></head>"
                       b"<body>no title</body></html>")
        elif name.startswith("nested-"):
            self._send(200, b"<html><head><title>Nested <b>bold</b> <i>title</i></title></head>"
                       b"<body></body></html>")
        else:
            self._send(200, homepage(host))

    def _hostile(self, name: str, host: str, hits: int) -> bool:
        if name.startswith("slowheaders-"):
            time.sleep(5)
            self._send(200, homepage(host))
        elif name.startswith("trickle-"):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", "100000")
            self.end_headers()
            for _ in range(30):  # bounded: 30 bytes, 30 seconds at most
                self.wfile.write(b"<")
                self.wfile.flush()
                time.sleep(1)
        elif name.startswith("bomb-"):
            body = gzip_bomb()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif name.startswith("huge-"):
            head = f"<html><head><title>{name}</title></head><body>".encode()
            block = b"<p>" + b"lorem ipsum " * 85 + b"</p>\n"  # about 1 KB
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(head) + HUGE_PAGE_BYTES // len(block) * len(block)))
            self.end_headers()
            self.wfile.write(head)
            try:
                for _ in range(HUGE_PAGE_BYTES // len(block)):
                    self.wfile.write(block)
            except OSError:
                pass  # the client stopped reading at its cap
        elif name.startswith("tolocal-"):
            self._redirect(f"http://{self.server.trap_address[0]}:{self.server.trap_address[1]}/")
        elif name.startswith("binaryhtml-"):
            self._send(200, bytes(range(256)) * 16, "text/html")
        elif name.startswith("badcharset-"):
            self._send(200, homepage(host), "text/html; charset=no-such-charset")
        elif name.startswith("ratelimited-") and hits == 1:
            self.send_response(429)
            self.send_header("Retry-After", "1")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif name.startswith("robots-") and self.path == "/robots.txt":
            self._send(200, b"User-agent: *\nDisallow: /\n", "text/plain")
        elif name.startswith("reset-"):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(homepage(host)[:300])
            self.wfile.flush()
            # SO_LINGER 0: close with a TCP reset, mid-body.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        else:
            return False
        return True

    def _redirect(self, location: str) -> None:
        self.send_response(301)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _send(self, status: int, body: bytes, content_type: str = "text/html; charset=utf-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _FarmServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], hits: Counter[str], lock: threading.Lock,
                 trap_address: tuple[str, int]) -> None:
        super().__init__(address, _Handler)
        self.hits = hits
        self.lock = lock
        self.trap_address = trap_address


    def handle_error(self, request: object, client_address: object) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, ssl.SSLError, TimeoutError)):
            super().handle_error(request, client_address)  # a client hanging up is no error


class _Trap:
    """A listener on 127.0.0.2 that only counts the connections it receives."""

    def __init__(self) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.2", 0))
        self.socket.listen(16)
        self.socket.settimeout(0.2)
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self.socket.accept()
            except OSError:
                continue
            self.connections += 1
            connection.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.socket.close()


class Farm:
    """The farm server; use as a context manager."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._hits: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.trap = _Trap()
        self._server = _FarmServer((host, port), self._hits, self._lock, self.trap.socket.getsockname())
        self._tls = _FarmServer((host, 0), self._hits, self._lock, self.trap.socket.getsockname())
        self._tls.socket = _self_signed_context().wrap_socket(self._tls.socket, server_side=True)
        self._tls_thread = threading.Thread(target=self._tls.serve_forever, daemon=True)
        # A bound socket that never listens: connecting to it is refused at once,
        # and no other process can take its port meanwhile.
        self._closed = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._closed.bind((host, 0))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return self._server.server_address[0]

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def refused_port(self) -> int:
        return self._closed.getsockname()[1]

    @property
    def hits(self) -> Counter[str]:
        """GET requests received, by Host."""
        with self._lock:
            return Counter(self._hits)

    def connect_to(self, suffix: str = "test") -> list[str]:
        return [
            f"*.{suffix}:80:{self.host}:{self.port}",
            f"*.{suffix}:443:{self.host}:{self.refused_port}",
            f"*.refused.{suffix}::{self.host}:{self.refused_port}",
            f"*.selfsigned.{suffix}:443:{self.host}:{self._tls.server_address[1]}",
            f"*.selfsigned.{suffix}:80:{self.host}:{self.refused_port}",
        ]

    def __enter__(self) -> Farm:
        self._thread.start()
        self._tls_thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for server in (self._server, self._tls):
            server.shutdown()
            server.server_close()
        self._closed.close()
        self.trap.close()
