"""The reference's access records, event stream and fixed mappings (docs/access-and-events.md).

One test per :class:`Reason` and per :class:`Outcome` the simulator can produce (all but
``UNSHARE``), each asserting the whole record on the profiles where it differs; the order and
payloads of the events of faults, fork, munmap, exit, mprotect and ``MADV_DONTNEED``; the
fold of the recorded events; ``access_batch`` against single accesses; ``mmap_fixed``.

The expected records are built from the contract and from the machine's own state (the
frame a page maps after the access, the folios it frees), never from a previous run.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cowcore.errors import (
    CowError,
    InvalidAddressError,
    InvalidArgumentError,
    NoSuchProcessError,
    OutOfMemoryError,
)
from cowcore.outcome import (
    ACCESS_SIZE,
    EVENT_SIZE,
    WHOLE_MM_END,
    Access,
    AccessFlags,
    EventCode,
    EventRecord,
    MapLevel,
    Outcome,
    Reason,
    ZapCause,
)
from cowcore.reference.backend import ReferenceBackend
from cowcore.reference.events import COUNTED, Event, EventKind, Stats
from tests.reference.programs import MAPPING_PAGES, Step, programs

KB, MB = 1 << 10, 1 << 20
PAGE = 4096
PMD = 2 * MB
PF_PROT, PF_WRITE, PF_USER = 1, 2, 4
NP_READ, NP_WRITE, WP = PF_USER, PF_USER | PF_WRITE, PF_USER | PF_WRITE | PF_PROT
F = AccessFlags
BIT9 = 1 << 9
PROFILES = ("6.12", "6.15")


def machine(profile: str = "6.15", frames: int = 4096) -> tuple[ReferenceBackend, int]:
    ref = ReferenceBackend(profile, frames, 4)
    return ref, ref.init_pid()


def phys(ref: ReferenceBackend, pid: int, addr: int) -> int:
    """Where the byte at ``addr`` lies now (the page walk, which takes no fault)."""
    pfn = ref.translate(pid, addr).pfn
    assert pfn is not None
    return pfn << 12 | (addr & 0xFFF)


def record(**fields: Any) -> Access:
    """An access record: the fields given, the rest as an access that did nothing."""
    base: dict[str, Any] = {
        "phys": None,
        "outcome": Outcome.NO_FAULT,
        "reason": Reason.NONE,
        "split_reason": Reason.NONE,
        "level": MapLevel.NONE,
        "order": 0,
        "faults": 0,
        "flags": F(0),
        "error_code": 0,
        "orders_allowed": 0,
        "orders_fit": 0,
        "orders_empty": 0,
        "orders_failed": 0,
    }
    base.update(fields)
    return Access(**base)


def done(ref: ReferenceBackend, pid: int, addr: int, **fields: Any) -> Access:
    """The record of a completed access: ``phys`` from the page tables afterwards."""
    return record(phys=phys(ref, pid, addr), **fields)


THP_SIZES_OFF = ("16K", "32K", "64K", "128K", "256K", "512K", "1M", "2M")


def exhaust(ref: ReferenceBackend, pid: int, keep: int) -> int:
    """Map order-0 pages until exactly ``keep`` frames are free (THP turned off); returns the
    filler mapping, written from its first page up."""
    ref.set_thp_enabled("never")
    for size in THP_SIZES_OFF:
        ref.set_thp_size(size, "never")
    spare = ref.mmap(pid, PMD)  # its PTE table, for a last page when a table would not fit
    ref.write(pid, spare, PAGE, 1)
    filler = ref.mmap(pid, (ref.free_frames() + 64) * PAGE)
    i = j = 1
    while ref.free_frames() > keep:
        try:
            ref.write(pid, filler + (i - 1) * PAGE, PAGE, 1)
            i += 1
        except OutOfMemoryError:  # one frame left and a new PTE table needed
            ref.write(pid, spare + j * PAGE, PAGE, 1)
            j += 1
    assert ref.free_frames() == keep
    return filler


def fragment(ref: ReferenceBackend, pid: int, singles: int) -> int:
    """Leave ``singles`` free frames, none with a free buddy (so no block of order >= 1);
    returns a fresh 2 MiB mapping whose PTE table exists."""
    target = ref.mmap(pid, PMD)
    ref.write(pid, target + PMD - PAGE, PAGE, 1)  # its PTE table, and one page
    filler = exhaust(ref, pid, 0)
    for n in range(singles):  # every other page: no two freed frames are buddies
        ref.munmap(pid, filler + 2 * n * PAGE, PAGE)
    assert ref.free_frames() == singles
    return target


# -- not-present faults ------------------------------------------------------------------


@pytest.mark.parametrize("profile", PROFILES)
def test_no_fault(profile: str) -> None:
    ref, pid = machine(profile)
    a = ref.mmap(pid, MB)
    ref.write(pid, a, PAGE, 1)
    got = ref.access(pid, a + 0x123, False, 0)
    assert got == done(ref, pid, a + 0x123, level=MapLevel.PTE)
    ref.set_thp_enabled("always")
    b = ref.mmap(pid, PMD)
    ref.write(pid, b, PAGE, 1)
    got = ref.access(pid, b + 5 * PAGE + 7, True, 9)
    assert got == done(ref, pid, b + 5 * PAGE + 7, level=MapLevel.PMD, order=9)
    assert ref.read(pid, b + 5 * PAGE, PAGE) == [9]


@pytest.mark.parametrize("profile", PROFILES)
def test_zero_page_pte_none(profile: str) -> None:
    ref, pid = machine(profile)
    a = ref.mmap(pid, MB)
    got = ref.access(pid, a + 0xFFF, False, 0)
    assert ref.observe(pid, a, PAGE)[0].frame_kind == "zero"
    want = done(
        ref,
        pid,
        a + 0xFFF,
        outcome=Outcome.ZERO_PAGE,
        reason=Reason.PTE_NONE,
        level=MapLevel.PTE,
        faults=1,
        flags=F.FIRST_TOUCH,
        error_code=NP_READ,
    )
    assert got == want


@pytest.mark.parametrize("profile", PROFILES)
def test_anon_alloc_pte_none_order_0(profile: str) -> None:
    ref, pid = machine(profile)
    a = ref.mmap(pid, MB)
    got = ref.access(pid, a + 8, True, 5)
    want = done(
        ref,
        pid,
        a + 8,
        outcome=Outcome.ANON_ALLOC,
        reason=Reason.PTE_NONE,
        level=MapLevel.PTE,
        faults=1,
        flags=F.FIRST_TOUCH | F.ZEROED,
        error_code=NP_WRITE,
    )
    assert got == want
    assert ref.read(pid, a, PAGE) == [5]  # a write stores the value in the page


def test_anon_alloc_order_evidence_fit_and_empty() -> None:
    """``orders_fit`` drops orders whose block leaves the VMA, ``orders_empty`` those whose
    block of PTEs is not empty; the chosen order is the highest left."""
    ref, pid = machine()
    ref.set_thp_size("16K", "always")
    ref.set_thp_size("64K", "always")
    small = ref.mmap(pid, 8 * PAGE)  # 32K: a 64K block does not fit
    got = ref.access(pid, small + PAGE, True, 1)
    assert got == done(
        ref,
        pid,
        small + PAGE,
        outcome=Outcome.ANON_ALLOC,
        reason=Reason.PTE_NONE,
        level=MapLevel.PTE,
        order=2,
        faults=1,
        flags=F.FIRST_TOUCH | F.ZEROED,
        error_code=NP_WRITE,
        orders_allowed=1 << 2 | 1 << 4,
        orders_fit=1 << 2,
        orders_empty=1 << 2,
    )
    a = ref.mmap(pid, MB)
    ref.set_thp_size("64K", "never")
    ref.write(pid, a, PAGE, 1)  # a 16K folio at pages 0-3
    ref.set_thp_size("64K", "always")
    got = ref.access(pid, a + 5 * PAGE, True, 1)  # 64K block 0-15 is not empty; 4-7 is
    assert got == done(
        ref,
        pid,
        a + 5 * PAGE,
        outcome=Outcome.ANON_ALLOC,
        reason=Reason.PTE_NONE,
        level=MapLevel.PTE,
        order=2,
        faults=1,
        flags=F.FIRST_TOUCH | F.ZEROED,
        error_code=NP_WRITE,
        orders_allowed=1 << 2 | 1 << 4,
        orders_fit=1 << 2 | 1 << 4,
        orders_empty=1 << 2,
    )


def test_anon_alloc_fell_back() -> None:
    """With only single free frames, the 64K order fails (``orders_failed``, ``FELL_BACK``)
    and an order-0 folio is mapped."""
    ref, pid = machine(frames=1024)
    target = fragment(ref, pid, 3)
    ref.set_thp_size("64K", "always")
    ref.record(True)
    got = ref.access(pid, target, True, 1)
    assert got == done(
        ref,
        pid,
        target,
        outcome=Outcome.ANON_ALLOC,
        reason=Reason.PTE_NONE,
        level=MapLevel.PTE,
        order=0,
        faults=1,
        flags=F.FIRST_TOUCH | F.ZEROED | F.FELL_BACK,
        error_code=NP_WRITE,
        orders_allowed=1 << 4,
        orders_fit=1 << 4,
        orders_empty=1 << 4,
        orders_failed=1 << 4,
    )
    pfn = phys(ref, pid, target) >> 12
    assert events(ref) == [
        Event(EventKind.FAULTS_WRITE),
        Event(EventKind.ANON_FAULT_FALLBACK, 4),
        Event(EventKind.FOLIO_ALLOC, 0, pfn=pfn),
        Event(EventKind.PAGES_ZEROED, pfn=pfn, nr=1),
    ]


@pytest.mark.parametrize("profile", PROFILES)
def test_huge_zero_page_pmd_none(profile: str) -> None:
    ref, pid = machine(profile)
    ref.set_thp_enabled("always")
    a = ref.mmap(pid, PMD)
    got = ref.access(pid, a + 3 * PAGE + 1, False, 0)
    assert ref.observe(pid, a, PAGE)[0].frame_kind == "huge_zero"
    assert got == done(
        ref,
        pid,
        a + 3 * PAGE + 1,
        outcome=Outcome.HUGE_ZERO_PAGE,
        reason=Reason.PMD_NONE,
        level=MapLevel.PMD,
        order=9,
        faults=1,
        flags=F.FIRST_TOUCH,
        error_code=NP_READ,
    )


@pytest.mark.parametrize("write", [True, False])
def test_anon_alloc_pmd_none(write: bool) -> None:
    """A PMD THP on a write, or on a read with the huge zero page off."""
    ref, pid = machine()
    ref.set_thp_enabled("always")
    ref.set_thp_size("64K", "always")
    ref.set_use_zero_page(False)
    a = ref.mmap(pid, PMD)
    got = ref.access(pid, a + PAGE, write, 1)
    assert got == done(
        ref,
        pid,
        a + PAGE,
        outcome=Outcome.ANON_ALLOC,
        reason=Reason.PMD_NONE,
        level=MapLevel.PMD,
        order=9,
        faults=1,
        flags=F.FIRST_TOUCH | F.ZEROED,
        error_code=NP_WRITE if write else NP_READ,
        orders_allowed=1 << 4 | BIT9,
        orders_fit=BIT9,
        orders_empty=BIT9,
    )


def test_pmd_order_that_does_not_fit_adds_only_allowed() -> None:
    ref, pid = machine()
    ref.set_thp_enabled("always")
    a = ref.mmap(pid, MB)  # too small for a PMD
    got = ref.access(pid, a, True, 1)
    assert got == done(
        ref,
        pid,
        a,
        outcome=Outcome.ANON_ALLOC,
        reason=Reason.PTE_NONE,
        level=MapLevel.PTE,
        faults=1,
        flags=F.FIRST_TOUCH | F.ZEROED,
        error_code=NP_WRITE,
        orders_allowed=BIT9,
    )
    assert ref.access(pid, a + PAGE, False, 0).orders_allowed == 0  # a read: no evidence


def test_pmd_fallback_to_pte() -> None:
    """No order-9 block: ``orders_failed`` has 9, and the fault continues at the PTE level."""
    ref, pid = machine(frames=1024)
    ref.set_thp_enabled("always")
    a = ref.mmap(pid, PMD)
    exhaust(ref, pid, 40)
    ref.set_thp_enabled("always")
    ref.set_thp_size("2M", "inherit")
    got = ref.access(pid, a, True, 1)
    assert got == done(
        ref,
        pid,
        a,
        outcome=Outcome.ANON_ALLOC,
        reason=Reason.PTE_NONE,
        level=MapLevel.PTE,
        faults=1,
        flags=F.FIRST_TOUCH | F.ZEROED | F.FELL_BACK,
        error_code=NP_WRITE,
        orders_allowed=BIT9,
        orders_fit=BIT9,
        orders_empty=BIT9,
        orders_failed=BIT9,
    )


# -- write-protect faults on PTEs ----------------------------------------------------------


@pytest.mark.parametrize("profile", PROFILES)
def test_cow_copy_of_the_zero_page(profile: str) -> None:
    ref, pid = machine(profile)
    a = ref.mmap(pid, MB)
    ref.read(pid, a, PAGE)
    got = ref.access(pid, a + 2, True, 3)
    assert got == done(
        ref,
        pid,
        a + 2,
        outcome=Outcome.COW_COPY,
        reason=Reason.ZERO_PAGE,
        level=MapLevel.PTE,
        faults=1,
        flags=F.ZEROED,
        error_code=WP,
    )


@pytest.mark.parametrize("profile", PROFILES)
def test_small_folio_other_refs_and_sole_ref(profile: str) -> None:
    ref, pid = machine(profile)
    a = ref.mmap(pid, MB)
    ref.write(pid, a, 2 * PAGE, 1)
    child = ref.fork(pid)
    got = ref.access(pid, a, True, 2)
    assert got == done(
        ref,
        pid,
        a,
        outcome=Outcome.COW_COPY,
        reason=Reason.SMALL_OTHER_REFS,
        level=MapLevel.PTE,
        faults=1,
        flags=F.COPIED,
        error_code=WP,
    )
    assert ref.read(child, a, PAGE) == [1]
    got = ref.access(child, a, True, 3)  # the parent left: the child's is the only ref
    assert got == done(
        ref,
        child,
        a,
        outcome=Outcome.COW_REUSE,
        reason=Reason.SMALL_SOLE_REF,
        level=MapLevel.PTE,
        faults=1,
        error_code=WP,
    )


def _forked_16k(profile: str) -> tuple[ReferenceBackend, int, int, int]:
    """A 16K folio written by init, then shared with a child."""
    ref, pid = machine(profile)
    ref.set_thp_size("16K", "always")
    a = ref.mmap(pid, MB)
    ref.write(pid, a, 4 * PAGE, 1)
    child = ref.fork(pid)
    return ref, pid, child, a


@pytest.mark.parametrize("profile", PROFILES)
def test_large_folio_shared(profile: str) -> None:
    """6.12 never reuses a PTE-mapped large folio; 6.15 sees the shared bit."""
    ref, pid, _child, a = _forked_16k(profile)
    got = ref.access(pid, a + PAGE, True, 2)
    reason = Reason.LARGE_NO_PTE_REUSE if profile == "6.12" else Reason.LARGE_MAYBE_SHARED
    assert got == done(
        ref,
        pid,
        a + PAGE,
        outcome=Outcome.COW_COPY,
        reason=reason,
        level=MapLevel.PTE,
        faults=1,
        flags=F.COPIED,
        error_code=WP,
    )


@pytest.mark.parametrize("profile", PROFILES)
def test_large_folio_exclusive(profile: str) -> None:
    ref, pid, child, a = _forked_16k(profile)
    ref.exit(child)
    folio = ref.folio(phys(ref, pid, a) >> 12)
    got = ref.access(pid, a + 2 * PAGE, True, 2)
    if profile == "6.12":
        want = done(
            ref,
            pid,
            a + 2 * PAGE,
            outcome=Outcome.COW_COPY,
            reason=Reason.LARGE_NO_PTE_REUSE,
            level=MapLevel.PTE,
            faults=1,
            flags=F.COPIED,
            error_code=WP,
        )
    else:
        assert phys(ref, pid, a + 2 * PAGE) >> 12 == folio.pfn + 2  # reused in place
        want = done(
            ref,
            pid,
            a + 2 * PAGE,
            outcome=Outcome.COW_REUSE,
            reason=Reason.LARGE_EXCLUSIVE,
            level=MapLevel.PTE,
            order=2,
            faults=1,
            error_code=WP,
        )
    assert got == want


@pytest.mark.parametrize("profile", PROFILES)
def test_large_folio_last_mapped(profile: str) -> None:
    """6.15 copies the last mapped page of a large folio (so that it can be freed): the copy
    frees the folio, which the partial munmap had put on the deferred-split queue."""
    ref, pid, child, a = _forked_16k(profile)
    ref.exit(child)
    head = phys(ref, pid, a) >> 12
    ref.munmap(pid, a + PAGE, 3 * PAGE)
    ref.record(True)
    got = ref.access(pid, a, True, 2)
    reason = Reason.LARGE_NO_PTE_REUSE if profile == "6.12" else Reason.LARGE_LAST_MAPPED
    assert got == done(
        ref,
        pid,
        a,
        outcome=Outcome.COW_COPY,
        reason=reason,
        level=MapLevel.PTE,
        faults=1,
        flags=F.COPIED,
        error_code=WP,
    )
    new = got.phys >> 12 if got.phys is not None else -1
    asid = ref.asid(pid)
    assert events(ref) == [
        Event(EventKind.FAULTS_WP),
        Event(EventKind.FOLIO_ALLOC, 0, pfn=new),
        Event(EventKind.PAGES_COPIED, pfn=head, pfn2=new, nr=1),
        Event(EventKind.TLB_FLUSH, asid=asid, start=a, end=a + PAGE),
        Event(EventKind.DEFERRED_UNQUEUE, 2, pfn=head),
        Event(EventKind.FOLIO_FREE, 2, pfn=head),
        Event(EventKind.COW_COPY),
    ]


def test_large_folio_extra_refs() -> None:
    """A reference that is not a mapping (a pin, modelled by taking one on the folio)."""
    ref, pid, child, a = _forked_16k("6.15")
    ref.exit(child)
    folio = ref._k.page_folio[phys(ref, pid, a) >> 12]
    folio.refcount += 1  # pin
    got = ref.access(pid, a + PAGE, True, 2)
    assert got == done(
        ref,
        pid,
        a + PAGE,
        outcome=Outcome.COW_COPY,
        reason=Reason.LARGE_EXTRA_REFS,
        level=MapLevel.PTE,
        faults=1,
        flags=F.COPIED,
        error_code=WP,
    )
    ref._k.put_folio(folio, 1)  # unpin
    ref.check()


@pytest.mark.parametrize("profile", PROFILES)
def test_anon_exclusive_reuse(profile: str) -> None:
    """A read-only PTE of an exclusive page in a writable VMA: no API path leaves one (the
    mprotect upgrade makes such entries writable; the kernel keeps them read-only under
    soft-dirty tracking), so the VMA is made writable behind mprotect's back."""
    ref, pid = machine(profile)
    a = ref.mmap(pid, MB)
    ref.write(pid, a, PAGE, 1)
    ref.mprotect(pid, a, PAGE, "r")
    mm = ref._k.procs[pid].mm
    assert mm is not None
    vma = mm.find_vma(a)
    assert vma is not None
    vma.write = True
    got = ref.access(pid, a, True, 2)
    assert got == done(
        ref,
        pid,
        a,
        outcome=Outcome.COW_REUSE,
        reason=Reason.ANON_EXCLUSIVE,
        level=MapLevel.PTE,
        faults=1,
        error_code=WP,
    )


