//! The swap device and reclaim to it (issue 16): `madvise(MADV_PAGEOUT)`.
//!
//! * [`SwapDevice`] is the one swap device (type 0) of `/work/swap-design.md`: zram-like,
//!   synchronous (`SWP_SYNCHRONOUS_IO`), [`SWAP_SLOTS`] slots, slot 0 the header. Per slot it
//!   keeps the swap map count (`swap_map[]` without `SWAP_HAS_CACHE`), the folio in the swap
//!   cache (`swap_cache_get_folio`), the zeromap bit (`swap_zeromap_folio_set`), the page's
//!   contents once written, and the order of the folio whose swap-out allocated it. It lives
//!   beside the frames in [`PhysMem`](crate::physmem::PhysMem) (RAM and swap are the two stores
//!   a page's contents can be in), so every operation context that borrows physical memory
//!   sees it. The swap cache's side of a folio (`folio->swap`, `PG_swapcache`, `PG_dirty`)
//!   is kept here too, by head frame.
//! * `Kernel::pageout` is `madvise_pageout` → `madvise_cold_or_pageout_pte_range` per PMD
//!   block, then `reclaim_pages` → `shrink_folio_list` of the block's folios (`add_to_swap`,
//!   `try_to_unmap`, `pageout`/`swap_writepage`, `__remove_mapping`).
//! * The swap-in fault (`do_swap_page`) is `Fault::do_swap_page` in `fault.rs`'s dispatch,
//!   written in `swapin.rs`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::addr::{VirtAddr, PAGE_SIZE, PMD_SIZE};
use crate::error::CowError;
use crate::events::Event;
use crate::folio::FolioRef;
use crate::kernel::Kernel;
use crate::paging::entry::{PageTableEntry, SwapEntry, SWP_EXCLUSIVE, SWP_SOFT_DIRTY};
use crate::paging::walk::{self, PmdLoc};
use crate::physmem::{TableFrame, ST_FOLIO};
use crate::split::RmapHit;

/// Slots of the swap device: 1 GiB of 4 KiB pages (slot 0 is the swap header).
pub const SWAP_SLOTS: u32 = 262_144;

/// The swap type of the one device.
pub(crate) const SWAP_TYPE: u32 = 0;

/// One slot in use (`swap_map[offset]` and what the device and the swap cache hold for it).
/// A slot that is not in [`SwapDevice::slots`] is free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot {
    /// Page-table references (`swap_count(swap_map[offset])`, `swp_swapcount`).
    pub count: u32,
    /// The head frame of the folio in the swap cache that covers this slot.
    pub cache: Option<u32>,
    /// The zeromap bit: the page was all zero and was not written.
    pub zero: bool,
    /// The page's contents as written (its first word; the rest of a page is zero).
    pub content: u64,
    /// The order of the folio whose swap-out allocated the slot.
    pub run_order: u8,
}

/// A folio in the swap cache: its first slot (`folio->swap`) and `PG_dirty`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cached {
    /// `folio->swap.val`'s offset: the slot of the folio's first page.
    pub slot: u32,
    /// `folio_test_dirty`: the contents differ from what the slots hold.
    pub dirty: bool,
}

/// The swap device and the swap cache (`swap_info_struct` of type 0 and its
/// `swap_address_space`).
#[derive(Debug, Clone, Default)]
pub(crate) struct SwapDevice {
    /// The slots in use, by offset.
    pub slots: BTreeMap<u32, Slot>,
    /// The folios in the swap cache, by head frame.
    pub cache: BTreeMap<u32, Cached>,
    /// Per order, no free naturally aligned run of that order starts below it: where the
    /// first-fit search starts, so that paging out many folios one by one does not rescan
    /// the runs in use each time. It never changes which run [`Self::alloc`] finds.
    free_hint: [u32; 10],
    /// Whether a folio was ever in the swap cache: `deferred_split_folio` skips a swap-cache
    /// folio ("Exclude swapcache"), so from then on a large folio may be partially mapped
    /// without `PG_partially_mapped`, as in the kernel ([`crate::Machine::check`] knows).
    pub ever_cached: bool,
}

impl SwapDevice {
    /// `folio_alloc_swap`: the lowest free naturally aligned run of `2^order` slots (first
    /// fit above the header), or `None` when the device is full. The kernel's cluster
    /// allocator is not modelled (DESIGN: "The swap device").
    ///
    /// The caller takes the run at once ([`Self::add_to_cache`]).
    pub(crate) fn alloc(&mut self, order: u32) -> Option<u32> {
        let nr = 1u32 << order;
        let hint = &mut self.free_hint[order as usize];
        let mut s = (*hint).max(1).next_multiple_of(nr);
        while s + nr <= SWAP_SLOTS {
            match self.slots.range(s..s + nr).next_back() {
                None => {
                    *hint = s + nr; // every run below is in use, this one is taken now
                    return Some(s);
                }
                Some((&used, _)) => s = (used + 1).next_multiple_of(nr),
            }
        }
        *hint = s;
        None
    }

