//! The swap-in fault (`do_swap_page` in `mm/memory.c`, issue 16): a read or write (or GUP)
//! fault on a PTE that holds a swap entry. Reached from `Fault::handle_mm_fault`'s dispatch
//! only, off the present-PTE fast paths.
//!
//! The folio is the swap cache's (`swap_cache_get_folio`), or a new one read from the
//! device: through the `SWP_SYNCHRONOUS_IO` bypass when the slot has one reference, large
//! where `alloc_swap_folio` allows it; else through the swap cache (`swapin_readahead`,
//! 7.x large too). See `/work/swap-design.md` "The swap-in fault" for the rules.

use crate::addr::{PAGE_SIZE, PMD_ORDER, PMD_SIZE};
use crate::error::CowError;
use crate::events::Event;
use crate::fault::{Fault, Recorder};
use crate::folio::FolioRef;
use crate::mm::VmFlags;
use crate::outcome::{AccessFlags, Outcome, Reason};
use crate::paging::entry::{EntryKind, PageTableEntry, SwapEntry};
use crate::paging::walk::Leaf;
use crate::physmem::TableFrame;
use crate::swap::{entry_slot, SWAP_TYPE};

impl<R: Recorder> Fault<'_, R> {
    /// `do_swap_page` for the swap entry `s` at `leaf` (a PTE). Returns whether a write
    /// fault must go on to `do_wp_page` (the page was mapped read-only).
    ///
    /// # Errors
    /// [`CowError::OutOfMemory`] when no order-0 frame is left (nothing changed);
    /// [`CowError::NotModelled`] for a large swap-in over slots that one large swap-out did
    /// not allocate together; [`CowError::Invariant`] for an entry naming no slot in use.
    // One kernel function, step by step as in mm/memory.c: splitting it would hide the order.
    #[allow(clippy::too_many_lines)]
    #[inline(never)]
    pub(crate) fn do_swap_page(&mut self, leaf: Leaf, s: SwapEntry) -> Result<bool, CowError> {
        let (t, i) = (leaf.table, leaf.index);
        let slot = entry_slot(s);
        let count = self.mem.swap.count(slot);
        if s.swp_type() != SWAP_TYPE || count == 0 {
            return Err(CowError::invariant(
                "swap-entry",
                format!(
                    "a swap entry (type {}, offset {:#x}) at {} names no slot in use",
                    s.swp_type(),
                    s.swp_offset(),
                    self.address
                ),
            ));
        }
        // 7.x (the swap-table rework that also brings the shared large swap-in) reads every
        // folio through the swap cache; 6.1 and 6.12 bypass it for a slot of count 1 on a
        // `SWP_SYNCHRONOUS_IO` device (zram).
        let via_cache = self.kcfg.swapin_large_shared();
        // The folio, whether it is in the swap cache, whether it was read outside it (certainly
        // exclusive) and whether this fault allocated it; the fault holds one reference.
        let (folio, cached, fresh, new) = if let Some(h) = self.mem.swap.lookup(slot) {
            let f = FolioRef::new_head(h);
            self.mem.folio_ref_add(f, 1);
            (f, true, false, false)
        } else {
            let large_ok = count == 1 || self.kcfg.swapin_large_shared();
            let order = if large_ok {
                self.swapin_order(t, i, slot)?
            } else {
                0
            };
            let (f, order) = self.alloc_swap_folio(order)?;
            let nr = 1u32 << order;
            let base = slot - (slot % nr);
            self.swap_read_folio(f, order, base);
            if count == 1 && !via_cache {
                (f, false, true, true)
            } else {
                // Into the swap cache (swapin_readahead / 7.x's large read through it).
                let run = self.mem.swap.slot(base).map_or(0, |x| x.run_order);
                self.mem.swap.add_to_cache(f.pfn(), base, nr, run, false);
                self.mem.folio_ref_add(f, nr as i32);
                (f, true, false, true)
            }
        };
        self.record(|r| r.flags |= AccessFlags::SWAP_IN);
        let head = folio.pfn();
        let nr = 1u32 << self.mem.order(head);
        let first_slot = if cached {
            self.mem.swap.folio_swap(head).unwrap_or(slot)
        } else {
            slot - (slot % nr)
        };
        let idx = slot - first_slot;
        // Which PTEs: the whole folio when every one of its PTEs here still holds its slot
        // with the faulting entry's bits, else the faulting page alone.
        let (map_first, map_nr) = if nr > 1 && self.whole_folio_ptes(t, i, idx, nr, first_slot, s) {
            (i - idx as usize, nr)
        } else {
            (i, 1)
        };
        let page0 = head + (map_first + idx as usize - i) as u32;
        // swap_free_nr: the mapped entries' references go.
        for k in 0..map_nr {
            self.mem.swap.put(first_slot + (page0 - head) + k);
        }
        // should_try_to_free_swap + folio_free_swap, before mapping (6.1, 6.12): a write
        // fault with nobody else holding the folio. 7.x frees after mapping (below).
        let try_free =
            !via_cache && self.write && self.mem.folio(folio).folio_ref_count() == 1 + nr as i32;
        if cached && try_free && self.mem.swap.unswapped(head, nr) {
            self.mem.swap.delete_from_cache(head, nr);
            self.mem.folio_ref_add(folio, -(nr as i32));
        }
        let still_cached = self.mem.swap.folio_swap(head).is_some();
        let (exclusive, reason) = if fresh {
            (true, Reason::SwapFresh)
        } else if s.is_exclusive() {
            (true, Reason::SwapExclusive)
        } else if self.mem.folio(folio).folio_ref_count() == 1 {
            (true, Reason::SwapSoleRef)
        } else {
            (false, Reason::SwapMaybeShared)
        };
        self.record(|r| r.reason = reason);
        let mut e = PageTableEntry::of_frame(page0, self.vma.page_prot());
        if s.is_soft_dirty() {
            e = e.mksoft_dirty();
        }
        let mut writable = false;
        if exclusive && self.vma.flags.contains(VmFlags::WRITE) {
            e = e.mkwrite();
            writable = true;
            if self.write {
                e = e.mkdirty();
                if still_cached {
                    self.mem.swap.set_dirty(head);
                }
            }
        }
        self.mem.folio_ref_add(folio, map_nr as i32 - 1);
        self.mem
            .add_anon_rmap_ptes(folio, page0, map_nr, self.mm_id, exclusive);
        if new {
            self.mem.folio_add_lru(folio);
        }
        for k in 0..map_nr {
            self.mem
                .set_entry(t, map_first + k as usize, e.with_frame(page0 + k));
        }
        *self.rss_anon += u64::from(map_nr);
        self.anon_vma_prepare();
        if via_cache
            && self.mem.swap.folio_swap(head).is_some()
            && self.mem.swap.unswapped(head, nr)
        {
            // 7.x: should_try_to_free_swap() is true for a SWP_SYNCHRONOUS_IO device, after
            // the folio is mapped; folio_free_swap() frees it when no PTE names its slots.
            self.mem.swap.delete_from_cache(head, nr);
            self.mem.folio_ref_add(folio, -(nr as i32));
        }
        if self.write && !writable {
            // do_swap_page → do_wp_page for a write that did not map writable: the caller
            // goes on there (one call site of do_wp_page in handle_mm_fault).
            return Ok(true);
        }
        self.record(|r| r.outcome = Outcome::SwapIn);
        Ok(false)
    }

    /// Whether the `nr` PTEs of the folio around index `i` (the faulting page is the
    /// folio's page `idx`) lie in this table and VMA and still hold the swap entries of
    /// the folio's slots with the faulting entry's bits (`swap_pte_batch`).
    fn whole_folio_ptes(
        &self,
        t: TableFrame,
        i: usize,
        idx: u32,
        nr: u32,
        first: u32,
        s: SwapEntry,
    ) -> bool {
        let Some(start_i) = i.checked_sub(idx as usize) else {
            return false;
        };
        if start_i + nr as usize > 512 {
            return false;
        }
        let start = self.address.as_u64() - u64::from(idx) * PAGE_SIZE;
        if start < self.vma.start.as_u64()
            || start + u64::from(nr) * PAGE_SIZE > self.vma.end.as_u64()
        {
            return false;
        }
        (0..nr).all(|k| match self.mem.entry(t, start_i + k as usize).kind() {
            EntryKind::Swap(x) => {
                entry_slot(x) == first + k
                    && x.is_exclusive() == s.is_exclusive()
                    && x.is_soft_dirty() == s.is_soft_dirty()
            }
            _ => false,
        })
    }

    /// `alloc_swap_folio`'s choice of order (before allocating): the orders the THP
    /// settings allow here below PMD order (`thp_vma_allowable_orders`), whose aligned block
    /// lies in the VMA (`thp_vma_suitable_orders`) and matches the slot's alignment
    /// (`thp_swap_suitable_orders`), highest first; the first whose block is all swap
    /// entries of consecutive slots with the same bits, all zero or none zero, none in the
    /// swap cache (`can_swapin_thp`). 0 when none qualifies or large swap-in is off.
    ///
    /// # Errors
    /// [`CowError::NotModelled`] when the chosen block's slots were not allocated together by
    /// one swap-out of at least that order: the kernel's answer then depends on its cluster
    /// allocator, which the model does not have.
    fn swapin_order(&mut self, t: TableFrame, i: usize, slot: u32) -> Result<u32, CowError> {
        if !self.kcfg.swapin_large() {
            return Ok(0);
        }
        let mut orders = self.cfg.allowable_orders(self.vma.flags) & ((1 << PMD_ORDER) - 1);
        let addr = self.address.as_u64();
        while orders != 0 {
            let order = orders.ilog2();
            orders &= !(1 << order);
            let nr = 1u32 << order;
            let size = PAGE_SIZE << order;
            let block = addr & !(size - 1);
            if block < self.vma.start.as_u64() || block + size > self.vma.end.as_u64() {
                continue;
            }
            if ((addr >> 12) % u64::from(nr)) as u32 != slot % nr {
                continue;
            }
            let first_i = i & !(nr as usize - 1);
            let base = slot - (slot % nr);
            let Some(bits) = (match self.mem.entry(t, first_i).kind() {
                EntryKind::Swap(x) => Some((x.is_exclusive(), x.is_soft_dirty())),
                _ => None,
            }) else {
                continue;
            };
            let swap = &self.mem.swap;
            let mut zeros = 0;
            let ok = (0..nr).all(|k| match self.mem.entry(t, first_i + k as usize).kind() {
                EntryKind::Swap(x) => {
                    let sl = swap.slot(entry_slot(x));
                    zeros += u32::from(sl.is_some_and(|y| y.zero));
                    entry_slot(x) == base + k
                        && (x.is_exclusive(), x.is_soft_dirty()) == bits
                        && sl.is_some_and(|y| y.cache.is_none())
                }
                _ => false,
            });
            if !ok || (zeros != 0 && zeros != nr) {
                continue;
            }
            if (0..nr).any(|k| {
                swap.slot(base + k)
                    .is_none_or(|y| u32::from(y.run_order) < order)
            }) {
                return Err(CowError::NotModelled(format!(
                    "a large swap-in of order {order} at {} over slots {base:#x}..{:#x} that \
                     no single swap-out allocated together: the kernel's answer depends on \
                     its swap cluster allocator",
                    self.address.align_down(PAGE_SIZE),
                    base + nr
                )));
            }
            return Ok(order);
        }
        Ok(0)
    }

    /// `alloc_swap_folio`'s allocation: `order`, else each lower allowed order counted
    /// as a fallback (`MTHP_STAT_SWPIN_FALLBACK`), else order 0; `OutOfMemory` if even
    /// order 0 has no frame.
    fn alloc_swap_folio(&mut self, order: u32) -> Result<(FolioRef, u32), CowError> {
        if order > 0 {
            if let Some(f) = self.mem.alloc_folio(order) {
                return Ok((f, order));
            }
            self.events.emit(Event::SwpinFallback { order });
            self.record(|r| r.flags |= AccessFlags::FELL_BACK);
        }
        let f = self.mem.alloc_folio(0).ok_or(CowError::OutOfMemory)?;
        Ok((f, 0))
    }

    /// `swap_read_folio`: the new folio's pages from the slots from `base`; zero slots are
    /// not read (`swap_read_folio_zeromap`).
    fn swap_read_folio(&mut self, folio: FolioRef, order: u32, base: u32) {
        let head = folio.pfn();
        let nr = 1u32 << order;
        let mut zero = true;
        for k in 0..nr {
            let sl = self.mem.swap.slot(base + k).copied();
            let c = sl.map_or(0, |x| x.content);
            zero &= sl.is_some_and(|x| x.zero);
            self.mem.content[(head + k) as usize] = c;
        }
        self.events.emit(Event::FolioAlloc {
            pfn: u64::from(head),
            order,
        });
        self.events.emit(Event::SwapIn {
            pfn: u64::from(head),
            order,
            nr: if zero { 0 } else { u64::from(nr) },
        });
    }
}

/// The PMD size a large swap-in never reaches (`alloc_swap_folio` asks below PMD order).
const _: () = assert!(PMD_SIZE == PAGE_SIZE << PMD_ORDER);
