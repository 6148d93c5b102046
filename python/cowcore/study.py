"""``cowcore study seed-future-work``: issue 15's study of the seed commit's future work.

The seed commit ("mm: Copy-on-Write (COW) reuse support for PTE-mapped THP") ends with two
ideas, remembering that a folio is exclusive and "faulting around", and its series with a
known imprecision, two MM-id slots per folio. The simulator has each as a policy (DESIGN.md,
"Policies"); this module measures them, deterministically, and writes every number, table and
figure of ``docs/studies/seed-future-work.md``:

* :func:`run_case` runs one workload shape (the ``micro`` modes ``reuse-byte``, ``cow-byte``
  and ``child-reuse-byte``, ``fork_exec`` and ``snapshot`` of :mod:`cowcore.workloads`) under
  one profile, folio size and policy set, with a :class:`Meter` on the measured phase: the
  access records (outcome, reason, ``FAULT_AROUND``), the event stream priced by the cost
  model (:mod:`cowcore.cost`) access by access, and a shadow of which of the writer's PTEs are
  writable, from which the PTEs fault-around upgraded and the pages it made writable that were
  never written follow.
* :func:`run_pools` runs the ``prefork`` workload for N = 2..64 with the two-slot tracker and
  with ``mm_id_exact``, and :func:`run_survivor` the cover letter's case (N - 1 children exit,
  the survivor writes).
* :func:`write_study` writes the CSV data, the Markdown tables, the figures and the generated
  blocks of the study's document.

The drivers replay the workloads' shapes with the Meter attached (the workloads keep their
own counters, not the records and events this needs); ``tests/test_study.py`` checks that
each gives the registered workload's faults, reuses and copies.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import io
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cowcore.cost import DEFAULT, CostModel
from cowcore.errors import CowError, InvalidArgumentError, MissingDependencyError
from cowcore.machine import Machine, Process
from cowcore.outcome import AccessFlags, EventCode, MapLevel, Outcome, Reason
from cowcore.protocol import FAULT_AROUND_PAGES, THP_SIZES
from cowcore.workloads import _common as c
from cowcore.workloads import get
from cowcore.workloads import snapshot as snapshot_workload
from cowcore.workloads.base import Scalar

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = [
    "CONFIGS",
    "POLICY_SETS",
    "WORKLOADS",
    "Config",
    "Meter",
    "Scale",
    "run_case",
    "run_pools",
    "run_survivor",
    "write_study",
]

PAGE = 4096
STUDY = "seed-future-work"


@dataclass(frozen=True)
class Config:
    """A profile as the study runs it: the kernel profile, and whether the 6.15 reuse of
    PTE-mapped large folios is turned on where the profile lacks it (a what-if)."""

    label: str
    kernel: str
    pte_reuse_what_if: bool = False

    @property
    def sizes(self) -> tuple[str, ...]:
        """The folio sizes the profile has (6.1: PMD-size THP only)."""
        return ("2M",) if self.kernel == "6.1" else tuple(THP_SIZES)


CONFIGS: tuple[Config, ...] = (
    Config("6.1", "6.1"),
    Config("6.12", "6.12"),
    Config("6.12+reuse", "6.12", pte_reuse_what_if=True),
    Config("6.15", "6.15"),
)
"""The profiles studied. ``6.12+reuse`` is a what-if: 6.12 with ``cow_reuse_pte_mapped_thp``
turned on, which no 6.12 kernel has."""

POLICY_SETS: Mapping[str, tuple[str, ...]] = {
    "off": (),
    "remember_exclusive": ("cow_reuse_remember_exclusive",),
    "fault_around": ("cow_reuse_fault_around",),
    "fault_around_window": ("cow_reuse_fault_around", "cow_reuse_fault_around_window"),
    "mm_id_exact": ("mm_id_exact",),
    "all": ("cow_reuse_remember_exclusive", "cow_reuse_fault_around", "mm_id_exact"),
}
"""Each policy alone (fault-around also in its 16-page window variant), and the three
together (the study's ``policy`` column)."""

WORKLOADS = ("reuse-byte", "cow-byte", "child-reuse-byte", "fork_exec", "snapshot")
"""The shapes of the first two questions: the ``micro`` modes, then ``fork_exec`` and
``snapshot`` of :mod:`cowcore.workloads`."""


@dataclass(frozen=True)
class Scale:
    """The sizes of a run: the full study, or ``--quick``'s smaller one."""

    micro_size: str
    fork_exec_size: str
    fork_exec_fraction: float
    snapshot_heap: str
    snapshot_after_s: float
    pool_heap: str
    pool_sizes: tuple[int, ...]
    pool_folios: tuple[str, ...]


FULL = Scale(
    micro_size="64M",
    fork_exec_size="32M",
    fork_exec_fraction=0.5,
    snapshot_heap="64M",
    snapshot_after_s=1.0,
    pool_heap="16M",
    pool_sizes=(2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64),
    pool_folios=("16K", "64K", "2M"),
)
"""The committed study (a minute or two on one core)."""
QUICK = Scale(
    micro_size="4M",
    fork_exec_size="4M",
    fork_exec_fraction=0.5,
    snapshot_heap="4M",
    snapshot_after_s=1.0,
    pool_heap="2M",
    pool_sizes=(2, 3, 4, 8),
    pool_folios=("64K", "2M"),
)
"""``--quick``: every table and figure, in seconds (the tests)."""

POOL_SHAPES: Mapping[str, Mapping[str, Scalar]] = {
    "default": {"fork_from": "master", "warm": 0.05, "dirty": 0.1},
    "worker0-warm": {"fork_from": "worker0", "warm": 0.9, "dirty": 0.1},
    "worker0-all": {"fork_from": "worker0", "warm": 0.0, "dirty": 1.0},
}
"""The ``prefork`` shapes of the third question: the workload's defaults (the master keeps
the heap), Puma's ``fork_worker`` with a warm-up that dirties 90% of the heap the same way in
every worker plus 10% of its own, and the same writing every page (the worst case)."""


# --------------------------------------------------------------------------------------------
# the meter


def _prices(model: CostModel, events: npt.NDArray[np.void]) -> npt.NDArray[np.float64]:
    """Nanoseconds of each event under ``model``: :meth:`CostModel.estimate` of one event of
    each distinct (kind, order, nr, pmds, flush span), so that the pricing stays the model's
    own (its estimate is a sum over events)."""
    import numpy as np  # noqa: PLC0415

    if len(events) == 0:
        return np.zeros(0)
    span = events["end"].astype(np.uint64) - events["start"].astype(np.uint64)
    keys = np.stack(
        [
            events["kind"].astype(np.uint64),
            events["order"].astype(np.uint64),
            events["nr"].astype(np.uint64),
            events["pmds"].astype(np.uint64),
            span,
        ],
        axis=1,
    )
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    unit = np.array([model.estimate(events[i : i + 1]).total_ns for i in first])
    return unit[inverse.reshape(-1)]


_FAULT_CODES = (EventCode.FAULT_READ, EventCode.FAULT_WRITE, EventCode.FAULT_WP)


class Meter:
    """What the study measures over a phase of a run: counts from the access records, the
    event stream priced access by access, and the writer's PTE state.

    The cost of the PTEs fault-around upgrades is not an event (docs/access-and-events.md:
    no event is added); the meter prices each at ``mprotect_entry``, the model's cost of
    rewriting one present PTE's permissions, since that is what the upgrade does
    (``pte_mkwrite`` under the PTE lock, no TLB flush). Which PTEs it upgraded follows the
    policy's rule (DESIGN.md, "Policies") over a shadow of the writer's writable PTEs: the
    other pages of the folio's span that were not writable just before the fault (a page not
    writable in the writer after the fork still maps the folio it mapped then).
    """

    def __init__(self, m: Machine, base: int, npages: int, model: CostModel) -> None:
        """Starts the phase on ``m`` (whose heap is ``npages`` pages at ``base``): takes the
        counters and opens a recording (none may be open), which :meth:`close` ends."""
        self.m, self.base, self.npages, self.model = m, base, npages, model
        self.window = FAULT_AROUND_PAGES if m.policy.cow_reuse_fault_around_window else 0
        self.writable: dict[int, npt.NDArray[np.bool_]] = {}
        self.written: dict[int, npt.NDArray[np.bool_]] = {}
        self.upgraded: dict[int, npt.NDArray[np.bool_]] = {}
        self.total_ns = 0.0
        self.fault_around_ns = 0.0
        self.worst_ns = 0.0
        self.writes = self.faults = self.entries = self.max_entries = 0
        self.memo = self.exact = self.fault_around = 0
        self._start = c.counters(m)
        self._rec = m.record()
        self._rec.__enter__()

    def track(self, proc: Process) -> None:
        """Follows ``proc``'s PTEs from now on: every PTE read-only (just forked)."""
        import numpy as np  # noqa: PLC0415

        for table in (self.writable, self.written, self.upgraded):
            table[proc.pid] = np.zeros(self.npages, dtype=np.bool_)

    def other(self) -> None:
        """Prices the events since the last call (a fork, an exit, the child's reads)."""
        events = self._rec.drain()
        self.total_ns += float(_prices(self.model, events).sum())

    def write(self, proc: Process, pages: npt.NDArray[np.int64]) -> None:
        """``proc`` writes one byte to each of ``pages`` (heap page indices), in order."""
        self.other()
        for at in range(0, len(pages), c.CHUNK):
            chunk = pages[at : at + c.CHUNK]
            recs = proc.access_batch(c.page_addrs(self.base, chunk), True)
            self._account(proc.pid, chunk, recs, self._rec.drain())

    def _account(
        self,
        pid: int,
        pages: npt.NDArray[np.int64],
        recs: npt.NDArray[np.void],
        events: npt.NDArray[np.void],
    ) -> None:
        import numpy as np  # noqa: PLC0415

        n = len(pages)
        self.writes += n
        faults = recs["faults"].astype(np.int64)
        flags = recs["flags"]
        self.faults += int(faults.sum())
        self.memo += int((recs["reason"] == Reason.LARGE_MEMO_EXCLUSIVE).sum())
        self.exact += int((recs["reason"] == Reason.LARGE_EXACT_EXCLUSIVE).sum())
        around = np.flatnonzero(flags & AccessFlags.FAULT_AROUND)
        self.fault_around += len(around)

        # the shadow: which pages were writable just before each fault-around access
        writable = self.writable[pid]
        upgraded = np.zeros(n, dtype=np.int64)
        if len(around):
            first = np.full(self.npages, n, dtype=np.int64)
            np.minimum.at(first, pages, np.arange(n))
            for j in around:
                order = int(recs["order"][j])
                lo = (int(pages[j]) >> order) << order
                hi = min(lo + (1 << order), self.npages)
                if self.window:  # cow_reuse_fault_around_window: the aligned window only
                    w = int(pages[j]) & ~(self.window - 1)
                    lo, hi = max(lo, w), min(hi, w + self.window)
                span = np.arange(lo, hi)
                up = ~writable[lo:hi] & (first[lo:hi] >= j) & (span != pages[j])
                self.upgraded[pid][lo:hi] |= up
                writable[lo:hi] |= up
                upgraded[j] = int(up.sum())
        done = faults > 0
        refused = (recs["outcome"] == Outcome.SEGFAULT) | (recs["outcome"] == Outcome.OUT_OF_MEMORY)
        writable[pages[~refused]] = True
        for j in np.flatnonzero((recs["level"] == MapLevel.PMD) & done):
            lo = (int(pages[j]) >> 9) << 9
            writable[lo : lo + 512] = True
        self.written[pid][pages] = True

        # entries each fault wrote: the PTE or PMD it installed, the PTEs a split wrote,
        # the PTEs fault-around upgraded
        split = (flags & AccessFlags.SPLIT) > 0
        entries = faults + split * 512 + upgraded
        self.entries += int(entries.sum())
        if n:
            self.max_entries = max(self.max_entries, int(entries.max()))

        # the events, fault by fault, then access by access
        price = _prices(self.model, events)
        starts = np.isin(events["kind"], _FAULT_CODES)
        nfaults = int(starts.sum())
        if nfaults != int(faults.sum()):
            raise AssertionError(f"{nfaults} fault events for {int(faults.sum())} faults")
        if len(events) and not starts[0]:
            raise AssertionError("an access batch's events do not start with a fault")
        fault_ns = np.bincount(np.cumsum(starts) - 1, weights=price, minlength=nfaults)
        cum = np.concatenate([[0.0], np.cumsum(fault_ns)])
        end = np.cumsum(faults)
        access_ns = cum[end] - cum[end - faults] + upgraded * self.model.mprotect_entry
        self.fault_around_ns += float(upgraded.sum()) * self.model.mprotect_entry
        self.total_ns += float(access_ns.sum())
        if n:
            self.worst_ns = max(self.worst_ns, float(access_ns.max()))

    def close(self) -> dict[str, Scalar]:
        """Ends the phase; its metrics."""
        self.other()
        self._rec.__exit__(None, None, None)
        end = c.delta(c.counters(self.m), self._start)
        ptes_upgraded = sum(int(u.sum()) for u in self.upgraded.values())
        never = sum(int((u & ~self.written[pid]).sum()) for pid, u in self.upgraded.items())
        return {
            "writes": self.writes,
            "faults": end["faults"],
            "reuses": end["reuses"],
            "copies": end["copies"],
            "memo_reuses": self.memo,
            "exact_reuses": self.exact,
            "fault_around_faults": self.fault_around,
            "ptes_upgraded": ptes_upgraded,
            "never_written": never,
            "entries_per_fault": round(self.entries / self.faults, 3) if self.faults else 0.0,
            "max_entries_per_fault": self.max_entries,
            "est_ms": round(self.total_ns / 1e6, 4),
            "fault_around_ms": round(self.fault_around_ns / 1e6, 4),
            "worst_fault_us": round(self.worst_ns / 1e3, 3),
            "memory_end_kb": c.used_kb(self.m),
        }


# --------------------------------------------------------------------------------------------
# the cases


def machine_params(config: Config, folio: str, policy: str) -> dict[str, Scalar]:
    """The flat machine parameters (:data:`cowcore.workloads.MACHINE_PARAMS`) of one case."""
    params: dict[str, Scalar] = {"kernel": config.kernel, "memory": "auto"}
    params[f"thp.{folio}"] = "always"
    if config.pte_reuse_what_if:
        params["policy.cow_reuse_pte_mapped_thp"] = True
    for name in POLICY_SETS[policy]:
        params[f"policy.{name}"] = True
    return params


def _micro(params: Mapping[str, Scalar], mode: str, model: CostModel) -> dict[str, Scalar]:
    """``micro`` (cowcore.workloads.micro) with the meter on the measured write phase."""
    import numpy as np  # noqa: PLC0415

    nbytes = c.size(params, "size")
    folio = str(params["folio"])
    m = c.machine(params, 2 * nbytes)
    parent = m.init
    base = parent.mmap(nbytes)
    parent.write(base, nbytes)
    if folio == "2M":
        # PTE-map every THP first, as the micro workload does (cow.c's THP_RUN_PTE)
        for at in range(base, base + nbytes, 2 << 20):
            parent.mprotect(at + PAGE, PAGE, "r")
            parent.mprotect(at + PAGE, PAGE, "rw")
    child = parent.fork()
    if mode == "reuse-byte":
        child.exit()
    if mode == "child-reuse-byte":
        parent.munmap(base, nbytes)
    npages = nbytes // PAGE
    meter = Meter(m, base, npages, model)
    writer = child if mode == "child-reuse-byte" else parent
    meter.track(writer)
    meter.write(writer, np.arange(npages, dtype=np.int64))
    return {"pages": npages, **meter.close()}


def _fork_exec(params: Mapping[str, Scalar], model: CostModel) -> dict[str, Scalar]:
    """``fork_exec`` (exec first) with the meter from the fork on."""
    import numpy as np  # noqa: PLC0415

    nbytes = c.size(params, "size")
    m = c.machine(params, 2 * nbytes)
    rng = np.random.Generator(np.random.PCG64(int(params["seed"])))
    npages = nbytes // PAGE
    parent = m.init
    base = parent.mmap(nbytes)
    parent.write(base, nbytes)
    meter = Meter(m, base, npages, model)
    child = parent.fork()
    meter.track(parent)
    child.exit()
    pages = rng.choice(npages, round(float(params["write_fraction"]) * npages), replace=False)
    meter.write(parent, pages.astype(np.int64))
    return {"pages": npages, **meter.close()}


def _snapshot(params: Mapping[str, Scalar], model: CostModel) -> dict[str, Scalar]:
    """``snapshot`` (the plan of :func:`cowcore.workloads.snapshot.steps`) with the meter
    from the fork on; the child's smaps readings are left out (they change nothing)."""
    import numpy as np  # noqa: PLC0415

    plan = snapshot_workload.steps(params)
    heap = c.size(params, "heap")
    m = c.machine(params, 2 * heap)
    parent = m.init
    base = parent.mmap(heap)
    parent.write(base, heap)
    meter = Meter(m, base, heap // PAGE, model)
    child = parent.fork()
    meter.track(parent)
    samples = int(params["samples"])
    for st in plan:
        if st.alive:
            for _ in c.access_chunks(child, c.page_addrs(base, np.arange(*st.scan)), False):
                pass
        meter.write(parent, st.pages)
        if st.alive and st.step == samples - 1:
            child.exit()
    return {"pages": heap // PAGE, **meter.close()}


def workload_params(workload: str, scale: Scale, folio: str) -> dict[str, Scalar]:
    """The workload's own parameters in the study (its other ones at their defaults)."""
    if workload in ("reuse-byte", "cow-byte", "child-reuse-byte"):
        return {"mode": workload, "size": scale.micro_size, "folio": folio}
    if workload == "fork_exec":
        return {"size": scale.fork_exec_size, "write_fraction": scale.fork_exec_fraction}
    return {"heap": scale.snapshot_heap, "after_s": scale.snapshot_after_s}


def registered(workload: str) -> str:
    """The registered workload a study shape replays."""
    return "micro" if workload in ("reuse-byte", "cow-byte", "child-reuse-byte") else workload


def run_case(
    config: Config,
    folio: str,
    policy: str,
    workload: str,
    scale: Scale = FULL,
    model: CostModel = DEFAULT,
) -> dict[str, Scalar]:
    """One row of the study: ``workload`` under ``config`` with ``folio`` folios and the
    policy set ``policy`` (a key of :data:`POLICY_SETS`)."""
    w = get(registered(workload))
    params = w.resolve(
        {**workload_params(workload, scale, folio), **machine_params(config, folio, policy)}
    )
    if workload == "fork_exec":
        metrics = _fork_exec(params, model)
    elif workload == "snapshot":
        metrics = _snapshot(params, model)
    else:
        metrics = _micro(params, workload, model)
    return {
        "config": config.label,
        "folio": folio,
        "policy": policy,
        "workload": workload,
        **metrics,
    }


def run_pools(
    scale: Scale = FULL, shapes: Iterable[str] = tuple(POOL_SHAPES)
) -> list[dict[str, Scalar]]:
    """The third question on the ``prefork`` workload: for each shape, folio size and pool
    size N (template and workers: ``workers`` = N - 1 under ``master``, N under
    ``worker0``), 6.15 with the two-slot tracker and with ``mm_id_exact``."""
    w = get("prefork")
    rows: list[dict[str, Scalar]] = []
    for shape in shapes:
        for folio in scale.pool_folios:
            for n in scale.pool_sizes:
                workers = n - 1 if POOL_SHAPES[shape]["fork_from"] == "master" else n
                for exact in (False, True):
                    params = w.resolve(
                        {
                            **POOL_SHAPES[shape],
                            "heap": scale.pool_heap,
                            "workers": workers,
                            "kernel": "6.15",
                            f"thp.{folio}": "always",
                            "policy.mm_id_exact": exact,
                        }
                    )
                    r = w.run(params).metrics
                    rows.append(
                        {
                            "shape": shape,
                            "folio": folio,
                            "processes": n,
                            "tracker": "exact" if exact else "two-slot",
                            **{
                                k: r[k]
                                for k in (
                                    "copies",
                                    "reuses",
                                    "avoidable_copies",
                                    "slot_overflow_copies",
                                    "total_memory_kb",
                                    "sum_pss_kb",
                                )
                            },
                        }
                    )
    return rows


def run_survivor(scale: Scale = FULL, model: CostModel = DEFAULT) -> list[dict[str, Scalar]]:
    """The cover letter's case: a process writes a heap and forks N - 1 children; every
    process but one exits (in fork order), and the survivor writes half its pages. The
    parent and the first child hold the folio's two MM-id slots; from the third mm on, a
    mapper gets no slot and sets the shared bit, which only a slot owner's unmap can clear
    (``folio_sub_large_mapcount``). A surviving first child (``survivor = first``) sees the
    bit cleared when the others go; the last-forked child (``survivor = last``) holds no slot
    when N >= 3, so the bit stays set and it copies what it alone maps."""
    import numpy as np  # noqa: PLC0415

    rows: list[dict[str, Scalar]] = []
    heap = c.size({"heap": scale.pool_heap}, "heap")
    npages = heap // PAGE
    for folio in scale.pool_folios:
        for n in scale.pool_sizes:
            for which in ("first", "last"):
                for exact in (False, True):
                    policy = "mm_id_exact" if exact else "off"
                    m = c.machine(machine_params(CONFIGS[3], folio, policy), 2 * heap)
                    parent = m.init
                    base = parent.mmap(heap)
                    parent.write(base, heap)
                    kids = [parent.fork() for _ in range(n - 1)]
                    survivor = kids[0] if which == "first" else kids[-1]
                    meter = Meter(m, base, npages, model)
                    for proc in [parent, *kids]:
                        if proc is not survivor:
                            proc.exit()
                    meter.track(survivor)
                    meter.write(survivor, np.arange(0, npages, 2, dtype=np.int64))
                    r = meter.close()
                    rows.append(
                        {
                            "folio": folio,
                            "processes": n,
                            "survivor": which,
                            "tracker": "exact" if exact else "two-slot",
                            **{
                                k: r[k]
                                for k in (
                                    "writes",
                                    "faults",
                                    "reuses",
                                    "copies",
                                    "exact_reuses",
                                    "est_ms",
                                    "memory_end_kb",
                                )
                            },
                        }
                    )
    return rows


def cases(configs: Sequence[Config] = CONFIGS) -> Iterable[tuple[Config, str, str, str]]:
    """Every (config, folio, policy, workload) of the first two questions, in table order."""
    for workload in WORKLOADS:
        for config in configs:
            for folio in config.sizes:
                for policy in POLICY_SETS:
                    yield config, folio, policy, workload


# --------------------------------------------------------------------------------------------
# the outputs: CSV data, Markdown tables, figures, and the document's generated blocks

Row = dict[str, str]

CASE_COLUMNS = (
    "config",
    "folio",
    "policy",
    "workload",
    "pages",
    "writes",
    "faults",
    "reuses",
    "copies",
    "memo_reuses",
    "exact_reuses",
    "fault_around_faults",
    "ptes_upgraded",
    "never_written",
    "entries_per_fault",
    "max_entries_per_fault",
    "est_ms",
    "fault_around_ms",
    "worst_fault_us",
    "memory_end_kb",
)
POOL_COLUMNS = (
    "shape",
    "folio",
    "processes",
    "tracker",
    "copies",
    "reuses",
    "avoidable_copies",
    "slot_overflow_copies",
    "total_memory_kb",
    "sum_pss_kb",
)
SURVIVOR_COLUMNS = (
    "folio",
    "processes",
    "survivor",
    "tracker",
    "writes",
    "faults",
    "reuses",
    "copies",
    "exact_reuses",
    "est_ms",
    "memory_end_kb",
)


def _csv_text(rows: Sequence[Mapping[str, Scalar]], columns: Sequence[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    w.writeheader()
    for row in rows:
        w.writerow({k: row[k] for k in columns})
    return buf.getvalue()


def read_csv(path: Path) -> list[Row]:
    """A study table as written (every cell a string)."""
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _md(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    def cell(v: object) -> str:
        return f"{v:,}" if isinstance(v, int) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _i(row: Row, key: str) -> int:
    return int(row[key])


def _f(row: Row, key: str) -> float:
    return float(row[key])


def _index(rows: Iterable[Row], *keys: str) -> dict[tuple[str, ...], Row]:
    return {tuple(r[k] for k in keys): r for r in rows}


def _pct(new: float, old: float) -> str:
    return "0%" if old == new else f"{100.0 * (new - old) / old:+.0f}%" if old else "n/a"


def counts_table(rows: Sequence[Row], workload: str) -> str:
    """Question 1 for one workload: write faults and reuses per policy set, the reuses the
    memo decided, and the copies (one number when every policy set gives the same)."""
    by = _index(rows, "config", "folio", "policy", "workload")
    out = []
    for config in CONFIGS:
        for folio in config.sizes:
            r = {p: by[(config.label, folio, p, workload)] for p in POLICY_SETS}
            copies = sorted({_i(r[p], "copies") for p in POLICY_SETS})
            out.append(
                [
                    config.label,
                    folio,
                    *(f"{_i(r[p], 'faults'):,} / {_i(r[p], 'reuses'):,}" for p in POLICY_SETS),
                    _i(r["remember_exclusive"], "memo_reuses"),
                    " / ".join(f"{x:,}" for x in copies),
                ]
            )
    header = [
        "profile",
        "folio",
        *(f"faults / reuses: {p}" for p in POLICY_SETS),
        "reuses by memo",
        "copies (every policy)",
    ]
    return _md(header, out)


def cost_table(rows: Sequence[Row], workload: str) -> str:
    """Question 2 for one workload: entries written per fault, fault-around's never-written
    pages, estimated time and the worst single access, per policy set (6.15 and the 6.12
    what-if: on 6.1 and 6.12 no policy changes anything)."""
    by = _index(rows, "config", "folio", "policy", "workload")
    out = []
    for config in CONFIGS:
        if config.label in ("6.1", "6.12"):
            continue
        for folio in config.sizes:
            off = by[(config.label, folio, "off", workload)]
            for p in POLICY_SETS:
                r = by[(config.label, folio, p, workload)]
                out.append(
                    [
                        config.label,
                        folio,
                        p,
                        r["entries_per_fault"],
                        _i(r, "max_entries_per_fault"),
                        _i(r, "ptes_upgraded"),
                        _i(r, "never_written"),
                        r["est_ms"],
                        _pct(_f(r, "est_ms"), _f(off, "est_ms")),
                        r["worst_fault_us"],
                    ]
                )
    header = [
        "profile",
        "folio",
        "policy",
        "entries/fault",
        "max entries/fault",
        "PTEs upgraded",
        "never written",
        "est. ms",
        "vs off",
        "worst access µs",
    ]
    return _md(header, out)


def pools_table(rows: Sequence[Row]) -> str:
    """Question 3 on prefork: copies where the exact tracker reuses, and the memory."""
    by = _index(rows, "shape", "folio", "processes", "tracker")
    out = []
    keys = sorted(
        {(r["shape"], r["folio"], int(r["processes"])) for r in rows},
        key=lambda k: (list(POOL_SHAPES).index(k[0]), THP_SIZES[k[1]], k[2]),
    )
    for shape, folio, n in keys:
        two = by[(shape, folio, str(n), "two-slot")]
        ex = by[(shape, folio, str(n), "exact")]
        out.append(
            [
                shape,
                folio,
                n,
                _i(two, "copies"),
                _i(ex, "copies"),
                _i(two, "copies") - _i(ex, "copies"),
                _i(two, "slot_overflow_copies"),
                _i(two, "total_memory_kb"),
                _i(ex, "total_memory_kb"),
                _i(two, "total_memory_kb") - _i(ex, "total_memory_kb"),
            ]
        )
    header = [
        "shape",
        "folio",
        "N",
        "copies (two slots)",
        "copies (exact)",
        "exact saves",
        "slot-overflow copies",
        "memory kB (two slots)",
        "memory kB (exact)",
        "extra kB",
    ]
    return _md(header, out)


def survivor_table(rows: Sequence[Row]) -> str:
    """Question 3, the survivor: all processes but one exit, it writes half its pages."""
    by = _index(rows, "folio", "processes", "survivor", "tracker")
    out = []
    keys = sorted(
        {(r["folio"], int(r["processes"]), r["survivor"]) for r in rows},
        key=lambda k: (THP_SIZES[k[0]], k[2], k[1]),
    )
    for folio, n, order in keys:
        two = by[(folio, str(n), order, "two-slot")]
        ex = by[(folio, str(n), order, "exact")]
        out.append(
            [
                folio,
                n,
                order,
                _i(two, "writes"),
                _i(two, "copies"),
                _i(ex, "copies"),
                _i(ex, "exact_reuses"),
                two["est_ms"],
                ex["est_ms"],
                _i(two, "memory_end_kb") - _i(ex, "memory_end_kb"),
            ]
        )
    header = [
        "folio",
        "N",
        "survivor",
        "writes",
        "copies (two slots)",
        "copies (exact)",
        "reuses only exact allows",
        "est. ms (two slots)",
        "est. ms (exact)",
        "extra kB",
    ]
    return _md(header, out)


def headlines(
    cases_: Sequence[Row], pools: Sequence[Row], survivor: Sequence[Row]
) -> dict[str, str]:
    """The numbers the document's conclusions quote, computed from the data (the document
    embeds them as generated blocks, so they cannot drift from the tables)."""
    by = _index(cases_, "config", "folio", "policy", "workload")
    q = {}

    def row(cfg: str, folio: str, pol: str, wl: str) -> Row:
        return by[(cfg, folio, pol, wl)]

    rb = {
        f: (row("6.15", f, "off", "reuse-byte"), row("6.15", f, "fault_around", "reuse-byte"))
        for f in THP_SIZES
    }
    win = {f: row("6.15", f, "fault_around_window", "reuse-byte") for f in THP_SIZES}
    lines = []
    for f, (off, fa) in rb.items():
        w = win[f]
        lines.append(
            f"| {f} | {_i(off, 'faults'):,} | {_i(fa, 'faults'):,} | {_i(w, 'faults'):,} | "
            f"{off['est_ms']} | {fa['est_ms']} | {w['est_ms']} | {off['worst_fault_us']} | "
            f"{fa['worst_fault_us']} | {w['worst_fault_us']} |"
        )
    q["fault_around"] = (
        "| folio | faults (off) | faults (fault-around) | faults (window) | est. ms (off) | "
        "est. ms (fault-around) | est. ms (window) | worst access µs (off) | worst access µs "
        "(fault-around) | worst access µs (window) |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(lines) + "\n"
    )
    off64, fa64 = rb["64K"]
    off2m, fa2m = rb["2M"]
    w2m = win["2M"]
    copy = row("6.15", "64K", "off", "cow-byte")
    memo = row("6.15", "64K", "remember_exclusive", "reuse-byte")
    fe = {f: row("6.15", f, "fault_around", "fork_exec") for f in THP_SIZES}
    sn = {f: row("6.15", f, "fault_around", "snapshot") for f in THP_SIZES}
    unchanged = [
        k
        for k, r in by.items()
        if k[0] in ("6.1", "6.12")
        and any(r[m] != by[(k[0], k[1], "off", k[3])][m] for m in ("faults", "reuses", "copies"))
    ]
    same_as_615 = sum(
        1
        for k, r in by.items()
        if k[0] == "6.12+reuse"
        and all(r[m] == by[("6.15", *k[1:])][m] for m in ("faults", "reuses", "copies"))
    )
    n_whatif = sum(1 for k in by if k[0] == "6.12+reuse")
    cow_changed = [
        k
        for k, r in by.items()
        if k[3] == "cow-byte" and r["copies"] != by[(k[0], k[1], "off", k[3])]["copies"]
    ]
    fa_pct = _pct(_f(fa64, "est_ms"), _f(off64, "est_ms"))
    same = "the same as" if memo["est_ms"] == off64["est_ms"] else "against"
    fe_waste = ", ".join(
        f"{f} {_i(r, 'never_written'):,} of {_i(r, 'pages'):,}" for f, r in fe.items()
    )
    sn_waste = ", ".join(f"{f} {_i(r, 'never_written'):,}" for f, r in sn.items())
    lines = [
        f"- reuse-byte, 64K, 6.15: {_i(off64, 'faults'):,} write faults without a policy, "
        f"{_i(fa64, 'faults'):,} with fault-around (one per folio; each writes "
        f"{_i(fa64, 'max_entries_per_fault')} PTEs); estimated "
        f"{off64['est_ms']} ms -> {fa64['est_ms']} ms ({fa_pct}).",
        f"- reuse-byte, 2M (PTE-mapped), 6.15: {_i(off2m, 'faults'):,} -> "
        f"{_i(fa2m, 'faults'):,} faults; the worst single access goes from "
        f"{off2m['worst_fault_us']} µs (a reuse) to {fa2m['worst_fault_us']} µs (one fault "
        f"that upgrades 511 PTEs), against {copy['worst_fault_us']} µs for a COW copy of a 4K "
        "page (cow-byte).",
        f"- fault_around_window, reuse-byte, 2M (PTE-mapped), 6.15: {_i(w2m, 'faults'):,} "
        f"faults (one per 16-page window), estimated {w2m['est_ms']} ms against "
        f"{fa2m['est_ms']} ms for the whole folio and {off2m['est_ms']} ms without "
        f"fault-around; worst single access {w2m['worst_fault_us']} µs.",
        f"- remember_exclusive, reuse-byte, 64K, 6.15: {_i(memo, 'faults'):,} faults as without "
        f"it, {_i(memo, 'memo_reuses'):,} of the {_i(memo, 'reuses'):,} reuses decided by the "
        f"memo (LARGE_MEMO_EXCLUSIVE); estimated time {memo['est_ms']} ms, {same} off "
        f"({off64['est_ms']} ms): the checks it skips are not a term of the cost model.",
        "- fault-around's pages made writable and never written (fork_exec, half the pages "
        f"written, 6.15): {fe_waste}.",
        f"- the same in snapshot (writes after the child exits): {sn_waste}.",
        f"- 6.1 and 6.12: rows where any policy changed faults, reuses or copies: "
        f"{len(unchanged)}; 6.12 with the reuse turned on (what-if) equals 6.15 in "
        f"{same_as_615} of {n_whatif} rows.",
        f"- cow-byte: rows where a policy changed the copies: {len(cow_changed)}.",
    ]
    q["numbers"] = "\n".join(lines) + "\n"

    pby = _index(pools, "shape", "folio", "processes", "tracker")
    plines = []
    for shape in POOL_SHAPES:
        saved: dict[str, dict[int, tuple[int, int]]] = {}
        for (sh, folio, n, t), two in pby.items():
            if sh == shape and t == "two-slot":
                ex = pby[(sh, folio, n, "exact")]
                saved.setdefault(folio, {})[int(n)] = (
                    _i(two, "copies") - _i(ex, "copies"),
                    _i(two, "total_memory_kb") - _i(ex, "total_memory_kb"),
                )
        if all(v[0] == 0 for per in saved.values() for v in per.values()):
            plines.append(
                f"- prefork `{shape}`: no copy the exact tracker avoids, at any N and folio size."
            )
            continue
        parts = []
        for folio, per in saved.items():
            ns = sorted(per)
            parts.append(
                f"{folio} " + ", ".join(f"N={n}: {per[n][0]:,}" for n in (ns[0], ns[1], ns[-1]))
            )
        extra = max(v[1] for per in saved.values() for v in per.values())
        plines.append(
            f"- prefork `{shape}`: copies the exact tracker avoids: "
            + "; ".join(parts)
            + f"; extra memory at the end at most {extra:,} kB."
        )
    sby = _index(survivor, "folio", "processes", "survivor", "tracker")
    for which in ("first", "last"):
        parts = []
        for folio in sorted({k[0] for k in sby}, key=THP_SIZES.__getitem__):
            ns = sorted({int(k[1]) for k in sby if k[0] == folio})
            for size in (ns[0], ns[1], ns[-1]):
                two = sby[(folio, str(size), which, "two-slot")]
                ex = sby[(folio, str(size), which, "exact")]
                parts.append(
                    f"{folio} N={size}: {_i(two, 'copies'):,}/{_i(ex, 'copies'):,} "
                    f"({_i(two, 'memory_end_kb') - _i(ex, 'memory_end_kb'):+,} kB)"
                )
        plines.append(
            f"- survivor = the {which}-forked child: copies two-slot/exact (extra memory at the "
            "end) " + ", ".join(parts) + "."
        )
    q["pools"] = "\n".join(plines) + "\n"
    return q


def _figure(width: float, height: float, ncols: int = 1) -> tuple[Any, Any]:
    from cowcore.plot import _figure as make  # noqa: PLC0415 (matplotlib on first use)

    fig = make(width, height)
    return fig, fig.subplots(1, ncols, squeeze=False)[0]


STYLES = (("o", "-", 9.0), ("s", "--", 7.5), ("^", "-.", 6.0), ("v", ":", 4.5), ("x", "-", 3.0))
"""Marker, line style and marker size of the n-th line: lines that coincide stay visible."""


def _style(n: int) -> dict[str, Any]:
    marker, line, size = STYLES[n % len(STYLES)]
    return {"marker": marker, "linestyle": line, "markersize": size}


def figures(
    cases_: Sequence[Row], pools: Sequence[Row], survivor: Sequence[Row], out: Path
) -> list[Path]:
    """The study's figures (PNG): faults and worst access per folio size and policy set on
    6.15 (reuse-byte), fault-around's never-written pages, and the two-slot tracker's extra
    copies against N."""
    by = _index(cases_, "config", "folio", "policy", "workload")
    sizes = list(THP_SIZES)
    x = range(len(sizes))
    paths = []

    fig, (ax1, ax2) = _figure(10.0, 4.0, 2)
    for k, p in enumerate(POLICY_SETS):
        ax1.plot(
            x, [_i(by[("6.15", f, p, "reuse-byte")], "faults") for f in sizes], label=p, **_style(k)
        )
        ax2.plot(
            x,
            [_f(by[("6.15", f, p, "reuse-byte")], "worst_fault_us") for f in sizes],
            label=p,
            **_style(k),
        )
    copy_us = _f(by[("6.15", "64K", "off", "cow-byte")], "worst_fault_us")
    ax2.axhline(copy_us, color="grey", linestyle="--", label="a 4K COW copy")
    for ax, title, ylabel in (
        (ax1, "write faults, reuse-byte, 6.15", "faults"),
        (ax2, "worst single access (estimated)", "µs"),
    ):
        ax.set_xticks(list(x), sizes)
        ax.set_yscale("log")
        ax.set_xlabel("folio size")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
    ax1.legend(fontsize="small")
    ax2.legend(fontsize="small")
    paths.append(out / "faults-latency.png")
    fig.savefig(paths[-1], dpi=110, metadata={"Software": None})

    fig, (ax,) = _figure(6.0, 4.0)
    for k, wl in enumerate(("fork_exec", "snapshot")):
        ax.plot(
            x,
            [_i(by[("6.15", f, "fault_around", wl)], "never_written") * 4 for f in sizes],
            label=wl,
            **_style(k),
        )
    ax.set_xticks(list(x), sizes)
    ax.set_xlabel("folio size")
    ax.set_ylabel("kB made writable, never written")
    ax.set_title("fault-around's unused upgrades, 6.15")
    ax.legend(fontsize="small")
    paths.append(out / "fault-around-waste.png")
    fig.savefig(paths[-1], dpi=110, metadata={"Software": None})

    fig, (ax1, ax2) = _figure(10.0, 4.0, 2)
    pby = _index(pools, "shape", "folio", "processes", "tracker")
    k = 0
    for shape in POOL_SHAPES:
        for folio in sorted({r["folio"] for r in pools}, key=THP_SIZES.__getitem__):
            ns = sorted({int(r["processes"]) for r in pools})
            ax1.plot(
                ns,
                [
                    _i(pby[(shape, folio, str(n), "two-slot")], "copies")
                    - _i(pby[(shape, folio, str(n), "exact")], "copies")
                    for n in ns
                ],
                **_style(k),
                label=f"{shape}, {folio}",
            )
            k += 1
    sby = _index(survivor, "folio", "processes", "survivor", "tracker")
    k = 0
    for which in ("first", "last"):
        for folio in sorted({r["folio"] for r in survivor}, key=THP_SIZES.__getitem__):
            ns = sorted({int(r["processes"]) for r in survivor})
            ax2.plot(
                ns,
                [
                    _i(sby[(folio, str(n), which, "two-slot")], "copies")
                    - _i(sby[(folio, str(n), which, "exact")], "copies")
                    for n in ns
                ],
                **_style(k),
                label=f"survivor {which}, {folio}",
            )
            k += 1
    for ax, title in ((ax1, "prefork pools"), (ax2, "the survivor of N processes")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("processes N")
        ax.set_ylabel("copies the exact tracker avoids")
        ax.set_title(title)
        ax.legend(fontsize="small")
    paths.append(out / "mm-id-slots.png")
    fig.savefig(paths[-1], dpi=110, metadata={"Software": None})
    return paths


BLOCK = re.compile(
    r"(<!-- study:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /study:(?P=name) -->)", re.S
)


def fill_doc(text: str, blocks: Mapping[str, str]) -> str:
    """``text`` with each ``<!-- study:NAME -->`` ... ``<!-- /study:NAME -->`` block's body
    replaced by ``blocks[NAME]``.

    Raises:
        KeyError: a block the generator does not produce.
    """
    return BLOCK.sub(lambda mt: mt.group(1) + blocks[mt.group("name")] + mt.group(4), text)


def render(out: Path) -> dict[str, str]:
    """Every Markdown output, rendered from the CSV data in ``out`` (name -> text): the
    tables and the headline blocks. Rendering reads only the CSV files, so that a test can
    check the committed tables against the committed data without running anything."""
    cases_ = read_csv(out / "cases.csv")
    pools = read_csv(out / "pools.csv")
    survivor = read_csv(out / "survivor.csv")
    blocks = {}
    for wl in WORKLOADS:
        blocks[f"counts-{wl}"] = counts_table(cases_, wl)
        blocks[f"cost-{wl}"] = cost_table(cases_, wl)
    blocks["pools"] = pools_table(pools)
    blocks["survivor"] = survivor_table(survivor)
    blocks.update({f"headline-{k}": v for k, v in headlines(cases_, pools, survivor).items()})
    return blocks


def write_study(
    out: Path,
    scale: Scale = FULL,
    *,
    model: CostModel = DEFAULT,
    doc: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[Path]:
    """Runs the whole study and writes it to ``out``: ``cases.csv``, ``pools.csv``,
    ``survivor.csv``, ``tables.md`` (every table and headline block), the figures, and, with
    ``doc``, the document's generated blocks. Returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    say = progress or (lambda _msg: None)
    t0 = time.monotonic()
    rows = [run_case(*case, scale=scale, model=model) for case in cases()]
    say(f"{len(rows)} cases in {time.monotonic() - t0:.0f} s")
    written = [out / "cases.csv", out / "pools.csv", out / "survivor.csv"]
    written[0].write_text(_csv_text(rows, CASE_COLUMNS))
    written[1].write_text(_csv_text(run_pools(scale), POOL_COLUMNS))
    say(f"pools done at {time.monotonic() - t0:.0f} s")
    written[2].write_text(_csv_text(run_survivor(scale, model), SURVIVOR_COLUMNS))
    say(f"survivors done at {time.monotonic() - t0:.0f} s")
    return written + write_outputs(out, doc)


DATA = ("cases", "pools", "survivor")
"""The study's data files (``NAME.csv``), from which every other output is rendered."""


def write_outputs(out: Path, doc: Path | None = None) -> list[Path]:
    """Renders the study's tables (``tables.md``), its figures and, with ``doc``, the
    document's generated blocks from the CSV data in ``out`` (what :func:`write_study` does
    after running; ``--render-only`` does only this). Returns the files written."""
    blocks = render(out)
    tables = out / "tables.md"
    tables.write_text(
        "# Seed future work: every generated table\n\n"
        "Generated by `cowcore study seed-future-work`; do not edit.\n\n"
        + "".join(f"## {name}\n\n{body}\n" for name, body in blocks.items())
    )
    written = [tables]
    cases_, pools, survivor = (read_csv(out / f"{name}.csv") for name in DATA)
    written += figures(cases_, pools, survivor, out)
    if doc is not None:
        doc.write_text(fill_doc(doc.read_text(), blocks))
        written.append(doc)
    return written


def _main(args: argparse.Namespace) -> int:
    def say(msg: str) -> None:
        print(msg, file=sys.stderr)

    try:
        if importlib.util.find_spec("matplotlib") is None:
            # checked first: the figures come last, after a minute or two of simulation
            raise MissingDependencyError(
                "the study's figures need matplotlib, which is not installed: "
                "pip install 'cowcore[plot]'"
            )
        model = CostModel.load(args.costs) if args.costs else DEFAULT
        doc = Path(args.doc) if args.doc else None
        if doc is not None and not doc.is_file():
            raise InvalidArgumentError(f"--doc {doc}: no such file")
        scale = QUICK if args.quick else FULL
        if args.render_only:
            written = write_outputs(Path(args.out), doc)
        else:
            written = write_study(Path(args.out), scale, model=model, doc=doc, progress=say)
        for path in written:
            print(path)
    except OSError as exc:
        print(f"cowcore: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    except (CowError, KeyError, ValueError) as exc:
        print(f"cowcore: study: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``cowcore study`` to the command line."""
    p = sub.add_parser(
        "study",
        help="regenerate a study of docs/studies/ (data, tables, figures)",
        description="Regenerate a study's every number, table and figure, deterministically. "
        "seed-future-work: issue 15's policies measured (docs/studies/seed-future-work.md).",
    )
    p.add_argument("name", choices=(STUDY,))
    p.add_argument("--out", default=f"docs/studies/{STUDY}", help="output directory")
    p.add_argument("--doc", help="a document whose <!-- study:NAME --> blocks to fill in")
    p.add_argument("--quick", action="store_true", help="small sizes (seconds; for tests)")
    p.add_argument(
        "--render-only",
        action="store_true",
        help="run nothing: render the tables, figures and --doc blocks from the CSV data "
        "already in --out",
    )
    p.add_argument(
        "--costs",
        help="a cost table (TOML) instead of the built-in one (cowcore.cost.DEFAULT, which "
        "the committed study uses so that it does not depend on the host)",
    )
    p.set_defaults(func=_main)
