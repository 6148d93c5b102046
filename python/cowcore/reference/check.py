"""``Machine.check()`` for the reference: recompute every counter from the page tables.

Verifies the invariants of kernel-semantics.md §1.3 (and the bookkeeping they rest on) from
scratch and raises :class:`~cowcore.errors.InvariantError` naming the first broken one.
"""

from __future__ import annotations

from collections import Counter, defaultdict

from cowcore.errors import InvariantError
from cowcore.protocol import GUP_PIN_COUNTING_BIAS
from cowcore.reference import paging as pg
from cowcore.reference import swap
from cowcore.reference.folio import Folio
from cowcore.reference.kernel import Kernel
from cowcore.reference.mm import Mm
from cowcore.reference.pagewalk import WalkAction, WalkOps, address_space_end, walk_pgd_range


def _fail(name: str, message: str) -> None:
    raise InvariantError(name, message)


def check(k: Kernel) -> None:
    """Raise :class:`InvariantError` if any invariant is broken."""
    pte_maps: Counter[int] = Counter()  # pfn -> PTE mappings
    pmd_maps: Counter[int] = Counter()  # head pfn -> PMD mappings
    per_mm: dict[int, Counter[int]] = defaultdict(Counter)  # folio head -> mm id -> entries
    tables_seen: set[int] = set()
    swap_ptes: Counter[int] = Counter()  # slot -> swap PTEs naming it

    for mm in k.live_mms():
        _walk_mm(k, mm, pte_maps, pmd_maps, per_mm, tables_seen, swap_ptes)
    _check_swap(k, swap_ptes)

    gup_refs, pins = _count_holds(k, pte_maps, pmd_maps)
    folios = {id(f): f for f in k.page_folio.values()}.values()
    data_frames = 0
    for folio in folios:
        data_frames += folio.nr_pages
        _check_folio(k, folio, pte_maps, pmd_maps, per_mm[folio.pfn])
        _check_gup(folio, pte_maps, pmd_maps, gup_refs[folio.pfn], pins[folio.pfn])

    for pfn in list(pte_maps) + list(pmd_maps):
        if pfn not in k.page_folio:
            _fail("mapped-frame-is-folio", f"frame {pfn} is mapped but belongs to no folio")

    deposits = set(k.deposits.values())
    if tables_seen & deposits:
        _fail("deposit-unique", "a deposited table is also linked into a page table")
    if set(k.phys.tables) != tables_seen | deposits:
        leaked = set(k.phys.tables) - tables_seen - deposits
        _fail("table-reachable", f"page-table frames not reachable from any mm: {sorted(leaked)}")

    accounted = k.phys.buddy.free_count + len(k.phys.tables) + data_frames + 1 + pg.HPAGE_PMD_NR
    if accounted != k.phys.total_frames:
        _fail(
            "frame-conservation",
            f"free {k.phys.buddy.free_count} + tables {len(k.phys.tables)} + folios "
            f"{data_frames} + zero pages {1 + pg.HPAGE_PMD_NR} != {k.phys.total_frames}",
        )
    for mm in k.live_mms():
        if mm.mm_id not in k.mm_ids_in_use:
            _fail("mm-id", f"mm id {mm.mm_id} in use but not allocated")
    if len(k.mm_ids_in_use) != len(k.live_mms()):
        _fail("mm-id", "an MM id is allocated for no live mm")


def _count_holds(
    k: Kernel, pte_maps: Counter[int], pmd_maps: Counter[int]
) -> tuple[Counter[int], Counter[int]]:
    """The references every process holds (``ref``, ``pin``) by folio head, and the pins of
    pages of large folios; checks that a pinned page that is mapped is anon-exclusive (KS
    §1.3: "a pinned anon page is always AE"; for a PMD mapping the head's flag)."""
    refs: Counter[int] = Counter()
    pins: Counter[int] = Counter()
    for mm in k.live_mms():
        for h in mm.holds:
            for pfn in h.pages:
                folio = k.page_folio.get(pfn)
                if folio is None:
                    continue
                refs[folio.pfn] += GUP_PIN_COUNTING_BIAS if h.pin and not folio.is_large else 1
                if h.pin and folio.is_large:
                    pins[folio.pfn] += 1
                if pmd_maps[folio.pfn]:
                    ae: bool | None = folio.anon_exclusive[0]
                elif pte_maps[pfn]:
                    ae = folio.anon_exclusive[pfn - folio.pfn]
                else:
                    ae = None
                if h.pin and ae is False:
                    _fail(
                        "pinned-exclusive",
                        f"mm {mm.mm_id}: pinned frame {pfn} is mapped but not anon-exclusive",
                    )
    return refs, pins


