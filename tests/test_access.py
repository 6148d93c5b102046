"""``Process.access``/``access_batch`` and ``Machine.record`` through the public API, on every
backend: each outcome and each reason the model can reach from the API, with the whole
record checked (docs/access-and-events.md). Three reasons need a state the API cannot make
yet (a read-only anon-exclusive PTE or PMD, which the kernel gets from soft-dirty tracking;
a large folio with a reference that is not a mapping, from a pin or the swap cache): the
Rust core's white-box tests in ``fault.rs`` reach them, and issue 16 brings them to the API.
"""

from __future__ import annotations

from array import array

import numpy as np
import pytest

import cowcore
from cowcore import Access, AccessFlags, EventCode, MapLevel, Outcome, Reason
from cowcore.errors import InvalidAddressError, InvalidArgumentError
from tests.conftest import MachineFactory

K = 4096
M2 = 2 << 20
PF_USER, PF_WRITE, PF_PROT = 4, 2, 1
WP = PF_USER | PF_WRITE | PF_PROT
FIRST = AccessFlags.FIRST_TOUCH
NOFLAGS = AccessFlags(0)


def rec(
    phys: int | None,
    outcome: Outcome,
    reason: Reason,
    *,
    split: Reason = Reason.NONE,
    level: MapLevel = MapLevel.PTE,
    order: int = 0,
    faults: int = 1,
    flags: AccessFlags = NOFLAGS,
    code: int = 0,
    allowed: int = 0,
    fit: int = 0,
    empty: int = 0,
    failed: int = 0,
) -> Access:
    return Access(
        phys, outcome, reason, split, level, order, faults, flags, code, allowed, fit, empty, failed
    )


def pfn(p: cowcore.Process, addr: int) -> int:
    t = p.translate(addr).pfn
    assert t is not None
    return t


def test_first_touch_read_and_write(make_machine: MachineFactory) -> None:
    m = make_machine("6.15")
    p = m.init
    a = p.mmap(4 * K)
    r = p.access(a + 5, False)
    zero = pfn(p, a)
    assert r == rec(zero << 12 | 5, Outcome.ZERO_PAGE, Reason.PTE_NONE, flags=FIRST, code=PF_USER)
    w = p.access(a + K + 9, True, value=3)
    assert w == rec(
        pfn(p, a + K) << 12 | 9,
        Outcome.ANON_ALLOC,
        Reason.PTE_NONE,
        flags=FIRST | AccessFlags.ZEROED,
        code=PF_USER | PF_WRITE,
    )
    assert p.access(a + K, True, value=4) == rec(
        pfn(p, a + K) << 12, Outcome.NO_FAULT, Reason.NONE, faults=0
    )
    assert p.read(a + K) == [4]


def test_mthp_evidence_and_fallback(make_machine: MachineFactory) -> None:
    """A 128K VMA with 64K and 256K allowed: 256K does not fit, 64K does; a zero-page PTE
    in the second 64K block leaves only order 0 there; with memory exhausted of order-4
    blocks the fault falls back (recorded as failed, FELL_BACK)."""
    m = make_machine("6.15")
    m.thp.sizes["64K"] = "always"
    m.thp.sizes["256K"] = "always"
    p = m.init
    a = p.mmap(128 << 10)
    p.access(a + (64 << 10) + K, False)  # a zero-page PTE in the second block
    r = p.access(a, True, value=1)
    assert (r.outcome, r.reason, r.order) == (Outcome.ANON_ALLOC, Reason.PTE_NONE, 4)
    assert (r.orders_allowed, r.orders_fit, r.orders_empty, r.orders_failed) == (
        1 << 4 | 1 << 6,
        1 << 4,
        1 << 4,
        0,
    )
    r2 = p.access(a + (64 << 10), True, value=1)
    assert (r2.order, r2.orders_fit, r2.orders_empty) == (0, 1 << 4, 0)


