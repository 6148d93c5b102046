//! Simulated physical memory: the buddy allocator and the per-frame metadata arrays.
//!
//! Models the zone free lists of `mm/page_alloc.c` (`__rmqueue_smallest`, `__free_one_page`)
//! with the exact rules of DESIGN.md "Physical memory": orders 0..=10, allocation takes the
//! lowest-addressed block of the smallest sufficient order and keeps the lower half of each
//! split; a free merges with its buddy while the buddy is a free block of the same order.
//!
//! Memory layout (for 64 GiB = 16M frames): four arrays indexed by frame number, 20 bytes
//! per frame in total, and no heap allocation per page. The arrays start zeroed and
//! untouched (a free frame is all zeros), so the host pays RSS only for frames in use:
//! * `info: u32` — state (2 bits), order (4 bits), `PageAnonExclusive`, and the page's
//!   logical PTE mapcount in the top 24 bits (zero for a free frame: where free blocks
//!   start is known from the free lists alone); bit 7 is a folio flag, kept where the
//!   kernel keeps it: on the head page `PG_referenced`, on the first tail page of a large
//!   folio `PG_partially_mapped` (`folio->_flags_1`), on the second tail page the
//!   `cow_reuse_remember_exclusive` memo (a policy of issue 15; folio.rs);
//! * `count: i32` — the head's `_refcount`; in a large folio page 1 holds
//!   `_large_mapcount`, page 2 `_entire_mapcount`, page 3 `_nr_pages_mapped` (the kernel
//!   also keeps folio fields in tail `struct page`s);
//! * `word: u32` — the low 32 bits of the head's allocation serial (the high bits live in
//!   `serial_hi`, allocated only once a machine has made 2^32 folios); in a large folio
//!   page 1 holds MM id 0 and the shared bit (bit 31), page 2 MM id 1, page 3 the two
//!   biased `_mm_id_mapcount`s as `i16`s (one mm maps a folio at most 512 + 1 times); for a
//!   page-table frame, the slot of its 512 entries in the table pool;
//! * `content: u64` — the 64-bit value at the first byte of the page.
//!
//! Page tables live in a pool of 512-entry `u64` slots, one per table frame (the private
//! `table_pool` module).

use std::collections::{BTreeMap, BTreeSet};

use crate::addr::Pfn;
use crate::events::{Event, Events};
use crate::folio::FolioRef;
use crate::fork::cow_child_pte;
use crate::paging::entry::{PageTableEntry, PteFlags};
use crate::paging::walk::{hw_accessed, hw_permits};
use crate::table_pool::TablePool;
pub use crate::table_pool::ENTRIES;

/// `MAX_PAGE_ORDER`: the largest buddy block is 2^10 frames (4 MiB).
pub const MAX_ORDER: u32 = 10;

/// A page-table frame: an order-0 frame of simulated memory holding 512 entries, what the
/// kernel reaches with `pmd_page()`/`pud_pgtable()` from the entry above it. Not a `pte_t`
/// or `pmd_t`, which name one entry (a [`PageTableEntry`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct TableFrame(u32);

impl TableFrame {
    /// The frame number.
    #[inline]
    pub(crate) const fn pfn(self) -> Pfn {
        Pfn::new(self.0 as u64)
    }

    /// The frame number as an index of the per-frame arrays.
    #[inline]
    pub(crate) const fn frame(self) -> u32 {
        self.0
    }

    /// The table in frame `frame`, which the caller knows holds one (`state == ST_TABLE`).
    #[inline]
    pub(crate) const fn at(frame: u32) -> Self {
        Self(frame)
    }

    /// The table an entry points to (`pmd_page`, `pud_pgtable`, ...): the entry must be a
    /// present, non-leaf entry.
    #[inline]
    pub(crate) const fn of(e: PageTableEntry) -> Self {
        Self(e.frame())
    }

    /// The entry that points to this table (`pmd_populate` & co.).
    #[inline]
    pub(crate) const fn entry(self) -> PageTableEntry {
        PageTableEntry::table(self.pfn())
    }
}

/// The key of a deposit: the PMD table frame and the entry's index.
fn deposit_key(pmd_table: TableFrame, idx: usize) -> u64 {
    (u64::from(pmd_table.0) << 9) | idx as u64
}

