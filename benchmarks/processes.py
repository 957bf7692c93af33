"""The benchmark's processes: contestants run and measured, the web farm and the Prefect
server in processes of their own (their CPU read with psutil, never a contestant's).

    python -m benchmarks.processes --latency 0.1

serves ``scrapersky.farm.Farm`` (this is what ``FarmProcess`` starts): it prints its
address and connect-to rules as a JSON line, then answers each line on stdin
(``stats`` or ``reset``) with the farm's counters as a JSON line, and exits at the end
of stdin (when the harness goes away).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]


def clean_env(**extra: str) -> dict[str, str]:
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


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds used so far by a live process and its descendants (those that ended
    included once waited for)."""
    total = 0.0
    try:
        root = psutil.Process(pid)
        family = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    for process in family:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


def kill_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL, to the process group of a process started here with
    start_new_session=True (its group id is its pid)."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=wait)
        except ProcessLookupError:
            break
        except subprocess.TimeoutExpired:
            continue
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # what it left behind goes with it
    except (ProcessLookupError, PermissionError):
        pass


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@dataclass
class Exit:
    wall_seconds: float
    cpu_seconds: float
    max_rss_mb: float
    exit_code: int | None
    timed_out: bool
    stdout: Path
    stderr: Path


def run_measured(cmd: list[str], env: dict[str, str], timeout: float, logs: Path, name: str) -> Exit:
    """Run cmd to completion (or to its timeout) through ``benchmarks.measure``: wall
    time, CPU (its waited-for children included) and peak RSS of the command itself."""
    stdout, stderr, numbers = logs / f"{name}.out", logs / f"{name}.err", logs / f"{name}.rusage.json"
    numbers.unlink(missing_ok=True)
    with stdout.open("wb") as out, stderr.open("wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.measure", str(numbers), *cmd], env=env, cwd=REPO,
            stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True,
        )
        timed_out = False
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            kill_group(proc, grace=0.0)
        wall = time.perf_counter() - started
    try:
        usage = json.loads(numbers.read_text())
    except (OSError, ValueError):
        usage = {"wall_seconds": wall, "cpu_seconds": 0.0, "max_rss_kib": 0}
    return Exit(
        wall_seconds=usage["wall_seconds"], cpu_seconds=usage["cpu_seconds"],
        max_rss_mb=usage["max_rss_kib"] / 1024, exit_code=None if timed_out else proc.returncode,
        timed_out=timed_out, stdout=stdout, stderr=stderr,
    )


class FarmProcess:
    """``scrapersky.farm.Farm`` in a process of its own: its address, counters and CPU."""

    def __init__(self, *, latency: float, logs: Path) -> None:
        self._stderr = (logs / "farm.err").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.processes", "--latency", str(latency)], env=clean_env(), cwd=REPO,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, text=True, start_new_session=True,
        )
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line:
            self.stop()
            raise RuntimeError(f"the farm did not start: {tail(logs / 'farm.err')}")
        info = json.loads(line)
        self.port: int = info["port"]
        self.connect_to: list[str] = info["connect_to"]

    def stats(self, reset: bool = False) -> dict[str, Any]:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write("reset\n" if reset else "stats\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()  # the end of stdin: the farm exits
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        kill_group(self.proc, grace=3.0)
        if self.proc.stdout:
            self.proc.stdout.close()
        self._stderr.close()


class PrefectServer:
    """``prefect server start`` on a free loopback port, with its own PREFECT_HOME."""

    def __init__(self, home: Path, logs: Path, startup_timeout: float) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.home = home
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self.log = logs / "prefect-server.log"
        self._log = self.log.open("wb")
        prefect = shutil.which("prefect", path=str(Path(sys.executable).parent)) or "prefect"
        self.proc = subprocess.Popen(
            [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
            env=clean_env(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false"),
            cwd=home, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            self._wait_healthy(startup_timeout)
            self.idle_cpu_per_second = self._cpu_rate(3.0)
        except BaseException:
            self.stop()
            raise

    def _wait_healthy(self, timeout: float) -> None:
        import httpx

        started = time.perf_counter()
        while time.perf_counter() - started < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the Prefect server exited ({self.proc.returncode}):\n{tail(self.log)}")
            try:
                if httpx.get(f"{self.api_url}/health", timeout=2.0, trust_env=False).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"the Prefect server was not healthy after {timeout:.0f} s:\n{tail(self.log)}")

    def _cpu_rate(self, seconds: float) -> float:
        before = self.cpu_seconds()
        time.sleep(seconds)
        return (self.cpu_seconds() - before) / seconds

    def wait_idle(self, max_seconds: float = 300.0) -> float:
        """Seconds until the server is back to its idle CPU (two quiet seconds in a row):
        it goes on recording a finished flow run's events and task runs for a while."""
        threshold = max(0.1, 2 * self.idle_cpu_per_second + 0.05)
        started, quiet = time.perf_counter(), 0
        while time.perf_counter() - started < max_seconds and quiet < 2:
            quiet = quiet + 1 if self._cpu_rate(1.0) <= threshold else 0
        return time.perf_counter() - started - 2.0 * (quiet >= 2)

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
        kill_group(self.proc, grace=15.0)
        self._log.close()


def serve_farm(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.processes")
    parser.add_argument("--latency", type=float, default=0.1, help="seconds before a site-<i> page")
    args = parser.parse_args(argv)
    from scrapersky.farm import Farm

    with Farm(latency=args.latency) as farm:
        print(json.dumps({"port": farm.port, "connect_to": farm.connect_to(), "pid": os.getpid()}), flush=True)
        for line in sys.stdin:
            print(json.dumps(farm.stats(reset=line.strip() == "reset")), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(serve_farm())