def test_pmd_first_touch(make_machine: MachineFactory) -> None:
    m = make_machine("6.15")
    m.thp.enabled = "always"
    p = m.init
    a = p.mmap(2 * M2)
    r = p.access(a + 3 * K, False)
    assert (r.outcome, r.reason, r.level, r.order) == (
        Outcome.HUGE_ZERO_PAGE,
        Reason.PMD_NONE,
        MapLevel.PMD,
        9,
    )
    assert r.orders_fit == r.orders_empty == 0  # a huge-zero read records no evidence
    w = p.access(a + M2 + 7 * K, True, value=1)
    assert w == rec(
        pfn(p, a + M2 + 7 * K) << 12,
        Outcome.ANON_ALLOC,
        Reason.PMD_NONE,
        level=MapLevel.PMD,
        order=9,
        flags=FIRST | AccessFlags.ZEROED,
        code=PF_USER | PF_WRITE,
        allowed=1 << 9,
        fit=1 << 9,
        empty=1 << 9,
    )


@pytest.mark.parametrize("kernel", ["6.12", "6.15"])
def test_huge_zero_write(make_machine: MachineFactory, kernel: str) -> None:
    m = make_machine(kernel)
    m.thp.enabled = "always"
    p = m.init
    a = p.mmap(M2)
    p.access(a, False)
    w = p.access(a + K, True, value=1)
    if kernel == "6.15":
        assert (w.outcome, w.reason, w.level, w.order, w.faults) == (
            Outcome.ANON_ALLOC,
            Reason.HUGE_ZERO_NEW_THP,
            MapLevel.PMD,
            9,
            1,
        )
    else:
        assert w == rec(
            pfn(p, a + K) << 12,
            Outcome.PMD_SPLIT_COPY,
            Reason.ZERO_PAGE,
            split=Reason.HUGE_ZERO_FALLBACK,
            faults=2,
            flags=AccessFlags.SPLIT | AccessFlags.ZEROED,
            code=WP,
        )


def test_huge_zero_write_without_a_block(make_machine: MachineFactory) -> None:
    """6.15 with no free order-9 block: the new THP fails (recorded), split and copy."""
    m = make_machine("6.15", memory="4M")
    m.thp.enabled = "always"
    p = m.init
    a = p.mmap(M2)
    p.access(a, False)
    w = p.access(a, True, value=1)
    assert (w.outcome, w.reason, w.split_reason) == (
        Outcome.PMD_SPLIT_COPY,
        Reason.ZERO_PAGE,
        Reason.HUGE_ZERO_FALLBACK,
    )
    assert w.orders_failed == 1 << 9
    assert AccessFlags.FELL_BACK in w.flags and AccessFlags.SPLIT in w.flags


@pytest.mark.parametrize("kernel", ["6.12", "6.15"])
def test_small_folio_reasons(make_machine: MachineFactory, kernel: str) -> None:
    m = make_machine(kernel)
    p = m.init
    a = p.mmap(2 * K)
    p.write(a, 2 * K)
    c = p.fork()
    old = pfn(p, a)
    copy = p.access(a, True, value=2)
    assert copy == rec(
        pfn(p, a) << 12,
        Outcome.COW_COPY,
        Reason.SMALL_OTHER_REFS,
        flags=AccessFlags.COPIED,
        code=WP,
    )
    assert pfn(p, a) != old
    c.exit()
    reuse = p.access(a + K, True, value=2)
    assert reuse == rec(pfn(p, a + K) << 12, Outcome.COW_REUSE, Reason.SMALL_SOLE_REF, code=WP)


