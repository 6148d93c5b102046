"""A 1 TiB machine on a small host: wall time and peak host RSS (BENCHMARKS.md "1 TiB").

Three workloads, each in a fresh child process whose peak RSS is its own (``os.wait4``)::

    python benches/scale_1t.py boot [--backend reference]         # a few pages, fork, check
    python benches/scale_1t.py snapshot --heap 300G --page 4K    # THP never
    python benches/scale_1t.py snapshot --heap 300G --page 2M    # THP always
    python benches/scale_1t.py top                                # every frame, then the top one

``boot`` boots 1 TiB, writes 16 pages at the bottom of physical memory, forks, copies one
page on each side and runs ``check()``: what a 1 TiB machine costs when little of it is used.
``snapshot`` is the BGSAVE shape of issue 14 on a 1 TiB machine: a heap of ``--heap`` bytes is
written, the process forks, the parent writes 10% of the heap's 4 KiB pages (in each 1 GiB of
heap, a seeded random tenth of its pages in random order, the way a uniform key pattern
lands), and the child exits. ``top`` boots 1 TiB, fills every frame with 2 MiB THPs (a byte
each), then faults 4 KiB pages, which come from the top of physical memory, frees 4 GiB,
forks, writes the top page in both processes and runs ``check()``: the frame numbers at the
end of the range work in the tables, the rmap and the per-frame arrays.

The child prints one JSON object: wall seconds per phase (``time.perf_counter``), the CPU
seconds of the whole run, and the figures of the machine; the parent adds the child's peak
RSS (``ru_maxrss``) and prints the record. Wall times on this shared 2-core VM are noisy
(first-touch page faults of the host dominate); peak RSS is what the section is about.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from typing import Any

import numpy as np

import cowcore
from cowcore.units import parse_memory

PAGE = 4096
GiB = 1 << 30


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class _Phases:
    """Wall seconds per phase, in order."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}
        self._t = time.perf_counter()

    def done(self, name: str) -> None:
        now = time.perf_counter()
        self.times[name] = round(now - self._t, 3)
        self._t = now