# -- write-protect faults on huge PMDs -------------------------------------------------------


@pytest.mark.parametrize("profile", PROFILES)
def test_huge_zero_write(profile: str) -> None:
    """6.15 replaces the huge zero PMD by a THP; 6.12 splits it and copies one page."""
    ref, pid = machine(profile)
    ref.set_thp_enabled("always")
    a = ref.mmap(pid, PMD)
    ref.read(pid, a, PAGE)
    got = ref.access(pid, a + 7 * PAGE, True, 1)
    if profile == "6.15":
        want = done(
            ref,
            pid,
            a + 7 * PAGE,
            outcome=Outcome.ANON_ALLOC,
            reason=Reason.HUGE_ZERO_NEW_THP,
            level=MapLevel.PMD,
            order=9,
            faults=1,
            flags=F.ZEROED,
            error_code=WP,
        )
    else:
        want = done(
            ref,
            pid,
            a + 7 * PAGE,
            outcome=Outcome.PMD_SPLIT_COPY,
            reason=Reason.ZERO_PAGE,
            split_reason=Reason.HUGE_ZERO_FALLBACK,
            level=MapLevel.PTE,
            faults=2,
            flags=F.SPLIT | F.ZEROED,
            error_code=WP,
        )
    assert got == want


def test_huge_zero_write_without_a_thp_falls_back() -> None:
    ref, pid = machine("6.15", frames=1024)
    ref.set_thp_enabled("always")
    a = ref.mmap(pid, PMD)
    ref.read(pid, a, PAGE)
    exhaust(ref, pid, 40)
    ref.set_thp_enabled("always")
    ref.set_thp_size("2M", "inherit")
    got = ref.access(pid, a, True, 1)
    assert got == done(
        ref,
        pid,
        a,
        outcome=Outcome.PMD_SPLIT_COPY,
        reason=Reason.ZERO_PAGE,
        split_reason=Reason.HUGE_ZERO_FALLBACK,
        level=MapLevel.PTE,
        faults=2,
        flags=F.SPLIT | F.ZEROED | F.FELL_BACK,
        error_code=WP,
        orders_failed=BIT9,
    )