@pytest.mark.parametrize("kernel", ["6.12", "6.15"])
def test_large_folio_reasons(make_machine: MachineFactory, kernel: str) -> None:
    m = make_machine(kernel)
    m.thp.sizes["64K"] = "always"
    p = m.init
    a = p.mmap(64 << 10)
    p.write(a, 64 << 10)
    c = p.fork()
    shared = p.access(a + 3 * K, True, value=2)
    expect = Reason.LARGE_MAYBE_SHARED if kernel == "6.15" else Reason.LARGE_NO_PTE_REUSE
    assert (shared.outcome, shared.reason, shared.order) == (Outcome.COW_COPY, expect, 0)
    c.exit()
    after = p.access(a + 4 * K, True, value=2)
    if kernel == "6.15":
        assert after == rec(
            pfn(p, a + 4 * K) << 12, Outcome.COW_REUSE, Reason.LARGE_EXCLUSIVE, order=4, code=WP
        )
    else:
        assert (after.outcome, after.reason) == (Outcome.COW_COPY, Reason.LARGE_NO_PTE_REUSE)


def test_large_folio_last_mapped_page(make_machine: MachineFactory) -> None:
    """One page of a 64K folio left mapped (and no longer exclusive after a fork): copied
    so that the folio can be freed, which the record shows as a FOLIO_FREE event, after the
    folio leaves the deferred-split queue the partial munmap put it on."""
    m = make_machine("6.15")
    m.thp.sizes["64K"] = "always"
    p = m.init
    a = p.mmap(64 << 10)
    p.write(a, 64 << 10)
    p.munmap(a + K, 15 * K)
    p.fork().exit()
    head = pfn(p, a)
    with m.record() as r:
        w = p.access(a, True, value=2)
    assert (w.outcome, w.reason) == (Outcome.COW_COPY, Reason.LARGE_LAST_MAPPED)
    kinds = [e.kind for e in r.records()]
    assert kinds == [
        EventCode.FAULT_WP,
        EventCode.FOLIO_ALLOC,
        EventCode.PAGES_COPIED,
        EventCode.TLB_FLUSH,
        EventCode.DEFERRED_UNQUEUE,
        EventCode.FOLIO_FREE,
        EventCode.COW_COPY,
    ]
    unqueued, freed = r.records()[4:6]
    assert (unqueued.pfn, unqueued.order) == (freed.pfn, freed.order) == (head, 4)


def test_pmd_reasons(make_machine: MachineFactory) -> None:
    m = make_machine("6.15")
    m.thp.enabled = "always"
    p = m.init
    a = p.mmap(M2)
    p.write(a, K)
    c = p.fork()
    split = p.access(a + 5 * K, True, value=2)
    assert split == rec(
        pfn(p, a + 5 * K) << 12,
        Outcome.PMD_SPLIT_COPY,
        Reason.LARGE_MAYBE_SHARED,
        split=Reason.PMD_SHARED,
        faults=2,
        flags=AccessFlags.SPLIT | AccessFlags.COPIED,
        code=WP,
    )
    c.exit()
    b = p.mmap(M2)
    p.write(b, K)
    p.fork().exit()
    reuse = p.access(b, True, value=3)
    assert reuse == rec(
        pfn(p, b) << 12,
        Outcome.PMD_REUSE,
        Reason.PMD_SOLE_REF,
        level=MapLevel.PMD,
        order=9,
        code=WP,
    )


def test_segfaults(make_machine: MachineFactory) -> None:
    m = make_machine("6.15")
    p = m.init
    a = p.mmap(2 * K)
    p.mprotect(a + K, K, "r")
    free = m.free_frames()
    unmapped = p.access(a + 2 * K, False)
    assert unmapped == rec(
        None, Outcome.SEGFAULT, Reason.SEGV_UNMAPPED, faults=0, level=MapLevel.NONE
    )
    assert p.access(a + K, True).reason is Reason.SEGV_PROTECTION
    assert p.access(1 << 63, True).reason is Reason.SEGV_UNMAPPED
    assert m.free_frames() == free