/// The per-page step of `folio_try_dup_anon_rmap_ptes` on a page's `info` word:
/// `ClearPageAnonExclusive`, then the page's mapcount + 1. Shared by the rmap update and
/// fork's order-0 fast path.
#[inline]
pub(crate) fn dup_page_info(info: u32) -> u32 {
    debug_assert!(info >> MAPCOUNT_SHIFT < MAPCOUNT_MAX);
    (info & !AE_BIT) + (1 << MAPCOUNT_SHIFT)
}

/// A free frame (inside a free buddy block).
pub(crate) const ST_FREE: u32 = 0;
/// A frame of an anonymous folio.
pub(crate) const ST_FOLIO: u32 = 1;
/// A page-table frame.
pub(crate) const ST_TABLE: u32 = 2;
/// A frame of the zero page or the huge zero folio.
pub(crate) const ST_ZERO: u32 = 3;

const STATE_MASK: u32 = 0b11;
const ORDER_SHIFT: u32 = 2;
const ORDER_MASK: u32 = 0b1111 << ORDER_SHIFT;
pub(crate) const AE_BIT: u32 = 1 << 6;
/// The folio-flag bit of an `info` word (`PG_referenced` on the head page,
/// `PG_partially_mapped` on the first tail page, the exclusive memo on the second).
pub(crate) const FLAG_BIT: u32 = 1 << 7;
pub(crate) const MAPCOUNT_SHIFT: u32 = 8;
/// Largest logical per-page mapcount the 24-bit field holds.
pub(crate) const MAPCOUNT_MAX: u32 = (1 << 24) - 1;

/// The simulated physical memory.
#[derive(Debug, Clone)]
pub struct PhysMem {
    nr_frames: u32,
    nr_free: u64,
    free_lists: Vec<BTreeSet<u32>>,
    pub(crate) info: Vec<u32>,
    pub(crate) count: Vec<i32>,
    pub(crate) word: Vec<u32>,
    /// High 32 bits of folio serials by head frame; empty until a serial needs them.
    pub(crate) serial_hi: Vec<u32>,
    pub(crate) content: Vec<u64>,
    tables: TablePool,
    free_slots: Vec<u32>,
    /// The last allocation serial handed out (DESIGN.md "frame identity").
    serial: u64,
    /// The shared zero page (`zero_pfn`) and the huge zero folio's head, set at boot.
    pub(crate) zero_pfn: u32,
    pub(crate) huge_zero_pfn: u32,
    /// Deposited PTE tables by huge PMD entry (`pgtable_trans_huge_deposit`, which keeps
    /// them in the PMD table's `struct page`): key `(pmd table frame << 9) | index`.
    pub(crate) deposits: BTreeMap<u64, TableFrame>,
    /// `folio->_pincount` of the large folios that have one (issue 16), by head frame:
    /// pins are rare, so they live beside the packed arrays rather than in a tail page
    /// (an order-2 folio has no free counter word). Absent = 0.
    pub(crate) pincount: BTreeMap<u32, u32>,
    /// `NR_ANON_MAPPED`: anonymous pages mapped by at least one entry, kept where
    /// `__folio_add_rmap`/`__folio_remove_rmap` keep it (`__folio_mod_stat`).
    pub(crate) nr_anon_mapped: u64,
    /// `NR_ANON_THPS`, in pages: the pages of PMD-mapped anonymous folios.
    pub(crate) nr_anon_thps: u64,
    /// `NR_PAGETABLE`: table frames in use (every level, deposited tables included).
    pub(crate) nr_tables: u64,
    /// The per-CPU LRU-add batch (`cpu_fbatches.lru_add`): folios a fault mapped, with
    /// their serials, waiting to enter the LRU. Kept only where entering the LRU changes
    /// what the model reports (`!faulted_folios_referenced`: 6.12 clears `PG_referenced`).
    pub(crate) lru_batch: Vec<(FolioRef, u64)>,
    /// `KernelConfig::faulted_folios_referenced` of the machine's profile.
    pub(crate) faulted_folios_referenced: bool,
    /// `KernelConfig::reuses_sole_ref_large_pages` of the machine's profile.
    pub(crate) reuses_sole_ref_large_pages: bool,
    /// The deferred-split queue (`ds_queue->split_queue`), by head frame: the partially
    /// mapped large folios (`deferred_split_folio(folio, true)`) and, where
    /// `KernelConfig::queues_pmd_thp_at_fault`, every PMD-mapped THP from its fault
    /// (`deferred_split_folio(folio, false)`). Walked in ascending frame order by the
    /// shrinker (split.rs; the kernel's list is FIFO: DESIGN.md "Splits").
    pub(crate) deferred_queue: BTreeSet<u32>,
    /// `KernelConfig::queues_pmd_thp_at_fault` of the machine's profile.
    pub(crate) queues_pmd_thp_at_fault: bool,
    /// The swap device and the swap cache (issue 16, swap.rs).
    pub(crate) swap: crate::swap::SwapDevice,
}

