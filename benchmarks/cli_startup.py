"""Benchmark the start of the light commands: ``cogframe ls``, ``validate tiny/sample``, ``plugins``, ``--help``.

Each command runs in a fresh interpreter (as a user types it), ``--repeats`` times after one
warm-up run, and the script prints the median wall time and the median CPU time (user + system
of the child), which a busy machine inflates less than wall time. Byte code is cached in a folder
under the temporary directory (``PYTHONPYCACHEPREFIX``), so the runs measure the steady state of an
installed package, not Python compiling the sources. Third-party plugins are off
(``COGFRAME_PLUGINS=``), so only cogframe's own start-up is measured.

``--src DIR`` runs the cogframe package found in ``DIR`` (e.g. an older checkout's ``src``) instead
of the installed one, to compare two versions at the same moment on a shared machine.

Usage::

    python benchmarks/cli_startup.py [--repeats 5] [--src DIR] [--json out.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMANDS = ("ls", "validate --quiet tiny/sample", "plugins", "--help")


def _environment(src: str | None) -> dict[str, str]:
    tag = hashlib.sha1((src or "installed").encode()).hexdigest()[:8]
    cache = Path(tempfile.gettempdir()) / f"cogframe_bench_pyc_{tag}"
    env = {**os.environ, "COGFRAME_PLUGINS": "", "PYTHONPYCACHEPREFIX": str(cache)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # that would recompile every module on every run
    if src:
        env["PYTHONPATH"] = src
    return env


def measure(command: str, repeats: int, env: dict[str, str], cwd: str | None) -> dict:
    """Median wall and CPU seconds of ``cogframe COMMAND`` in a fresh interpreter."""
    argv = [sys.executable, "-m", "cogframe", *command.split()]
    subprocess.run(argv, env=env, cwd=cwd, capture_output=True, check=True)  # warm-up: byte code
    walls, cpus = [], []
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(argv, env=env, cwd=cwd, capture_output=True, check=True)
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return {"command": command, "wall_s": statistics.median(walls), "cpu_s": statistics.median(cpus),
            "walls_s": walls}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--src", help="folder holding the cogframe package to run (default: the installed one)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    env = _environment(args.src)
    cwd = str(Path(args.src).parent) if args.src else None
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# {_cpu_name()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, load average {load:.1f}")
    results = []
    for command in COMMANDS:
        row = measure(command, args.repeats, env, cwd)
        results.append(row)
        print(f"{command:30s} wall {row['wall_s']:.2f} s  cpu {row['cpu_s']:.2f} s  "
              f"(runs: {' '.join(f'{w:.2f}' for w in row['walls_s'])})", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"load_average": load, "results": results}, indent=2))


if __name__ == "__main__":
    main()
