"""Run a command and write its wall time, CPU and peak RSS (``os.wait4``) as JSON.

    python -m benchmarks.measure RESULT.json COMMAND...

A child's ``ru_maxrss`` also counts the memory of the process it was forked from (the
kernel carries it over at exec), so the benchmark harness, large by then, starts its
contestants through this small launcher: the number is the contestant's own peak (or
that of the largest of its waited-for descendants). CPU is the command's and its
waited-for descendants'. Exits with the command's exit status.
"""

import json
import os
import sys
import time


def main() -> int:
    result, command = sys.argv[1], sys.argv[2:]
    started = time.perf_counter()
    pid = os.posix_spawnp(command[0], command, os.environ)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - started
    with open(result, "w") as out:
        json.dump({"wall_seconds": wall, "cpu_seconds": usage.ru_utime + usage.ru_stime,
                   "max_rss_kib": usage.ru_maxrss}, out)
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main())