impl PhysMem {
    /// `nr_frames` frames, all free, forming maximal aligned buddy blocks.
    ///
    /// # Panics
    /// Never for the sizes `Machine::new` accepts (it bounds `nr_frames` to `u32`).
    #[must_use]
    pub fn new(nr_frames: u32) -> Self {
        let n = nr_frames as usize;
        let mut m = Self {
            nr_frames,
            nr_free: 0,
            free_lists: vec![BTreeSet::new(); MAX_ORDER as usize + 1],
            info: vec![0; n],
            count: vec![0; n],
            word: vec![0; n],
            serial_hi: Vec::new(),
            content: vec![0; n],
            tables: TablePool::new(n),
            free_slots: Vec::new(),
            serial: 0,
            zero_pfn: 0,
            huge_zero_pfn: 0,
            deposits: BTreeMap::new(),
            pincount: BTreeMap::new(),
            nr_anon_mapped: 0,
            nr_anon_thps: 0,
            nr_tables: 0,
            lru_batch: Vec::new(),
            faulted_folios_referenced: false,
            reuses_sole_ref_large_pages: false,
            deferred_queue: BTreeSet::new(),
            queues_pmd_thp_at_fault: false,
            swap: crate::swap::SwapDevice::default(),
        };
        let mut pos: u64 = 0;
        let total = u64::from(nr_frames);
        while pos < total {
            let mut order = MAX_ORDER;
            while order > 0 && (pos % (1u64 << order) != 0 || pos + (1u64 << order) > total) {
                order -= 1;
            }
            m.push_free(pos as u32, order);
            m.nr_free += 1u64 << order;
            pos += 1u64 << order;
        }
        m
    }

    /// Total frames.
    #[must_use]
    pub fn nr_frames(&self) -> u32 {
        self.nr_frames
    }

    /// Free frames (the sum over the free lists).
    #[must_use]
    pub fn nr_free(&self) -> u64 {
        self.nr_free
    }

    /// Puts a free block on its list. Its frames' `info` is already `ST_FREE` (zero): the
    /// free lists alone say where blocks start, so that booting a large machine writes no
    /// per-frame word (the arrays stay untouched, and cost no RSS, until frames are used).
    fn push_free(&mut self, b: u32, order: u32) {
        debug_assert_eq!(self.info[b as usize], ST_FREE);
        self.free_lists[order as usize].insert(b);
    }

    /// Takes `b` off the free list of `order` if it heads a free block of that order.
    fn take_free_head(&mut self, b: u32, order: u32) -> bool {
        self.info[b as usize] & STATE_MASK == ST_FREE && self.free_lists[order as usize].remove(&b)
    }

    /// Allocates a block of `2^order` frames (`__rmqueue_smallest`): the lowest-addressed
    /// block of the smallest order `>= order` that has one, split keeping the lower half.
    /// Returns the first frame; the caller sets the frames' state.
    pub(crate) fn alloc_block(&mut self, order: u32) -> Option<u32> {
        for j in order..=MAX_ORDER {
            if let Some(b) = self.free_lists[j as usize].pop_first() {
                let mut k = j;
                while k > order {
                    k -= 1;
                    self.push_free(b + (1 << k), k);
                }
                self.nr_free -= 1u64 << order;
                return Some(b);
            }
        }
        None
    }

    /// Frees a block (`__free_one_page`): merge with the buddy while it is a free block of
    /// the same order.
    pub(crate) fn free_block(&mut self, mut b: u32, mut order: u32) {
        let nr = 1u32 << order;
        for p in b..b + nr {
            self.info[p as usize] = ST_FREE;
        }
        self.nr_free += u64::from(nr);
        while order < MAX_ORDER {
            let buddy = b ^ (1 << order);
            if u64::from(buddy) + (1u64 << order) > u64::from(self.nr_frames)
                || !self.take_free_head(buddy, order)
            {
                break;
            }
            b = b.min(buddy);
            order += 1;
        }
        self.push_free(b, order);
    }

