"""A peer on every core: M copies of a contestant's command, each with ``--shard K/M``
(its share of the domains and of the concurrency), ``{shard}`` in the command replaced
by K (each its own results file); waits for all of them.

    python -m benchmarks.every_core M COMMAND...

Started through ``benchmarks.measure``, so the numbers are those of the whole team:
wall time until the last copy ends, CPU of all of them, the largest copy's peak RSS.
The work summary printed last is the longest copy's work time and the sum of their CPU.
Exits 1 when any copy fails.
"""

from __future__ import annotations

import json
import subprocess
import sys


def commands(processes: int, command: list[str]) -> list[list[str]]:
    """One command a copy: ``{shard}`` replaced by its number, ``--shard K/M`` added."""
    return [[part.replace("{shard}", str(k)) for part in command] + ["--shard", f"{k}/{processes}"]
            for k in range(processes)]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    processes, command = int(argv[0]), argv[1:]
    children = [subprocess.Popen(each, stdout=subprocess.PIPE, text=True) for each in commands(processes, command)]
    summaries, failed = [], False
    for child in children:
        out, _ = child.communicate()
        failed |= child.returncode != 0
        for line in reversed(out.splitlines()):
            if line.strip().startswith("{"):
                summaries.append(json.loads(line))
                break
    print(json.dumps({
        "work_seconds": max((s.get("work_seconds") or 0.0 for s in summaries), default=None),
        "work_cpu_seconds": sum(s.get("work_cpu_seconds") or 0.0 for s in summaries),
        "processes": processes, "copies": summaries,
    }), flush=True)
    return 1 if failed or len(summaries) != processes else 0


if __name__ == "__main__":
    sys.exit(main())
