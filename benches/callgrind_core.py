"""Fixed workloads for counting the Rust core's instructions with callgrind.

    valgrind --tool=callgrind --callgrind-out-file=OUT python benches/callgrind_core.py write 4K
    callgrind_annotate --threshold=100 OUT | grep cowcore_core   # sum the first column

Instruction counts, unlike times, repeat exactly for the same build and input whatever else the
machine is doing, so two builds can be compared on a loaded machine (BENCHMARKS.md). Put the
build to measure first on ``PYTHONPATH`` (a ``pip install --target`` of its wheel).

``write``: a 64 MiB parent writes every page, forks, the child exits, the parent rewrites
(reuse), forks again, rewrites (copy), the child exits. ``rollup``: the parent writes 64 MiB and
reads its ``smaps_rollup`` five times. ``swap`` (issue 16): the parent writes 64 MiB, pages it
all out (``MADV_PAGEOUT``) and reads it all back (swap-in faults). ``4K`` uses small pages,
``64K`` sets that mTHP size to ``always``. Profile 6.15.
"""

from __future__ import annotations

import sys

import cowcore

MIB64 = 64 << 20


def main(workload: str, size: str) -> None:
    """Run one workload on a fresh machine."""
    m = cowcore.Machine("6.15", memory="4G")
    if size == "64K":
        m.thp.sizes["64K"] = "always"
    elif size != "4K":
        raise SystemExit(f"size must be 4K or 64K, not {size!r}")
    p = m.init
    a = p.mmap(MIB64)
    p.write(a, MIB64)
    if workload == "write":
        p.fork().exit()
        p.write(a, MIB64, value=2)
        c = p.fork()
        p.write(a, MIB64, value=3)
        c.exit()
    elif workload == "rollup":
        for _ in range(5):
            p.smaps_rollup()
    elif workload == "swap":
        p.pageout(a, MIB64)
        p.read(a, MIB64)
    else:
        raise SystemExit(f"workload must be write, rollup or swap, not {workload!r}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2])
