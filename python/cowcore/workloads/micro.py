"""``micro``: the micro-benchmark shapes of the COW-reuse series (docs/workloads.md).

David Hildenbrand's "PTE-mapped-THP microbenchmarks" (``pte-mapped-folio-benchmarks.c``),
as the v1 cover letter of "mm: MM owner tracking for large folios (!hugetlb) +
CONFIG_NO_PAGE_MAPCOUNT" (2024-08-29, section 4.1) describes them: "All benchmarks allocate
1 GiB of THPs of a given size, to then fork()/munmap/... PMD-sized THPs are mapped by PTEs
first." Here ``size`` bytes are populated with folios of one size (``folio``: ``4K`` ..
``2M``; with ``pte_mapped``, each PMD-sized folio is then PTE-mapped by making one of its
pages read-only and writable again, as the kernel's COW selftest does for its
``THP_RUN_PTE`` case), and one operation is measured:

- ``fork``: ``fork()``;
- ``munmap``: ``munmap()`` of the populated memory (no fork);
- ``cow-byte``: fork, the child stays; the parent writes one byte to each page;
- ``reuse-byte``: fork, the child quits; the parent writes one byte to each page;
- ``child-reuse-byte``: fork, the parent unmaps the memory; the child writes one byte to
  each page.

The metrics count the measured phase only, as the benchmark times it.
"""

from __future__ import annotations

from collections.abc import Mapping

from cowcore.errors import InvalidArgumentError
from cowcore.protocol import THP_SIZES
from cowcore.workloads import _common as c
from cowcore.workloads.base import Scalar, Workload, WorkloadResult, register

MODES = ("fork", "munmap", "cow-byte", "reuse-byte", "child-reuse-byte")
FOLIOS = ("4K", *THP_SIZES)

DEFAULTS: Mapping[str, Scalar] = {
    "mode": "reuse-byte",
    "size": "1G",
    "folio": "64K",
    "pte_mapped": True,
    "memory": "auto",
}

METRICS = (
    "pages",
    "faults",
    "reuses",
    "copies",
    "pmd_reuses",
    "pmd_splits",
    "pages_copied",
    "fork_ptes",
    "fork_pmds",
    "zap_ptes",
    "zap_pmds",
    "tlb_flushes",
    "frames_allocated",
    "frames_freed",
    "memory_end_kb",
)


def run(params: Mapping[str, Scalar]) -> WorkloadResult:
    """Runs one micro-benchmark mode (see the module docstring)."""
    import numpy as np  # noqa: PLC0415

    from cowcore.outcome import Outcome  # noqa: PLC0415

    mode = c.choice(params, "mode", MODES)
    folio = c.choice(params, "folio", FOLIOS)
    nbytes = c.size(params, "size")
    align = c.PAGE << THP_SIZES.get(folio, 0)
    if nbytes % align:
        raise InvalidArgumentError(f"size must be a multiple of the folio size {folio}")
    m = c.machine(params, 2 * nbytes)
    if folio != "4K":
        m.thp.sizes[folio] = "always"  # the other sizes as the machine parameters set them
    npages = nbytes // c.PAGE
    parent = m.init
    base = parent.mmap(nbytes)
    parent.write(base, nbytes)
    if folio == "2M" and bool(params["pte_mapped"]):
        # PTE-map every PMD-mapped THP: a one-page mprotect splits the huge PMD
        # (__split_huge_pmd from change_pmd_range); making it writable again leaves the
        # folio mapped by 512 PTEs (tools/testing/selftests/mm/cow.c, THP_RUN_PTE)
        for at in range(base, base + nbytes, align):
            parent.mprotect(at + c.PAGE, c.PAGE, "r")
            parent.mprotect(at + c.PAGE, c.PAGE, "rw")
    child = parent.fork() if mode not in ("fork", "munmap") else None
    if mode == "reuse-byte" and child is not None:
        child.exit()
    if mode == "child-reuse-byte":
        parent.munmap(base, nbytes)
    start = c.counters(m)
    tally = c.EventTally()
    pmd_reuses = 0
    with m.record() as rec:
        if mode == "fork":
            parent.fork()
        elif mode == "munmap":
            parent.munmap(base, nbytes)
        else:
            writer = child if mode == "child-reuse-byte" else parent
            assert writer is not None
            for r in c.access_chunks(writer, c.page_addrs(base, np.arange(npages)), True):
                pmd_reuses += int((r["outcome"] == Outcome.PMD_REUSE).sum())
                tally.add(rec.drain())
        tally.add(rec.drain())
    end = c.delta(c.counters(m), start)
    metrics: dict[str, Scalar] = {
        "pages": npages,
        "faults": end["faults"],
        "reuses": end["reuses"],
        "copies": end["copies"],
        "pmd_reuses": pmd_reuses,
        "pmd_splits": end["pmd_splits"],
        "pages_copied": tally.pages_copied,
        "fork_ptes": tally.fork_ptes,
        "fork_pmds": tally.fork_pmds,
        "zap_ptes": tally.zap_ptes,
        "zap_pmds": tally.zap_pmds,
        "tlb_flushes": tally.count("tlb_flush"),
        "frames_allocated": tally.frames_allocated,
        "frames_freed": tally.frames_freed,
        "memory_end_kb": c.used_kb(m),
    }
    return WorkloadResult("micro", dict(params), metrics)


MICRO = register(
    Workload(
        name="micro",
        defaults=DEFAULTS,
        run=run,
        doc=(
            "The COW-reuse series' micro-benchmarks: 1 GiB of folios of one size, then fork, "
            "munmap, cow-byte, reuse-byte or child-reuse-byte; faults, reuses, copies and "
            "the PTEs fork and zap touch, for the measured phase. docs/workloads.md."
        ),
        metrics=METRICS,
    )
)
