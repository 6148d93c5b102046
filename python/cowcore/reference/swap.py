"""The swap device and the swap cache (mm/swapfile.c, mm/swap_state.c, mm/page_io.c; issue 16).

One device, type 0, zram-like: synchronous (``SWP_SYNCHRONOUS_IO``), :data:`SWAP_SLOTS`
slots, slot 0 the header. Each slot in use has a :class:`SwapSlot`: its swap count (the
page-table entries naming it, ``swap_map`` without ``SWAP_HAS_CACHE``), the folio of the swap
cache covering it, the zeromap bit, the page's content once written, and the order of the
folio whose swap-out allocated it. A slot with count 0 and no cache folio is free (absent).

The operations here are the small steps the fault, fork, zap and reclaim paths share:
allocation (``folio_alloc_swap``), the swap cache (``add_to_swap``, ``folio_free_swap``,
``free_swap_cache``, ``__try_to_reclaim_swap``), and the counts (``swap_duplicate``,
``swap_free_nr``, ``free_swap_and_cache_nr``). Reclaim is :mod:`.vmscan`, the swap-in fault
``do_swap_page`` lives in :mod:`.fault`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cowcore.reference import paging as pg

if TYPE_CHECKING:
    from cowcore.reference.folio import Folio
    from cowcore.reference.kernel import Kernel

SWAP_SLOTS = 262144
"""The device's slots (1 GiB of 4 KiB pages); slot 0 holds the swap header."""

SWAP_TYPE = 0
"""The device's swap type (the first ``swapon``)."""


@dataclass(slots=True)
class SwapSlot:
    """One slot in use (``si->swap_map[offset]`` and what the model keeps beside it)."""

    count: int = 0
    """Page-table entries naming the slot (``swap_count``)."""
    cache: Folio | None = None
    """The swap-cache folio covering the slot (``SWAP_HAS_CACHE``), if any."""
    zero: bool = False
    """The zeromap bit: the page was zero-filled and not written (``swap_zeromap_folio_set``)."""
    content: int = 0
    """The page's value as written (``swap_writepage``), what a swap-in reads back."""
    run_order: int = 0
    """The order of the folio whose swap-out allocated the slot (0: one page at a time)."""