def test_out_of_memory_is_an_outcome(make_machine: MachineFactory) -> None:
    m = make_machine("6.15", memory="4M")
    p = m.init
    a = p.mmap(M2)
    b = p.mmap(M2)
    out = p.access_batch(np.arange(a, a + M2, K, dtype=np.uint64), True, value=1)
    outcomes = [Outcome(x) for x in out["outcome"]]
    assert Outcome.OUT_OF_MEMORY in outcomes
    oom = outcomes.index(Outcome.OUT_OF_MEMORY)
    assert all(x is Outcome.ANON_ALLOC for x in outcomes[:oom])
    free = m.free_frames()
    r = p.access(b, True)
    assert (r.outcome, r.phys, r.level) == (Outcome.OUT_OF_MEMORY, None, MapLevel.NONE)
    # b's PMD table is a's: only the PTE table is missing, do_anonymous_page's pte_alloc.
    assert r.reason is Reason.PTE_NONE
    assert m.free_frames() == free
    m.thp.enabled = "always"  # the PMD THP falls back first, then the PTE table fails
    r = p.access(b, True)
    assert (r.outcome, r.reason) == (Outcome.OUT_OF_MEMORY, Reason.PTE_NONE)
    assert r.orders_failed & (1 << 9)


def test_batch_matches_single_accesses(make_machine: MachineFactory) -> None:
    """The same accesses one by one and as a batch (numpy, array, list) give the same
    records; numpy rows convert with ``Access.from_raw``."""
    one, many = make_machine("6.15"), make_machine("6.15")
    for m in (one, many):
        m.thp.sizes["32K"] = "always"
    rng = np.random.default_rng(7)
    offsets = rng.integers(0, 64 * K, size=200)
    writes = rng.random(200) < 0.5
    a = one.init.mmap(64 * K)
    assert many.init.mmap(64 * K) == a
    singles = [
        one.init.access(a + int(o), bool(w), value=9) for o, w in zip(offsets, writes, strict=True)
    ]
    addrs = array("Q", [a + int(o) for o in offsets])
    batch = many.init.access_batch(addrs, writes, value=9)
    assert batch.dtype == cowcore.ACCESS_DTYPE
    assert [Access.from_raw(tuple(r)) for r in batch.tolist()] == singles


def test_batch_write_flags(make_machine: MachineFactory) -> None:
    m = make_machine("6.15")
    p = m.init
    a = p.mmap(4 * K)
    addrs = [a, a + K, a + 2 * K]
    out = p.access_batch(addrs, [True, False, 1])
    assert [Outcome(x) for x in out["outcome"]] == [
        Outcome.ANON_ALLOC,
        Outcome.ZERO_PAGE,
        Outcome.ANON_ALLOC,
    ]
    with pytest.raises(InvalidArgumentError, match="2 write flags for 3 addresses"):
        p.access_batch(addrs, [True, False])
    with pytest.raises(InvalidArgumentError, match=r"writes\[1\] must be 0 or 1, not 2"):
        p.access_batch(addrs, [1, 2, 0])
    with pytest.raises(InvalidArgumentError, match="writes must be a bool"):
        p.access_batch(addrs, "yes")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match=r"addrs\[0\] must be in \[0, 2\^64\)"):
        p.access_batch(np.array([-1], dtype=np.int64))
    with pytest.raises(InvalidArgumentError, match="write must be a bool"):
        p.access(a, 1)  # type: ignore[arg-type]
    assert len(p.access_batch([])) == 0


def test_mmap_fixed_and_asid(make_machine: MachineFactory) -> None:
    m = make_machine("6.15")
    p = m.init
    base = 0x5555_0000_0000
    assert p.mmap_fixed(base, 4 * K) == base
    assert p.mmap_fixed(base + 4 * K, 4 * K) == base + 4 * K  # merges with its neighbour
    assert [(v.start, v.end) for v in p.vmas()] == [(base, base + 8 * K)]
    with pytest.raises(InvalidAddressError, match=r"\(EEXIST\)$"):
        p.mmap_fixed(base + 2 * K, 4 * K)
    with pytest.raises(InvalidArgumentError, match="not a multiple of the page size"):
        p.mmap_fixed(base + 100, 4 * K)
    # mmap never lands on or beside a fixed mapping
    top = 0x7F00_0000_0000 - M2
    p.mmap_fixed(top, K)
    a = p.mmap(M2)
    assert a + M2 < top
    assert p.asid == 1
    c = p.fork()
    assert (c.asid, c.mm_id) == (2, 2)
    c.exit()
    d = p.fork()
    assert d.asid == 3  # never reused
    assert d.mm_id == 2  # while MM ids are


