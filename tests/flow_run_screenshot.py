"""A flow run's page in the Prefect UI, opened on its Artifacts tab, as a PNG; and
``open_page()``, a headless Chromium page for other browser tests (tests/test_up.py).

Drives headless Chromium (Debian's ``chromium``) over the DevTools protocol: open the
page, wait for the run to load, click the "Artifacts" tab, wait for the given texts,
capture. Chromium may resolve nothing but loopback (``--host-resolver-rules``).

    python tests/flow_run_screenshot.py UI_URL FLOW_RUN_ID OUT.png
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from websockets.sync.client import connect

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--no-proxy-server", "--no-first-run", "--no-default-browser-check", "--hide-scrollbars",
]


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class _Page:
    def __init__(self, websocket_url: str) -> None:
        self._socket = connect(websocket_url, max_size=64 * 1024 * 1024, open_timeout=10)
        self._ids = itertools.count(1)

    def call(self, method: str, **params: object) -> dict:
        call_id = next(self._ids)
        self._socket.send(json.dumps({"id": call_id, "method": method, "params": params}))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            message = json.loads(self._socket.recv(timeout=30))
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
        raise TimeoutError(method)

    def evaluate(self, expression: str) -> object:
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def wait_for(self, expression: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.evaluate(expression):
                return
            time.sleep(0.25)
        raise TimeoutError(f"page never satisfied: {expression}")

    def close(self) -> None:
        self._socket.close()


@contextmanager
def open_page(*, window: str = "1400,1000", timeout: float = 30) -> Iterator[_Page]:
    """A page of a fresh headless Chromium (its own profile), closed and stopped after."""
    binary = chromium()
    if binary is None:
        raise RuntimeError("chromium is not installed (apt-get install chromium)")
    port = _free_port()
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        browser = subprocess.Popen(
            [binary, *CHROMIUM_FLAGS, f"--remote-debugging-port={port}", "--remote-debugging-address=127.0.0.1",
             f"--user-data-dir={profile}", f"--window-size={window}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            targets = _targets(port, timeout=timeout)
            page = _Page(next(t for t in targets if t["type"] == "page")["webSocketDebuggerUrl"])
            try:
                page.call("Page.enable")
                yield page
            finally:
                page.close()
        finally:
            browser.terminate()
            try:
                browser.wait(timeout=10)
            except subprocess.TimeoutExpired:
                browser.kill()
                browser.wait(timeout=10)


def capture(ui_url: str, flow_run_id: str, out: Path, *, expect: list[str], timeout: float = 60) -> str:
    """Screenshot the run's Artifacts tab into ``out``; returns the page's visible text.

    Waits until every string of ``expect`` is visible on the page.
    """
    with open_page() as page:
        page.call("Page.navigate", url=f"{ui_url.rstrip('/')}/runs/flow-run/{flow_run_id}")
        tab = "[...document.querySelectorAll('li.p-tab, [role=tab]')].find(e => e.textContent.trim() === 'Artifacts')"
        page.wait_for(f"!!({tab})", timeout)
        page.wait_for("document.body.innerText.includes('Completed') || document.body.innerText.includes('Failed')", timeout)
        page.evaluate(f"({tab}).click()")
        checks = " && ".join(f"document.body.innerText.includes({json.dumps(text)})" for text in expect)
        page.wait_for(checks or "true", timeout)
        time.sleep(1.0)  # let the cards finish drawing
        shot = page.call("Page.captureScreenshot", format="png")
        out.write_bytes(base64.b64decode(shot["data"]))
        return str(page.evaluate("document.body.innerText"))


def _targets(port: int, *, timeout: float) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, never a proxy
            with opener.open(f"http://127.0.0.1:{port}/json/list", timeout=2) as response:
                targets = json.load(response)
            if any(t.get("type") == "page" for t in targets):
                return targets
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("chromium's DevTools endpoint never answered")
        time.sleep(0.2)


if __name__ == "__main__":
    text = capture(sys.argv[1], sys.argv[2], Path(sys.argv[3]), expect=[])
    print(text[:2000])