def _check_gup(
    f: Folio, pte_maps: Counter[int], pmd_maps: Counter[int], refs: int, pins: int
) -> None:
    """Refcount = mappings + GUP references; ``_pincount`` = pinned pages held; the
    exclusive memo never coexists with a GUP reference."""
    where = f"folio {f.pfn} (order {f.order})"
    entries = sum(pte_maps[f.pfn + i] for i in range(f.nr_pages)) + pmd_maps[f.pfn]
    cache = f.nr_pages if f.swapcache is not None else 0
    if f.refcount != entries + refs + cache:
        _fail(
            "refcount",
            f"{where}: refcount {f.refcount} != mapping entries {entries} + GUP references "
            f"{refs} + swap cache {cache}",
        )
    if f.pincount != pins:
        _fail("pincount", f"{where}: pincount {f.pincount} but {pins} pinned pages held")
    if f.exclusive_memo and refs:
        _fail("exclusive-memo", f"{where}: remembered exclusive but GUP holds references")
    if entries == 0 and refs == 0 and not cache:
        _fail("no-unmapped-folio", f"{where} is allocated but mapped and held by nothing")


def _walk_mm(
    k: Kernel,
    mm: Mm,
    pte_maps: Counter[int],
    pmd_maps: Counter[int],
    per_mm: dict[int, Counter[int]],
    tables_seen: set[int],
    swap_ptes: Counter[int],
) -> None:
    """Walk every table of ``mm`` over the whole address space, counting its mappings."""
    if mm.pgd in tables_seen:
        _fail("table-unique", f"table {mm.pgd} linked twice")
    tables_seen.add(mm.pgd)
    ops = _CheckOps(k, mm, pte_maps, pmd_maps, per_mm, tables_seen, swap_ptes)
    walk_pgd_range(k, mm.pgd, 0, address_space_end(k), ops)
    if ops.rss != mm.rss_anon:
        _fail("rss", f"mm {mm.mm_id}: rss_anon {mm.rss_anon} != {ops.rss} mapped anon pages")


class _CheckOps(WalkOps):
    """The per-entry checks of one mm's tables, and the counts the folio checks compare."""

    def __init__(
        self,
        k: Kernel,
        mm: Mm,
        pte_maps: Counter[int],
        pmd_maps: Counter[int],
        per_mm: dict[int, Counter[int]],
        tables_seen: set[int],
        swap_ptes: Counter[int],
    ) -> None:
        self.k, self.mm = k, mm
        self.pte_maps, self.pmd_maps, self.per_mm = pte_maps, pmd_maps, per_mm
        self.tables_seen = tables_seen
        self.rss = 0
        """Anonymous pages mapped (MM_ANONPAGES recomputed: 512 per huge PMD)."""
        self.swap_ptes = swap_ptes

    def table_entry(self, level: int, table: int, idx: int, addr: int, end: int) -> None:
        """A non-leaf entry: the ``_PAGE_TABLE`` flags, and a table no other entry links."""
        entry = self.k.entry(table, idx)
        if entry & ~pg.PFN_MASK != pg.TABLE_ENTRY:
            _fail("table-entry", f"bad non-leaf entry {entry:#x} at {addr:#x}")
        child = pg.entry_pfn(entry)
        if child in self.tables_seen:
            _fail("table-unique", f"table {child} linked twice")
        self.tables_seen.add(child)

    def pmd_entry(self, table: int, idx: int, addr: int, end: int) -> WalkAction:
        entry = self.k.entry(table, idx)
        if pg.is_present(entry) and not entry & pg.PS:
            self.table_entry(self.k.pmd_level(), table, idx, addr, end)
            return WalkAction.SUBTREE
        self._leaf(entry, addr, deposited=(table, idx) in self.k.deposits)
        return WalkAction.CONTINUE

    def pte_entry(self, ptes: list[int], i: int, end: int, addr: int) -> int:
        self._leaf(ptes[i], addr, deposited=None)
        return 1

    def _leaf(self, entry: int, addr: int, deposited: bool | None) -> None:
        """A PTE (``deposited`` is ``None``) or a huge PMD (whether its table is deposited)."""
        k, mm = self.k, self.mm
        huge = deposited is not None
        if not huge and swap.is_swap_pte(entry):
            self.swap_ptes[pg.swp_offset(entry)] += 1
            if mm.find_vma(addr) is None:
                _fail("leaf-in-vma", f"mm {mm.mm_id} has a swap entry at {addr:#x} outside VMAs")
            return
        if not pg.is_present(entry):
            _fail("entry-kind", f"mm {mm.mm_id}: {pg.entry_kind(entry).value} entry at {addr:#x}")
        vma = mm.find_vma(addr)
        if vma is None:
            _fail("leaf-in-vma", f"mm {mm.mm_id} maps {addr:#x} outside every VMA")
            return
        pfn = pg.entry_pfn(entry)
        if huge and not deposited:
            _fail("pmd-deposit", f"huge PMD at {addr:#x} has no deposited table")
        if k.is_zero_pfn(pfn) or k.is_huge_zero_pfn(pfn):
            if entry & pg.RW:
                _fail("zero-page-readonly", f"writable zero-page entry at {addr:#x}")
            return
        folio = k.page_folio.get(pfn)
        if folio is None:
            _fail("mapped-frame-is-folio", f"{addr:#x} maps free frame {pfn}")
            return
        if huge:
            self.pmd_maps[pfn] += 1
            self.rss += pg.HPAGE_PMD_NR
        else:
            self.pte_maps[pfn] += 1
            self.rss += 1
        self.per_mm[folio.pfn][mm.mm_id] += 1
        if entry & pg.RW and not folio.anon_exclusive[pfn - folio.pfn]:
            _fail(
                "writable-implies-exclusive",
                f"{addr:#x} in mm {mm.mm_id} is writable but not anon-exclusive",
            )
        if not (vma.read) and entry & pg.P:
            _fail("protnone", f"{addr:#x} is accessible in a PROT_NONE VMA")


