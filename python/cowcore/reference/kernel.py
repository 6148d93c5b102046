"""The reference machine's state and the mechanisms every operation shares.

:class:`Kernel` owns physical memory, the folios, the processes, the THP policy and the
event channel (:mod:`.events`), whose fold is the counters. The operations live in modules
named after the kernel code they model (:mod:`.fault`, :mod:`.fork`, :mod:`.zap`,
:mod:`.vma_ops`); they all use the helpers here: events, folio allocation and release,
page-table allocation with rollback, PMD split; the range walks use :mod:`.pagewalk`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from cowcore.errors import OutOfMemoryError, ProcessLimitError
from cowcore.protocol import KERNEL_CONFIGS, POLICY_DEFAULTS, THP_SIZES, KernelProfile
from cowcore.reference import paging as pg
from cowcore.reference.events import Event, EventKind, Stats
from cowcore.reference.folio import HPAGE_PMD_ORDER, Folio
from cowcore.reference.mm import Mm, Process, Vma
from cowcore.reference.physmem import PhysMem
from cowcore.reference.swap import SwapDevice

PID_MAX_LIMIT = 4 * 1024 * 1024
"""``PID_MAX_LIMIT`` on 64-bit (include/linux/threads.h): the largest ``kernel.pid_max``, and
its default here (what systemd's ``50-pid-max.conf`` sets)."""

PID_MAX_MIN = 301
"""``PID_MAX_MIN`` (``RESERVED_PIDS + 1``): the smallest ``kernel.pid_max`` the sysctl takes."""


@dataclass(slots=True)
class ThpPolicy:
    """The sysfs THP knobs (``/sys/kernel/mm/transparent_hugepage``)."""

    enabled: str = "never"
    # The boot defaults (hugepage_init_sysfs() in mm/huge_memory.c): the PMD size inherits the
    # top-level setting, every mTHP size is never.
    sizes: dict[str, str] = field(
        default_factory=lambda: {name: "inherit" if name == "2M" else "never" for name in THP_SIZES}
    )
    use_zero_page: bool = True

    def allowable_orders(self, vma: Vma) -> list[int]:
        """``thp_vma_allowable_orders`` for a page fault, highest first (KS §2.4 step A)."""
        if vma.nohugepage:
            return []
        orders = []
        for name, order in THP_SIZES.items():
            mode = self.sizes[name]
            allowed = mode == "always" or (mode == "madvise" and vma.hugepage)
            if mode == "inherit":
                allowed = self.enabled == "always" or (
                    vma.hugepage and self.enabled in ("always", "madvise")
                )
            if allowed:
                orders.append(order)
        return sorted(orders, reverse=True)


LRU_BATCH_SIZE = 31
"""``PAGEVEC_SIZE``: the folios a per-CPU LRU batch holds."""


class Kernel:
    """The whole simulated machine (reference backend)."""

    def __init__(self, profile: KernelProfile, total_frames: int, levels: int) -> None:
        self.profile: KernelProfile = profile
        self.levels = levels
        self.phys = PhysMem(total_frames)
        self.page_folio: dict[int, Folio] = {}
        """Every data frame that belongs to a folio -> that folio."""
        self.serial = 0
        self.stats = Stats()
        """The fold of every event emitted so far (:meth:`emit`)."""
        self.listeners: list[Callable[[Event], None]] = []
        """Called with each event after it is counted; none by default."""
        self.recorded: list[Event] | None = None
        """The events kept since the last :meth:`take_events` while recording (``record``);
        ``None`` when not recording (the default)."""
        self.thp = ThpPolicy()
        self.toggles: dict[str, bool] = dict(POLICY_DEFAULTS[profile])
        self.faulted_folios_referenced = KERNEL_CONFIGS[profile].faulted_folios_referenced
        self.profile_config = KERNEL_CONFIGS[profile]
        self.deferred_queue: set[int] = set()
        """The deferred-split queue by head frame: partially mapped large folios and (6.12+)
        every PMD THP from its fault (split.py; walked in ascending frame order)."""
        self.lru_batch: list[Folio] = []
        """The per-CPU LRU-add batch (``cpu_fbatches.lru_add``): folios a fault mapped that
        have not entered the LRU yet; kept only where that changes what is reported (6.12,
        where entering the LRU clears ``PG_referenced``)."""
        self.procs: dict[int, Process] = {}
        self.next_pid = 1
        self.pid_max = PID_MAX_LIMIT
        """``kernel.pid_max``: pids ``1..pid_max-1`` can be in use at once (``alloc_pid``)."""
        self.next_asid = 1
        """The address-space id of the next mm: 1 for init, then one more per fork, never
        reused (unlike MM ids)."""
        self.mm_ids_in_use: set[int] = set()
        self.swap = SwapDevice()
        """The one swap device (zram-like, synchronous) and its swap cache (:mod:`.swap`)."""
        self.deposits: dict[tuple[int, int], int] = {}
        """PTE tables deposited with huge PMDs: (pmd table, index) -> table pfn
        (``pgtable_trans_huge_deposit``)."""
        # The shared zero page and the huge zero folio are allocated first (DESIGN.md).
        self.zero_pfn = self.phys.buddy.alloc(0)
        self.huge_zero_pfn = self.phys.buddy.alloc(HPAGE_PMD_ORDER)
        self.init_pid = self.new_process(mmap_cursor=None).pid

    # -- events ------------------------------------------------------------------------

    def emit(self, event: Event) -> None:
        """The one channel of every event: fold ``event`` into :attr:`stats`, keep it while
        recording, then hand it to the listeners."""
        self.stats.count(event)
        if self.recorded is not None:
            self.recorded.append(event)
        for listener in self.listeners:
            listener(event)

    def record(self, on: bool) -> None:
        """Start keeping the events (from now on), or stop and drop what was kept."""
        self.recorded = [] if on else None

    def take_events(self) -> list[Event]:
        """The events kept since the last call (recording goes on); none when not
        recording."""
        if self.recorded is None:
            return []
        events, self.recorded = self.recorded, []
        return events

    def tlb_flush(self, mm: Mm, start: int, end: int) -> None:
        """Report that the TLB entries of ``[start, end)`` of ``mm`` were invalidated
        (``flush_tlb_range``; ``[0, WHOLE_MM_END)`` is ``flush_tlb_mm``)."""
        self.emit(Event(EventKind.TLB_FLUSH, asid=mm.asid, start=start, end=end))

    # -- processes -----------------------------------------------------------------------

    def alloc_mm_id(self) -> int:
        """Lowest free MM id >= 1 (the kernel's IDA in ``mm_init``)."""
        mm_id = 1
        while mm_id in self.mm_ids_in_use:
            mm_id += 1
        self.mm_ids_in_use.add(mm_id)
        return mm_id

    def new_process(self, mmap_cursor: int | None) -> Process:
        pgd = self.phys.alloc_table()
        mm = Mm(mm_id=self.alloc_mm_id(), pgd=pgd, asid=self.next_asid)
        self.next_asid += 1
        if mmap_cursor is not None:
            mm.mmap_cursor = mmap_cursor
        proc = Process(pid=self.next_pid, mm=mm)
        self.next_pid += 1
        self.procs[proc.pid] = proc
        return proc

    def live_mms(self) -> list[Mm]:
        return [p.mm for p in self.procs.values() if p.mm is not None]

    # -- folios --------------------------------------------------------------------------

    def alloc_folio(self, order: int) -> Folio:
        """Allocate a folio (``FOLIO_ALLOC``); its refcount starts at 0 and callers add their
        refs. Its frames hold zero content; the caller reports the zeroing or the copy."""
        pfn = self.phys.alloc_data(order)
        self.serial += 1
        folio = Folio(pfn=pfn, order=order, serial=self.serial)
        for p in range(pfn, pfn + (1 << order)):
            self.page_folio[p] = folio
        self.emit(Event(EventKind.FOLIO_ALLOC, order, pfn=pfn))
        return folio

    def put_folio(self, folio: Folio, refs: int) -> None:
        """Drop references; the last one frees the folio (``folio_put_refs``)."""
        folio.refcount -= refs
        assert folio.refcount >= 0, "refcount underflow"
        if folio.refcount == 0:
            assert folio.mapcount() == 0 and folio.entire_mapcount == 0
            self._free_folio(folio)

    def free_unused_folio(self, folio: Folio) -> None:
        """Give back a folio that was allocated but never mapped (an aborted fault:
        ``folio_put`` of the new folio on the error path)."""
        assert folio.refcount == 0 and folio.mapcount() == 0
        self._free_folio(folio)

    # -- the LRU (mm/swap.c) -------------------------------------------------------------

    def folio_add_lru(self, folio: Folio) -> None:
        """``folio_add_lru`` of a folio a fault has just mapped: on 7.x it is marked accessed
        there (``faulted_folios_referenced``); on 6.12 it waits in the batch of
        ``LRU_BATCH_SIZE``, which a large folio or a full batch moves to the LRU at once."""
        if self.faulted_folios_referenced:
            folio.referenced = True
            return
        self.lru_batch.append(folio)
        if folio.is_large or len(self.lru_batch) == LRU_BATCH_SIZE:
            self.lru_add_drain()

    def lru_add_drain(self) -> None:
        """``lru_add_drain``: the batch enters the LRU, which on 6.12 (MGLRU,
        ``lru_gen_add_folio``) clears each folio's ``PG_referenced``."""
        for folio in self.lru_batch:
            if self.page_folio.get(folio.pfn) is folio:
                folio.referenced = False
        self.lru_batch.clear()

    def deferred_split_folio(self, folio: Folio) -> None:
        """``deferred_split_folio(folio, true)`` after an unmap left ``folio`` partially
        mapped (mm/huge_memory.c): the first time, flag and queue it (``DEFERRED_SPLIT``).
        Folios below order 2 have no deferred list, and a folio in the swap cache is left to
        reclaim ("Exclude swapcache")."""
        if folio.swapcache is not None:
            return
        if folio.order >= 2 and not folio.partially_mapped:
            folio.partially_mapped = True
            self.deferred_queue.add(folio.pfn)
            self.emit(Event(EventKind.DEFERRED_SPLIT, folio.order, pfn=folio.pfn))

    def _free_folio(self, folio: Folio) -> None:
        """Free a folio whose last reference went (``FOLIO_FREE``), first taking it off the
        deferred-split queue if it waits there (``folio_unqueue_deferred_split``,
        ``DEFERRED_UNQUEUE``)."""
        if folio.partially_mapped:
            self.emit(Event(EventKind.DEFERRED_UNQUEUE, folio.order, pfn=folio.pfn))
        self.deferred_queue.discard(folio.pfn)
        for p in range(folio.pfn, folio.pfn + folio.nr_pages):
            del self.page_folio[p]
        self.phys.free_data(folio.pfn, folio.order)
        self.emit(Event(EventKind.FOLIO_FREE, folio.order, pfn=folio.pfn))

    def is_zero_pfn(self, pfn: int) -> bool:
        return pfn == self.zero_pfn

    def is_huge_zero_pfn(self, pfn: int) -> bool:
        return self.huge_zero_pfn <= pfn < self.huge_zero_pfn + pg.HPAGE_PMD_NR

    # -- page tables ---------------------------------------------------------------------

    def entry(self, table: int, idx: int) -> int:
        return self.phys.tables[table][idx]

    def set_entry(self, table: int, idx: int, value: int) -> None:
        self.phys.tables[table][idx] = value

    def pmd_level(self) -> int:
        return self.levels - 2

    def table_for(
        self, mm: Mm, addr: int, level: int, allocated: list[tuple[int, int, int]] | None
    ) -> int | None:
        """The table of ``level`` (0 = root) that covers ``addr``.

        With ``allocated`` given, missing tables are allocated top-down and recorded there as
        ``(parent table, index, new table)`` so that the caller can undo them on failure;
        without it, ``None`` is returned when a table is missing. A huge PMD on the way
        counts as missing for levels below the PMD. An entry that is neither none nor present
        raises :class:`InvariantError` (``entry-kind``): it is never taken for a hole.
        """
        table = mm.pgd
        for lvl in range(level):
            idx = pg.index_at(addr, self.levels, lvl)
            entry = self.entry(table, idx)
            # By kind (paging.entry_kind), tested in the order of frequency: this is the
            # hottest loop of the reference.
            if pg.is_present(entry):
                if lvl == self.pmd_level() and entry & pg.PS:
                    return None
                table = pg.entry_pfn(entry)
            elif not entry:
                if allocated is None:
                    return None
                new = self.phys.alloc_table()  # __pud_alloc/__pmd_alloc/__pte_alloc
                self.set_entry(table, idx, pg.make_entry(new, pg.TABLE_ENTRY))
                allocated.append((table, idx, new))
                table = new
            else:  # a swap or migration entry: never a hole to fill
                raise pg.not_modelled(entry, addr, "page walk")
        return table

    def undo_tables(self, allocated: list[tuple[int, int, int]]) -> None:
        """Free tables that a failed operation allocated (they are still empty)."""
        for parent, idx, table in reversed(allocated):
            self.set_entry(parent, idx, 0)
            self.phys.free_table(table)
        allocated.clear()

    def pmd_slot(self, mm: Mm, addr: int) -> tuple[int, int] | None:
        """``(table, index)`` of the PMD entry covering ``addr``, if the PMD table exists."""
        table = self.table_for(mm, addr, self.pmd_level(), None)
        if table is None:
            return None
        return table, pg.index_at(addr, self.levels, self.pmd_level())

    def pte_slot(self, mm: Mm, addr: int) -> tuple[int, int] | None:
        """``(table, index)`` of the PTE for ``addr``, if a PTE table maps it."""
        table = self.table_for(mm, addr, self.levels - 1, None)
        if table is None:
            return None
        return table, pg.index_at(addr, self.levels, self.levels - 1)

    # -- PMD split (mm/huge_memory.c __split_huge_pmd_locked, KS §6.1) --------------------

    def split_huge_pmd(self, mm: Mm, addr: int, pmd_table: int, pmd_idx: int) -> None:
        """Remap the huge PMD that maps ``addr`` by 512 PTEs, using its deposited table;
        ``THP_SPLIT_PMD``, then the flush of the 2 MiB range (``pmdp_invalidate``,
        ``pmdp_huge_clear_flush``)."""
        pmd = self.entry(pmd_table, pmd_idx)
        assert pg.is_huge(pmd)
        vma = mm.find_vma(addr)
        assert vma is not None, "a huge PMD outside any VMA"
        prot = vma.page_prot()
        deposit = self.deposits.pop((pmd_table, pmd_idx))
        self.emit(Event(EventKind.THP_SPLIT_PMD))  # counted before the huge-zero case
        head = pg.entry_pfn(pmd)
        ptes = self.phys.tables[deposit]
        if self.is_huge_zero_pfn(head):
            # __split_huge_zero_page_pmd: 512 special zero-page PTEs with vm_page_prot.
            zero = pg.make_entry(self.zero_pfn, prot | pg.SPECIAL)
            for i in range(pg.HPAGE_PMD_NR):
                ptes[i] = zero
        else:
            folio = self.page_folio[head]
            exclusive = folio.anon_exclusive[0]
            folio.refcount += pg.HPAGE_PMD_NR - 1
            folio.add_rmap_ptes(0, pg.HPAGE_PMD_NR, mm.mm_id, exclusive)
            flags = prot
            if pmd & pg.RW:
                flags = pg.mkwrite(flags)
            if not pmd & pg.A:
                flags = pg.mkold(flags)
            if pg.is_dirty(pmd):
                flags = pg.mkdirty(flags)
            if pmd & pg.SOFT_DIRTY:
                flags |= pg.SOFT_DIRTY
            for i in range(pg.HPAGE_PMD_NR):
                ptes[i] = pg.make_entry(head + i, flags)
            partial = folio.remove_rmap_pmd(mm.mm_id)
            assert not partial, "every page is PTE-mapped after the split"
        self.set_entry(pmd_table, pmd_idx, pg.make_entry(deposit, pg.TABLE_ENTRY))
        haddr = addr & ~(pg.PMD_SIZE - 1)
        self.tlb_flush(mm, haddr, haddr + pg.PMD_SIZE)

    def split_pmd_at(self, mm: Mm, addr: int) -> None:
        """Split the huge PMD covering ``addr`` if there is one (``split_huge_pmd_address``)."""
        slot = self.pmd_slot(mm, addr)
        if slot is not None and pg.is_huge(self.entry(*slot)):
            self.split_huge_pmd(mm, addr, *slot)

    def split_vma_boundary(self, mm: Mm, addr: int) -> None:
        """Cut the VMA containing ``addr`` into two at ``addr`` (``__split_vma``).

        A cut that is not 2 MiB aligned splits the huge PMD straddling it first
        (``vma_adjust_trans_huge``).
        """
        vma = mm.find_vma(addr)
        if vma is None or vma.start == addr:
            return
        if addr % pg.PMD_SIZE:
            self.split_pmd_at(mm, addr)
        upper = vma.copy(start=addr, pgoff=vma.page_index(addr))
        vma.end = addr
        mm.insert(upper)

    # -- single-frame helpers ------------------------------------------------------------

    def content(self, pfn: int) -> int:
        return self.phys.content.get(pfn, 0)

    def set_content(self, pfn: int, value: int) -> None:
        if value:
            self.phys.content[pfn] = value
        else:
            self.phys.content.pop(pfn, None)

    def require_pid(self) -> None:
        """``alloc_pid``: a new process needs a free pid, and ``pid_max - 1`` of them can be
        in use at once; otherwise fork fails with EAGAIN (:class:`ProcessLimitError`). The live
        processes are the MM ids in use (each mm holds one until it exits)."""
        processes = len(self.mm_ids_in_use)
        if processes >= self.pid_max - 1:
            raise ProcessLimitError(
                f"fork: no free pid (EAGAIN): {processes} processes, the most pid_max "
                f"{self.pid_max} allows"
            )

    def require_frames(self, n: int) -> None:
        if self.phys.buddy.free_count < n:
            raise OutOfMemoryError(f"need {n} free frames, {self.phys.buddy.free_count} left")