def test_recording_views(make_machine: MachineFactory) -> None:
    """Events of a fork/COW/munmap/exit sequence: their order and payloads, the fold of the
    counted ones equals the counters' change, and the numpy/typed/Arrow views agree."""
    m = make_machine("6.15")
    m.thp.sizes["64K"] = "always"
    p = m.init
    a = p.mmap(64 << 10)
    before = m.stats()
    with m.record() as r:
        p.write(a, 64 << 10)
        c = p.fork()
        child_asid = c.asid
        p.write(a, K)
        p.munmap(a, 64 << 10)
        c.exit()
    kinds = [EventCode(k) for k in r.events["kind"]]
    assert kinds[:4] == [
        EventCode.FAULT_WRITE,
        EventCode.FOLIO_ALLOC,
        EventCode.PAGES_ZEROED,
        EventCode.ANON_FAULT_ALLOC,
    ]
    fork = r.records()[kinds.index(EventCode.FORK)]
    assert (fork.asid, fork.asid2, fork.nr, fork.pmds) == (p.asid, child_asid, 16, 0)
    flush = r.records()[kinds.index(EventCode.FORK) - 1]
    assert (flush.kind, flush.start, flush.end) == (EventCode.TLB_FLUSH, 0, (1 << 64) - 1)
    zaps = [e for e in r.records() if e.kind is EventCode.ZAP]
    assert [(z.asid, z.cause, z.nr) for z in zaps] == [
        (p.asid, cowcore.ZapCause.UNMAP, 16),
        (child_asid, cowcore.ZapCause.EXIT, 16),
    ]
    frees = [e for e in r.records() if e.kind is EventCode.FOLIO_FREE]
    allocs = [e for e in r.records() if e.kind is EventCode.FOLIO_ALLOC]
    assert sorted((e.pfn, e.order) for e in frees) == sorted((e.pfn, e.order) for e in allocs)
    after = m.stats()
    counts = r.counts()
    assert counts[EventCode.COW_COPY] == after.cow_copy - before.cow_copy == 1
    assert counts[EventCode.FAULT_WP] == after.faults_wp - before.faults_wp
    with pytest.raises(InvalidArgumentError, match="already open"), m.record(), m.record():
        pass
    pa = pytest.importorskip("pyarrow")
    table = r.to_arrow()
    assert table.num_rows == len(r)
    assert table.column("kind").to_pylist()[0] == "fault_write"
    assert pa.table(r).num_rows == len(r)  # the PyCapsule stream interface


@pytest.mark.parametrize(
    ("writes", "message"),
    [
        (memoryview(b"\x01"), r"writes must have one byte per address \(2\), not 1"),
        (memoryview(b"\x01\x02"), r"writes\[1\] must be 0 or 1, not 2"),
        (1, "writes must be a bool or a buffer of one byte"),
    ],
)
def test_backend_batch_checks(make_machine: MachineFactory, writes: object, message: str) -> None:
    """Below the facade (which normalises what users pass), both backends refuse bad write
    flags with the same message, before any access."""
    m = make_machine("6.15")
    a = m.init.mmap(2 * K)
    with pytest.raises(InvalidArgumentError, match=message):
        m._b.access_batch(m.init.pid, [a, a + K], writes, 1)  # type: ignore[arg-type]
    assert m.stats().faults_write == 0