def _check_folio(
    k: Kernel, f: Folio, pte_maps: Counter[int], pmd_maps: Counter[int], owners: Counter[int]
) -> None:
    where = f"folio {f.pfn} (order {f.order})"
    ptes = [pte_maps[f.pfn + i] for i in range(f.nr_pages)]
    pmds = pmd_maps[f.pfn]
    if ptes != f.page_mapcount:
        _fail("page-mapcount", f"{where}: per-page mapcounts {f.page_mapcount} != PTEs {ptes}")
    if pmds != f.entire_mapcount:
        _fail("entire-mapcount", f"{where}: entire {f.entire_mapcount} != PMDs {pmds}")
    entries = sum(ptes) + pmds
    if f.is_large:
        if f.large_mapcount != entries:
            _fail("large-mapcount", f"{where}: large {f.large_mapcount} != entries {entries}")
        mapped_pages = sum(1 for c in ptes if c)
        if f.nr_pages_mapped != mapped_pages:
            _fail("nr-pages-mapped", f"{where}: {f.nr_pages_mapped} != {mapped_pages}")
        slots = 0
        for mm_id, count in zip(f.mm_ids, f.mm_id_mapcount, strict=True):
            if (mm_id == 0) != (count == 0):
                _fail("mm-id-slot", f"{where}: slot ({mm_id}, {count}) half free")
            if mm_id:
                if count > owners.get(mm_id, 0):
                    _fail(
                        "mm-id-slot",
                        f"{where}: slot of mm {mm_id} counts {count} > "
                        f"its {owners.get(mm_id, 0)} entries",
                    )
                slots += count
        if slots > entries:
            _fail("mm-id-slot", f"{where}: slots count {slots} > {entries} entries")
        if not f.shared and len([m for m, c in owners.items() if c]) > 1:
            _fail("shared-bit", f"{where}: shared bit clear but mapped by mms {sorted(owners)}")
        # Issue 15's policies: the exact tracker counts what the page tables hold, and the
        # exclusive memo is sound only while one mm maps the folio.
        if f.mm_mapcounts != {m: c for m, c in owners.items() if c}:
            _fail("mm-id-exact", f"{where}: tracker {f.mm_mapcounts} but entries {owners}")
        if f.exclusive_memo and len(f.mm_mapcounts) > 1:
            _fail("exclusive-memo", f"{where}: remembered exclusive but mapped by mms {owners}")
    for i, ae in enumerate(f.anon_exclusive):
        if ae and ptes[i] + pmds > 1:
            _fail(
                "anon-exclusive",
                f"{where}: page {i} is anon-exclusive but mapped {ptes[i] + pmds} times",
            )
    if any(f.anon_exclusive) and len([m for m, c in owners.items() if c]) > 1 and not f.is_large:
        _fail("anon-exclusive", f"{where}: exclusive page mapped by several mms")


def _check_swap(k: Kernel, swap_ptes: Counter[int]) -> None:
    """The swap device: every slot's count is the number of swap PTEs naming it, no swap
    PTE names a free slot, a slot in use has a count or a cache folio, and every cache folio
    covers exactly its own slots (``folio->swap``) and still exists."""
    slots = k.swap.slots
    for offset, n in swap_ptes.items():
        if offset not in slots:
            _fail("swap-slot-free", f"{n} swap PTEs name free slot {offset}")
    for offset, slot in slots.items():
        if slot.count != swap_ptes.get(offset, 0):
            _fail(
                "swap-count",
                f"slot {offset}: count {slot.count} != {swap_ptes.get(offset, 0)} swap PTEs",
            )
        if slot.count == 0 and slot.cache is None:
            _fail("swap-slot-free", f"slot {offset} is kept but holds nothing")
        f = slot.cache
        if f is not None:
            first = f.swapcache
            if first is None or not first <= offset < first + f.nr_pages:
                _fail("swap-cache", f"slot {offset}: its cache folio {f.pfn} does not cover it")
            if k.page_folio.get(f.pfn) is not f:
                _fail("swap-cache", f"slot {offset}: its cache folio {f.pfn} was freed")
    for f in {id(f): f for f in k.page_folio.values()}.values():
        if f.swapcache is not None:
            for i in range(f.nr_pages):
                s = slots.get(f.swapcache + i)
                if s is None or s.cache is not f:
                    _fail("swap-cache", f"folio {f.pfn}: slot {f.swapcache + i} not its own")