    /// Allocates a folio stamped with the next allocation serial (`vma_alloc_folio`).
    pub(crate) fn alloc_folio(&mut self, order: u32) -> Option<FolioRef> {
        let h = self.alloc_folio_serial(order, self.serial + 1)?;
        self.serial += 1;
        Some(FolioRef::new_head(h))
    }

    /// `folio_put_refs`: drops `n` references, freeing the folio at zero. A freed folio
    /// first leaves the deferred-split queue if it waits there as partially mapped
    /// (`folio_unqueue_deferred_split`, a `DeferredUnqueue` event), then is a `FolioFree`
    /// event. Returns whether it was freed.
    // Always inlined: out of line (issue 13 moved the FolioFree event in here) it cost the
    // 4K exit benchmark about 20 instructions a page (callgrind, BENCHMARKS.md).
    #[expect(clippy::inline_always, reason = "measured: see the comment above")]
    #[inline(always)]
    pub(crate) fn folio_put_refs(&mut self, folio: FolioRef, n: u32, events: &mut Events) -> bool {
        if self.folio_ref_add(folio, -(n as i32)) != 0 {
            return false;
        }
        let (pfn, order) = (folio.pfn(), self.order(folio.pfn()));
        if order > 0 && self.folio_test_partially_mapped(folio) {
            events.emit(Event::DeferredUnqueue {
                pfn: u64::from(pfn),
                order,
            });
        }
        if order >= 2 && !self.deferred_queue.is_empty() {
            self.deferred_queue.remove(&pfn);
        }
        self.free_folio(pfn);
        events.emit(Event::FolioFree {
            pfn: u64::from(pfn),
            order,
        });
        true
    }

    /// `pgtable_trans_huge_deposit`: keeps table `t` for the huge PMD entry `(pmd_table, i)`.
    pub(crate) fn deposit(&mut self, pmd_table: TableFrame, i: usize, t: TableFrame) {
        self.deposits.insert(deposit_key(pmd_table, i), t);
    }

    /// The table deposited for `(pmd_table, i)`, left in place (for `check`).
    pub(crate) fn deposited(&self, pmd_table: TableFrame, i: usize) -> Option<TableFrame> {
        self.deposits.get(&deposit_key(pmd_table, i)).copied()
    }

    /// `pgtable_trans_huge_withdraw`: the table deposited for `(pmd_table, i)`.
    pub(crate) fn withdraw(&mut self, pmd_table: TableFrame, i: usize) -> Option<TableFrame> {
        self.deposits.remove(&deposit_key(pmd_table, i))
    }

    /// Allocates a folio of `2^order` frames with fresh counters (`prep_compound_head`):
    /// refcount 1, all mapcounts −1 (biased), both MM-ID slots free, contents zeroed
    /// (`folio_zero_user`).
    fn alloc_folio_serial(&mut self, order: u32, serial: u64) -> Option<u32> {
        let h = self.alloc_block(order)?;
        self.init_frames(h, order, ST_FOLIO);
        let hu = h as usize;
        self.count[hu] = 1;
        self.word[hu] = serial as u32;
        let hi = (serial >> 32) as u32;
        if hi != 0 && self.serial_hi.is_empty() {
            self.serial_hi = vec![0; self.nr_frames as usize];
        }
        if let Some(x) = self.serial_hi.get_mut(hu) {
            *x = hi;
        }
        if order >= 2 {
            self.count[hu + 1] = -1;
            self.count[hu + 2] = -1;
            self.count[hu + 3] = 0;
            self.word[hu + 3] = crate::folio::pack_slot_counts(-1, -1);
        }
        Some(h)
    }

    /// Marks `2^order` frames from `h` as `state` with zeroed metadata and contents.
    pub(crate) fn init_frames(&mut self, h: u32, order: u32, state: u32) {
        let hu = h as usize;
        let end = hu + (1usize << order);
        let info = state | (order << ORDER_SHIFT);
        self.info[hu..end].fill(info);
        self.count[hu..end].fill(0);
        self.word[hu..end].fill(0);
        self.content[hu..end].fill(0);
    }

