"""The README's shell commands, run as written (issue 17): every command of the
Quickstart and the Running-on-Prefect sections is run here, on loopback, or excluded
below with its reason. The Prefect commands run against the session's stack
(tests/stack.py: a server, the work pool, the deployments and a worker), the only
changes being the ones ``SUBSTITUTIONS`` names (its ports, a database of this test's).
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import subprocess
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SECTIONS = ("Quickstart", "Running on Prefect")

#: Commands not run here (matched by their start), each with the reason.
EXCLUDED = {
    "make test": "the suite this test is part of",
    ".venv/bin/scrapersky farm": "serves until stopped: test_first_hour.py::"
    "test_farm_serves_the_demo_sites_and_prints_a_scrape_command_that_works runs it and the command it prints",
    ".venv/bin/scrapersky scrape ok-1.test": "its ports are the ones `farm` prints (<PORT>): the farm test above "
    "runs the printed command",
    ".venv/bin/scrapersky scrape --file domains.txt": "reaches real sites; tests contact loopback only",
    ".venv/bin/scrapersky status <BATCH_ID>": "a batch of real sites (above)",
    ".venv/bin/scrapersky export <BATCH_ID>": "a batch of real sites (above)",
    ".venv/bin/scrapersky extract page.html": "a page the reader saved; test_cli.py runs extract on a saved page and "
                                              "on a farm URL",
    ".venv/bin/prefect server start": "the session's stack runs this command (tests/stack.py)",
    ".venv/bin/prefect --no-prompt deploy --all": "the session's stack deploys prefect.yaml itself, with the recovery "
    "every 15 s that other tests rely on (test_deployments.py::test_deploy_all_created_every_deployment_without_prompts)",
    ".venv/bin/prefect worker start": "the session's stack runs this command, with the routing to its own farm",
    ".venv/bin/scrapersky up": "test_up.py runs `scrapersky up` on free ports",
}
#: The worker's terminal: its environment is checked against the other terminal's, not
#: run (the stack's worker has its own: the same server and database, its farm's routing).
WORKER_BLOCK = "# terminal 3"


def section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"\n## {title}")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def shell_blocks(title: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", section(title), flags=re.S)


def commands(block: str) -> list[str]:
    """The block's commands: continuation lines joined, comment lines dropped."""
    joined = block.replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def excluded(command: str) -> str | None:
    return next((reason for start, reason in EXCLUDED.items() if command.startswith(start)), None)


def script(block: str, substitutions: dict[str, str]) -> str:
    lines = []
    for command in commands(block):
        for old, new in substitutions.items():
            command = command.replace(old, new)
        shown = shlex.quote(command[:60])
        lines.append(f": excluded {shown}" if excluded(command) else f"echo '>>>' {shown} >&2; {command}")
    return "set -euo pipefail\n" + "\n".join(lines) + "\n"


def run(block: str, env: dict[str, str], substitutions: dict[str, str], timeout: float = 300) -> tuple[str, dict[str, str]]:
    """The block run by bash as one script; its output and the environment it ends with."""
    env_file = Path(env["HOME"]) / f"env-{uuid.uuid4().hex}"
    env = {key: value for key, value in env.items() if key != "PREFECT_LOGGING_LEVEL"}  # as a reader has it
    done = subprocess.run(["bash", "-c", script(block, substitutions) + f"env -0 > {env_file}\n"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{script(block, substitutions)}\n--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}"
    assert "Traceback" not in done.stdout + done.stderr, done.stderr[-3000:]
    ended = dict(item.split("=", 1) for item in env_file.read_text().split("\0") if "=" in item)
    return done.stdout + done.stderr, ended


def test_every_command_is_run_or_excluded_with_a_reason() -> None:
    quickstart = [commands(block) for block in shell_blocks("Quickstart")]
    assert [re.sub(r"\s+#.*", "", c) for c in quickstart[0]] == ["make demo", "make test"]  # a fresh clone's two
    every = [c for title in SECTIONS for block in shell_blocks(title) for c in commands(block)]
    assert len(every) > 15
    for start in EXCLUDED:  # no stale exclusion
        assert any(command.startswith(start) for command in every), start
    placeholders = [c for c in every if "<" in c and not excluded(c)]
    worker = commands(next(b for b in shell_blocks("Running on Prefect") if b.startswith(WORKER_BLOCK)))
    assert placeholders == [c for c in worker if "<" in c]  # only the worker's routing, which is not run
    assert not [c for c in every if re.search(r"\bjq\b|example\.(com|org|net)", c)]


def test_the_quickstart_demo_runs(prefect_api: str, tmp_path: Path) -> None:
    env = dict(os.environ, PREFECT_API_URL=prefect_api, DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'demo.db'}",
               HOME=str(tmp_path), COLUMNS="200")
    output, _ = run(shell_blocks("Quickstart")[0], env, {})
    assert "ok-1.test" in output and "completed" in output and "notfound-1.test" in output, output[-3000:]


def test_the_prefect_section_runs_on_the_session_stack(stack, tmp_path: Path) -> None:
    from conftest import _admin

    database = f"scrapersky_readme_{uuid.uuid4().hex[:8]}"
    substitutions = {
        "http://127.0.0.1:4200": stack.ui_url,  # the stack's server
        "-U postgres scrapersky": f"-U postgres {database}",  # a database of this test's
        "5432/scrapersky'": f"5432/{database}'",
    }
    env = {key: value for key, value in stack.env.items() if key not in ("DATABASE_URL", "PREFECT_API_URL")}
    env.update(HOME=str(tmp_path), COLUMNS="200")
    blocks = shell_blocks("Running on Prefect")
    try:
        assert commands(blocks[0])[0].startswith(".venv/bin/prefect server start")
        output, env = run(blocks[1], env, substitutions)  # createdb, db upgrade, the work pool
        assert f"now at revision" in output and database in env["DATABASE_URL"], output
        worker = next(block for block in blocks if block.startswith(WORKER_BLOCK))
        _, worker_env = run("\n".join(c for c in commands(worker) if c.startswith("export ") and "<" not in c) + "\n",
                            env, substitutions)
        # The worker's terminal names the same server and database as the other one.
        assert (worker_env["DATABASE_URL"], worker_env["PREFECT_API_URL"]) == (env["DATABASE_URL"], env["PREFECT_API_URL"])

        # From here on, the database the stack's worker writes: the README's reader has one database.
        env["DATABASE_URL"] = stack.database_url
        rest = [block for block in blocks[2:] if block is not worker]
        assert len(rest) == 3  # doctor; the triggers; `scrapersky up`
        doctor, env = run(rest[0], env, substitutions)
        assert "PASS canary" in doctor, doctor
        triggered, env = run(rest[1], env, substitutions)
        assert "completed" in triggered and "Created flow run" in triggered, triggered[-3000:]
        rest_batch = re.findall(r'"batch_id": ?"([0-9a-f-]{36})"', triggered)[-1]  # in the flow run Prefect answered
        assert stack.wait_final(uuid.UUID(rest_batch)).status == "completed"  # the REST example's batch
        run(rest[2], env, substitutions)  # its environment (`up` itself: excluded)
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