def _forked_thp(profile: str) -> tuple[ReferenceBackend, int, int, int]:
    ref, pid = machine(profile)
    ref.set_thp_enabled("always")
    a = ref.mmap(pid, PMD)
    ref.write(pid, a, PAGE, 1)
    return ref, pid, ref.fork(pid), a


@pytest.mark.parametrize("profile", PROFILES)
def test_pmd_shared_split_then_copy(profile: str) -> None:
    ref, pid, _child, a = _forked_thp(profile)
    got = ref.access(pid, a + 9 * PAGE, True, 2)
    reason = Reason.LARGE_NO_PTE_REUSE if profile == "6.12" else Reason.LARGE_MAYBE_SHARED
    assert got == done(
        ref,
        pid,
        a + 9 * PAGE,
        outcome=Outcome.PMD_SPLIT_COPY,
        reason=reason,
        split_reason=Reason.PMD_SHARED,
        level=MapLevel.PTE,
        faults=2,
        flags=F.SPLIT | F.COPIED,
        error_code=WP,
    )


@pytest.mark.parametrize("profile", PROFILES)
def test_pmd_sole_ref_reuse(profile: str) -> None:
    ref, pid, child, a = _forked_thp(profile)
    ref.exit(child)
    got = ref.access(pid, a + 9 * PAGE, True, 2)
    assert got == done(
        ref,
        pid,
        a + 9 * PAGE,
        outcome=Outcome.PMD_REUSE,
        reason=Reason.PMD_SOLE_REF,
        level=MapLevel.PMD,
        order=9,
        faults=1,
        error_code=WP,
    )


