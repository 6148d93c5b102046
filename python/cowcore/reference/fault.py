"""User accesses and the page-fault handlers (mm/memory.c, mm/huge_memory.c; KS §2, §4).

An access walks the page tables like the MMU; when the leaf does not allow it, the fault is
handled as ``handle_mm_fault`` would and the access is retried, as the faulting instruction
is. The error code of each fault follows the x86 layout (KS §8.4).

Every access also fills a :class:`Trace`, what its faults did and why, from which
:func:`user_access` builds the :class:`cowcore.outcome.Access` record
(``docs/access-and-events.md``, "Which outcome and reason, per handler").
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from cowcore.errors import NotModelledError, OutOfMemoryError
from cowcore.outcome import Access, AccessFlags, MapLevel, Outcome, Reason
from cowcore.protocol import FAULT_AROUND_PAGES
from cowcore.reference import paging as pg
from cowcore.reference import swap
from cowcore.reference.events import Event, EventKind
from cowcore.reference.folio import HPAGE_PMD_ORDER, Folio
from cowcore.reference.kernel import Kernel
from cowcore.reference.mm import Mm, Vma

# x86 page-fault error code bits (arch/x86/include/asm/trap_pf.h).
PF_PROT = 1 << 0
PF_WRITE = 1 << 1
PF_USER = 1 << 2

# AccessFlags as plain ints, for the hot path.
FIRST_TOUCH = int(AccessFlags.FIRST_TOUCH)
ZEROED = int(AccessFlags.ZEROED)
COPIED = int(AccessFlags.COPIED)
SPLIT = int(AccessFlags.SPLIT)
FELL_BACK = int(AccessFlags.FELL_BACK)
FAULT_AROUND = int(AccessFlags.FAULT_AROUND)
SWAP_IN = int(AccessFlags.SWAP_IN)

PMD_BIT = 1 << HPAGE_PMD_ORDER


class Handled(Enum):
    """What a huge-PMD handler did: handled, or fall back to the PTE level."""

    DONE = 0
    FALLBACK = 1


@dataclass(slots=True)
class Trace:
    """What the faults of one access did and why (the fields of :class:`Access` that the
    handlers decide): each handler sets ``outcome`` and ``reason`` for its decision (the last
    fault's win), ORs its ``flags`` and order evidence (bit ``k`` = order ``k``)."""

    outcome: Outcome = Outcome.NO_FAULT
    reason: Reason = Reason.NONE
    split_reason: Reason = Reason.NONE
    faults: int = 0
    flags: int = 0
    error_code: int = 0
    orders_allowed: int = 0
    orders_fit: int = 0
    orders_empty: int = 0
    orders_failed: int = 0

    def record(self, phys: int | None, level: MapLevel, order: int) -> Access:
        """The :class:`Access` of a completed access (``phys`` given) or of one that ran out
        of memory (``phys`` ``None``: ``OUT_OF_MEMORY``, level ``NONE``, order 0). A copy by
        the PTE fault that follows a PMD split is reported as ``PMD_SPLIT_COPY``."""
        outcome = self.outcome
        if phys is None:
            outcome, level, order = Outcome.OUT_OF_MEMORY, MapLevel.NONE, 0
        elif self.split_reason is not Reason.NONE and outcome is Outcome.COW_COPY:
            outcome = Outcome.PMD_SPLIT_COPY
        return Access(
            phys=phys,
            outcome=outcome,
            reason=self.reason,
            split_reason=self.split_reason,
            level=level,
            order=order,
            faults=self.faults,
            flags=AccessFlags(self.flags),
            error_code=self.error_code,
            orders_allowed=self.orders_allowed,
            orders_fit=self.orders_fit,
            orders_empty=self.orders_empty,
            orders_failed=self.orders_failed,
        )


def order_mask(orders: list[int]) -> int:
    """A list of orders as a bit mask (bit ``k`` = order ``k``)."""
    mask = 0
    for order in orders:
        mask |= 1 << order
    return mask


def segfault(reason: Reason) -> Access:
    """The record of an access that ``do_user_addr_fault`` refuses with SIGSEGV: nothing
    was done, so no fault is reported (``faults`` 0, ``error_code`` 0)."""
    return Access(
        phys=None,
        outcome=Outcome.SEGFAULT,
        reason=reason,
        split_reason=Reason.NONE,
        level=MapLevel.NONE,
        order=0,
        faults=0,
        flags=AccessFlags(0),
        error_code=0,
        orders_allowed=0,
        orders_fit=0,
        orders_empty=0,
        orders_failed=0,
    )


def access_error(vma: Vma | None, write: bool) -> Reason:
    """Why the access is refused (``SEGV_UNMAPPED``: no VMA; ``SEGV_PROTECTION``:
    ``access_error()``, a write to a read-only VMA or any access to a ``PROT_NONE`` one), or
    ``Reason.NONE`` if it is not."""
    if vma is None:
        return Reason.SEGV_UNMAPPED
    if (write and not vma.write) or not vma.read:
        return Reason.SEGV_PROTECTION
    return Reason.NONE


def user_access(k: Kernel, mm: Mm, addr: int, write: bool, limit: int) -> Access:
    """One user load or store of the byte at ``addr`` (any byte address), as its record.

    An address at or above ``limit`` (the top of user space) or outside every VMA, or one
    that the VMA forbids, is a ``SEGFAULT`` with nothing changed; a fault that cannot get
    memory is ``OUT_OF_MEMORY`` with nothing changed (its tables undone; the events emitted
    before the failure stay). The caller stores a written value when ``phys`` is set.
    """
    vma = mm.find_vma(addr) if addr < limit else None
    refused = access_error(vma, write)
    if refused is not Reason.NONE:
        return segfault(refused)
    assert vma is not None
    trace = Trace()
    page = addr & ~(pg.PAGE_SIZE - 1)
    try:
        pfn, level = access_page(k, mm, vma, page, write, trace)
    except OutOfMemoryError:
        return trace.record(None, MapLevel.NONE, 0)
    if level is MapLevel.PMD:
        order = HPAGE_PMD_ORDER
    else:
        folio = k.page_folio.get(pfn)
        order = 0 if folio is None else folio.order  # the zero page: order 0
    return trace.record(pfn << pg.PAGE_SHIFT | (addr & (pg.PAGE_SIZE - 1)), level, order)


def access(k: Kernel, mm: Mm, vma: Vma, addr: int, write: bool) -> int:
    """One user load or store to the page of ``addr``; returns the 4 KiB frame accessed.

    The caller has checked that ``vma`` allows the access (``access_error``). Raises
    :class:`OutOfMemoryError` with nothing changed when a fault cannot get memory.
    """
    return access_page(k, mm, vma, addr, write, None)[0]


def access_page(
    k: Kernel, mm: Mm, vma: Vma, addr: int, write: bool, trace: Trace | None
) -> tuple[int, MapLevel]:
    """One access to the page of ``addr``: the frame accessed and the level that maps it.

    Walks like the MMU: a leaf that allows the access gets Accessed (and Dirty for a store)
    set; otherwise a page fault is raised with the x86 error code and handled by
    :func:`handle_mm_fault`, and the access is retried, as the faulting instruction is.
    The faults are traced into ``trace`` (a fresh one if ``None``).
    """
    for _ in range(4):  # a fault resolves in at most: split, copy; then the access succeeds
        pmd_slot = k.pmd_slot(mm, addr)
        if pmd_slot is not None and pg.is_huge(pmd := k.entry(*pmd_slot)):
            if not write or pmd & pg.RW:
                k.set_entry(*pmd_slot, pmd | pg.A | (pg.D if write else 0))
                return pg.entry_pfn(pmd) + ((addr >> pg.PAGE_SHIFT) & 0x1FF), MapLevel.PMD
            if trace is None:
                trace = Trace()
            handle_mm_fault(k, mm, vma, addr, PF_USER | PF_WRITE | PF_PROT, trace)
            continue
        pte_slot = k.pte_slot(mm, addr)
        pte = k.entry(*pte_slot) if pte_slot is not None else 0
        if pte_slot is not None and pte & pg.P and (not write or pte & pg.RW):
            k.set_entry(*pte_slot, pte | pg.A | (pg.D if write else 0))
            return pg.entry_pfn(pte), MapLevel.PTE
        code = PF_USER | (PF_WRITE if write else 0) | (PF_PROT if pte & pg.P else 0)
        if trace is None:
            trace = Trace()
        handle_mm_fault(k, mm, vma, addr, code, trace)
    raise AssertionError(f"access to {addr:#x} did not resolve")


def handle_mm_fault(k: Kernel, mm: Mm, vma: Vma, addr: int, code: int, trace: Trace) -> None:
    """One page fault with its x86 error code (``do_user_addr_fault`` -> ``handle_mm_fault``):
    counted by type, then dispatched on what the entries are (``__handle_mm_fault``)."""
    write = bool(code & PF_WRITE)
    if not trace.faults:
        trace.error_code = code
    trace.faults += 1
    if code & PF_PROT:
        assert write, "read faults on present entries are refused by access_error()"
        k.emit(Event(EventKind.FAULTS_WP))
    else:
        trace.flags |= FIRST_TOUCH
        k.emit(Event(EventKind.FAULTS_WRITE if write else EventKind.FAULTS_READ))
    allocated: list[tuple[int, int, int]] = []
    try:
        _handle_fault(k, mm, vma, addr, write, allocated, trace)
    except OutOfMemoryError:
        k.undo_tables(allocated)
        raise


def _handle_fault(
    k: Kernel,
    mm: Mm,
    vma: Vma,
    addr: int,
    write: bool,
    allocated: list[tuple[int, int, int]],
    trace: Trace,
) -> None:
    """``__handle_mm_fault``: allocate the tables down to the PMD, dispatch on the PMD's
    kind, then allocate the PTE table and dispatch on the PTE's (``handle_pte_fault``).
    Tables allocated here are recorded in ``allocated`` for the caller to undo on OOM.

    The PTE table of a none PMD is allocated for ``do_anonymous_page`` (the kernel's
    ``pte_alloc`` there), so running out of memory for it is that handler's ``PTE_NONE``;
    for an upper table, no handler has decided yet (reason ``NONE``)."""
    pmd_table = k.table_for(mm, addr, k.pmd_level(), allocated)
    assert pmd_table is not None
    pmd_idx = pg.index_at(addr, k.levels, k.pmd_level())
    pmd = k.entry(pmd_table, pmd_idx)
    match pg.entry_kind(pmd):
        case pg.EntryKind.NONE:
            allowable = k.thp.allowable_orders(vma)
            if HPAGE_PMD_ORDER in allowable:
                handled = do_huge_pmd_anonymous_page(
                    k, mm, vma, addr, write, pmd_table, pmd_idx, order_mask(allowable), trace
                )
                if handled is Handled.DONE:
                    return
        case pg.EntryKind.PRESENT if pmd & pg.PS:
            assert write and not pmd & pg.RW, "the access would have succeeded"
            do_huge_pmd_wp_page(k, mm, vma, addr, pmd_table, pmd_idx, trace)
            return
        case pg.EntryKind.PRESENT:
            pass  # a PTE table: the fault is handled at the PTE level
        case pg.EntryKind.SWAP | pg.EntryKind.MIGRATION:
            raise pg.not_modelled(pmd, addr, "PMD fault")  # is_swap_pmd: pmd_migration_entry_wait
    if not pg.is_present(pmd):
        trace.reason = Reason.PTE_NONE  # do_anonymous_page's pte_alloc
    pte_table = k.table_for(mm, addr, k.levels - 1, allocated)
    assert pte_table is not None
    pte_idx = pg.index_at(addr, k.levels, k.levels - 1)
    pte = k.entry(pte_table, pte_idx)
    match pg.entry_kind(pte):
        case pg.EntryKind.NONE:
            do_anonymous_page(k, mm, vma, addr, write, pte_table, trace)  # do_pte_missing
        case pg.EntryKind.PRESENT if pte & pg.P:
            assert write and not pte & pg.RW, "the access would have succeeded"
            do_wp_page(k, mm, vma, addr, pte_table, pte_idx, trace)
        case pg.EntryKind.PRESENT:
            raise pg.not_modelled(pte, addr, "PROT_NONE PTE fault")  # do_numa_page
        case pg.EntryKind.SWAP if swap.is_swap_pte(pte) and pg.swp_offset(pte) in k.swap.slots:
            do_swap_page(k, mm, vma, addr, write, pte_table, pte_idx, trace)
        case pg.EntryKind.SWAP:
            raise pg.not_modelled(pte, addr, "PTE fault")  # no such device or slot
        case pg.EntryKind.MIGRATION:
            raise pg.not_modelled(pte, addr, "PTE fault")  # migration_entry_wait


def do_huge_pmd_anonymous_page(
    k: Kernel,
    mm: Mm,
    vma: Vma,
    addr: int,
    write: bool,
    pmd_table: int,
    pmd_idx: int,
    allowable: int,
    trace: Trace,
) -> Handled:
    """A fault on a none PMD where a PMD-size THP is allowed (KS §2.5); ``allowable`` is
    the mask of ``thp_vma_allowable_orders``.

    Order evidence is kept only for a fault that may allocate (a write, or a read with the
    huge zero page off); a range that does not fit adds only the allowed orders (writes)."""
    haddr = addr & ~(pg.PMD_SIZE - 1)
    evidence = write or not k.thp.use_zero_page
    if haddr < vma.start or haddr + pg.PMD_SIZE > vma.end:
        if write:
            trace.orders_allowed |= allowable
        return Handled.FALLBACK  # thp_vma_suitable_order(): not counted as a fallback
    trace.reason = Reason.PMD_NONE
    if evidence:
        trace.orders_allowed |= allowable
        trace.orders_fit |= PMD_BIT
        trace.orders_empty |= PMD_BIT
    prot = vma.page_prot()
    if not write and k.thp.use_zero_page:
        deposit = k.phys.alloc_table()
        k.deposits[(pmd_table, pmd_idx)] = deposit
        k.set_entry(pmd_table, pmd_idx, pg.make_entry(k.huge_zero_pfn, prot | pg.PS | pg.SPECIAL))
        vma.anon_vma = True  # anon_vma_prepare() ran before the zero-page branch
        trace.outcome = Outcome.HUGE_ZERO_PAGE
        return Handled.DONE
    if not k.phys.buddy.can_allocate(HPAGE_PMD_ORDER):
        # vma_alloc_anon_folio_pmd() failure
        k.emit(Event(EventKind.ANON_FAULT_FALLBACK, HPAGE_PMD_ORDER))
        trace.orders_failed |= PMD_BIT
        trace.flags |= FELL_BACK
        return Handled.FALLBACK
    # vma_alloc_anon_folio_pmd() allocates and zeroes the folio before pte_alloc_one().
    folio = k.alloc_folio(HPAGE_PMD_ORDER)
    k.emit(Event(EventKind.PAGES_ZEROED, pfn=folio.pfn, nr=pg.HPAGE_PMD_NR))
    try:
        deposit = k.phys.alloc_table()
    except OutOfMemoryError:
        k.free_unused_folio(folio)
        raise
    map_anon_folio_pmd(k, mm, vma, folio, pmd_table, pmd_idx)
    k.deposits[(pmd_table, pmd_idx)] = deposit
    trace.outcome = Outcome.ANON_ALLOC
    trace.flags |= ZEROED
    return Handled.DONE


def map_anon_folio_pmd(
    k: Kernel, mm: Mm, vma: Vma, folio: Folio, pmd_table: int, pmd_idx: int
) -> None:
    """``map_anon_folio_pmd``: install a new exclusive THP with one writable PMD."""
    folio.refcount = 1
    folio.add_new_anon_rmap(mm.mm_id, exclusive=True, pmd_mapped=True)
    if k.profile_config.per_size_thp_stats:
        # deferred_split_folio(folio, false) (6.12+): queued for the shrinker's
        # thp_underused check (split.py); the core's KernelConfig::queues_pmd_thp_at_fault.
        k.deferred_queue.add(folio.pfn)
    k.folio_add_lru(folio)
    entry = pg.mkdirty(pg.make_entry(folio.pfn, vma.page_prot() | pg.PS))
    if vma.write:
        entry = pg.mkwrite(entry)
    k.set_entry(pmd_table, pmd_idx, entry)
    mm.rss_anon += pg.HPAGE_PMD_NR  # add_mm_counter(mm, MM_ANONPAGES, HPAGE_PMD_NR)
    k.emit(Event(EventKind.THP_FAULT_ALLOC))
    k.emit(Event(EventKind.ANON_FAULT_ALLOC, HPAGE_PMD_ORDER))
    vma.anon_vma = True


def anon_orders(
    k: Kernel, vma: Vma, addr: int, pte_table: int, trace: Trace | None = None
) -> list[int]:
    """The mTHP orders to try for a write fault, highest first (``alloc_anon_folio``).

    Policy (sysfs and VMA advice), then suitability (the aligned block lies in the VMA;
    ``thp_vma_suitable_orders`` drops orders from the top until one fits), then emptiness
    (the first order from the top whose aligned block of PTEs is all none). The three sets
    are ORed into ``trace``'s evidence.
    """
    orders = [o for o in k.thp.allowable_orders(vma) if o < HPAGE_PMD_ORDER]
    if trace is not None:
        trace.orders_allowed |= order_mask(orders)
    while orders:
        base = addr & ~((pg.PAGE_SIZE << orders[0]) - 1)
        if base >= vma.start and base + (pg.PAGE_SIZE << orders[0]) <= vma.end:
            break
        orders.pop(0)
    if trace is not None:
        trace.orders_fit |= order_mask(orders)
    ptes = k.phys.tables[pte_table]
    while orders:
        nr = 1 << orders[0]
        first = pg.index_at(addr, k.levels, k.levels - 1) & ~(nr - 1)
        if not any(ptes[first : first + nr]):
            break
        orders.pop(0)
    if trace is not None:
        trace.orders_empty |= order_mask(orders)
    return orders


def do_anonymous_page(
    k: Kernel, mm: Mm, vma: Vma, addr: int, write: bool, pte_table: int, trace: Trace
) -> None:
    """A fault on a none PTE (KS §2.3, §2.4)."""
    prot = vma.page_prot()
    idx = pg.index_at(addr, k.levels, k.levels - 1)
    assert k.entry(pte_table, idx) == 0, "do_anonymous_page on a PTE that is not none"
    trace.reason = Reason.PTE_NONE
    if not write:
        # The shared zero page, read-only and special; no anon_vma is prepared for it.
        k.set_entry(pte_table, idx, pg.make_entry(k.zero_pfn, prot | pg.SPECIAL))
        trace.outcome = Outcome.ZERO_PAGE
        return
    folio: Folio | None = None
    for order in anon_orders(k, vma, addr, pte_table, trace):
        if k.phys.buddy.can_allocate(order):
            folio = k.alloc_folio(order)
            break
        k.emit(Event(EventKind.ANON_FAULT_FALLBACK, order))
        trace.orders_failed |= 1 << order
        trace.flags |= FELL_BACK
    if folio is None:
        folio = k.alloc_folio(0)  # OutOfMemoryError propagates: VM_FAULT_OOM
    nr = folio.nr_pages
    k.emit(Event(EventKind.PAGES_ZEROED, pfn=folio.pfn, nr=nr))  # folio_zero_user
    first = idx & ~(nr - 1)
    folio.refcount = nr
    folio.add_new_anon_rmap(mm.mm_id, exclusive=True, pmd_mapped=False)
    k.folio_add_lru(folio)
    flags = prot
    if vma.write:
        flags = pg.mkwrite(pg.mkdirty(flags))
    for i in range(nr):
        k.set_entry(pte_table, first + i, pg.make_entry(folio.pfn + i, flags))
    mm.rss_anon += nr  # add_mm_counter(vma->vm_mm, MM_ANONPAGES, nr_pages)
    if folio.order:
        k.emit(Event(EventKind.ANON_FAULT_ALLOC, folio.order))
    vma.anon_vma = True
    trace.outcome = Outcome.ANON_ALLOC
    trace.flags |= ZEROED


def can_reuse_anon_folio(k: Kernel, folio: Folio, mm_id: int = 0) -> tuple[bool, Reason]:
    """``wp_can_reuse_anon_folio`` (KS §4.2, §4.3): whether to reuse, and the exit taken.

    Small folios: the only reference is our mapping. Large folios: never before 6.15
    (``cow_reuse_pte_mapped_thp`` off), but on 6.1 when the folio has no other reference
    (``reuses_sole_ref_large_pages``); since 6.15, ``__wp_can_reuse_large_anon_folio``.
    """
    if not folio.is_large:
        if folio.refcount <= 2 and folio in k.lru_batch:
            # A folio not on the LRU yet, whose count (the batch's reference included) is
            # at most 3, is moved there first (lru_add_drain).
            k.lru_add_drain()
        cache = 1 if folio.swapcache is not None else 0
        if folio.refcount > 1 + cache:
            return False, Reason.SMALL_OTHER_REFS
        if cache:
            swap.folio_free_swap(k, folio)  # fails while a PTE still names the slot
        if folio.refcount == 1:
            return True, Reason.SMALL_SOLE_REF
        return False, Reason.SMALL_OTHER_REFS
    if not k.toggles["cow_reuse_pte_mapped_thp"]:
        if k.profile_config.reuses_sole_ref_large_pages and folio.refcount == 1:
            # 6.1's do_wp_page: page_count(page) == 1 for a page of a large folio too, when
            # no other page of it is mapped (reported as a sole reference).
            return True, Reason.SMALL_SOLE_REF
        return False, Reason.LARGE_NO_PTE_REUSE
    if k.toggles["cow_reuse_remember_exclusive"] and folio.exclusive_memo:
        # the policy's memo: no mapcount/refcount checks (DESIGN.md "Policies")
        return True, Reason.LARGE_MEMO_EXCLUSIVE
    if folio.large_mapcount <= 1:
        # copy the last mapped page; the large folio can then be freed
        return False, Reason.LARGE_LAST_MAPPED
    exclusive = Reason.LARGE_EXCLUSIVE
    if folio.shared:
        # mm_id_exact (a policy): an unbounded tracker overrules a stale shared bit
        if not (k.toggles["mm_id_exact"] and folio.mapped_only_by(mm_id)):
            return False, Reason.LARGE_MAYBE_SHARED
        exclusive = Reason.LARGE_EXACT_EXCLUSIVE
    if folio.swapcache is not None:
        # __wp_can_reuse_large_anon_folio frees the swap cache first; folio_free_swap fails
        # while a PTE still names one of the slots
        swap.folio_free_swap(k, folio)
    if folio.large_mapcount != folio.refcount:
        return False, Reason.LARGE_EXTRA_REFS
    if k.toggles["cow_reuse_remember_exclusive"]:
        folio.exclusive_memo = True
    return True, exclusive


_LARGE_REUSE = (Reason.LARGE_EXCLUSIVE, Reason.LARGE_EXACT_EXCLUSIVE, Reason.LARGE_MEMO_EXCLUSIVE)


def cow_reuse_fault_around(
    k: Kernel, vma: Vma, addr: int, pte_table: int, idx: int, folio: Folio, trace: Trace
) -> None:
    """``cow_reuse_fault_around`` (a policy, no kernel has it): after ``wp_page_reuse`` of
    the page at ``addr`` of the large ``folio``, every other PTE of this page table inside
    the VMA that maps a page of the same folio and is not writable becomes writable
    (``pte_mkwrite``; A and D are the MMU's to set), its page anon-exclusive. The folio is
    exclusive to this mm, so each of those pages could have been reused by its own fault.
    No TLB flush (a permission upgrade). Sets ``FAULT_AROUND`` if it changed a PTE. With
    ``cow_reuse_fault_around_window``, only the naturally aligned :data:`FAULT_AROUND_PAGES`
    window around the fault, as ``do_fault_around`` bounds a file read fault."""
    page_addr = addr & ~(pg.PAGE_SIZE - 1)
    start = page_addr - (pg.entry_pfn(k.entry(pte_table, idx)) - folio.pfn) * pg.PAGE_SIZE
    # the bound: the page table, or the window inside it
    size = FAULT_AROUND_PAGES * pg.PAGE_SIZE
    if not k.toggles["cow_reuse_fault_around_window"]:
        size = pg.PMD_SIZE
    bound = page_addr & ~(size - 1)
    lo = max(start, vma.start, bound)
    hi = min(start + folio.nr_pages * pg.PAGE_SIZE, vma.end, bound + size)
    for a in range(lo, hi, pg.PAGE_SIZE):
        i = (a >> pg.PAGE_SHIFT) & (pg.HPAGE_PMD_NR - 1)
        e = k.entry(pte_table, i)
        if i == idx or not e & pg.P or e & pg.RW:
            continue
        pfn = pg.entry_pfn(e)
        if k.is_zero_pfn(pfn) or k.page_folio.get(pfn) is not folio:
            continue
        folio.anon_exclusive[pfn - folio.pfn] = True
        k.set_entry(pte_table, i, pg.mkwrite(e))
        trace.flags |= FAULT_AROUND


def handle_unshare_fault(k: Kernel, mm: Mm, vma: Vma, addr: int, trace: Trace) -> None:
    """The unshare fault (``FAULT_FLAG_UNSHARE``, issue 16) of the present anonymous page at
    ``addr`` that a R/O ``FOLL_PIN`` found not anon-exclusive (``gup_must_unshare``):
    ``do_huge_pmd_wp_page`` for a huge PMD, else ``do_wp_page``, with ``unshare`` set (reuse
    only marks the page exclusive; a copy maps the new page read-only and clean). A shared
    PMD is split (``VM_FAULT_FALLBACK``): the caller faults again by PTE. Counted in none
    of the ``faults_*`` counters; no error code (no hardware fault)."""
    trace.faults += 1
    pmd_slot = k.pmd_slot(mm, addr)
    assert pmd_slot is not None
    if pg.is_huge(k.entry(*pmd_slot)):
        do_huge_pmd_wp_page(k, mm, vma, addr, *pmd_slot, trace, unshare=True)
        return
    pte_slot = k.pte_slot(mm, addr)
    assert pte_slot is not None
    do_wp_page(k, mm, vma, addr, *pte_slot, trace, unshare=True)


def do_wp_page(
    k: Kernel,
    mm: Mm,
    vma: Vma,
    addr: int,
    pte_table: int,
    idx: int,
    trace: Trace,
    unshare: bool = False,
) -> None:
    """A write to a present, read-only PTE in a writable VMA: reuse or copy (KS §4.1).
    With ``unshare`` (``FAULT_FLAG_UNSHARE``): the reuse only sets ``PageAnonExclusive``
    and returns before ``wp_page_reuse`` (no write bit, no ``PGREUSE``); the copy maps the
    new page read-only and clean."""
    pte = k.entry(pte_table, idx)
    pfn = pg.entry_pfn(pte)
    if not k.is_zero_pfn(pfn):
        folio = k.page_folio[pfn]
        page = pfn - folio.pfn
        if folio.anon_exclusive[page]:
            reuse, trace.reason = True, Reason.ANON_EXCLUSIVE
        else:
            reuse, trace.reason = can_reuse_anon_folio(k, folio, mm.mm_id)
        if reuse:
            folio.anon_exclusive[page] = True
            if unshare:
                trace.outcome = Outcome.UNSHARE
                return
            # wp_page_reuse(): young, dirty, writable.
            k.set_entry(pte_table, idx, pg.mkwrite(pg.mkdirty(pte | pg.A)))
            if trace.reason in _LARGE_REUSE and k.toggles["cow_reuse_fault_around"]:
                cow_reuse_fault_around(k, vma, addr, pte_table, idx, folio, trace)
            k.emit(Event(EventKind.PGREUSE))
            trace.outcome = Outcome.COW_REUSE
            return
        wp_page_copy(k, mm, vma, addr, pte_table, idx, folio, unshare)
        trace.outcome = Outcome.UNSHARE if unshare else Outcome.COW_COPY
        trace.flags |= COPIED
        return
    trace.reason = Reason.ZERO_PAGE
    wp_page_copy(k, mm, vma, addr, pte_table, idx, None)
    trace.outcome = Outcome.COW_COPY
    trace.flags |= ZEROED


def wp_page_copy(
    k: Kernel,
    mm: Mm,
    vma: Vma,
    addr: int,
    pte_table: int,
    idx: int,
    old: Folio | None,
    unshare: bool = False,
) -> None:
    """Copy the page into a new order-0 folio and map it writable (KS §4.4).

    ``old`` is ``None`` for the zero page (the new page is zero-filled). Events: the new
    folio, its zeroing or copy, the flush of the old PTE (``ptep_clear_flush``), the old
    folio's free if that was its last reference, ``COW_COPY``.
    """
    pte = k.entry(pte_table, idx)
    pfn = pg.entry_pfn(pte)
    new = k.alloc_folio(0)  # OutOfMemoryError propagates with nothing changed
    if old is not None:
        k.set_content(new.pfn, k.content(pfn))
        k.emit(Event(EventKind.PAGES_COPIED, pfn=pfn, pfn2=new.pfn, nr=1))
    else:
        k.emit(Event(EventKind.PAGES_ZEROED, pfn=new.pfn, nr=1))
    new.refcount = 1
    new.add_new_anon_rmap(mm.mm_id, exclusive=True, pmd_mapped=False)
    k.folio_add_lru(new)
    flags = vma.page_prot()
    if unshare:
        # FAULT_FLAG_UNSHARE: read-only and clean, the old entry's soft-dirty kept.
        flags |= pte & pg.SOFT_DIRTY
    elif vma.write:
        flags = pg.mkwrite(pg.mkdirty(flags))
    k.set_entry(pte_table, idx, pg.make_entry(new.pfn, flags))
    page = addr & ~(pg.PAGE_SIZE - 1)
    k.tlb_flush(mm, page, page + pg.PAGE_SIZE)
    if old is not None:
        if old.remove_rmap_ptes(pfn - old.pfn, 1, mm.mm_id):
            k.deferred_split_folio(old)
        swap.free_swap_cache(k, old)  # after the copy: an unmapped swap-cache folio
        k.put_folio(old, 1)
    else:
        mm.rss_anon += 1  # inc_mm_counter(mm, MM_ANONPAGES): the zero page was not counted
    vma.anon_vma = True
    k.emit(Event(EventKind.COW_COPY))


def do_huge_pmd_wp_page(
    k: Kernel,
    mm: Mm,
    vma: Vma,
    addr: int,
    pmd_table: int,
    pmd_idx: int,
    trace: Trace,
    unshare: bool = False,
) -> None:
    """A write to a read-only huge PMD: reuse the THP, or split and fall back (KS §4.5)."""
    pmd = k.entry(pmd_table, pmd_idx)
    head = pg.entry_pfn(pmd)
    if k.is_huge_zero_pfn(head):
        if k.toggles["huge_zero_wp_alloc"]:
            # do_huge_zero_wp_pmd() (since 6.14): replace by a fresh writable THP.
            if k.phys.buddy.can_allocate(HPAGE_PMD_ORDER):
                folio = k.alloc_folio(HPAGE_PMD_ORDER)
                k.emit(Event(EventKind.PAGES_ZEROED, pfn=folio.pfn, nr=pg.HPAGE_PMD_NR))
                haddr = addr & ~(pg.PMD_SIZE - 1)
                k.tlb_flush(mm, haddr, haddr + pg.PMD_SIZE)  # pmdp_huge_clear_flush
                map_anon_folio_pmd(k, mm, vma, folio, pmd_table, pmd_idx)
                k.emit(Event(EventKind.HUGE_ZERO_WRITE))
                trace.outcome, trace.reason = Outcome.ANON_ALLOC, Reason.HUGE_ZERO_NEW_THP
                trace.flags |= ZEROED
                return
            k.emit(Event(EventKind.ANON_FAULT_FALLBACK, HPAGE_PMD_ORDER))
            trace.orders_failed |= PMD_BIT
            trace.flags |= FELL_BACK
        trace.reason = trace.split_reason = Reason.HUGE_ZERO_FALLBACK
        trace.flags |= SPLIT
        k.split_huge_pmd(mm, addr, pmd_table, pmd_idx)
        return
    folio = k.page_folio[head]
    if folio.anon_exclusive[0] or folio.refcount == 1:
        trace.outcome = Outcome.PMD_REUSE
        trace.reason = Reason.PMD_ANON_EXCLUSIVE if folio.anon_exclusive[0] else Reason.PMD_SOLE_REF
        folio.anon_exclusive[0] = True
        if unshare:
            # FAULT_FLAG_UNSHARE: the ``reuse:`` exit returns before the PMD is made writable.
            trace.outcome = Outcome.UNSHARE
            return
        k.set_entry(pmd_table, pmd_idx, pg.mkwrite(pg.mkdirty(pmd | pg.A)))
        return
    trace.reason = trace.split_reason = Reason.PMD_SHARED
    trace.flags |= SPLIT
    k.split_huge_pmd(mm, addr, pmd_table, pmd_idx)


# -- the swap-in fault (mm/memory.c do_swap_page; issue 16) ---------------------------------


def swapin_orders(
    k: Kernel, vma: Vma, addr: int, pte_table: int, offset: int
) -> tuple[list[int], int | None]:
    """``alloc_swap_folio``'s choice of orders (``thp_swap_suitable_orders``,
    ``can_swapin_thp``): the mTHP orders below the PMD order that the THP settings allow
    for this VMA, whose aligned block lies in it and has the faulting slot's alignment
    (``(addr >> 12) % nr == offset % nr``), highest first. Returns the orders left and the
    first one whose block is entirely swap entries of consecutive slots with the same bits,
    all zero-map or none, none in the swap cache (``None`` if none qualifies)."""
    orders = [o for o in k.thp.allowable_orders(vma) if o < HPAGE_PMD_ORDER]
    ptes = k.phys.tables[pte_table]
    idx = pg.index_at(addr, k.levels, k.levels - 1)
    for pos, order in enumerate(orders):
        nr = 1 << order
        base = addr & ~((pg.PAGE_SIZE << order) - 1)
        if base < vma.start or base + (pg.PAGE_SIZE << order) > vma.end:
            continue
        if (addr >> pg.PAGE_SHIFT) % nr != offset % nr:
            continue
        first_idx = idx & ~(nr - 1)
        first_slot = offset - (idx - first_idx)
        head = ptes[first_idx]
        bits = pg.SWP_EXCLUSIVE | pg.SWP_SOFT_DIRTY
        ok = True
        zeros = set()
        for j in range(nr):
            e = ptes[first_idx + j]
            if not swap.is_swap_pte(e) or pg.swp_offset(e) != first_slot + j:
                ok = False
                break
            if (e & bits) != (head & bits):
                ok = False
                break
            slot = k.swap.slots.get(first_slot + j)
            if slot is None or slot.cache is not None:
                ok = False
                break
            zeros.add(slot.zero)
        if ok and len(zeros) == 1:
            return orders[pos:], order
    return [], None


def do_swap_page(
    k: Kernel, mm: Mm, vma: Vma, addr: int, write: bool, pte_table: int, idx: int, trace: Trace
) -> None:
    """A fault on a swap entry (``do_swap_page``), read or write (KS issue 16).

    The swap cache first; else a new folio read from the slots: a large one when
    ``alloc_swap_folio`` finds a qualifying block (6.12+; 7.x also for a slot shared by a
    fork). On 6.1 and 6.12 a slot whose count is 1 is read outside the swap cache (the
    ``SWP_SYNCHRONOUS_IO`` bypass: certainly exclusive), others into it; the PTEs of the
    folio's slots are mapped (``swap_free_nr``), the swap cache freed first when a write
    fault leaves nobody else (``should_try_to_free_swap``), and the page mapped writable
    when exclusive or solely referenced. 7.x (the swap-table rework, ``swapin_large_shared``)
    reads every folio into the swap cache, decides exclusivity while the cache still holds
    it (so only the entry's exclusive marker makes it exclusive) and frees the swap cache
    after mapping, always for a synchronous device such as zram. A write that is not mapped
    writable goes on to :func:`do_wp_page`. The fault holds its own reference (the lookup's
    or the allocation's) until it becomes one of the mappings' (``folio_ref_add(nr - 1)``).
    Raises :class:`NotModelledError` for a large block whose slots
    were not allocated together by one swap-out (the kernel's cluster allocator decides).
    """
    ptes = k.phys.tables[pte_table]
    entry = ptes[idx]
    offset = pg.swp_offset(entry)
    slot = k.swap.slots[offset]
    cfg = k.profile_config
    trace.flags |= SWAP_IN
    if trace.faults == 1:
        trace.flags &= ~FIRST_TOUCH  # the page was touched before it went to swap
    folio = slot.cache
    new = False
    via_cache = cfg.swapin_large_shared  # 7.x: no swap-cache bypass
    if folio is not None:
        folio.refcount += 1  # the lookup's reference (swap_cache_get_folio)
        exclusive = pg.swp_exclusive(entry)
        trace.reason = Reason.SWAP_EXCLUSIVE if exclusive else Reason.SWAP_MAYBE_SHARED
        assert folio.swapcache is not None
        first_slot = folio.swapcache
    else:
        bypass = slot.count == 1 and not via_cache
        order = 0
        if cfg.swapin_large and (bypass or cfg.swapin_large_shared):
            _, found = swapin_orders(k, vma, addr, pte_table, offset)
            if found is not None:
                nr = 1 << found
                base_slot = offset - (offset % nr)
                if any(k.swap.slots[base_slot + j].run_order < found for j in range(nr)):
                    page_addr = addr & ~(pg.PAGE_SIZE - 1)
                    raise NotModelledError(
                        f"a large swap-in of order {found} at {page_addr:#x} over slots "
                        f"{base_slot:#x}..{base_slot + nr:#x} that no single swap-out allocated "
                        "together: the kernel's answer depends on its swap cluster allocator"
                    )
                if k.phys.buddy.can_allocate(found):
                    order = found
                else:
                    k.emit(Event(EventKind.SWPIN_FALLBACK, found))
                    trace.orders_failed |= 1 << found
                    trace.flags |= FELL_BACK
        folio = k.alloc_folio(order)  # OutOfMemoryError propagates with nothing changed
        folio.refcount = 1  # the allocation's reference, the fault's
        new = True
        nr = folio.nr_pages
        first_slot = offset - (offset % nr)
        slots = [k.swap.slots[first_slot + j] for j in range(nr)]
        read = 0
        if not all(s.zero for s in slots):
            read = nr
        for j, s in enumerate(slots):
            k.set_content(folio.pfn + j, 0 if s.zero else s.content)
        k.emit(Event(EventKind.SWAP_IN, folio.order, pfn=folio.pfn, nr=read))
        if bypass:
            exclusive = True
            trace.reason = Reason.SWAP_FRESH
        else:
            swap.add_to_swap_cache(k, folio, first_slot)
            exclusive = pg.swp_exclusive(entry)
            trace.reason = Reason.SWAP_EXCLUSIVE if exclusive else Reason.SWAP_MAYBE_SHARED
    # Which PTEs to map: the whole folio when every PTE of its place holds its slots.
    page = offset - first_slot
    nr_map, start_page = 1, page
    if folio.is_large:
        base = addr - page * pg.PAGE_SIZE
        first_idx = idx - page
        inside = (
            base >= vma.start
            and base + folio.nr_pages * pg.PAGE_SIZE <= vma.end
            and first_idx >= 0
            and first_idx + folio.nr_pages <= pg.HPAGE_PMD_NR
        )
        if inside and all(
            swap.is_swap_pte(ptes[first_idx + j])
            and pg.swp_offset(ptes[first_idx + j]) == first_slot + j
            for j in range(folio.nr_pages)
        ):
            nr_map, start_page = folio.nr_pages, 0
        else:
            assert not new, "a new large folio is mapped whole"
    first_idx = idx - (page - start_page)
    old_entries = [ptes[first_idx + j] for j in range(nr_map)]
    for e in old_entries:
        swap.swap_free(k, pg.swp_offset(e))
    # should_try_to_free_swap (6.1, 6.12: before mapping): a write fault, and nobody but the
    # cache and this fault.
    if (
        not via_cache
        and folio.swapcache is not None
        and write
        and folio.refcount == 1 + folio.nr_pages
    ):
        swap.folio_free_swap(k, folio)
    if not exclusive and folio.refcount == 1:
        exclusive = True
        trace.reason = Reason.SWAP_SOLE_REF
    writable = exclusive and vma.write
    folio.refcount += nr_map - 1  # folio_ref_add(folio, nr_pages - 1)
    if new:  # folio_add_new_anon_rmap
        folio.add_new_anon_rmap(mm.mm_id, exclusive=exclusive, pmd_mapped=False)
        k.folio_add_lru(folio)
    else:  # folio_add_anon_rmap_ptes, RMAP_EXCLUSIVE or not
        folio.add_rmap_ptes(start_page, nr_map, mm.mm_id, exclusive)
    for j in range(start_page, start_page + nr_map):
        folio.anon_exclusive[j] = exclusive
    if write and writable:
        folio.dirty = True
    for j, e in enumerate(old_entries):
        flags = vma.page_prot()
        if e & pg.SWP_SOFT_DIRTY:
            flags |= pg.SOFT_DIRTY
        if writable:
            flags = pg.mkwrite(flags)
            if write:
                flags = pg.mkdirty(flags)
        ptes[first_idx + j] = pg.make_entry(folio.pfn + start_page + j, flags)
    mm.rss_anon += nr_map
    vma.anon_vma = True
    if via_cache and folio.swapcache is not None:
        # 7.x: should_try_to_free_swap() is true for a SWP_SYNCHRONOUS_IO device; the cache
        # goes after the folio is mapped, when no PTE names its slots any more.
        swap.folio_free_swap(k, folio)
    trace.outcome = Outcome.SWAP_IN
    if write and not writable:
        do_wp_page(k, mm, vma, addr, pte_table, idx, trace)