@dataclass(slots=True)
class SwapDevice:
    """``struct swap_info_struct`` of the one device: the slots in use, by offset."""

    slots: dict[int, SwapSlot] = field(default_factory=dict)

    def alloc(self, order: int) -> int | None:
        """``folio_alloc_swap``'s slots: the lowest free, naturally aligned run of
        ``2^order`` slots at offsets >= 1 (the cluster allocator is not modelled), or
        ``None`` when the device is full. The slots are not taken yet."""
        nr = 1 << order
        start = nr if order else 1
        used = self.slots
        while start + nr <= SWAP_SLOTS:
            busy = [s for s in range(start, start + nr) if s in used]
            if not busy:
                return start
            start = (busy[-1] // nr + 1) * nr if order else busy[-1] + 1
        return None

    def count(self, offset: int) -> int:
        """``__swap_count``: the page-table entries naming ``offset``."""
        slot = self.slots.get(offset)
        return 0 if slot is None else slot.count

    def release_if_free(self, offset: int) -> None:
        """Forget a slot that neither a PTE nor the swap cache holds any longer."""
        slot = self.slots.get(offset)
        if slot is not None and slot.count == 0 and slot.cache is None:
            del self.slots[offset]


def make_swap_pte(offset: int, exclusive: bool, soft_dirty: bool) -> int:
    """``swp_entry_to_pte(swp_entry(SWAP_TYPE, offset))`` with ``_PAGE_SWP_EXCLUSIVE`` and
    ``_PAGE_SWP_SOFT_DIRTY`` as given."""
    entry = pg.swp_entry_to_pte(SWAP_TYPE, offset)
    if exclusive:
        entry = pg.swp_mkexclusive(entry)
    if soft_dirty:
        entry = pg.swp_mksoft_dirty(entry)
    return entry


def is_swap_pte(entry: int) -> bool:
    """``is_swap_pte`` and not a migration entry: a PTE naming a slot of the device (type
    0; an entry of another type names no device and is refused as broken state)."""
    return pg.entry_kind(entry) is pg.EntryKind.SWAP and pg.swp_type(entry) == SWAP_TYPE


def add_to_swap(k: Kernel, folio: Folio, first: int) -> None:
    """``add_to_swap`` -> ``add_to_swap_cache``: the folio covers ``nr_pages`` slots from
    ``first`` (its run order recorded), holds one reference per page for the cache, and is
    marked dirty (``folio_mark_dirty``) so that reclaim writes it."""
    for i in range(folio.nr_pages):
        k.swap.slots[first + i] = SwapSlot(cache=folio, run_order=folio.order)
    folio.swapcache = first
    folio.refcount += folio.nr_pages  # folio_ref_add(folio, nr) in __filemap_add_folio
    folio.dirty = True


def add_to_swap_cache(k: Kernel, folio: Folio, first: int) -> None:
    """``swap_cache_add_folio`` of a folio read in: it covers its slots (which exist) and
    holds one reference per page for the cache; it is clean."""
    for i in range(folio.nr_pages):
        k.swap.slots[first + i].cache = folio
    folio.swapcache = first
    folio.refcount += folio.nr_pages


def delete_from_swap_cache(k: Kernel, folio: Folio) -> None:
    """``delete_from_swap_cache``: the folio leaves the cache and drops the cache's
    references (the last one frees it); its slots stay while PTEs name them."""
    first = folio.swapcache
    assert first is not None
    folio.swapcache = None
    for i in range(folio.nr_pages):
        k.swap.slots[first + i].cache = None
        k.swap.release_if_free(first + i)
    k.put_folio(folio, folio.nr_pages)


def folio_swapped(k: Kernel, folio: Folio) -> bool:
    """``folio_swapped``: a PTE still names one of the folio's slots."""
    first = folio.swapcache
    assert first is not None
    return any(k.swap.count(first + i) for i in range(folio.nr_pages))


def folio_free_swap(k: Kernel, folio: Folio) -> bool:
    """``folio_free_swap``: free the folio's swap space if no PTE names it any longer; the
    folio leaves the cache dirty (it has no copy on the device then). Returns whether it
    did."""
    if folio.swapcache is None or folio_swapped(k, folio):
        return False
    folio.dirty = True  # folio_set_dirty
    delete_from_swap_cache(k, folio)
    return True


def free_swap_cache(k: Kernel, folio: Folio) -> None:
    """``free_swap_cache`` of a folio whose mapping was just removed (the zap's batch free,
    ``wp_page_copy``'s old folio): an unmapped swap-cache folio frees its swap space if no
    PTE names it."""
    if folio.swapcache is not None and folio.mapcount() == 0 and folio.entire_mapcount == 0:
        folio_free_swap(k, folio)


def swap_duplicate(k: Kernel, offset: int) -> None:
    """``swap_duplicate``: one more PTE names the slot (``try_to_unmap_one``, fork's
    ``copy_nonpresent_pte``)."""
    k.swap.slots[offset].count += 1


def swap_free(k: Kernel, offset: int) -> None:
    """``swap_free_nr`` for one slot: one PTE less names it; a slot no PTE and no cache folio
    holds is free."""
    slot = k.swap.slots[offset]
    assert slot.count > 0, f"swap slot {offset} freed with count 0"
    slot.count -= 1
    k.swap.release_if_free(offset)


def free_swap_and_cache(k: Kernel, offset: int) -> None:
    """``free_swap_and_cache_nr`` for one slot (the zap of a swap entry): one PTE less names
    it; when none does and its cache folio is unmapped with every slot unused
    (``__try_to_reclaim_swap`` with ``TTRS_UNMAPPED``), the folio leaves the cache (marked
    dirty) and goes when nothing else holds it."""
    slot = k.swap.slots[offset]
    assert slot.count > 0, f"swap slot {offset} zapped with count 0"
    slot.count -= 1
    folio = slot.cache
    if slot.count == 0 and folio is not None and folio.mapcount() == 0:
        folio_free_swap(k, folio)
    k.swap.release_if_free(offset)