@pytest.mark.parametrize("profile", PROFILES)
def test_pmd_anon_exclusive_reuse(profile: str) -> None:
    """As for PTEs, the read-only exclusive PMD in a writable VMA is set up behind
    mprotect's back."""
    ref, pid = machine(profile)
    ref.set_thp_enabled("always")
    a = ref.mmap(pid, PMD)
    ref.write(pid, a, PAGE, 1)
    ref.mprotect(pid, a, PMD, "r")
    mm = ref._k.procs[pid].mm
    assert mm is not None
    vma = mm.find_vma(a)
    assert vma is not None
    vma.write = True
    got = ref.access(pid, a + PAGE, True, 2)
    assert got == done(
        ref,
        pid,
        a + PAGE,
        outcome=Outcome.PMD_REUSE,
        reason=Reason.PMD_ANON_EXCLUSIVE,
        level=MapLevel.PMD,
        order=9,
        faults=1,
        error_code=WP,
    )


# -- refused accesses --------------------------------------------------------------------------


@pytest.mark.parametrize("profile", PROFILES)
def test_segfaults(profile: str) -> None:
    ref, pid = machine(profile)
    a = ref.mmap(pid, MB)
    ref.write(pid, a, PAGE, 1)
    ref.mprotect(pid, a, PAGE, "r")
    ref.mprotect(pid, a + PAGE, PAGE, "none")
    before = (ref.stats(), ref.free_frames())
    ref.record(True)
    unmapped = record(outcome=Outcome.SEGFAULT, reason=Reason.SEGV_UNMAPPED)
    protection = record(outcome=Outcome.SEGFAULT, reason=Reason.SEGV_PROTECTION)
    assert ref.access(pid, a + MB, False, 0) == unmapped
    assert ref.access(pid, 0, True, 0) == unmapped
    assert ref.access(pid, 1 << 47, False, 0) == unmapped  # the top of user space
    assert ref.access(pid, (1 << 64) - 1, True, 0) == unmapped
    assert ref.access(pid, a, True, 2) == protection
    assert ref.access(pid, a + PAGE, False, 0) == protection
    assert ref.read(pid, a, PAGE) == [1]
    assert (ref.stats(), ref.free_frames()) == before
    assert ref.take_events() == b""


