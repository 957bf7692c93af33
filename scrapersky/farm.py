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

Domains under ``.refused.test`` get "connection refused"; port 443 is refused for
every domain, so fetches fall back to http as they do against a site without TLS.
Only loopback addresses are ever used.
"""

from __future__ import annotations

import socket
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

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

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, _Handler)
        self.hits: Counter[str] = Counter()
        self.lock = threading.Lock()


class Farm:
    """The farm server; use as a context manager."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = _FarmServer((host, port))
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
        with self._server.lock:
            return Counter(self._server.hits)

    def connect_to(self, suffix: str = "test") -> list[str]:
        return [
            f"*.{suffix}:80:{self.host}:{self.port}",
            f"*.{suffix}:443:{self.host}:{self.refused_port}",
            f"*.refused.{suffix}::{self.host}:{self.refused_port}",
        ]

    def __enter__(self) -> Farm:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._closed.close()
