"""``anon_cow_seq`` and ``anon_cow_rand``: vm-scalability's ``case-anon-cow-seq`` and
``case-anon-cow-rand`` (docs/workloads.md).

The parent maps ``size`` bytes and pre-faults them (usemem ``--prealloc --prefault``), forks
``nr_task`` children, and each child writes every page of the region: in address order
(``-seq``), or in the order random word writes first reach each page (``-rand``: a random
permutation of the pages, drawn per child; with 512 words a page, a page no random word
reaches is a chance of about e^-512). The children run concurrently in the benchmark; here
they take turns of ``interleave`` pages each, round robin, and each exits when done.
"""

from __future__ import annotations

from collections.abc import Mapping

from cowcore.workloads import _common as c
from cowcore.workloads.base import Scalar, Workload, WorkloadResult, register

DEFAULTS: Mapping[str, Scalar] = {
    "size": "64M",
    "nr_task": 4,
    "interleave": 512,
    "seed": 0,
    "memory": "auto",
}

METRICS = (
    "pages",
    "faults",
    "wp_faults",
    "copies",
    "reuses",
    "pmd_splits",
    "memory_peak_kb",
    "memory_end_kb",
)


def _run(params: Mapping[str, Scalar], order: str) -> WorkloadResult:
    import numpy as np  # noqa: PLC0415

    nbytes = c.size(params, "size")
    nr_task = int(c.positive(params, "nr_task"))
    interleave = int(c.positive(params, "interleave"))
    seed = int(c.positive(params, "seed", zero=True))
    m = c.machine(params, nbytes * (nr_task + 1))
    rng = np.random.Generator(np.random.PCG64(seed))
    npages = nbytes // c.PAGE
    parent = m.init
    base = parent.mmap(nbytes)
    parent.write(base, nbytes)
    start = c.counters(m)
    children = [parent.fork() for _ in range(nr_task)]
    sequences = [
        c.page_addrs(base, np.arange(npages) if order == "seq" else rng.permutation(npages))
        for _ in children
    ]
    peak = c.used_kb(m)
    for at in range(0, npages, interleave):
        for child, seq in zip(children, sequences, strict=True):
            for _ in c.access_chunks(child, seq[at : at + interleave], True):
                pass
            if at + interleave >= npages:
                child.exit()
        peak = max(peak, c.used_kb(m))
    end = c.delta(c.counters(m), start)
    metrics: dict[str, Scalar] = {
        "pages": npages,
        "faults": end["faults"],
        "wp_faults": end["wp_faults"],
        "copies": end["copies"],
        "reuses": end["reuses"],
        "pmd_splits": end["pmd_splits"],
        "memory_peak_kb": peak,
        "memory_end_kb": c.used_kb(m),
    }
    return WorkloadResult(f"anon_cow_{order}", dict(params), metrics)


def run_seq(params: Mapping[str, Scalar]) -> WorkloadResult:
    """``case-anon-cow-seq``: each child writes every page in address order."""
    return _run(params, "seq")


def run_rand(params: Mapping[str, Scalar]) -> WorkloadResult:
    """``case-anon-cow-rand``: each child writes every page in a random order."""
    return _run(params, "rand")


_DOC = (
    "vm-scalability's case-anon-cow-{}: the parent pre-faults a region, nr_task children "
    "write every page of it ({}); faults, copies, reuses and memory. docs/workloads.md."
)

ANON_COW_SEQ = register(
    Workload(
        name="anon_cow_seq",
        defaults=DEFAULTS,
        run=run_seq,
        doc=_DOC.format("seq", "in address order"),
        metrics=METRICS,
    )
)
ANON_COW_RAND = register(
    Workload(
        name="anon_cow_rand",
        defaults=DEFAULTS,
        run=run_rand,
        doc=_DOC.format("rand", "in a random order"),
        metrics=METRICS,
    )
)