@pytest.mark.parametrize("profile", PROFILES)
def test_out_of_memory_changes_nothing(profile: str) -> None:
    ref, pid = machine(profile, frames=1024)
    a = ref.mmap(pid, PMD)
    ref.write(pid, a, PAGE, 1)
    child = ref.fork(pid)
    exhaust(ref, pid, 0)
    tables = ref.translate(pid, a + PAGE).steps
    faults = ref.stats().faults_write
    got = ref.access(pid, a + PAGE, True, 1)  # its PTE table exists: the folio fails
    assert got == record(
        outcome=Outcome.OUT_OF_MEMORY,
        reason=Reason.PTE_NONE,
        faults=1,
        flags=F.FIRST_TOUCH,
        error_code=NP_WRITE,
    )
    assert ref.translate(pid, a + PAGE).steps == tables
    assert ref.stats().faults_write == faults + 1  # the fault was taken and counted
    got = ref.access(pid, a, True, 2)  # the copy fails
    assert got == record(
        outcome=Outcome.OUT_OF_MEMORY,
        reason=Reason.SMALL_OTHER_REFS,
        faults=1,
        error_code=WP,
    )
    assert ref.read(pid, a, PAGE) == ref.read(child, a, PAGE) == [1]
    near = ref.mmap(pid, PMD)  # its PMD table exists: the PTE table is do_anonymous_page's
    got = ref.access(pid, near, False, 0)
    oom_read = {"outcome": Outcome.OUT_OF_MEMORY, "faults": 1, "flags": F.FIRST_TOUCH}
    assert got == record(reason=Reason.PTE_NONE, error_code=NP_READ, **oom_read)
    far = 1 << 40  # no PUD or PMD table: the fault fails before any handler decides
    ref.mmap_fixed(pid, far, PAGE)
    got = ref.access(pid, far, False, 0)
    assert got == record(reason=Reason.NONE, error_code=NP_READ, **oom_read)
    assert ref.free_frames() == 0
    ref.check()


# -- the event stream ----------------------------------------------------------------------


def events(ref: ReferenceBackend) -> list[Event]:
    """The events kept since the last call, decoded from ``take_events``' bytes."""
    data = ref.take_events()
    assert len(data) % EVENT_SIZE == 0
    out = []
    for row in struct.iter_unpack("<BBBBI8Q", data):
        rec = EventRecord.from_raw(row)
        kind = next(k for k, c in KINDS.items() if c == rec.kind)
        out.append(
            Event(
                kind,
                rec.order,
                rec.cause,
                rec.asid,
                rec.asid2,
                rec.pfn,
                rec.pfn2,
                rec.start,
                rec.end,
                rec.nr,
                rec.pmds,
            )
        )
    return out


KINDS = {kind: Event(kind).record().kind for kind in EventKind}


def test_event_codes_and_raw_layout() -> None:
    assert sorted(KINDS.values()) == sorted(EventCode)
    collapse_counters = {EventKind.THP_COLLAPSE_ALLOC, EventKind.THP_COLLAPSE_ALLOC_FAILED}
    assert {k for k in EventKind if KINDS[k] <= EventCode.HUGE_ZERO_WRITE} == (
        COUNTED - collapse_counters
    )
    e = Event(EventKind.ZAP, cause=2, asid=3, start=4, end=5, nr=6, pmds=7)
    assert e.raw() == (int(EventCode.ZAP), 0, 2, 0, 0, 3, 0, 0, 0, 4, 5, 6, 7)
    assert len(struct.pack("<BBBBI8Q", *e.raw())) == EVENT_SIZE


def test_fault_events() -> None:
    ref, pid = machine("6.15")
    ref.set_thp_size("64K", "always")
    ref.set_thp_enabled("always")
    a = ref.mmap(pid, PMD)
    b = ref.mmap(pid, MB)
    ref.record(True)
    ref.write(pid, a, PAGE, 1)
    h = ref.translate(pid, a).pfn
    assert events(ref) == [
        Event(EventKind.FAULTS_WRITE),
        Event(EventKind.FOLIO_ALLOC, 9, pfn=h or 0),
        Event(EventKind.PAGES_ZEROED, pfn=h or 0, nr=512),
        Event(EventKind.THP_FAULT_ALLOC),
        Event(EventKind.ANON_FAULT_ALLOC, 9),
    ]
    ref.write(pid, b, PAGE, 1)
    m = ref.translate(pid, b).pfn or 0
    assert events(ref) == [
        Event(EventKind.FAULTS_WRITE),
        Event(EventKind.FOLIO_ALLOC, 4, pfn=m),
        Event(EventKind.PAGES_ZEROED, pfn=m, nr=16),
        Event(EventKind.ANON_FAULT_ALLOC, 4),
    ]
    c = ref.mmap(pid, PMD)
    ref.read(pid, c, PAGE)
    assert events(ref) == [Event(EventKind.FAULTS_READ)]
    ref.write(pid, c, PAGE, 1)
    t = ref.translate(pid, c).pfn or 0
    asid = ref.asid(pid)
    assert events(ref) == [
        Event(EventKind.FAULTS_WP),
        Event(EventKind.FOLIO_ALLOC, 9, pfn=t),
        Event(EventKind.PAGES_ZEROED, pfn=t, nr=512),
        Event(EventKind.TLB_FLUSH, asid=asid, start=c, end=c + PMD),
        Event(EventKind.THP_FAULT_ALLOC),
        Event(EventKind.ANON_FAULT_ALLOC, 9),
        Event(EventKind.HUGE_ZERO_WRITE),
    ]


def test_split_and_zero_copy_events_6_12() -> None:
    ref, pid = machine("6.12")
    ref.set_thp_enabled("always")
    a = ref.mmap(pid, PMD)
    ref.read(pid, a, PAGE)
    ref.record(True)
    ref.write(pid, a + PAGE, PAGE, 1)
    new = ref.translate(pid, a + PAGE).pfn or 0
    asid = ref.asid(pid)
    assert events(ref) == [
        Event(EventKind.FAULTS_WP),
        Event(EventKind.THP_SPLIT_PMD),
        Event(EventKind.TLB_FLUSH, asid=asid, start=a, end=a + PMD),
        Event(EventKind.FAULTS_WP),
        Event(EventKind.FOLIO_ALLOC, 0, pfn=new),
        Event(EventKind.PAGES_ZEROED, pfn=new, nr=1),
        Event(EventKind.TLB_FLUSH, asid=asid, start=a + PAGE, end=a + 2 * PAGE),
        Event(EventKind.COW_COPY),
    ]


