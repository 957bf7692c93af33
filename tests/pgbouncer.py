"""A real PgBouncer in transaction mode in front of the test PostgreSQL: the stand-in
for Supabase's Supavisor on port 6543. It refuses to run as root, so as root it runs
as the ``postgres`` user.

PgBouncer >= 1.21 can track protocol-level prepared statements in transaction mode
(on by default from 1.24, ``max_prepared_statements = 200``): such a pooler hides the
very failure the pooler tests are about. The config pins it off
(``max_prepared_statements = 0``) on every version that knows the setting; older
versions do not support prepared statements at all (and refuse the unknown setting)."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

CONFIG = """\
[databases]
* = host={pg_host} port={pg_port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {dir}/userlist.txt
pool_mode = transaction
default_pool_size = 2
max_client_conn = 500
ignore_startup_parameters = extra_float_digits
server_reset_query =
logfile = {dir}/pgbouncer.log
pidfile = {dir}/pgbouncer.pid
{prepared_statements}"""

#: The first version with prepared-statement support in transaction mode.
PREPARED_STATEMENTS_SINCE = (1, 21)


def version(binary: str) -> tuple[int, ...]:
    """The PgBouncer binary's version, e.g. (1, 18, 0), from ``pgbouncer --version``."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30).stdout
    found = re.search(r"PgBouncer (\d+)\.(\d+)(?:\.(\d+))?", out)
    if found is None:
        raise RuntimeError(f"cannot read the PgBouncer version from {out!r}")
    return tuple(int(part or 0) for part in found.groups())


def config(*, pg_host: str, pg_port: int, port: int, dir: Path, version: tuple[int, ...]) -> str:
    """pgbouncer.ini: transaction mode, pool size 2, prepared statements not handled."""
    pinned = "max_prepared_statements = 0\n" if version >= PREPARED_STATEMENTS_SINCE else ""
    return CONFIG.format(pg_host=pg_host, pg_port=pg_port, port=port, dir=dir, prepared_statements=pinned)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PgBouncer:
    def __init__(self, *, pg_host: str = "127.0.0.1", pg_port: int = 5432) -> None:
        self.binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        if not os.path.exists(self.binary):
            raise RuntimeError("pgbouncer is not installed (tests/services.sh installs it)")
        self.version = version(self.binary)
        self.port = _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="scrapersky-pgbouncer-"))
        (self.dir / "userlist.txt").write_text('"postgres" ""\n')
        self.config = config(pg_host=pg_host, pg_port=pg_port, port=self.port, dir=self.dir, version=self.version)
        (self.dir / "pgbouncer.ini").write_text(self.config)
        self.process: subprocess.Popen | None = None

    @property
    def log(self) -> str:
        path = self.dir / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def url(self, database: str, *, password: str | None = None) -> str:
        user = "postgres" if password is None else f"postgres:{password}"
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        command = [self.binary, str(self.dir / "pgbouncer.ini")]
        if os.geteuid() == 0:
            postgres = pwd.getpwnam("postgres")
            os.chown(self.dir, postgres.pw_uid, postgres.pw_gid)
            for path in self.dir.iterdir():
                os.chown(path, postgres.pw_uid, postgres.pw_gid)
            command = ["runuser", "-u", "postgres", "--", *command]
        # stderr to a file, never a pipe: nobody drains a pipe, and pgbouncer logs every
        # login there too - after 64 KB of them it blocked on the write, and every client
        # of the pooler waited until its connect timeout.
        stderr = self.dir / "stderr.log"
        with stderr.open("wb") as sink:
            self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=sink)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited: {stderr.read_text(errors='replace')}{self.log}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"pgbouncer did not listen on {self.port}: {self.log}")

    def stop(self) -> None:
        # Signal pgbouncer itself (runuser does not pass SIGINT/SIGTERM on): its pidfile.
        pidfile = self.dir / "pgbouncer.pid"
        if pidfile.exists():
            try:
                os.kill(int(pidfile.read_text().strip()), signal.SIGTERM)
            except (ValueError, ProcessLookupError):
                pass
        if self.process is not None:
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> PgBouncer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