def snapshot(heap: int, page: str, memory: str, seed: int) -> dict[str, Any]:
    """The BGSAVE shape on a ``memory`` machine (see the module docstring)."""
    ph = _Phases()
    m = cowcore.Machine("6.15", memory=memory)
    m.thp.enabled = "always" if page == "2M" else "never"
    p = m.init
    a = p.mmap(heap)
    ph.done("boot")
    p.write(a, heap, 1)
    ph.done("write")
    rss_written = _status_kib("VmRSS")
    child = p.fork()
    ph.done("fork")
    rng = np.random.default_rng(seed)
    per_gib = GiB // PAGE
    written = 0
    for base in range(a, a + heap, GiB):
        n = min(per_gib, (a + heap - base) // PAGE)
        pick = rng.choice(n, n // 10, replace=False).astype(np.uint64)
        p.write_pages(base + pick * np.uint64(PAGE), 2)
        written += len(pick)
    ph.done("parent_writes")
    stats = m.stats()
    child.exit()
    ph.done("child_exit")
    return {
        "heap": heap,
        "page": page,
        "memory": memory,
        "phases_s": ph.times,
        "wall_s": round(sum(ph.times.values()), 3),
        "pages": heap // PAGE,
        "parent_writes": written,
        "cow_copy": stats.cow_copy,
        "thp_fault_alloc": stats.thp_fault_alloc,
        "thp_split_pmd": stats.thp_split_pmd,
        "rss_after_write_mib": round(rss_written / 1024),
        "free_frames_end": m.free_frames(),
    }


def boot(memory: str, backend: str) -> dict[str, Any]:
    """Boot, fault a few pages at the bottom of physical memory, fork, copy, check."""
    ph = _Phases()
    m = cowcore.Machine("6.15", memory=memory, backend=backend)
    ph.done("boot")
    p = m.init
    a = p.mmap(64 * GiB)
    p.write(a, 16 * PAGE, 7)
    child = p.fork()
    child.write(a, PAGE, 9)
    p.write(a + PAGE, PAGE, 8)
    ph.done("fault_fork_copy")
    m.check()
    ph.done("check")
    return {
        "memory": memory,
        "backend": backend,
        "phases_s": ph.times,
        "total_frames": m.total_frames,
        "free_frames": m.free_frames(),
        "cow_copy": m.stats().cow_copy,
    }


def top(memory: str) -> dict[str, Any]:
    """Every frame of a ``memory`` machine used, then the top frame (module docstring)."""
    ph = _Phases()
    m = cowcore.Machine("6.15", memory=memory)
    m.thp.enabled = "always"
    p = m.init
    total = m.total_frames
    heap = p.mmap(total * PAGE)
    ph.done("boot")
    huge = np.arange(heap, heap + total * PAGE, 2 << 20, dtype=np.uint64)
    with contextlib.suppress(cowcore.OutOfMemoryError):
        p.write_pages(huge, 1)  # stops when no 2 MiB folio (and its deposit table) is left
    ph.done("fill")
    m.thp.enabled = "never"
    small = p.mmap(2 << 20)
    pfns = []
    for i in range(512):
        try:
            p.write(small + i * PAGE, PAGE, 3)
        except cowcore.OutOfMemoryError:
            break
        pfn = p.translate(small + i * PAGE).pfn
        assert pfn is not None
        pfns.append(pfn)
    top_addr = small + pfns.index(max(pfns)) * PAGE
    ph.done("small_pages")
    p.munmap(heap, 4 * GiB)  # room for the child's tables
    child = p.fork()
    child.write(top_addr, PAGE, 4)  # a COW copy
    p.write(top_addr, PAGE, 5)  # the parent's page, now exclusive again: reused
    ph.done("fork_and_writes")
    m.check()
    ph.done("check")
    return {
        "memory": memory,
        "phases_s": ph.times,
        "wall_s": round(sum(ph.times.values()), 3),
        "total_frames": total,
        "highest_pfn_mapped": max(pfns),
        "thp_fault_alloc": m.stats().thp_fault_alloc,
        "child_top_value": child.read(top_addr)[0],
        "parent_top_value": p.read(top_addr)[0],
        "parent_top_pfn": p.translate(top_addr).pfn,
    }


def _child(argv: list[str]) -> None:
    args = _parser().parse_args(argv)
    t = time.process_time()
    if args.workload == "snapshot":
        out = snapshot(parse_memory(args.heap), args.page, args.memory, args.seed)
    elif args.workload == "boot":
        out = boot(args.memory, args.backend)
    else:
        out = top(args.memory)
    out["cpu_s"] = round(time.process_time() - t, 3)
    print(json.dumps(out))


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("workload", choices=("boot", "snapshot", "top"))
    ap.add_argument("--heap", default="300G", help="heap size (snapshot), default 300G")
    ap.add_argument("--page", choices=("4K", "2M"), default="4K", help="4K: THP never")
    ap.add_argument("--memory", default="1T", help="machine size, default 1T")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--backend", default="rust", help="boot only: rust or reference")
    return ap


def main(argv: list[str]) -> dict[str, Any]:
    """Runs the workload in a child process and adds its peak RSS."""
    _parser().parse_args(argv)  # usage errors here, not in the child
    code = "import sys, scale_1t; scale_1t._child(sys.argv[1:])"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(__file__), *sys.path]))
    proc = subprocess.Popen([sys.executable, "-c", code, *argv], stdout=subprocess.PIPE, env=env)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"the child failed ({proc.returncode})")
    result: dict[str, Any] = json.loads(out)
    result["peak_rss_mib"] = round(usage.ru_maxrss / 1024)
    result["command"] = "python benches/scale_1t.py " + " ".join(argv)
    return result


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:]), indent=1))