    /// A slot became free: the runs of every order that contain it may be free again.
    fn slot_freed(&mut self, slot: u32) {
        for (order, hint) in self.free_hint.iter_mut().enumerate() {
            *hint = (*hint).min(slot & !((1u32 << order) - 1));
        }
    }

    /// The slot's map count (`__swap_count`); 0 for a free slot.
    pub(crate) fn count(&self, slot: u32) -> u32 {
        self.slots.get(&slot).map_or(0, |s| s.count)
    }

    /// The folio in the swap cache at `slot` (`swap_cache_get_folio`).
    pub(crate) fn lookup(&self, slot: u32) -> Option<u32> {
        self.slots.get(&slot).and_then(|s| s.cache)
    }

    /// `folio->swap` of a folio in the swap cache (`folio_test_swapcache`).
    #[inline]
    pub(crate) fn folio_swap(&self, head: u32) -> Option<u32> {
        if self.cache.is_empty() {
            return None;
        }
        self.cache.get(&head).map(|c| c.slot)
    }

    /// `swap_duplicate`: one more page-table reference to `slot`.
    pub(crate) fn dup(&mut self, slot: u32) {
        if let Some(s) = self.slots.get_mut(&slot) {
            s.count += 1;
        }
    }

    /// `swap_cache_add_folio` of a folio of `nr` pages at `slot`, which [`Self::alloc`] gave
    /// (`run_order` = the folio's order) or which the swap-in read from (existing slots).
    pub(crate) fn add_to_cache(
        &mut self,
        head: u32,
        slot: u32,
        nr: u32,
        run_order: u8,
        dirty: bool,
    ) {
        for i in 0..nr {
            let s = self.slots.entry(slot + i).or_insert(Slot {
                count: 0,
                cache: None,
                zero: false,
                content: 0,
                run_order,
            });
            s.cache = Some(head);
        }
        self.cache.insert(head, Cached { slot, dirty });
        self.ever_cached = true;
    }

    /// `swap_cache_del_folio`: the folio at `head` leaves the swap cache; the slots keep
    /// their counts, and those with none become free. The caller drops the cache's
    /// references.
    pub(crate) fn delete_from_cache(&mut self, head: u32, nr: u32) {
        if let Some(c) = self.cache.remove(&head) {
            for s in c.slot..c.slot + nr {
                self.slot_clear_cache(s);
            }
        }
    }

    fn slot_clear_cache(&mut self, slot: u32) {
        if let Some(s) = self.slots.get_mut(&slot) {
            s.cache = None;
            if s.count == 0 {
                self.slots.remove(&slot);
                self.slot_freed(slot);
            }
        }
    }

    /// One page-table reference to `slot` goes (`swap_free_nr` / `swap_entries_put_map`):
    /// returns the count left. A slot with no count and no cache folio is freed.
    pub(crate) fn put(&mut self, slot: u32) -> u32 {
        let Some(s) = self.slots.get_mut(&slot) else {
            return 0;
        };
        s.count = s.count.saturating_sub(1);
        let left = s.count;
        if left == 0 && s.cache.is_none() {
            self.slots.remove(&slot);
            self.slot_freed(slot);
        }
        left
    }

    /// Marks a folio in the swap cache dirty (`folio_mark_dirty`).
    pub(crate) fn set_dirty(&mut self, head: u32) {
        if let Some(c) = self.cache.get_mut(&head) {
            c.dirty = true;
        }
    }

    /// Whether no slot of the cached folio at `head` (`nr` pages) has a page-table
    /// reference: what `folio_free_swap` (`folio_swapped` false) needs.
    pub(crate) fn unswapped(&self, head: u32, nr: u32) -> bool {
        self.cache
            .get(&head)
            .is_none_or(|c| (c.slot..c.slot + nr).all(|s| self.count(s) == 0))
    }

    /// The slots a swap entry names.
    pub(crate) fn slot(&self, slot: u32) -> Option<&Slot> {
        self.slots.get(&slot)
    }
}

/// The PTE of a swap entry for `slot` with the exclusive and soft-dirty bits
/// (`swp_entry_to_pte`, `pte_swp_mkexclusive`, `pte_swp_mksoft_dirty`).
pub(crate) fn swap_pte(slot: u32, exclusive: bool, soft_dirty: bool) -> PageTableEntry {
    let mut raw = SwapEntry::to_pte(SWAP_TYPE, u64::from(slot)).raw();
    if exclusive {
        raw |= SWP_EXCLUSIVE.bits();
    }
    if soft_dirty {
        raw |= SWP_SOFT_DIRTY.bits();
    }
    PageTableEntry::from_raw(raw)
}

/// The slot of a swap entry (the offset; one device).
pub(crate) fn entry_slot(s: SwapEntry) -> u32 {
    s.swp_offset() as u32
}