    /// The carving step of `__split_huge_page` (`__split_folio_to_order` to order 0): every
    /// page of the large `folio` becomes an order-0 folio on the same frame, its refcount the
    /// number of PTEs mapping it (`remove_migration_ptes` takes one per entry), its mapcount
    /// and `PageAnonExclusive` kept, `PG_referenced` copied from the head
    /// (`__split_huge_page_tail`), the tail counters and flags (large and entire mapcount,
    /// `_nr_pages_mapped`, MM-ID slots, `PG_partially_mapped`, the exclusive memo)
    /// forgotten. Each piece keeps the folio's allocation serial, so a frame keeps its
    /// identity (DESIGN.md "frame identity"). The caller has split every PMD mapping first
    /// and checked that nothing but mappings holds a reference (`can_split_folio`).
    pub(crate) fn split_folio_frames(&mut self, folio: FolioRef) {
        let head = folio.pfn();
        let nr = 1u32 << self.order(head);
        let serial = self.folio(folio).folio_serial();
        let referenced = self.folio_test_referenced(folio);
        for p in head..head + nr {
            let pu = p as usize;
            let mapcount = self.info[pu] >> MAPCOUNT_SHIFT;
            let mut info = ST_FOLIO | (self.info[pu] & AE_BIT) | (mapcount << MAPCOUNT_SHIFT);
            if referenced {
                info |= FLAG_BIT;
            }
            self.info[pu] = info;
            self.count[pu] = mapcount as i32;
            self.word[pu] = serial as u32;
            if let Some(x) = self.serial_hi.get_mut(pu) {
                *x = (serial >> 32) as u32;
            }
        }
    }

    /// Returns a folio's frames to the buddy allocator.
    pub(crate) fn free_folio(&mut self, h: u32) {
        let order = self.order(h);
        self.free_block(h, order);
    }

    /// Allocates a page-table frame with 512 empty entries (`pte_alloc_one` & co.).
    pub(crate) fn alloc_table(&mut self) -> Option<TableFrame> {
        let pfn = self.alloc_block(0)?;
        self.init_frames(pfn, 0, ST_TABLE);
        let slot = if let Some(s) = self.free_slots.pop() {
            self.tables.table_mut(s).fill(0);
            s
        } else {
            self.tables.fresh_slot() // zero-filled by the host
        };
        self.word[pfn as usize] = slot;
        self.nr_tables += 1;
        Some(TableFrame(pfn))
    }

    /// Makes room in the table pool for `n` more tables at once (fork knows how many the
    /// child needs), so that their host memory is mapped in whole chunks up front.
    pub(crate) fn reserve_tables(&mut self, n: u64) {
        let fresh = (n as usize).saturating_sub(self.free_slots.len());
        self.tables.reserve(fresh);
    }

    /// Frees a page-table frame (`pte_free`, `pmd_free`, ...).
    pub(crate) fn free_table(&mut self, t: TableFrame) {
        debug_assert_eq!(self.state(t.0), ST_TABLE);
        self.free_slots.push(self.slot(t));
        self.free_block(t.0, 0);
        self.nr_tables -= 1;
    }

    /// Reads entry `idx` of the table in frame `table`.
    #[must_use]
    #[inline]
    pub(crate) fn entry(&self, table: TableFrame, idx: usize) -> PageTableEntry {
        PageTableEntry::from_raw(self.tables.get(self.slot(table), idx))
    }

    /// Writes entry `idx` of the table in frame `table`.
    #[inline]
    pub(crate) fn set_entry(&mut self, table: TableFrame, idx: usize, e: PageTableEntry) {
        self.tables.set(self.slot(table), idx, e.raw());
    }

    /// The table pool slot of table `table`.
    fn slot(&self, table: TableFrame) -> u32 {
        self.word[table.0 as usize]
    }

