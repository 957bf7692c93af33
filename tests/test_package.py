"""The install: one top-level package, its public API, its layers."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_installs_one_top_level_package(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = tmp_path.glob("scrapersky_batch-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith((".dist-info", ".data"))}
    assert top_level == {"scrapersky"}
    # The design card's folders are its subpackages; the benchmark and tests are not shipped.
    for module in ("scrapersky/flows/batch_scrape.py", "scrapersky/tasks/scrape.py", "scrapersky/db/batches.py"):
        assert module in names
    # `scrapersky up` needs no checkout: its deployments and the dashboard page ship.
    for shipped in ("scrapersky/stack.py", "scrapersky/deployments.py", "scrapersky/api/static/batch-domain-scanner.html"):
        assert shipped in names
    assert not [name for name in names if "bench" in name or name.startswith("tests/")]
    # The migrations travel with it, and an installed copy upgrades a database with them alone.
    for migration in ("env.py", "script.py.mako", "versions/0001_baseline.py", "versions/0002_domain_batch_vocabulary.py"):
        assert f"scrapersky/db/migrations/{migration}" in names
    installed = tmp_path / "installed"
    zipfile.ZipFile(wheel).extractall(installed)
    code = (
        "import asyncio, sys, scrapersky.db.migrate as m;"
        f"assert m.__file__.startswith({str(installed)!r}), m.__file__;"
        f"done = asyncio.run(m.upgrade('sqlite:///{tmp_path}/fresh.db'));"
        "print(done.applied, done.after.head)"
    )
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd="/",
                         env={**os.environ, "PYTHONPATH": str(installed)})
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert ran.stdout.split() == ["['0001_baseline',", "'0002_domain_batch_vocabulary']", "0002_domain_batch_vocabulary"]


def test_the_public_api_is_named_and_cheap_to_import() -> None:
    code = (
        "import sys, scrapersky; assert 'prefect' not in sys.modules, 'importing scrapersky imported Prefect';"
        "from scrapersky import BatchRequest, batch_scrape, submit_batch, get_status, Settings, ScraperSkyError;"
        "assert batch_scrape.name == 'batch-scrape'; print(sorted(scrapersky.__all__))"
    )
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd="/")
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert "submit_batch" in ran.stdout


def test_layers_point_down() -> None:
    ran = subprocess.run([str(Path(sys.executable).with_name("lint-imports"))], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert ran.returncode == 0, ran.stdout[-3000:]
    assert "0 broken" in ran.stdout