impl Kernel {
    /// `madvise(MADV_PAGEOUT)` (`madvise_pageout`): the range must be page aligned and fully
    /// mapped (else madvise's errors, a zero length among them). Each VMA of the range in
    /// address order, each PMD block of it in address order: the folios to reclaim are
    /// collected (`madvise_cold_or_pageout_pte_range`) and then reclaimed in that order
    /// (`reclaim_pages` at the end of each PMD call).
    ///
    /// # Errors
    /// Those of `madvise`; [`CowError::Invariant`] if the model's state is broken.
    pub(crate) fn pageout(
        &mut self,
        pid: u32,
        addr: VirtAddr,
        length: u64,
    ) -> Result<(), CowError> {
        self.mm(pid)?;
        let (start, end) = self.checked_mapped_range("MADV_PAGEOUT", pid, addr, length)?;
        self.mem.lru_add_drain();
        let pieces: Vec<(u64, u64)> = self
            .mm(pid)?
            .vmas
            .iter()
            .filter(|v| v.start < end && v.end > start)
            .map(|v| (v.start.max(start).as_u64(), v.end.min(end).as_u64()))
            .collect();
        for (s, e) in pieces {
            let mut a = s;
            while a < e {
                let next = ((a | (PMD_SIZE - 1)) + 1).min(e);
                let list = self.pageout_pmd_range(pid, a, next)?;
                self.reclaim_folios(list)?;
                a = next;
            }
        }
        Ok(())
    }

    /// The sharing test of `madvise_cold_or_pageout_pte_range`: 7.x
    /// `folio_maybe_mapped_shared`, 6.12 `folio_likely_mapped_shared`, 6.1
    /// `folio_estimated_sharers(folio) > 1` (the first page's mapcount: a folio whose first
    /// page is unmapped is not shared, as `pageout-2M-head-unmapped` recorded on 6.1).
    fn pageout_maybe_shared(&self, folio: FolioRef) -> bool {
        let f = self.mem.folio(folio);
        let head = folio.pfn();
        let first = i64::from(self.mem.page_mapcount(head)) + i64::from(f.folio_entire_mapcount());
        if self.cfg.reuses_pte_mapped_large_folios() {
            return f.folio_maybe_mapped_shared();
        }
        if !self.cfg.per_size_thp_stats() {
            return first > 1;
        }
        let mapcount = f.folio_mapcount();
        if mapcount <= 1 {
            return false;
        }
        if f.folio_entire_mapcount() > 0 || mapcount > f.folio_nr_pages() as i32 {
            return true;
        }
        first > 1
    }

    /// `madvise_cold_or_pageout_pte_range` over `[a, next)`, inside one PMD block and one
    /// VMA: the folios to reclaim, in address order.
    fn pageout_pmd_range(
        &mut self,
        pid: u32,
        a: u64,
        next: u64,
    ) -> Result<Vec<FolioRef>, CowError> {
        let pgd = self.mm(pid)?.pgd;
        let mut list = Vec::new();
        let PmdLoc::Found(pt, pi) = walk::pmd_loc(&self.mem, self.paging, pgd, a) else {
            return Ok(list);
        };
        let pmde = self.mem.entry(pt, pi);
        if pmde.is_none() {
            return Ok(list);
        }
        if pmde.is_huge() {
            if pmde.is_special() {
                return Ok(list);
            }
            let folio = self.mem.page_folio(pmde.frame());
            if self.pageout_maybe_shared(folio) {
                return Ok(list);
            }
            if next - a < PMD_SIZE {
                if !self.try_split_folio(folio)? {
                    return Ok(list);
                }
            } else {
                list.push(folio);
                return Ok(list);
            }
        }
        let t = TableFrame::of(self.mem.entry(pt, pi));
        // `folio_pte_batch` came with mTHP (6.10): since then a large folio the range maps in
        // part is split and one that may be shared (or cannot be split) is skipped
        // (`continue`); 6.1 splits every PTE-mapped large folio it meets and stops the
        // block at one it cannot split or whose first page is mapped more than once (`break`).
        let batches = self.cfg.per_size_thp_stats();
        let mut p = a;
        while p < next {
            let i = ((p >> 12) & 511) as usize;
            let e = self.mem.entry(t, i);
            if !e.is_present() || e.is_special() || self.mem.state(e.frame()) != ST_FOLIO {
                p += PAGE_SIZE;
                continue;
            }
            let folio = self.mem.page_folio(e.frame());
            let f = self.mem.folio(folio);
            let nr_pages = f.folio_nr_pages();
            let mut nr = 1u64;
            if f.folio_test_large() {
                if batches {
                    let end_i = i + ((next - p) / PAGE_SIZE) as usize;
                    nr = self.mem.folio_pte_batch(t, i, end_i, e, folio, true) as u64;
                }
                if !batches || nr < u64::from(nr_pages) {
                    if !self.pageout_maybe_shared(folio) && self.try_split_folio(folio)? {
                        continue; // the same PTE again, now of an order-0 folio
                    }
                    if !batches {
                        break;
                    }
                    p += nr * PAGE_SIZE;
                    continue;
                }
            }
            let f = self.mem.folio(folio);
            if f.folio_mapcount() == f.folio_nr_pages() as i32 && !list.contains(&folio) {
                list.push(folio);
            }
            p += nr * PAGE_SIZE;
        }
        Ok(list)
    }

