"""``fork_exec``: the phone case that motivated the simulator (docs/workloads.md).

``buf = malloc(size); memset(buf, ...); fork(); child: execve(...)`` (its address space
goes: an exit, as far as anonymous memory is concerned); then the parent writes a
``write_fraction`` of the buffer's pages, drawn at random. With large folios, a kernel that
cannot reuse a PTE-mapped large folio (6.12) copies each written page out of a folio that
only the parent maps, and the folio stays allocated, partially mapped, until the last of its
pages goes or a deferred split frees the unmapped rest (``deferred_split_folio``). The run
reports that memory: allocated to folios but mapped by no one.
"""

from __future__ import annotations

from collections.abc import Mapping

from cowcore.outcome import Outcome
from cowcore.protocol import THP_SIZES
from cowcore.workloads import _common as c
from cowcore.workloads.base import Scalar, Workload, WorkloadResult, register

DEFAULTS: Mapping[str, Scalar] = {
    "size": "1M",
    "write_fraction": 1.0,
    "exec_first": True,
    "seed": 0,
    "memory": "auto",
}

METRICS = (
    "pages",
    "pages_written",
    "copies",
    "reuses",
    "faults",
    "folio_kb",
    "mapped_kb",
    "wasted_kb",
    "partially_mapped_folios",
    *(f"split_deferred.{size}" for size in THP_SIZES),
    *(f"nr_anon_partially_mapped.{size}" for size in THP_SIZES),
    "thp_deferred_split_page",
    "memory_end_kb",
)


def run(params: Mapping[str, Scalar]) -> WorkloadResult:
    """Runs the fork-then-exec case (see the module docstring)."""
    import numpy as np  # noqa: PLC0415

    nbytes = c.size(params, "size")
    write_fraction = c.fraction(params, "write_fraction")
    exec_first = bool(params["exec_first"])
    seed = int(c.positive(params, "seed", zero=True))
    m = c.machine(params, 2 * nbytes)
    rng = np.random.Generator(np.random.PCG64(seed))
    npages = nbytes // c.PAGE
    tally = c.EventTally()
    with m.record() as rec:
        parent = m.init
        base = parent.mmap(nbytes)
        orders = np.concatenate(
            [
                r["order"]
                for r in c.access_chunks(parent, c.page_addrs(base, np.arange(npages)), True)
            ]
        )
        tally.add(rec.drain())
        start = c.counters(m)
        deferred_start = {size: st.split_deferred for size, st in m.mthp_stats().items()}
        thp_deferred_start = m.vmstat().thp_deferred_split_page
        child = parent.fork()
        if exec_first:
            child.exit()
        pages = rng.choice(npages, round(write_fraction * npages), replace=False)
        moved = np.zeros(npages, dtype=np.bool_)
        for at, r in zip(
            range(0, len(pages), c.CHUNK),
            c.access_chunks(parent, c.page_addrs(base, pages), True),
            strict=True,
        ):
            chunk = pages[at : at + len(r)]
            copied = (r["outcome"] == Outcome.COW_COPY) | (r["outcome"] == Outcome.PMD_SPLIT_COPY)
            moved[chunk[copied]] = True
            tally.add(rec.drain())
        if not exec_first:
            child.exit()
        tally.add(rec.drain())
    end = c.delta(c.counters(m), start)
    # the buffer's folios from the memset's records (anonymous folios are naturally
    # aligned): each is partially mapped when the parent copied some but not all of its
    # pages out of it, the state deferred_split_folio() queues
    idx = np.arange(npages, dtype=np.int64)
    folio_start = (idx >> orders) << orders
    large = orders > 0
    _, folio = np.unique(folio_start, return_inverse=True)
    nfolios = int(folio.max()) + 1
    size_of = np.bincount(folio, minlength=nfolios)
    gone = np.bincount(folio[moved], minlength=nfolios)
    is_large = np.bincount(folio[large], minlength=nfolios) > 0
    partial = is_large & (gone > 0) & (gone < size_of)
    # the kernel's counters for the same folios (deferred_split_folio() counts
    # split_deferred and raises nr_anon_partially_mapped the first time a folio is left
    # partially mapped; freeing the folio lowers the gauge again)
    mthp = m.mthp_stats()
    folio_kb = (tally.frames_allocated - tally.frames_freed) * (c.PAGE >> 10)
    mapped_kb = parent.rss_anon() * (c.PAGE >> 10)
    metrics: dict[str, Scalar] = {
        "pages": npages,
        "pages_written": len(pages),
        "copies": end["copies"],
        "reuses": end["reuses"],
        "faults": end["faults"],
        "folio_kb": folio_kb,
        "mapped_kb": mapped_kb,
        "wasted_kb": folio_kb - mapped_kb,
        "partially_mapped_folios": int(partial.sum()),
        **{f"split_deferred.{k}": v.split_deferred - deferred_start[k] for k, v in mthp.items()},
        **{f"nr_anon_partially_mapped.{k}": v.nr_anon_partially_mapped for k, v in mthp.items()},
        "thp_deferred_split_page": m.vmstat().thp_deferred_split_page - thp_deferred_start,
        "memory_end_kb": c.used_kb(m),
    }
    return WorkloadResult("fork_exec", dict(params), metrics)


FORK_EXEC = register(
    Workload(
        name="fork_exec",
        defaults=DEFAULTS,
        run=run,
        doc=(
            "malloc; memset; fork; the child execs; the parent writes: the memory held by "
            "large folios that only part of is still mapped (deferred-split candidates), per "
            "page size and profile. docs/workloads.md."
        ),
        metrics=METRICS,
    )
)
