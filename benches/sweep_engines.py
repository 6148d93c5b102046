"""Wall time of the sweep engines on one spec, measured in one run (BENCHMARKS.md, "Sweeps
(issue 14)"): each engine runs the same ``cowcore sweep`` command line, into a fresh output
directory, one after the other, ``--rounds`` times; the table gives every round and the
speed-up of each engine's mean over the first's (one worker), and the load average is
printed before and after (other jobs on the machine take CPU from the engines).

Usage: python benches/sweep_engines.py [SPEC] [--rounds N]

The command is ``python3 -m cowcore`` (set ``COWCORE`` to override), so that it works from a
checkout with ``PYTHONPATH=python``. Wall time includes starting the interpreter, the pool
or the Dask cluster, and writing the output: what a user waits for.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENGINES = {
    "process pool, 1 worker": ["--workers", "1"],
    "process pool, default (1 per CPU)": [],
    "Dask LocalCluster, 1 worker": ["--dask-local", "1"],
    "Dask LocalCluster, 2 workers": ["--dask-local", "2"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", nargs="?", default=str(Path(__file__).with_name("sweep-200.toml")))
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    cowcore = shlex.split(os.environ.get("COWCORE", f"{sys.executable} -m cowcore"))
    print(f"spec {args.spec}, {os.cpu_count()} CPUs, load average {_load()}")
    print()
    print("| engine | command | wall time per round (s) | speed-up over 1 worker |")
    print("|---|---|---|---|")
    first: float | None = None
    for name, extra in ENGINES.items():
        times = []
        for _ in range(args.rounds):
            with tempfile.TemporaryDirectory() as tmp:
                cmd = [*cowcore, "sweep", args.spec, "-o", f"{tmp}/out.parquet", "--no-progress"]
                start = time.perf_counter()
                subprocess.run([*cmd, *extra], check=True, capture_output=True)
                times.append(time.perf_counter() - start)
        shown = " ".join(["cowcore sweep SPEC -o OUT", *extra])
        mean = statistics.fmean(times)
        first = first or mean
        print(
            f"| {name} | `{shown}` | {', '.join(f'{t:.1f}' for t in times)} | {first / mean:.2f}x |"
        )
    print()
    print(f"load average after: {_load()}")


def _load() -> str:
    """The 1, 5 and 15 minute load averages."""
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    main()