    /// `split_folio()` of a large folio from reclaim or `MADV_PAGEOUT`: refused when
    /// `can_split_folio` finds references beyond its mappings and the swap cache's
    /// (`SplitFailed`); returns whether it split.
    fn try_split_folio(&mut self, folio: FolioRef) -> Result<bool, CowError> {
        let head = folio.pfn();
        let f = self.mem.folio(folio);
        let cache = if self.mem.swap.folio_swap(head).is_some() {
            f.folio_nr_pages() as i32
        } else {
            0
        };
        let mapcount = f.folio_mapcount();
        if mapcount <= 0 || f.folio_ref_count() != mapcount + cache {
            self.events.emit(Event::SplitFailed {
                pfn: u64::from(head),
                order: self.mem.order(head),
            });
            return Ok(false);
        }
        let mut hits = self.rmap_walk(&BTreeSet::from([head]));
        let mappings = hits.remove(&head).unwrap_or_default();
        // unmap_folio → try_to_migrate: the PTEs go one by one, so a PTE-mapped folio
        // becomes partially mapped and is queued for a deferred split on the way
        // (`split_deferred`); a PMD mapping is split frozen (6.1 counts
        // `thp_deferred_split_page` there too).
        if !mappings.iter().any(|h| h.pmd) || !self.cfg.per_size_thp_stats() {
            self.mem.deferred_split_folio(folio, &mut self.events);
        }
        self.split_folio(folio, &mappings)?;
        Ok(true)
    }

    /// `reclaim_pages` → `shrink_folio_list` over the folios collected, in order (folios
    /// split for want of a large run of slots put their pages at the end of the list).
    ///
    /// The reverse map is walked once for the whole list (unmapping one folio moves no
    /// other folio's mappings); a folio split on the way is walked again on its own.
    fn reclaim_folios(&mut self, list: Vec<FolioRef>) -> Result<(), CowError> {
        let heads: BTreeSet<u32> = list.iter().map(|f| f.pfn()).collect();
        let mut hits = self.rmap_walk(&heads);
        let mut work: VecDeque<FolioRef> = list.into();
        while let Some(folio) = work.pop_front() {
            let head = folio.pfn();
            if self.mem.state(head) != ST_FOLIO || self.mem.page_folio(head) != folio {
                continue;
            }
            self.shrink_folio(folio, &mut work, &mut hits)?;
        }
        Ok(())
    }

    /// `shrink_folio_list` for one anonymous folio, references ignored (`MADV_PAGEOUT`).
    fn shrink_folio(
        &mut self,
        folio: FolioRef,
        work: &mut VecDeque<FolioRef>,
        hits: &mut BTreeMap<u32, Vec<RmapHit>>,
    ) -> Result<(), CowError> {
        let head = folio.pfn();
        let order = self.mem.order(head);
        let nr = 1u32 << order;
        if self.mem.folio_maybe_dma_pinned(folio) {
            return Ok(()); // try_to_unmap_one refuses an exclusive pinned page: it stays
        }
        if self.mem.swap.folio_swap(head).is_none() {
            if order > 0 {
                let f = self.mem.folio(folio);
                if f.folio_ref_count() != f.folio_mapcount() {
                    return Ok(()); // can_split_folio fails: activate_locked
                }
            }
            let Some(slot) = self.mem.swap.alloc(order) else {
                if order == 0 {
                    return Ok(()); // activate_locked_split
                }
                // add_to_swap failed: split to order 0 and retry each page.
                hits.remove(&head); // the mappings were of the large folio
                if !self.try_split_folio(folio)? {
                    return Ok(());
                }
                self.events.emit(Event::SwpoutFallback { order });
                for p in head + 1..head + nr {
                    if self.mem.state(p) == ST_FOLIO {
                        work.push_back(FolioRef::new_head(p));
                    }
                }
                if self.mem.state(head) == ST_FOLIO {
                    return self.shrink_folio(FolioRef::new_head(head), work, hits);
                }
                return Ok(());
            };
            // add_to_swap: the swap cache takes nr references; the folio is marked dirty.
            self.mem
                .swap
                .add_to_cache(head, slot, nr, order as u8, true);
            self.mem.folio_ref_add(folio, nr as i32);
        }
        let mappings = match hits.remove(&head) {
            Some(m) => m,
            None => self
                .rmap_walk(&BTreeSet::from([head]))
                .remove(&head)
                .unwrap_or_default(),
        };
        self.try_to_unmap(folio, &mappings)?;
        let f = self.mem.folio(folio);
        if f.folio_ref_count() != nr as i32 {
            // is_page_cache_freeable fails (a GUP reference): stays in the swap cache.
            return Ok(());
        }
        let slot = self.mem.swap.folio_swap(head).ok_or_else(|| {
            CowError::invariant("swap-cache", "a reclaimed folio left the swap cache")
        })?;
        let dirty = self.mem.swap.cache.get(&head).is_some_and(|c| c.dirty);
        if dirty {
            self.swap_writepage(head, slot, order);
        }
        // __remove_mapping: out of the swap cache, then the cache's references go.
        self.mem.swap.delete_from_cache(head, nr);
        self.mem.folio_put_refs(folio, nr, &mut self.events);
        Ok(())
    }