def test_fork_events_and_asids() -> None:
    ref, pid = machine()
    ref.set_thp_enabled("always")
    thp = ref.mmap(pid, PMD)
    ref.write(pid, thp, PAGE, 1)  # one PMD
    hz = ref.mmap(pid, PMD)
    ref.read(pid, hz, PAGE)  # the huge zero PMD
    ref.set_thp_enabled("never")
    a = ref.mmap(pid, MB)
    ref.write(pid, a, 3 * PAGE, 1)  # three PTEs
    ref.read(pid, a + 3 * PAGE, PAGE)  # a zero-page PTE
    skipped = ref.mmap(pid, MB)
    ref.write(pid, skipped, PAGE, 1)
    ref.madvise(pid, skipped, MB, "dontfork")  # not copied
    assert ref.asid(pid) == 1
    ref.record(True)
    child = ref.fork(pid)
    assert ref.asid(child) == 2
    assert events(ref) == [
        Event(EventKind.TLB_FLUSH, asid=1, start=0, end=WHOLE_MM_END),
        Event(EventKind.FORK, asid=1, asid2=2, nr=4, pmds=2),
    ]
    ref.exit(child)
    events(ref)
    grandchild = ref.fork(pid)
    assert ref.asid(grandchild) == 3  # never reused ...
    assert ref.mm_id(grandchild) == 2  # ... unlike MM ids
    with pytest.raises(NoSuchProcessError):
        ref.asid(child)


def test_munmap_events() -> None:
    ref, pid = machine()
    ref.set_thp_enabled("always")
    thp = ref.mmap(pid, PMD)
    ref.write(pid, thp, PAGE, 1)
    ref.set_thp_enabled("never")
    a = ref.mmap(pid, MB)
    ref.write(pid, a, 2 * PAGE, 1)
    ref.read(pid, a + 2 * PAGE, PAGE)
    asid = ref.asid(pid)
    p0, p1 = ref.translate(pid, a).pfn or 0, ref.translate(pid, a + PAGE).pfn or 0
    ref.record(True)
    ref.munmap(pid, a, 4 * PAGE)  # two pages, one zero-page PTE, one hole
    assert events(ref) == [
        Event(EventKind.FOLIO_FREE, 0, pfn=p0),
        Event(EventKind.FOLIO_FREE, 0, pfn=p1),
        Event(EventKind.TLB_FLUSH, asid=asid, start=a, end=a + 4 * PAGE),
        Event(EventKind.ZAP, cause=ZapCause.UNMAP, asid=asid, start=a, end=a + 4 * PAGE, nr=3),
    ]
    ref.munmap(pid, a, PAGE)  # nothing there: no flush, a Zap of nothing
    assert events(ref) == [
        Event(EventKind.ZAP, cause=ZapCause.UNMAP, asid=asid, start=a, end=a + PAGE),
    ]
    head = ref.translate(pid, thp).pfn or 0
    ref.munmap(pid, thp + PAGE, PAGE)  # splits the PMD first; the THP is partially mapped
    assert events(ref) == [
        Event(EventKind.THP_SPLIT_PMD),
        Event(EventKind.TLB_FLUSH, asid=asid, start=thp, end=thp + PMD),
        Event(EventKind.DEFERRED_SPLIT, 9, pfn=head),
        Event(EventKind.TLB_FLUSH, asid=asid, start=thp + PAGE, end=thp + 2 * PAGE),
        Event(EventKind.ZAP, asid=asid, start=thp + PAGE, end=thp + 2 * PAGE, nr=1),
    ]
    ref.munmap(pid, thp, PMD)
    assert events(ref) == [
        Event(EventKind.DEFERRED_UNQUEUE, 9, pfn=head),
        Event(EventKind.FOLIO_FREE, 9, pfn=head),
        Event(EventKind.TLB_FLUSH, asid=asid, start=thp, end=thp + PMD),
        Event(EventKind.ZAP, asid=asid, start=thp, end=thp + PMD, nr=511),
    ]


def test_madvise_dontneed_and_exit_events() -> None:
    ref, pid = machine()
    ref.set_thp_enabled("always")
    thp = ref.mmap(pid, PMD)
    ref.write(pid, thp, PAGE, 1)
    head = ref.translate(pid, thp).pfn or 0
    child = ref.fork(pid)
    asid, casid = ref.asid(pid), ref.asid(child)
    ref.record(True)
    ref.madvise(pid, thp, PMD, "dontneed")  # the child still maps it: nothing freed
    assert events(ref) == [
        Event(EventKind.TLB_FLUSH, asid=asid, start=thp, end=thp + PMD),
        Event(EventKind.ZAP, cause=ZapCause.DONTNEED, asid=asid, start=thp, end=thp + PMD, pmds=1),
    ]
    ref.exit(child)
    assert events(ref) == [
        Event(EventKind.FOLIO_FREE, 9, pfn=head),
        Event(EventKind.TLB_FLUSH, asid=casid, start=0, end=WHOLE_MM_END),
        Event(EventKind.ZAP, cause=ZapCause.EXIT, asid=casid, start=0, end=WHOLE_MM_END, pmds=1),
    ]
    empty = ref.fork(pid)
    easid = ref.asid(empty)
    events(ref)
    ref.exit(empty)
    assert events(ref) == [  # nothing mapped: no flush before the Zap
        Event(EventKind.ZAP, cause=ZapCause.EXIT, asid=easid, end=WHOLE_MM_END),
    ]