    /// The order-0 fast path of `copy_pte_range` → `copy_present_ptes` (KS §3.3): copies
    /// entries `[i, end)` of the parent table `src` into the child table `dst` while each
    /// is none or maps an order-0 folio (ref +1, `PageAnonExclusive` cleared, mapcount +1,
    /// a writable entry write-protected in both, the child's entry old). Stops at the
    /// first special entry or large folio, which the caller copies in a
    /// `folio_pte_batch`; returns that index and the pages copied. Works on the table pool
    /// and frame arrays directly: this loop is most of a fork's cost.
    pub(crate) fn copy_small_ptes(
        &mut self,
        src: TableFrame,
        dst: TableFrame,
        mut i: usize,
        end: usize,
    ) -> (usize, u64) {
        let (ss, ds) = (self.slot(src), self.slot(dst));
        // Both tables as slices (they are distinct slots of the pool), so that the loop
        // has no bounds checks on them and no slot lookup per entry.
        let (s_tab, d_tab) = self.tables.two_tables_mut(ss, ds);
        let (info, count) = (&mut self.info, &mut self.count);
        let mut pages = 0;
        while i < end {
            let pte = PageTableEntry::from_raw(s_tab[i]);
            if pte.is_none() {
                i += 1;
                continue;
            }
            // A special entry (zero page) or a not-present one (PROT_NONE, a swap entry)
            // leaves the fast path: one test of two bits.
            if pte.raw() & (PteFlags::SPECIAL.bits() | PteFlags::PRESENT.bits())
                != PteFlags::PRESENT.bits()
            {
                break;
            }
            let p = pte.pfn().as_u64() as usize;
            let inf = info[p];
            if inf & ORDER_MASK != 0 {
                break;
            }
            count[p] += 1; // folio_get
            info[p] = dup_page_info(inf);
            let writable = pte.is_writable();
            if writable {
                s_tab[i] = pte.wrprotect().raw();
            }
            d_tab[i] = cow_child_pte(pte, writable).raw();
            pages += 1;
            i += 1;
        }
        (i, pages)
    }

    /// The non-faulting accesses through the PTE table `t` from address `a` to `end`
    /// (inside one 2 MiB region), as `walk::hw_access` does them one by one: while the
    /// entry permits the access, set A (and D for a write) and load or store the page's
    /// first 8 bytes. Returns the address of the first page that would fault (or `end`).
    pub(crate) fn access_ptes(
        &mut self,
        t: TableFrame,
        mut a: u64,
        end: u64,
        write: bool,
        value: u64,
        out: &mut Option<&mut Vec<u64>>,
    ) -> u64 {
        let slot = self.slot(t);
        let tab = self.tables.table_mut(slot);
        while a < end {
            let i = ((a >> 12) & 511) as usize;
            let e = PageTableEntry::from_raw(tab[i]);
            if !hw_permits(e, write) {
                break;
            }
            tab[i] = hw_accessed(e, write).raw();
            let c = &mut self.content[e.pfn().as_u64() as usize];
            if write {
                *c = value;
            }
            if let Some(o) = out.as_deref_mut() {
                o.push(*c);
            }
            a += 4096;
        }
        a
    }

    /// `folio_pte_batch`: how many PTEs of table `t` from index `i` (below `end_i`) map
    /// consecutive pages of the folio at `h` with the same bits as `e0`, ignoring A, RW and
    /// soft-dirty (and D when `ignore_dirty`).
    pub(crate) fn folio_pte_batch(
        &self,
        t: TableFrame,
        i: usize,
        end_i: usize,
        e0: PageTableEntry,
        folio: FolioRef,
        ignore_dirty: bool,
    ) -> usize {
        let norm = |e: PageTableEntry| {
            let e = if ignore_dirty { e.mkclean() } else { e };
            e.clear_soft_dirty().mkold().wrprotect()
        };
        let p0 = e0.pfn().as_u64();
        let folio_end = u64::from(folio.pfn()) + (1u64 << self.order(folio.pfn()));
        let expected = norm(e0);
        let tab = self.table(t);
        let mut n = 1;
        while i + n < end_i && p0 + (n as u64) < folio_end {
            let e = PageTableEntry::from_raw(tab[i + n]);
            let want = expected.with_pfn(Pfn::new(p0 + n as u64));
            if !e.is_present() || norm(e) != want {
                break;
            }
            n += 1;
        }
        n
    }

    /// The 512 entries of table `t`.
    pub(crate) fn table(&self, t: TableFrame) -> &[u64] {
        self.tables.table(self.slot(t))
    }

    /// Whether any of the `nr` entries from `i` of table `t` is writable.
    pub(crate) fn any_writable(&self, t: TableFrame, i: usize, nr: usize) -> bool {
        self.table(t)[i..i + nr]
            .iter()
            .any(|&e| PageTableEntry::from_raw(e).is_writable())
    }