    /// `swap_writepage`: a zero-filled folio only sets the zeromap where the profile has
    /// it (`swap_zeromap_folio_set`); any other is written (`count_swpout_vm_event`).
    fn swap_writepage(&mut self, head: u32, slot: u32, order: u32) {
        let nr = 1u32 << order;
        let zero =
            self.cfg.swap_zeromap() && (head..head + nr).all(|p| self.mem.content[p as usize] == 0);
        for i in 0..nr {
            let content = self.mem.content[(head + i) as usize];
            if let Some(s) = self.mem.swap.slots.get_mut(&(slot + i)) {
                s.zero = zero;
                s.content = if zero { 0 } else { content };
            }
        }
        if let Some(c) = self.mem.swap.cache.get_mut(&head) {
            c.dirty = false;
        }
        self.events.emit(Event::SwapOut {
            pfn: u64::from(head),
            order,
            nr: if zero { 0 } else { u64::from(nr) },
        });
    }

    /// `try_to_unmap` of a folio in the swap cache: every entry mapping it, in any mm
    /// (`rmap_walk_anon`; a PMD mapping is split first), becomes a swap entry of its page's
    /// slot (`try_to_unmap_one`): exclusive as the page was (`PageAnonExclusive`), soft-dirty
    /// kept, the slot's count + 1 (`swap_duplicate`), a dirty PTE dirtying the folio, the
    /// mapping's reference dropped. A large folio in the swap cache is never queued for a
    /// deferred split (`deferred_split_folio` skips swapcache folios).
    fn try_to_unmap(&mut self, folio: FolioRef, mappings: &[RmapHit]) -> Result<(), CowError> {
        let head = folio.pfn();
        let slot = self.mem.swap.folio_swap(head).ok_or_else(|| {
            CowError::invariant("swap-cache", "unmapping a folio not in the swap cache")
        })?;
        let ptes = self.split_pmd_mappings(mappings, 1u32 << self.mem.order(head))?;
        for h in ptes {
            let Some(mm) = self.procs[h.pid as usize - 1].as_mut() else {
                continue;
            };
            let Some(leaf) = walk::find_leaf(&self.mem, self.paging, mm.pgd, h.addr) else {
                continue;
            };
            let e = leaf.entry;
            let p = e.frame();
            let exclusive = self.mem.anon_exclusive(p);
            let s = slot + (p - head);
            let swp = swap_pte(s, exclusive, e.is_soft_dirty());
            self.mem.set_entry(leaf.table, leaf.index, swp);
            self.mem.swap.dup(s);
            if e.is_dirty() {
                self.mem.swap.set_dirty(head);
            }
            let _partial = self.mem.remove_rmap_ptes(folio, p, 1, mm.mm_id);
            self.mem.set_anon_exclusive(p, false);
            self.mem.folio_ref_add(folio, -1);
            mm.rss_anon -= 1;
        }
        Ok(())
    }

    /// `free_swap_and_cache_nr` for one slot a zapped swap entry named: the count goes;
    /// when none is left and the slot's folio in the swap cache is unmapped and holds no
    /// counted slot (`__try_to_reclaim_swap` with `TTRS_UNMAPPED`), the folio leaves the
    /// swap cache (dirty) and goes when nothing else holds it.
    pub(crate) fn free_swap_and_cache(
        mem: &mut crate::physmem::PhysMem,
        events: &mut crate::events::Events,
        slot: u32,
    ) {
        if mem.swap.put(slot) > 0 {
            return;
        }
        let Some(head) = mem.swap.lookup(slot) else {
            return;
        };
        let folio = FolioRef::new_head(head);
        let f = mem.folio(folio);
        let nr = f.folio_nr_pages();
        if f.folio_mapcount() > 0 || !mem.swap.unswapped(head, nr) {
            return;
        }
        mem.swap.set_dirty(head);
        mem.swap.delete_from_cache(head, nr);
        mem.folio_put_refs(folio, nr, events);
    }
}

impl crate::physmem::PhysMem {
    /// `folio_free_swap`: the folio leaves the swap cache (its references go with it, the
    /// last one frees it) when no PTE names one of its slots any longer (`folio_swapped`);
    /// returns whether it did. A folio not in the cache stays as it is.
    pub(crate) fn folio_free_swap(
        &mut self,
        folio: FolioRef,
        events: &mut crate::events::Events,
    ) -> bool {
        let head = folio.pfn();
        let nr = self.folio(folio).folio_nr_pages();
        if self.swap.folio_swap(head).is_none() || !self.swap.unswapped(head, nr) {
            return false;
        }
        self.swap.delete_from_cache(head, nr);
        self.folio_put_refs(folio, nr, events);
        true
    }

    /// `free_swap_cache` of a folio whose mapping was just removed (the zap's
    /// `free_pages_and_swap_cache`, `wp_page_copy`'s old folio after a copy): an unmapped
    /// swap-cache folio frees its swap space if no PTE names it.
    #[inline]
    pub(crate) fn free_swap_cache(&mut self, folio: FolioRef, events: &mut crate::events::Events) {
        if !self.swap.cache.is_empty() {
            self.free_swap_cache_slow(folio, events);
        }
    }