def test_mprotect_events() -> None:
    ref, pid = machine()
    ref.set_thp_enabled("always")
    thp = ref.mmap(pid, PMD)
    ref.write(pid, thp, PAGE, 1)
    ref.set_thp_enabled("never")
    a = ref.mmap(pid, MB)
    ref.write(pid, a, 2 * PAGE, 1)
    ref.read(pid, a + 2 * PAGE, PAGE)
    asid = ref.asid(pid)
    ref.record(True)
    ref.mprotect(pid, a, 8 * PAGE, "r")
    assert events(ref) == [
        Event(EventKind.TLB_FLUSH, asid=asid, start=a, end=a + 8 * PAGE),
        Event(EventKind.MPROTECT, asid=asid, start=a, end=a + 8 * PAGE, nr=3),
    ]
    ref.mprotect(pid, a, 8 * PAGE, "r")  # no flag change: nothing rewritten, no flush
    assert events(ref) == [Event(EventKind.MPROTECT, asid=asid, start=a, end=a + 8 * PAGE)]
    ref.mprotect(pid, thp, PMD, "r")
    assert events(ref) == [
        Event(EventKind.TLB_FLUSH, asid=asid, start=thp, end=thp + PMD),
        Event(EventKind.MPROTECT, asid=asid, start=thp, end=thp + PMD, pmds=1),
    ]
    ref.mprotect(pid, thp + PAGE, PAGE, "rw")  # splits at both ends first
    assert events(ref) == [
        Event(EventKind.THP_SPLIT_PMD),
        Event(EventKind.TLB_FLUSH, asid=asid, start=thp, end=thp + PMD),
        Event(EventKind.TLB_FLUSH, asid=asid, start=thp + PAGE, end=thp + 2 * PAGE),
        Event(EventKind.MPROTECT, asid=asid, start=thp + PAGE, end=thp + 2 * PAGE, nr=1),
    ]
    child = ref.fork(pid)
    ref.mprotect(pid, a, 8 * PAGE, "rw")  # forked pages stay read-only: nothing changed
    assert events(ref)[2:] == [
        Event(EventKind.MPROTECT, asid=asid, start=a, end=a + 8 * PAGE, nr=3),
    ]
    ref.exit(child)


@pytest.mark.parametrize("profile", PROFILES)
def test_recorded_events_fold_to_the_stats(profile: str) -> None:
    ref, pid = machine(profile, frames=2048)
    ref.record(True)
    ref.set_thp_enabled("always")
    ref.set_thp_size("16K", "always")
    a = ref.mmap(pid, 4 * MB)
    ref.read(pid, a, PAGE)
    ref.write(pid, a, PAGE, 1)
    ref.write(pid, a + PMD, PAGE, 2)
    b = ref.mmap(pid, 64 * KB)
    ref.write(pid, b, 64 * KB, 3)
    child = ref.fork(pid)
    ref.write(pid, b, PAGE, 4)
    ref.write(child, a + PMD, PAGE, 5)
    ref.mprotect(pid, b, 8 * PAGE, "r")
    ref.madvise(pid, a + PMD + PAGE, PAGE, "dontneed")
    ref.exit(child)  # page 0 of b's folio is now mapped by nothing: partially mapped
    ref.madvise(pid, b, 64 * KB, "dontneed")  # ... and freed off the deferred-split queue
    d = ref.mmap(pid, 16 * KB)
    ref.write(pid, d, 16 * KB, 6)  # one 16K folio
    ref.ref(pid, d, PAGE)
    ref.madvise(pid, d + 8 * KB, 8 * KB, "dontneed")  # partially mapped: queued
    ref.drop_caches()  # the ref refuses the split: SPLIT_FAILED
    ref.unref(pid, d, PAGE)
    ref.drop_caches()  # SPLIT, then the two unmapped pages freed
    ref.munmap(pid, d, 16 * KB)
    e = ref.mmap(pid, 32 * KB)
    ref.write(pid, e, 32 * KB, 7)  # two 16K folios
    ref.pageout(pid, e, 32 * KB)  # SWAP_OUT of each
    ref.read(pid, e, PAGE)  # SWAP_IN: the first comes back whole
    ref.munmap(pid, a, PMD)
    c = ref.mmap(pid, PMD)
    ref.set_thp_enabled("never")
    ref.set_thp_size("16K", "never")
    ref.write(pid, c + PMD - PAGE, PAGE, 1)
    exhaust(ref, pid, 0)
    ref.set_thp_size("16K", "always")
    swapin = ref.access(pid, e + 16 * KB, False, 0)  # SWPIN_FALLBACK, then order 0 runs out
    assert swapin.outcome == Outcome.OUT_OF_MEMORY
    oom = ref.access(pid, c, True, 1)  # 16K falls back, then order 0 runs out
    assert (oom.outcome, oom.orders_failed) == (Outcome.OUT_OF_MEMORY, 1 << 2)
    assert ref.collapse(pid, c, PMD) == 8  # ALLOC_HUGE_PAGE_FAIL: a COLLAPSE event
    got = events(ref)
    assert Stats.fold(got).as_dict() == ref.stats()
    # SWPOUT_FALLBACK needs a full swap device (262144 slots): not in this small machine
    assert {ev.kind for ev in got} >= set(EventKind) - COUNTED - {EventKind.SWPOUT_FALLBACK}
    assert ref.take_events() == b""
    ref.record(False)
    ref.mprotect(pid, b, PAGE, "rw")  # events, but none kept
    assert ref.take_events() == b""


# -- access_batch --------------------------------------------------------------------------------


def test_access_batch_matches_single_accesses() -> None:
    def scenario() -> tuple[ReferenceBackend, int, int]:
        ref, pid = machine("6.15", frames=1024)
        ref.set_thp_size("16K", "always")
        a = ref.mmap(pid, MB)
        ref.write(pid, a, PAGE, 1)
        ref.fork(pid)
        return ref, pid, a

    addrs = [0x12, PAGE + 3, 5 * PAGE, 5 * PAGE + 9, 0, 3 * MB]
    writes = [True, False, True, False, True, True]
    one, pid, a = scenario()
    want = [one.access(pid, a + x, w, 7) for x, w in zip(addrs, writes, strict=True)]
    two, pid, a = scenario()
    out = two.access_batch(pid, [a + x for x in addrs], memoryview(bytes(writes)), 7)
    assert len(out) == ACCESS_SIZE * len(addrs)
    got = [Access.from_raw(r) for r in struct.iter_unpack("<QBBBBBBBBIHHHHI", out)]
    assert got == want
    assert want[-1].outcome is Outcome.SEGFAULT
    assert two.stats() == one.stats()
    assert two.read(pid, a, PAGE) == [7]


