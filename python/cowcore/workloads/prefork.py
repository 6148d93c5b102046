"""``prefork``: a pre-fork worker pool (gunicorn, uWSGI, Unicorn, Puma, Android's zygote),
optionally reforked from a warmed worker (Pitchfork, Puma's ``fork_worker``); see
docs/workloads.md.

The process that loaded the application writes a heap of ``heap`` bytes and forks the
workers. Each worker dirties the ``warm`` pages (the same for every worker: lazily filled
caches, inline caches, JIT code, memoised data, which every worker fills the same way on its
first requests) and a ``dirty`` fraction of its own drawn at random (reference counts and GC
marks touched by its requests: "copy-on-read"). With ``refork``, a warmed worker becomes the
template of the next generation, whose workers need not fill the warm pages again.

Besides USS/PSS, the run counts the copies the kernel made of a page of a large folio that
no other process mapped at the time and of which the writer mapped two pages or more
(``avoidable_copies``): with the reuse of PTE-mapped large folios and unlimited owner slots
these would have been reuses. ``slot_overflow_copies`` are those that
6.15 refused only because the folio had been mapped by more MMs than its two MM-id slots
hold (reason ``LARGE_MAYBE_SHARED``: ``folio_test_large_maybe_mapped_shared``, whose bit
``folio_sub_large_mapcount`` clears only when a slot owner's unmap leaves one slot owning
every mapping).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from cowcore.errors import InvalidArgumentError
from cowcore.machine import Process
from cowcore.outcome import Outcome, Reason
from cowcore.workloads import _common as c
from cowcore.workloads.base import Scalar, Workload, WorkloadResult, register

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

FORK_FROM = ("master", "worker0")

DEFAULTS: Mapping[str, Scalar] = {
    "heap": "256M",
    "workers": 4,
    "warm": 0.05,
    "dirty": 0.1,
    "fork_from": "master",
    "refork": False,
    "seed": 0,
    "memory": "auto",
}

METRICS = (
    "processes",
    "total_memory_kb",
    "sum_pss_kb",
    "worker_uss_kb_mean",
    "worker_uss_kb_max",
    "worker_pss_kb_mean",
    "template_uss_kb",
    "copies",
    "reuses",
    "faults",
    "avoidable_copies",
    "slot_overflow_copies",
    "machine_memory_kb",
)


class HeapMappers:
    """Which pages of the application's original heap each live process still maps, kept
    from the access records (a copy moves the writer's page to a new folio; a reuse, or
    no write, keeps it), so that "no other process maps this folio" is a numpy question.

    The heap's folios are found from the order of the folio each first write landed in
    (anonymous folios are naturally aligned in the address space, ``alloc_anon_folio``).
    """

    def __init__(self, orders: npt.NDArray[np.uint8]) -> None:
        import numpy as np  # noqa: PLC0415

        idx = np.arange(len(orders), dtype=np.int64)
        start = (idx >> orders) << orders
        _, self.folio = np.unique(start, return_inverse=True)
        self.nfolios = int(self.folio.max()) + 1 if len(orders) else 0
        self.large = orders > 0
        self.orig: dict[int, npt.NDArray[np.bool_]] = {}
        self.maps: dict[int, npt.NDArray[np.bool_]] = {}

    def add(self, pid: int, orig: npt.NDArray[np.bool_]) -> None:
        """A process that maps the heap pages where ``orig`` is true."""
        import numpy as np  # noqa: PLC0415

        self.orig[pid] = orig
        self.maps[pid] = np.bincount(self.folio[orig], minlength=self.nfolios) > 0

    def fork(self, parent: int, child: int) -> None:
        """``child`` maps what ``parent`` maps (``dup_mmap``)."""
        self.add(child, self.orig[parent].copy())

    def exit(self, pid: int) -> None:
        del self.orig[pid], self.maps[pid]

    def others(self, pid: int) -> npt.NDArray[np.int64]:
        """Per folio, how many live processes other than ``pid`` map a page of it."""
        import numpy as np  # noqa: PLC0415

        count = np.zeros(self.nfolios, dtype=np.int64)
        for q, maps in self.maps.items():
            if q != pid:
                count += maps
        return count


def _writes(
    proc: Process, base: int, pages: npt.NDArray[np.int64], mappers: HeapMappers
) -> tuple[int, int]:
    """``proc`` writes ``pages`` in order; returns ``(avoidable_copies,
    slot_overflow_copies)`` and updates ``mappers``.

    A copy is avoidable when its page belongs to a large folio of the heap that no other
    process maps and of which the writer still maps at least two pages (with one,
    ``__wp_can_reuse_large_anon_folio`` copies anyway, to free the folio): the case that
    the reuse of PTE-mapped large folios with unlimited owner slots turns into a reuse.
    Other processes do not run during the batch, so "no other process maps it" is known
    at its start; the writer's own count falls by one with each of its copies.
    """
    import numpy as np  # noqa: PLC0415

    others = mappers.others(proc.pid)
    orig = mappers.orig[proc.pid]
    own = np.bincount(mappers.folio[orig], minlength=mappers.nfolios)
    avoidable = slot = 0
    at = 0
    for rec in c.access_chunks(proc, c.page_addrs(base, pages), True):
        chunk = pages[at : at + len(rec)]
        at += len(rec)
        outcome = rec["outcome"]
        copied = (outcome == Outcome.COW_COPY) | (outcome == Outcome.PMD_SPLIT_COPY)
        copied &= orig[chunk]
        cpages = chunk[copied]
        folios = mappers.folio[cpages]
        # the writer's pages of each folio just before each copy: its count at the chunk's
        # start less its earlier copies of that folio in the chunk
        by_folio = np.argsort(folios, kind="stable")
        ordered = folios[by_folio]
        rank = np.empty(len(folios), dtype=np.int64)
        rank[by_folio] = np.arange(len(folios)) - np.searchsorted(ordered, ordered)
        alone = mappers.large[cpages] & (others[folios] == 0) & (own[folios] - rank >= 2)
        avoidable += int(alone.sum())
        slot += int((alone & (rec["reason"][copied] == Reason.LARGE_MAYBE_SHARED)).sum())
        own -= np.bincount(folios, minlength=mappers.nfolios)
        orig[cpages] = False
    mappers.add(proc.pid, orig)
    return avoidable, slot


def run(params: Mapping[str, Scalar]) -> WorkloadResult:
    """Runs the pre-fork pool (see the module docstring)."""
    import numpy as np  # noqa: PLC0415

    heap = c.size(params, "heap")
    nworkers = int(c.positive(params, "workers"))
    warm = c.fraction(params, "warm")
    dirty = c.fraction(params, "dirty")
    fork_from = c.choice(params, "fork_from", FORK_FROM)
    refork = bool(params["refork"])
    seed = int(c.positive(params, "seed", zero=True))
    if fork_from == "worker0" and nworkers < 1:
        raise InvalidArgumentError("fork_from='worker0' needs at least one worker")

    npages = heap // c.PAGE
    m = c.machine(params, heap * 2 + int(heap * min(1.0, warm + dirty)) * nworkers * 2)
    rng = np.random.Generator(np.random.PCG64(seed))
    root = m.init
    base = root.mmap(heap)
    orders = np.concatenate(
        [rec["order"] for rec in c.access_chunks(root, c.page_addrs(base, np.arange(npages)), True)]
    )
    mappers = HeapMappers(orders)
    mappers.add(root.pid, np.ones(npages, dtype=np.bool_))
    start = c.counters(m)
    warm_pages = rng.choice(npages, round(warm * npages), replace=False)
    ndirty = round(dirty * npages)
    totals = {"avoidable": 0, "slot": 0}
    role = {root.pid: "master" if fork_from == "master" else "worker"}
    generation = {root.pid: 0}
    done: dict[int, dict[str, int]] = {}

    def spawn(template: Process, gen: int, name: str) -> Process:
        proc = template.fork()
        mappers.fork(template.pid, proc.pid)
        role[proc.pid], generation[proc.pid] = name, gen
        return proc

    def serve(proc: Process, pages: npt.NDArray[np.int64]) -> None:
        before = c.counters(m)
        avoidable, slot = _writes(proc, base, pages, mappers)
        totals["avoidable"] += avoidable
        totals["slot"] += slot
        done[proc.pid] = {**c.delta(c.counters(m), before), "avoidable": avoidable, "slot": slot}

    def retire(proc: Process) -> None:
        proc.exit()
        mappers.exit(proc.pid)

    if fork_from == "master":
        workers = [spawn(root, 0, "worker") for _ in range(nworkers)]
    else:
        workers = [root] + [spawn(root, 0, "worker") for _ in range(nworkers - 1)]
    for w in workers:
        serve(w, np.concatenate([warm_pages, rng.choice(npages, ndirty, replace=False)]))
    template: Process | None = root if fork_from == "master" else None
    if refork and fork_from == "master":
        # Pitchfork: a warmed worker forks the next generation's mold, the old mold goes,
        # then each old worker is replaced by one forked from the new mold
        template = spawn(workers[0], 1, "mold")
        retire(root)
        for i, old in enumerate(workers):
            retire(old)
            workers[i] = spawn(template, 1, "worker")
            serve(workers[i], rng.choice(npages, ndirty, replace=False))
    elif refork:
        # Puma's refork: every worker but worker 0 is replaced by a fork of worker 0
        for i in range(1, nworkers):
            retire(workers[i])
            workers[i] = spawn(workers[0], 1, "worker")
            serve(workers[i], rng.choice(npages, ndirty, replace=False))

    end = c.delta(c.counters(m), start)
    rows: list[dict[str, Scalar]] = []
    live = ([template] if template is not None else []) + workers
    for step, proc in enumerate(live):
        uss, pss, rss = c.uss_pss_rss_kb(proc)
        own = done.get(proc.pid, {})
        rows.append(
            {
                "step": step,
                "role": role[proc.pid],
                "generation": generation[proc.pid],
                "uss_kb": uss,
                "pss_kb": pss,
                "rss_kb": rss,
                "copies": own.get("copies", 0),
                "reuses": own.get("reuses", 0),
                "avoidable_copies": own.get("avoidable", 0),
            }
        )
    wrows = [r for r in rows if r["role"] == "worker"]
    wuss = [int(r["uss_kb"]) for r in wrows]
    metrics: dict[str, Scalar] = {
        "processes": len(live),
        "total_memory_kb": c.used_kb(m),
        "sum_pss_kb": sum(int(r["pss_kb"]) for r in rows),
        "worker_uss_kb_mean": sum(wuss) / len(wuss) if wuss else 0.0,
        "worker_uss_kb_max": max(wuss, default=0),
        "worker_pss_kb_mean": (sum(int(r["pss_kb"]) for r in wrows) / len(wrows)) if wrows else 0.0,
        "template_uss_kb": int(rows[0]["uss_kb"]) if template is not None else 0,
        "copies": end["copies"],
        "reuses": end["reuses"],
        "faults": end["faults"],
        "avoidable_copies": totals["avoidable"],
        "slot_overflow_copies": totals["slot"],
        "machine_memory_kb": m.total_frames * (c.PAGE >> 10),
    }
    return WorkloadResult("prefork", dict(params), metrics, tuple(rows))


PREFORK = register(
    Workload(
        name="prefork",
        defaults=DEFAULTS,
        run=run,
        doc=(
            "Pre-fork pool (gunicorn, uWSGI, Unicorn, Puma, zygote): a loaded heap, N "
            "workers each dirtying shared warm pages and a random fraction of their own, "
            "optional refork from a warmed worker (Pitchfork, Puma fork_worker); per-process "
            "USS/PSS, total memory, and the copies the two MM-id slots cost. "
            "docs/workloads.md."
        ),
        metrics=METRICS,
    )
)