    #[cold]
    #[inline(never)]
    fn free_swap_cache_slow(&mut self, folio: FolioRef, events: &mut crate::events::Events) {
        if self.swap.folio_swap(folio.pfn()).is_some() && self.folio(folio).folio_mapcount() == 0 {
            self.folio_free_swap(folio, events);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{CowError, FrameKind, Machine, Profile, ThpMode, ThpSizeMode, VirtAddr};

    const K4: u64 = 4096;

    fn at(a: VirtAddr, off: u64) -> VirtAddr {
        VirtAddr::new(a.as_u64() + off)
    }

    fn machine(profile: Profile) -> Machine {
        Machine::new(64 << 20, 4, profile).unwrap()
    }

    fn kinds(m: &Machine, pid: u32, a: VirtAddr, len: u64) -> Vec<FrameKind> {
        m.observe(pid, a, len)
            .unwrap()
            .iter()
            .map(|o| o.kind)
            .collect()
    }

    /// a-4k: a private page goes out and comes back writable at once; smaps counts it.
    #[test]
    fn private_page_out_and_in() {
        let mut m = machine(Profile::V6_15);
        let a = m.mmap(1, 4 * K4).unwrap();
        m.write(1, a, 4 * K4, 7).unwrap();
        m.pageout(1, a, 2 * K4).unwrap();
        assert_eq!(kinds(&m, 1, a, 2 * K4), [FrameKind::Swap, FrameKind::Swap]);
        assert_eq!(m.stats().pswpout, 2);
        let s = &m.smaps(1).unwrap()[0];
        assert_eq!((s.swap, s.swap_pss >> crate::PSS_SHIFT), (8192, 8192));
        m.check().unwrap();
        assert_eq!(m.read(1, a, K4).unwrap(), [7]);
        let o = m.observe(1, a, K4).unwrap()[0];
        assert!(o.present && o.exclusive && o.mapcount == 1);
        let pfn = o.pfn;
        m.write(1, a, K4, 3).unwrap();
        assert_eq!(m.observe(1, a, K4).unwrap()[0].pfn, pfn); // writable at once
        assert_eq!(m.stats().pswpin, 1);
        assert_eq!(m.stats().cow_copy, 0);
        m.check().unwrap();
    }

    /// b-fork / h: a page mapped by two processes stays, the walk goes on.
    #[test]
    fn shared_small_page_stays() {
        let mut m = machine(Profile::V6_15);
        let a = m.mmap(1, 4 * K4).unwrap();
        m.write(1, a, 4 * K4, 7).unwrap();
        let c = m.fork(1).unwrap();
        m.write(c, at(a, 2 * K4), 2 * K4, 1).unwrap();
        m.pageout(1, a, 4 * K4).unwrap();
        assert_eq!(
            kinds(&m, 1, a, 4 * K4),
            [
                FrameKind::Normal,
                FrameKind::Normal,
                FrameKind::Swap,
                FrameKind::Swap
            ]
        );
        m.check().unwrap();
        m.exit(c).unwrap();
        m.pageout(1, a, 4 * K4).unwrap();
        assert_eq!(m.stats().pswpout, 4);
        m.check().unwrap();
    }

    /// c-swapfork: fork shares the slot (`SwapPss` halves), the read goes through the swap
    /// cache, the write copies, the other side's read maps the cached folio without a read.
    #[test]
    fn fork_shares_slot_and_swap_cache_read_then_copy() {
        for profile in [Profile::V6_12, Profile::V6_15] {
            let mut m = machine(profile);
            let a = m.mmap(1, 4 * K4).unwrap();
            m.write(1, a, 4 * K4, 7).unwrap();
            m.pageout(1, a, 4 * K4).unwrap();
            let c = m.fork(1).unwrap();
            let s = &m.smaps(c).unwrap()[0];
            assert_eq!((s.swap, s.swap_pss >> crate::PSS_SHIFT), (16384, 8192));
            m.check().unwrap();
            // Parent writes page 1: read into the swap cache, then copied.
            m.write(1, at(a, K4), K4, 2).unwrap();
            assert_eq!(m.stats().pswpin, 1);
            assert_eq!(m.stats().cow_copy, 1);
            m.check().unwrap();
            // Child reads page 1: the cached folio, no read.
            assert_eq!(m.read(c, at(a, K4), K4).unwrap(), [7]);
            assert_eq!(m.stats().pswpin, 1);
            m.check().unwrap();
            m.exit(c).unwrap();
            m.check().unwrap();
            assert_eq!(m.read(1, at(a, 3 * K4), K4).unwrap(), [7]);
            m.check().unwrap();
        }
    }

    /// i-ref-pin: a ref'd page is unmapped but stays in the swap cache unwritten; a pinned
    /// page stays mapped; the read maps the same folio again.
    #[test]
    fn referenced_and_pinned() {
        let mut m = machine(Profile::V6_15);
        let a = m.mmap(1, 4 * K4).unwrap();
        m.write(1, a, 4 * K4, 7).unwrap();
        let pfn0 = m.observe(1, a, K4).unwrap()[0].pfn;
        m.ref_pages(1, a, K4).unwrap();
        m.pin_pages(1, at(a, K4), K4).unwrap();
        m.pageout(1, a, 4 * K4).unwrap();
        assert_eq!(
            kinds(&m, 1, a, 4 * K4),
            [
                FrameKind::Swap,
                FrameKind::Normal,
                FrameKind::Swap,
                FrameKind::Swap
            ]
        );
        assert_eq!(m.stats().pswpout, 2);
        m.check().unwrap();
        m.read(1, a, K4).unwrap();
        assert_eq!(m.observe(1, a, K4).unwrap()[0].pfn, pfn0);
        assert_eq!(m.stats().pswpin, 0);
        m.check().unwrap();
        m.unref_pages(1, a, K4).unwrap();
        m.unpin_pages(1, at(a, K4), K4).unwrap();
        m.check().unwrap();
    }

    /// d-64k / f: a whole 64K folio goes whole; part of one splits it first; the whole
    /// block comes back as one 64K folio (6.12+), 4K pages on 6.1.
    #[test]
    fn large_folio_whole_partial_and_large_swapin() {
        let mut m = machine(Profile::V6_15);
        m.set_thp_size(4, ThpSizeMode::Always).unwrap();
        let a = m.mmap(1, 8 * 16 * K4).unwrap();
        m.write(1, a, 32 * K4, 7).unwrap();
        m.pageout(1, a, 16 * K4).unwrap();
        let s = m.stats().clone();
        assert_eq!((s.swpout[2], s.pswpout, s.split[2]), (1, 16, 0));
        m.check().unwrap();
        m.read(1, at(a, K4), K4).unwrap();
        let o = m.observe(1, a, K4).unwrap()[0];
        assert_eq!(o.folio_pages, 16);
        assert_eq!((m.stats().swpin[2], m.stats().pswpin), (1, 16));
        m.check().unwrap();
        m.pageout(1, at(a, 16 * K4 + 4 * K4), 2 * K4).unwrap();
        let s = m.stats().clone();
        assert_eq!((s.split[2], s.split_deferred[2], s.pswpout), (1, 1, 18));
        m.check().unwrap();
    }

    /// e-2m: a PMD THP covered whole is PMD-split by `try_to_unmap` and written whole;
    /// swap-in never reads a PMD (4K with no mTHP size on).
    #[test]
    fn pmd_thp() {
        let mut m = machine(Profile::V6_15);
        m.set_thp_enabled(ThpMode::Always);
        let a = m.mmap(1, 4 << 20).unwrap();
        m.write(1, a, 4 << 20, 7).unwrap();
        m.pageout(1, a, 2 << 20).unwrap();
        let s = m.stats().clone();
        assert_eq!(
            (s.thp_swpout, s.pswpout, s.thp_split_pmd, s.swpout[7]),
            (1, 512, 1, 1)
        );
        m.check().unwrap();
        m.read(1, at(a, K4), K4).unwrap();
        assert_eq!(m.observe(1, at(a, K4), K4).unwrap()[0].folio_pages, 1);
        m.pageout(1, at(a, 2 << 20), K4).unwrap();
        let s = m.stats().clone();
        assert_eq!((s.split[7], s.thp_split_page, s.pswpout), (1, 1, 513));
        m.check().unwrap();
    }

    /// l-zero: a zero-filled folio is not written (6.12+), and not read back.
    #[test]
    fn zero_filled() {
        for (profile, written) in [(Profile::V6_1, 1), (Profile::V6_15, 0)] {
            let mut m = machine(profile);
            let a = m.mmap(1, 4 * K4).unwrap();
            m.write(1, a, K4, 0).unwrap();
            m.pageout(1, a, K4).unwrap();
            assert_eq!(m.stats().pswpout, written);
            assert_eq!(m.read(1, a, K4).unwrap(), [0]);
            assert_eq!(m.stats().pswpin, written);
            m.check().unwrap();
        }
    }

    /// m: after a fork, 6.12 swaps in 4K through the swap cache; 7.x a 64K folio, which
    /// the child's read maps too.
    /// A large folio partially unmapped while in the swap cache is not flagged partially
    /// mapped (`deferred_split_folio` excludes swap-cache folios) and stays unflagged once
    /// the cache lets it go: `check()` accepts that state (found by the long differential
    /// run).
    #[test]
    fn partially_mapped_in_swap_cache_is_not_flagged() {
        let mut m = machine(Profile::V6_15);
        m.set_thp_size(3, ThpSizeMode::Always).unwrap();
        let a = m.mmap(1, 16 * K4).unwrap();
        m.write(1, a, 8 * K4, 7).unwrap();
        m.pageout(1, a, 8 * K4).unwrap();
        let c = m.fork(1).unwrap();
        m.read(1, a, K4).unwrap(); // 7.x: the 32K folio back through the swap cache
        assert_eq!(m.observe(1, a, K4).unwrap()[0].folio_pages, 8);
        m.munmap(1, at(a, 7 * K4), K4).unwrap(); // 7 of 8 mapped, in the swap cache
        m.check().unwrap();
        m.exit(c).unwrap();
        m.write(1, a, K4, 9).unwrap(); // the reuse check frees the swap cache
        m.check().unwrap();
        assert_eq!(m.read(1, a, 2 * K4).unwrap(), [9, 7]);
    }

    /// `FolioInfo` names what is not a mapping: `_pincount` (large), and `folio->swap` of a
    /// folio a reference keeps in the swap cache after `MADV_PAGEOUT` unmapped it.
    #[test]
    fn folio_info_names_pins_and_the_swap_cache() {
        let mut m = machine(Profile::V6_15);
        m.set_thp_size(4, ThpSizeMode::Always).unwrap();
        let a = m.mmap(1, 32 * K4).unwrap();
        m.write(1, a, 32 * K4, 7).unwrap();
        let large = m.translate(1, a).unwrap().pfn.unwrap();
        m.pin_pages(1, at(a, K4), 2 * K4).unwrap();
        let f = m.folio(large).unwrap();
        assert_eq!((f.refcount, f.pincount, f.swap_slot), (18, 2, None));
        m.unpin_pages(1, at(a, K4), 2 * K4).unwrap();
        assert_eq!(m.folio(large).unwrap().pincount, 0);
        m.set_thp_size(4, ThpSizeMode::Never).unwrap();
        m.munmap(1, at(a, 16 * K4), 16 * K4).unwrap();
        let b = m.mmap(1, K4).unwrap();
        m.write(1, b, K4, 3).unwrap();
        let page = m.translate(1, b).unwrap().pfn.unwrap();
        m.ref_pages(1, b, K4).unwrap();
        m.pageout(1, b, K4).unwrap();
        let f = m.folio(page).unwrap();
        // the reference and the swap cache's; slot 1, the device's first after its header
        assert_eq!(
            (f.order, f.refcount, f.pincount, f.swap_slot),
            (0, 2, 0, Some(1))
        );
        m.unref_pages(1, b, K4).unwrap();
        m.check().unwrap();
    }

    #[test]
    fn large_swapin_shared_per_profile() {
        for (profile, pages) in [(Profile::V6_12, 1), (Profile::V6_15, 16)] {
            let mut m = machine(profile);
            m.set_thp_size(4, ThpSizeMode::Always).unwrap();
            let a = m.mmap(1, 16 * K4).unwrap();
            m.write(1, a, 16 * K4, 7).unwrap();
            m.pageout(1, a, 16 * K4).unwrap();
            let c = m.fork(1).unwrap();
            m.read(1, a, K4).unwrap();
            assert_eq!(
                m.observe(1, a, K4).unwrap()[0].folio_pages,
                pages,
                "{profile:?}"
            );
            m.check().unwrap();
            m.read(c, a, K4).unwrap();
            let o = m.observe(c, a, K4).unwrap()[0];
            assert_eq!((o.folio_pages, o.mapcount), (pages, 2), "{profile:?}");
            m.check().unwrap();
        }
    }

    /// The refusal: a 64K block of slots that one swap-out did not allocate together.
    #[test]
    fn large_swapin_refusal() {
        let mut m = machine(Profile::V6_15);
        let a = m.mmap(1, 16 * K4).unwrap();
        m.write(1, a, 16 * K4, 7).unwrap();
        m.pageout(1, a, 16 * K4).unwrap(); // slots 1..17: 16 order-0 runs
        m.set_thp_size(4, ThpSizeMode::Always).unwrap();
        // The block at a has slots 1..16, not aligned to 16: no order qualifies.
        m.read(1, a, K4).unwrap();
        m.check().unwrap();
        let b = m.mmap(1, 32 * K4).unwrap();
        m.set_thp_size(4, ThpSizeMode::Never).unwrap();
        m.write(1, b, 32 * K4, 5).unwrap();
        m.pageout(1, b, 32 * K4).unwrap();
        m.set_thp_size(4, ThpSizeMode::Always).unwrap();
        let r = (0..32)
            .map(|i| m.read(1, at(b, i * K4), K4))
            .find(Result::is_err);
        assert!(matches!(r, Some(Err(CowError::NotModelled(_)))), "{r:?}");
        m.check().unwrap();
    }

    /// zap: dontneed drops swap entries (the slot is freed); munmap and exit too.
    #[test]
    fn zap_swap_entries() {
        let mut m = machine(Profile::V6_15);
        let a = m.mmap(1, 4 * K4).unwrap();
        m.write(1, a, 4 * K4, 7).unwrap();
        m.pageout(1, a, 4 * K4).unwrap();
        let c = m.fork(1).unwrap();
        m.madvise(1, a, K4, crate::Advice::DontNeed).unwrap();
        assert_eq!(m.read(1, a, K4).unwrap(), [0]);
        m.munmap(c, at(a, K4), K4).unwrap();
        let s = &m.smaps(1).unwrap()[0];
        assert_eq!(s.swap_pss >> crate::PSS_SHIFT, 4096 + 2048 + 2048);
        m.check().unwrap();
        m.exit(c).unwrap();
        m.exit(1).unwrap_or(());
        assert!(m.k.mem.swap.slots.len() <= 3);
    }
}