def test_access_batch_checks_everything_first() -> None:
    ref, pid = machine()
    a = ref.mmap(pid, MB)
    before = ref.stats()
    bad: list[tuple[Any, Any, str]] = [
        ([a, -1], True, r"addrs\[1\] must be in \[0, 2\^64\)"),
        ([a, a], memoryview(b"\x01"), "one byte per address"),
        ([a, a], memoryview(b"\x01\x02"), r"writes\[1\] must be 0 or 1"),
        ([a, a], 1, "writes must be a bool or a buffer"),
    ]
    for addrs, writes, message in bad:
        with pytest.raises(InvalidArgumentError, match=message):
            ref.access_batch(pid, addrs, writes, 1)
    with pytest.raises(NoSuchProcessError):
        ref.access_batch(99, [a], True, 1)
    assert ref.stats() == before
    assert ref.observe(pid, a, PAGE)[0].present is False


# -- mmap_fixed ----------------------------------------------------------------------------------


def test_mmap_fixed() -> None:
    ref, pid = machine()
    a = ref.mmap(pid, PMD)
    with pytest.raises(InvalidAddressError, match=r"\(EEXIST\)$"):
        ref.mmap_fixed(pid, a + PMD - PAGE, 2 * PAGE)
    with pytest.raises(InvalidArgumentError, match="not a multiple of the page size"):
        ref.mmap_fixed(pid, a + PMD + 1, PAGE)
    with pytest.raises(InvalidArgumentError, match="length"):
        ref.mmap_fixed(pid, a + PMD, 100)
    with pytest.raises(InvalidAddressError, match="outside user space"):
        ref.mmap_fixed(pid, 0, PAGE)
    with pytest.raises(InvalidAddressError, match="outside user space"):
        ref.mmap_fixed(pid, (1 << 47) - PAGE, 2 * PAGE)
    assert [(v.start, v.end) for v in ref.vmas(pid)] == [(a, a + PMD)]
    assert ref.mmap_fixed(pid, a + PMD, PAGE) == a + PMD  # merges with its lower neighbour
    assert [(v.start, v.end) for v in ref.vmas(pid)] == [(a, a + PMD + PAGE)]
    ref.madvise(pid, a, PMD, "hugepage")
    ref.mmap_fixed(pid, a - PAGE, PAGE)  # flags differ from its neighbour's: no merge
    assert [(v.start, v.end) for v in ref.vmas(pid)] == [
        (a - PAGE, a),
        (a, a + PMD),
        (a + PMD, a + PMD + PAGE),
    ]
    assert ref.access(pid, a - PAGE, True, 1).outcome is Outcome.ANON_ALLOC
    ref.check()


def test_mmap_skips_fixed_mappings() -> None:
    """mmap never overlaps or touches a VMA: it moves below a fixed one in its way."""
    plain, pid = machine()
    first = plain.mmap(pid, PMD)
    expected_next = plain.mmap(pid, PMD)
    ref, pid = machine()
    assert ref.mmap(pid, PMD) == first
    ref.mmap_fixed(pid, expected_next + PMD, PAGE)  # touches the next candidate's end
    got = ref.mmap(pid, PMD)
    # The candidate touched the fixed VMA: the cursor moved 2M below its start, which is
    # where the candidate ended (expected_next + 2M), so the mapping lands 2M lower.
    assert got == expected_next - PMD
    for v in ref.vmas(pid):
        assert v.end < got or v.start > got + PMD or (v.start, v.end) == (got, got + PMD)
    ref.mmap_fixed(pid, got - 3 * PMD, PMD)
    ref.mmap_fixed(pid, got - 5 * PMD - PAGE, PAGE)
    nxt = ref.mmap(pid, PMD)
    vmas = [(v.start, v.end) for v in ref.vmas(pid)]
    assert nxt % PMD == 0 and (nxt, nxt + PMD) in vmas
    others = [v for v in vmas if v != (nxt, nxt + PMD)]
    assert all(end < nxt or start > nxt + PMD for start, end in others)
    # got - 3*PMD touches the first candidate (got - 2*PMD ... got - PMD is the cursor's):
    # the cursor goes to got - 4*PMD; the next candidate, got - 5*PMD, touches the page at
    # got - 5*PMD - PAGE: the cursor goes 2M below it and the mapping lands at got - 8*PMD.
    assert nxt == got - 8 * PMD


# -- every record agrees with the machine ------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(programs(max_count=16, max_size=24), st.sampled_from(PROFILES))
def test_records_agree_with_the_page_tables_and_the_counters(
    steps: list[Step], profile: str
) -> None:
    """Random programs whose reads and writes go through ``access``, one byte per page:
    each record's frame and level are what the page tables map afterwards, its fault count
    is what the counters moved by, and only a refused or failed access has no frame."""
    ref = ReferenceBackend(profile, 1024, 4)
    pid = ref.init_pid()
    base = ref.mmap(pid, MAPPING_PAGES * PAGE)
    pids = [pid]
    for op, page, drawn in steps:
        count = min(drawn, MAPPING_PAGES - page)
        p = pids[page % len(pids)]
        if op in ("write", "read"):
            for i in range(count):
                addr = base + (page + i) * PAGE + (i * 37) % PAGE
                s0 = ref.stats()
                rec = ref.access(p, addr, op == "write", page + 1)
                s1 = ref.stats()
                moved = (
                    s1.faults_read
                    + s1.faults_write
                    + s1.faults_wp
                    - s0.faults_read
                    - s0.faults_write
                    - s0.faults_wp
                )
                assert moved == rec.faults
                assert (rec.outcome is Outcome.NO_FAULT) == (rec.faults == 0) or (
                    rec.outcome is Outcome.SEGFAULT
                )
                if rec.phys is None:
                    assert rec.outcome in (Outcome.SEGFAULT, Outcome.OUT_OF_MEMORY)
                    assert (rec.level, rec.order) == (MapLevel.NONE, 0)
                    continue
                t = ref.translate(p, addr)
                assert rec.phys == (t.pfn or 0) << 12 | (addr & 0xFFF)
                assert rec.level is (MapLevel.PMD if t.page_size == PMD else MapLevel.PTE)
                if op == "write":
                    assert ref.read(p, addr & ~0xFFF, PAGE) == [page + 1]
            continue
        try:
            if op == "fork":
                pids.append(ref.fork(p))
            elif op == "dontneed":
                ref.madvise(p, base + page * PAGE, count * PAGE, "dontneed")
            elif op == "munmap":
                ref.munmap(p, base + page * PAGE, count * PAGE)
            elif op == "mprotect":
                ref.mprotect(p, base + page * PAGE, count * PAGE, "r" if count % 2 else "rw")
            else:
                ref.set_thp_enabled("always" if count % 2 else "never")
                ref.set_thp_size("16K", "always" if count % 3 else "never")
        except CowError:
            pass
    ref.check()