    /// Write-protects the `nr` entries from `i` of table `t` (`wrprotect_ptes`).
    pub(crate) fn wrprotect_ptes(&mut self, t: TableFrame, i: usize, nr: usize) {
        let slot = self.slot(t);
        for e in &mut self.tables.table_mut(slot)[i..i + nr] {
            *e = PageTableEntry::from_raw(*e).wrprotect().raw();
        }
    }

    /// Sets the `nr` entries from `i` of table `t` to `v` with consecutive frames from
    /// `v`'s (`set_ptes`).
    pub(crate) fn set_ptes(&mut self, t: TableFrame, i: usize, nr: usize, v: PageTableEntry) {
        let slot = self.slot(t);
        let p0 = v.pfn().as_u64();
        for (j, e) in self.tables.table_mut(slot)[i..i + nr]
            .iter_mut()
            .enumerate()
        {
            *e = v.with_pfn(Pfn::new(p0 + j as u64)).raw();
        }
    }

    /// The state of a frame (`ST_*`).
    #[must_use]
    pub(crate) fn state(&self, pfn: u32) -> u32 {
        self.info[pfn as usize] & STATE_MASK
    }

    /// The order of the folio (or zero folio) holding the frame.
    #[must_use]
    pub(crate) fn order(&self, pfn: u32) -> u32 {
        (self.info[pfn as usize] & ORDER_MASK) >> ORDER_SHIFT
    }

    /// Marks frames as the zero page / huge zero folio.
    pub(crate) fn mark_zero(&mut self, h: u32, order: u32) {
        self.init_frames(h, order, ST_ZERO);
    }

    /// Free blocks per order, lowest first (for tests and `check`).
    #[must_use]
    pub fn free_blocks(&self, order: u32) -> Vec<u32> {
        self.free_lists[order as usize].iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_blocks_and_split() {
        let mut m = PhysMem::new(1024 + 512);
        assert_eq!(m.free_blocks(10), vec![0]);
        assert_eq!(m.free_blocks(9), vec![1024]);
        // The smallest order with a free block wins: the trailing order-9 block.
        assert_eq!(m.alloc_block(0), Some(1024));
        assert_eq!(m.alloc_block(9), Some(0));
        assert_eq!(m.alloc_block(0), Some(1025));
        assert_eq!(m.free_blocks(9), vec![512]);
        assert_eq!(m.free_blocks(1), vec![1026]);
        assert_eq!(m.nr_free(), 1536 - 514);
    }

    #[test]
    fn free_merges_back() {
        let mut m = PhysMem::new(2048);
        let a = m.alloc_block(0).unwrap();
        let b = m.alloc_block(3).unwrap();
        let c = m.alloc_block(9).unwrap();
        assert_eq!((a, b, c), (0, 8, 512));
        m.free_block(b, 3);
        m.free_block(a, 0);
        m.free_block(c, 9);
        assert_eq!(m.free_blocks(10), vec![0, 1024]);
        assert_eq!(m.nr_free(), 2048);
        for o in 0..10 {
            assert!(m.free_blocks(o).is_empty());
        }
    }

    #[test]
    fn exhaustion() {
        let mut m = PhysMem::new(512);
        assert_eq!(m.alloc_block(10), None);
        assert_eq!(m.alloc_block(9), Some(0));
        assert_eq!(m.alloc_block(0), None);
    }

    #[test]
    fn serials_past_u32_and_untouched_boot() {
        let mut m = PhysMem::new(2048);
        assert!(
            m.info.iter().all(|&i| i == 0),
            "boot writes no per-frame word"
        );
        let a = m.alloc_folio_serial(0, 7).unwrap();
        assert!(m.serial_hi.is_empty());
        let b = m.alloc_folio_serial(4, (3 << 32) | 9).unwrap();
        assert_eq!(m.serial_hi.len(), 2048);
        let c = m.alloc_folio_serial(0, 11).unwrap();
        assert_eq!(
            [a, b, c].map(|h| m.folio(FolioRef::new_head(h)).folio_serial()),
            [7, (3 << 32) | 9, 11]
        );
    }

    #[test]
    fn tables_recycle_slots() {
        let mut m = PhysMem::new(512);
        let t = m.alloc_table().unwrap();
        m.set_entry(t, 3, PageTableEntry::from_raw(42));
        assert_eq!(m.entry(t, 3).raw(), 42);
        m.free_table(t);
        let t2 = m.alloc_table().unwrap();
        assert_eq!(t2, t);
        assert_eq!(m.entry(t2, 3).raw(), 0);
    }
}
