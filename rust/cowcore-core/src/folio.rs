//! Folio metadata and the rmap counter updates (mm/rmap.c, include/linux/rmap.h).
//!
//! Folios live in the per-frame arrays of [`PhysMem`]; the functions here are the kernel's
//! counter updates on them, with `CONFIG_PAGE_MAPCOUNT` (per-page mapcounts and
//! `_nr_pages_mapped` are maintained) and `CONFIG_MM_ID` (two MM-owner slots and the
//! "maybe mapped shared" bit). Large mapcount, entire mapcount and slot counts are stored
//! biased by −1 exactly as the kernel stores them (KS §1.2); per-page mapcounts are stored
//! logically in the 24-bit field of the frame's `info` word.

use crate::events::{Event, Events};
use crate::physmem::{
    dup_page_info, PhysMem, AE_BIT, FLAG_BIT, MAPCOUNT_MAX, MAPCOUNT_SHIFT, ST_FOLIO,
};

/// `GUP_PIN_COUNTING_BIAS` (include/linux/mm.h): the references one `FOLL_PIN` adds to a
/// small folio.
pub const GUP_PIN_COUNTING_BIAS: u32 = 1024;
/// `ENTIRELY_MAPPED`: the bias `_nr_pages_mapped` carries while a PMD maps the folio.
pub const ENTIRELY_MAPPED: i32 = 0x80_0000;
/// `FOLIO_PAGES_MAPPED`: mask of the page count in `_nr_pages_mapped`.
pub const FOLIO_PAGES_MAPPED: i32 = ENTIRELY_MAPPED - 1;
/// `PAGEVEC_SIZE`: the folios a per-CPU LRU batch holds.
pub(crate) const LRU_BATCH_SIZE: usize = 31;
/// `MM_ID_DUMMY`: a free slot.
pub const MM_ID_DUMMY: u32 = 0;
/// `MM_ID_MASK`.
const MM_ID_MASK: u32 = 0x7fff_ffff;
/// `FOLIO_MM_IDS_SHARED_BITNUM` (bit 63 of the kernel's `_mm_ids`; bit 31 of MM id 0's
/// word here).
const SHARED_BIT: u32 = 1 << 31;

/// Packs the two `_mm_id_mapcount` slots (biased, each in `-1..=512`) into one word.
#[must_use]
pub(crate) fn pack_slot_counts(c0: i32, c1: i32) -> u32 {
    debug_assert!((-1..=i32::from(i16::MAX)).contains(&c0));
    debug_assert!((-1..=i32::from(i16::MAX)).contains(&c1));
    u32::from(c0 as i16 as u16) | (u32::from(c1 as i16 as u16) << 16)
}

/// A snapshot of one folio's counters, logical (unbiased), as `FolioRow` reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolioInfo {
    /// Head frame.
    pub pfn: u64,
    /// Folio order.
    pub order: u32,
    /// `folio_ref_count`.
    pub refcount: i64,
    /// Per-page PTE mapcounts (logical).
    pub page_mapcounts: Vec<u32>,
    /// `folio_large_mapcount`; for an order-0 folio the page's mapcount.
    pub large_mapcount: i64,
    /// `folio_entire_mapcount`.
    pub entire_mapcount: i64,
    /// `_nr_pages_mapped & FOLIO_PAGES_MAPPED`.
    pub nr_pages_mapped: i64,
    /// MM-ID slots: `(mm id, logical count)`; `(0, 0)` when free.
    pub mm_ids: [(u32, i64); 2],
    /// The "maybe mapped shared" bit.
    pub maybe_mapped_shared: bool,
    /// `PageAnonExclusive` per page.
    pub anon_exclusive: Vec<bool>,
    /// Allocation serial.
    pub serial: u64,
    /// `_pincount`: the `FOLL_PIN` pins of a large folio's pages; 0 for an order-0 folio,
    /// whose pins are in `refcount` (`GUP_PIN_COUNTING_BIAS` each).
    pub pincount: u32,
    /// `folio->swap` while the folio is in the swap cache (`folio_test_swapcache`): the
    /// first of its `1 << order` consecutive slots; `None` outside the cache.
    pub swap_slot: Option<u32>,
}

/// A folio, by its head frame (`struct folio *`): what the refcount and rmap functions
/// take. Only [`PhysMem::page_folio`] and the allocator make one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct FolioRef(u32);

impl FolioRef {
    /// The head frame (`folio_pfn`).
    #[inline]
    pub(crate) const fn pfn(self) -> u32 {
        self.0
    }

    /// The folio whose head the allocator has just handed out at frame `head`.
    #[inline]
    pub(crate) const fn new_head(head: u32) -> Self {
        Self(head)
    }
}

/// A read-only view of one folio's counters in the packed per-frame arrays of
/// [`PhysMem`] (a borrow and the head frame; nothing is copied). The accessors are the
/// kernel's, with their logical (unbiased) values.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Folio<'a> {
    mem: &'a PhysMem,
    head: u32,
}

impl Folio<'_> {
    /// The handle of this folio.
    #[inline]
    pub(crate) fn folio_ref(self) -> FolioRef {
        FolioRef(self.head)
    }

    /// `folio_order`.
    #[inline]
    pub(crate) fn folio_order(self) -> u32 {
        self.mem.order(self.head)
    }

    /// `folio_nr_pages`.
    #[inline]
    pub(crate) fn folio_nr_pages(self) -> u32 {
        1 << self.folio_order()
    }

    /// `folio_test_large`.
    #[inline]
    pub(crate) fn folio_test_large(self) -> bool {
        self.mem.is_large(self.head)
    }

    /// `folio_ref_count`.
    #[inline]
    pub(crate) fn folio_ref_count(self) -> i32 {
        self.mem.refcount(self.head)
    }

    /// `folio_mapcount`: the large mapcount, or the page's mapcount for order 0.
    #[inline]
    pub(crate) fn folio_mapcount(self) -> i32 {
        self.mem.folio_mapcount(self.head)
    }

    /// `folio_large_mapcount` (large folios only).
    #[inline]
    pub(crate) fn folio_large_mapcount(self) -> i32 {
        debug_assert!(self.folio_test_large());
        self.mem.large_mapcount_raw(self.head) + 1
    }

    /// `folio_entire_mapcount` (0 for order 0).
    #[inline]
    pub(crate) fn folio_entire_mapcount(self) -> i32 {
        self.mem.entire_mapcount(self.head)
    }

    /// Raw `_nr_pages_mapped`, with the `ENTIRELY_MAPPED` bias.
    #[inline]
    pub(crate) fn folio_nr_pages_mapped_raw(self) -> i32 {
        self.mem.nr_pages_mapped_raw(self.head)
    }

    /// The MM-ID slots (`_mm_ids`, `_mm_id_mapcount`) of a large folio.
    #[inline]
    pub(crate) fn folio_mm_slots(self) -> Slots {
        self.mem.slots(self.head)
    }

    /// `folio_maybe_mapped_shared` (6.15).
    #[inline]
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn folio_maybe_mapped_shared(self) -> bool {
        self.mem.maybe_mapped_shared(self.head)
    }

    /// The `cow_reuse_remember_exclusive` memo (a policy, no kernel has it): an earlier
    /// write fault found this large folio exclusive to the mm that maps it, and its mapcount
    /// has not changed since ([`PhysMem::folio_set_exclusive_memo`]).
    #[inline]
    pub(crate) fn folio_test_exclusive_memo(self) -> bool {
        self.folio_test_large() && self.mem.info[self.head as usize + 2] & FLAG_BIT != 0
    }

    /// `folio_test_referenced`.
    #[inline]
    pub(crate) fn folio_test_referenced(self) -> bool {
        self.mem.folio_test_referenced(self.folio_ref())
    }

    /// The allocation serial (DESIGN.md "frame identity").
    #[inline]
    pub(crate) fn folio_serial(self) -> u64 {
        self.mem.serial(self.head)
    }

    /// `PageAnonExclusive` of page `i` of the folio (`folio_page(folio, i)`).
    #[inline]
    pub(crate) fn folio_test_anon_exclusive(self, i: u32) -> bool {
        self.mem.anon_exclusive(self.head + i)
    }

    /// The logical PTE mapcount of page `i` of the folio.
    #[inline]
    pub(crate) fn folio_page_mapcount(self, i: u32) -> u32 {
        self.mem.page_mapcount(self.head + i)
    }
}

/// The MM-ID slot state of a large folio (the unpacked `_mm_ids`/`_mm_id_mapcount`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slots {
    pub ids: [u32; 2],
    pub counts: [i32; 2],
    pub shared: bool,
}

impl PhysMem {
    /// `page_folio`: the folio holding frame `pfn`, which must be a folio's frame.
    #[inline]
    pub(crate) fn page_folio(&self, pfn: u32) -> FolioRef {
        debug_assert!(self.is_folio(pfn));
        FolioRef(self.folio_head(pfn))
    }

    /// The view of a folio's counters.
    #[inline]
    pub(crate) fn folio(&self, f: FolioRef) -> Folio<'_> {
        Folio {
            mem: self,
            head: f.0,
        }
    }

    /// The head frame of the folio holding `pfn` (`page_folio`): folios are naturally
    /// aligned buddy blocks, so the head is the frame rounded down to the folio size.
    #[must_use]
    fn folio_head(&self, pfn: u32) -> u32 {
        let order = self.order(pfn);
        pfn & !((1u32 << order) - 1)
    }

    /// Whether `pfn` belongs to an anonymous folio (not free, not a table or zero page).
    #[must_use]
    pub(crate) fn is_folio(&self, pfn: u32) -> bool {
        self.state(pfn) == ST_FOLIO
    }

    /// `PageAnonExclusive`.
    #[must_use]
    pub(crate) fn anon_exclusive(&self, pfn: u32) -> bool {
        self.info[pfn as usize] & AE_BIT != 0
    }

    /// `SetPageAnonExclusive` / `ClearPageAnonExclusive`.
    pub(crate) fn set_anon_exclusive(&mut self, pfn: u32, on: bool) {
        let i = &mut self.info[pfn as usize];
        if on {
            *i |= AE_BIT;
        } else {
            *i &= !AE_BIT;
        }
    }

    /// The logical PTE mapcount of one page (`page->_mapcount + 1`).
    #[must_use]
    pub(crate) fn page_mapcount(&self, pfn: u32) -> u32 {
        self.info[pfn as usize] >> MAPCOUNT_SHIFT
    }

    fn page_mapcount_inc(&mut self, pfn: u32) -> bool {
        let i = &mut self.info[pfn as usize];
        let c = *i >> MAPCOUNT_SHIFT;
        debug_assert!(c < MAPCOUNT_MAX);
        *i = (*i & ((1 << MAPCOUNT_SHIFT) - 1)) | ((c + 1) << MAPCOUNT_SHIFT);
        c == 0
    }

    fn page_mapcount_dec(&mut self, pfn: u32) -> bool {
        let i = &mut self.info[pfn as usize];
        let c = *i >> MAPCOUNT_SHIFT;
        debug_assert!(c > 0);
        let n = c.saturating_sub(1);
        *i = (*i & ((1 << MAPCOUNT_SHIFT) - 1)) | (n << MAPCOUNT_SHIFT);
        n == 0
    }

    /// `folio_ref_count`.
    #[must_use]
    fn refcount(&self, head: u32) -> i32 {
        self.count[head as usize]
    }

    /// `folio_ref_add` (negative to subtract); returns the new count.
    pub(crate) fn folio_ref_add(&mut self, folio: FolioRef, n: i32) -> i32 {
        let head = folio.0;
        let c = &mut self.count[head as usize];
        *c += n;
        *c
    }

    /// `folio_test_large`.
    #[must_use]
    fn is_large(&self, head: u32) -> bool {
        self.order(head) > 0
    }

    /// Raw (biased) `_large_mapcount`.
    #[must_use]
    fn large_mapcount_raw(&self, head: u32) -> i32 {
        self.count[head as usize + 1]
    }

    /// `folio_mapcount`: logical large mapcount, or the page's mapcount for order 0.
    #[must_use]
    fn folio_mapcount(&self, head: u32) -> i32 {
        if self.is_large(head) {
            self.large_mapcount_raw(head) + 1
        } else {
            self.page_mapcount(head) as i32
        }
    }

    /// `folio_entire_mapcount` (0 for order 0).
    #[must_use]
    fn entire_mapcount(&self, head: u32) -> i32 {
        if self.is_large(head) {
            self.count[head as usize + 2] + 1
        } else {
            0
        }
    }

    /// Raw `_nr_pages_mapped` (with the `ENTIRELY_MAPPED` bias).
    #[must_use]
    fn nr_pages_mapped_raw(&self, head: u32) -> i32 {
        if self.is_large(head) {
            self.count[head as usize + 3]
        } else {
            0
        }
    }

    /// The MM-ID slots of a large folio.
    #[must_use]
    fn slots(&self, head: u32) -> Slots {
        let h = head as usize;
        let (id0, id1, counts) = (self.word[h + 1], self.word[h + 2], self.word[h + 3]);
        Slots {
            ids: [id0 & MM_ID_MASK, id1 & MM_ID_MASK],
            counts: [
                i32::from(counts as u16 as i16),
                i32::from((counts >> 16) as u16 as i16),
            ],
            shared: id0 & SHARED_BIT != 0,
        }
    }

    fn set_slots(&mut self, head: u32, s: Slots) {
        let h = head as usize;
        self.word[h + 1] = if s.shared {
            s.ids[0] | SHARED_BIT
        } else {
            s.ids[0]
        };
        self.word[h + 2] = s.ids[1];
        self.word[h + 3] = pack_slot_counts(s.counts[0], s.counts[1]);
    }

    /// The allocation serial of the folio.
    #[must_use]
    fn serial(&self, head: u32) -> u64 {
        let hi = self.serial_hi.get(head as usize).copied().unwrap_or(0);
        u64::from(self.word[head as usize]) | (u64::from(hi) << 32)
    }

    /// `folio_maybe_mapped_shared` (6.15): small → mapcount > 1; large → mapcount > 1 and
    /// the shared bit.
    #[must_use]
    #[cfg_attr(not(test), allow(dead_code))]
    fn maybe_mapped_shared(&self, head: u32) -> bool {
        let mc = self.folio_mapcount(head);
        if !self.is_large(head) || mc <= 1 {
            return mc > 1;
        }
        self.slots(head).shared
    }

    /// Sets the `cow_reuse_remember_exclusive` memo of a large folio that
    /// `__wp_can_reuse_large_anon_folio` has just found exclusive to the faulting mm. It
    /// lives in bit 7 of the second tail page's `info` word (physmem.rs; a kernel would use
    /// the free bit 62 of `folio->_mm_ids`, next to the shared bit) and is forgotten by every
    /// change of the large mapcount ([`Self::forget_exclusive_memo`]).
    pub(crate) fn folio_set_exclusive_memo(&mut self, folio: FolioRef) {
        debug_assert!(self.is_large(folio.0));
        self.info[folio.0 as usize + 2] |= FLAG_BIT;
    }

    /// Forgets the exclusive memo: called by every update of the large mapcount (the
    /// kernel's `folio_add/sub_return_large_mapcount`, under the mapcount lock), so that a
    /// memo never survives another mm mapping the folio (fork's dup), a mapping going
    /// (munmap, exit, `MADV_DONTNEED`, a COW copy) or a PMD being remapped by PTEs. A
    /// reference that is not a mapping forgets it too ([`Self::gup_grab_folio`]: `ref`,
    /// `pin`, the short pin of `unshare`; the swap cache is not modelled yet); a split
    /// re-initialises the tail pages and so forgets it.
    #[inline]
    fn forget_exclusive_memo(&mut self, head: u32) {
        self.info[head as usize + 2] &= !FLAG_BIT;
    }

    /// `try_grab_folio(folio, refs, flags)` (mm/gup.c) for `refs` pages of `folio`:
    /// `FOLL_GET` adds `refs` references; `FOLL_PIN` adds `refs` references and `refs` to
    /// `_pincount` on a large folio, `refs * GUP_PIN_COUNTING_BIAS` references on a small
    /// one. Either way the `cow_reuse_remember_exclusive` memo is forgotten: the folio now
    /// has a reference that is not a mapping (DESIGN.md "Policies").
    pub(crate) fn gup_grab_folio(&mut self, folio: FolioRef, refs: u32, pin: bool) {
        let head = folio.0;
        if self.is_large(head) {
            self.forget_exclusive_memo(head);
            if pin {
                *self.pincount.entry(head).or_insert(0) += refs;
            }
            self.folio_ref_add(folio, refs as i32);
        } else if pin {
            self.folio_ref_add(folio, (refs * GUP_PIN_COUNTING_BIAS) as i32);
        } else {
            self.folio_ref_add(folio, refs as i32);
        }
    }

    /// `gup_put_folio(folio, refs, flags)` (mm/gup.c): the reverse of
    /// [`Self::gup_grab_folio`], `folio_put_refs` last (the folio is freed when that was
    /// its last reference: a reference can outlive every mapping).
    pub(crate) fn gup_put_folio(
        &mut self,
        folio: FolioRef,
        refs: u32,
        pin: bool,
        events: &mut Events,
    ) {
        let head = folio.0;
        let n = if self.is_large(head) {
            if pin {
                let c = self
                    .pincount
                    .get_mut(&head)
                    .expect("a pinned large folio has a pincount");
                *c -= refs;
                if *c == 0 {
                    self.pincount.remove(&head);
                }
            }
            refs
        } else if pin {
            refs * GUP_PIN_COUNTING_BIAS
        } else {
            refs
        };
        self.folio_put_refs(folio, n, events);
    }

    /// `folio_maybe_dma_pinned` (include/linux/mm.h): a large folio with `_pincount > 0`,
    /// or a small one whose refcount reaches `GUP_PIN_COUNTING_BIAS` (a false positive with
    /// 1024 plain references, as in the kernel).
    #[must_use]
    #[inline]
    pub(crate) fn folio_maybe_dma_pinned(&self, folio: FolioRef) -> bool {
        if self.is_large(folio.0) {
            self.pincount.contains_key(&folio.0)
        } else {
            self.refcount(folio.0) as u32 >= GUP_PIN_COUNTING_BIAS
        }
    }

    /// `folio->_pincount` (0 for a small folio, whose pins hide in the refcount).
    #[must_use]
    pub(crate) fn folio_pincount(&self, folio: FolioRef) -> u32 {
        self.pincount.get(&folio.0).copied().unwrap_or(0)
    }

    /// `folio_set_large_mapcount(folio, n, vma)` (rmap.h): only for a brand-new folio.
    fn set_large_mapcount(&mut self, head: u32, n: i32, mm_id: u32) {
        self.forget_exclusive_memo(head);
        self.count[head as usize + 1] = n - 1;
        let mut s = self.slots(head);
        s.ids[0] = mm_id;
        s.counts[0] = n - 1;
        self.set_slots(head, s);
    }

    /// `folio_add_large_mapcount(folio, diff, vma)` (6.15, KS §1.5).
    fn add_large_mapcount(&mut self, head: u32, diff: i32, mm_id: u32) {
        self.forget_exclusive_memo(head);
        let new = self.count[head as usize + 1] + diff;
        self.count[head as usize + 1] = new;
        let mut s = self.slots(head);
        if s.ids[0] == mm_id {
            s.counts[0] += diff;
        } else if s.ids[1] == mm_id {
            s.counts[1] += diff;
        } else if s.ids[0] == MM_ID_DUMMY {
            s.ids[0] = mm_id;
            s.counts[0] = diff - 1;
            if new != diff - 1 {
                s.shared = true;
            }
        } else if s.ids[1] == MM_ID_DUMMY {
            s.ids[1] = mm_id;
            s.counts[1] = diff - 1;
            s.shared = true;
        }
        self.set_slots(head, s);
    }

    /// `folio_sub_large_mapcount(folio, diff, vma)` (6.15, KS §1.5).
    fn sub_large_mapcount(&mut self, head: u32, diff: i32, mm_id: u32) {
        self.forget_exclusive_memo(head);
        let new = self.count[head as usize + 1] - diff;
        self.count[head as usize + 1] = new;
        let mut s = self.slots(head);
        for i in 0..2 {
            if s.ids[i] == mm_id {
                s.counts[i] -= diff;
                if s.counts[i] >= 0 {
                    self.set_slots(head, s);
                    return;
                }
                s.counts[i] = -1;
                s.ids[i] = MM_ID_DUMMY;
                break;
            }
        }
        if s.counts[0] == new || s.counts[1] == new {
            s.shared = false;
        }
        self.set_slots(head, s);
    }

    /// `folio_add_new_anon_rmap(folio, vma, addr, RMAP_EXCLUSIVE)`: the first mapping of a
    /// new folio. Order 9 is assumed PMD-mapped (entire 1, large 1, AE on the head only);
    /// smaller orders are PTE-mapped in full. Does not touch the refcount. `NR_ANON_MAPPED`
    /// gains every page, `NR_ANON_THPS` the PMD-mapped ones (`__folio_mod_stat`).
    #[inline]
    pub(crate) fn add_new_anon_rmap(&mut self, folio: FolioRef, mm_id: u32) {
        let head = folio.0;
        let order = self.order(head);
        self.nr_anon_mapped += 1 << order;
        if order == 0 {
            self.page_mapcount_inc(head);
            self.set_anon_exclusive(head, true);
        } else if order < crate::addr::PMD_ORDER {
            let nr = 1u32 << order;
            for p in head..head + nr {
                self.page_mapcount_inc(p);
                self.set_anon_exclusive(p, true);
            }
            self.set_large_mapcount(head, nr as i32, mm_id);
            self.count[head as usize + 3] = nr as i32;
        } else {
            self.nr_anon_thps += 1 << order;
            if self.queues_pmd_thp_at_fault {
                // map_anon_folio_pmd: deferred_split_folio(folio, false), for the
                // shrinker's thp_underused check (split.rs). A THP that MADV_COLLAPSE maps
                // comes through here too and is queued as the kernel queues it
                // (collapse_huge_page; recorded: split-collapsed-underused).
                self.deferred_queue.insert(head);
            }
            self.count[head as usize + 2] = 0;
            self.set_large_mapcount(head, 1, mm_id);
            self.count[head as usize + 3] = ENTIRELY_MAPPED;
            self.set_anon_exclusive(head, true);
        }
    }

    /// `folio_add_anon_rmap_ptes(folio, page, nr, vma, addr, flags)` (PTE level): per-page
    /// mapcounts, `_nr_pages_mapped`, then the large mapcount; AE on the nr pages if
    /// `exclusive`. Pages newly mapped count in `NR_ANON_MAPPED` unless a PMD maps the
    /// folio already (then they were counted with it).
    pub(crate) fn add_anon_rmap_ptes(
        &mut self,
        folio: FolioRef,
        first: u32,
        nr: u32,
        mm_id: u32,
        exclusive: bool,
    ) {
        let head = folio.0;
        if self.is_large(head) {
            let mut newly = 0;
            for p in first..first + nr {
                if self.page_mapcount_inc(p) {
                    newly += 1;
                }
            }
            let mapped = &mut self.count[head as usize + 3];
            *mapped += newly;
            if *mapped < ENTIRELY_MAPPED {
                self.nr_anon_mapped += newly as u64;
            }
            self.add_large_mapcount(head, nr as i32, mm_id);
        } else if self.page_mapcount_inc(head) {
            self.nr_anon_mapped += 1;
        }
        if exclusive {
            for p in first..first + nr {
                self.set_anon_exclusive(p, true);
            }
        }
    }

    /// `folio_remove_rmap_ptes(folio, page, nr, vma)`: large mapcount first, then the
    /// per-page mapcounts and `_nr_pages_mapped`; pages no entry maps any more leave
    /// `NR_ANON_MAPPED` unless a PMD still maps the folio. Never touches the refcount.
    ///
    /// Returns `partially_mapped` of `__folio_remove_rmap` (`CONFIG_PAGE_MAPCOUNT`): some
    /// page became unmapped while others stay mapped by PTEs, no PMD mapping the folio;
    /// the caller then queues it for deferred split ([`Self::deferred_split_folio`]).
    #[must_use = "a partially mapped folio goes on the deferred-split queue"]
    #[expect(
        clippy::inline_always,
        reason = "hot in zap and COW; measured with callgrind"
    )]
    #[inline(always)]
    pub(crate) fn remove_rmap_ptes(
        &mut self,
        folio: FolioRef,
        first: u32,
        nr: u32,
        mm_id: u32,
    ) -> bool {
        let head = folio.0;
        if self.is_large(head) {
            self.sub_large_mapcount(head, nr as i32, mm_id);
            let mut last = 0;
            for p in first..first + nr {
                if self.page_mapcount_dec(p) {
                    last += 1;
                }
            }
            let mapped = &mut self.count[head as usize + 3];
            *mapped -= last;
            if last > 0 && *mapped < ENTIRELY_MAPPED {
                self.nr_anon_mapped -= last as u64;
                return *mapped != 0;
            }
        } else if self.page_mapcount_dec(head) {
            self.nr_anon_mapped -= 1;
        }
        false
    }

    /// `folio_remove_rmap_pmd(folio, page, vma)`. When the last PMD goes, the pages no PTE
    /// maps leave `NR_ANON_MAPPED` and the folio leaves `NR_ANON_THPS`.
    ///
    /// Returns `partially_mapped` (`CONFIG_PAGE_MAPCOUNT`): the last PMD went while some
    /// but not all pages stay mapped by PTEs.
    #[must_use = "a partially mapped folio goes on the deferred-split queue"]
    pub(crate) fn remove_rmap_pmd(&mut self, folio: FolioRef, mm_id: u32) -> bool {
        let head = folio.0;
        self.sub_large_mapcount(head, 1, mm_id);
        let e = &mut self.count[head as usize + 2];
        *e -= 1;
        if *e != -1 {
            return false;
        }
        let mapped = &mut self.count[head as usize + 3];
        *mapped -= ENTIRELY_MAPPED;
        let nr_pages = 1u64 << self.order(head);
        let nr = nr_pages - self.count[head as usize + 3] as u64;
        self.nr_anon_mapped -= nr;
        self.nr_anon_thps -= nr_pages;
        nr > 0 && nr < nr_pages
    }

    /// `folio_test_referenced` (`PG_referenced`, on the head page).
    #[must_use]
    #[inline]
    pub(crate) fn folio_test_referenced(&self, folio: FolioRef) -> bool {
        self.info[folio.0 as usize] & FLAG_BIT != 0
    }

    fn set_referenced(&mut self, folio: FolioRef, on: bool) {
        let i = &mut self.info[folio.0 as usize];
        if on {
            *i |= FLAG_BIT;
        } else {
            *i &= !FLAG_BIT;
        }
    }

    /// `folio_mark_accessed` (as a GUP with `FOLL_TOUCH` calls it on a PTE-mapped page):
    /// `PG_referenced` (under MGLRU, `lru_gen_inc_refs` sets it first, then counts tiers the
    /// model does not report).
    pub(crate) fn folio_mark_accessed(&mut self, folio: FolioRef) {
        self.set_referenced(folio, true);
    }

    /// `folio_add_lru` of a folio a fault has just mapped. Where faulted folios are marked
    /// referenced (7.x), that is all. Otherwise (6.12) the folio waits in the per-CPU batch
    /// of 31 (`PAGEVEC_SIZE`); a large folio, or the batch filling up, moves the whole batch
    /// to the LRU at once (`folio_batch_add_and_move`).
    #[inline]
    pub(crate) fn folio_add_lru(&mut self, folio: FolioRef) {
        if self.faulted_folios_referenced {
            self.set_referenced(folio, true);
            return;
        }
        self.lru_batch_add(folio);
    }

    /// The 6.12 half of [`Self::folio_add_lru`], out of line.
    #[inline(never)]
    fn lru_batch_add(&mut self, folio: FolioRef) {
        let serial = self.folio(folio).folio_serial();
        self.lru_batch.push((folio, serial));
        if self.folio(folio).folio_test_large() || self.lru_batch.len() == LRU_BATCH_SIZE {
            self.lru_add_drain();
        }
    }

    /// Whether `folio` waits in the LRU-add batch (`!folio_test_lru`).
    #[must_use]
    #[inline]
    pub(crate) fn folio_in_lru_batch(&self, folio: FolioRef) -> bool {
        !self.lru_batch.is_empty() && self.lru_batch.iter().any(|&(f, _)| f == folio)
    }

    /// `lru_add_drain`: every folio of the batch enters the LRU, which on 6.12's MGLRU
    /// clears its `PG_referenced` (`lru_gen_add_folio`). A folio freed meanwhile (its frames
    /// reused, so the serial differs) is skipped; the kernel's batch would have held it.
    #[inline]
    pub(crate) fn lru_add_drain(&mut self) {
        if !self.lru_batch.is_empty() {
            self.lru_add_drain_batch();
        }
    }

    #[inline(never)]
    fn lru_add_drain_batch(&mut self) {
        for i in 0..self.lru_batch.len() {
            let (f, serial) = self.lru_batch[i];
            let alive = self.is_folio(f.0) && self.page_folio(f.0) == f;
            if alive && self.folio(f).folio_serial() == serial {
                self.set_referenced(f, false);
            }
        }
        self.lru_batch.clear();
    }

    /// `folio_test_partially_mapped`: the folio waits on the deferred-split queue as
    /// partially mapped (`PG_partially_mapped`, on the first tail page).
    #[must_use]
    pub(crate) fn folio_test_partially_mapped(&self, folio: FolioRef) -> bool {
        self.is_large(folio.0) && self.info[folio.0 as usize + 1] & FLAG_BIT != 0
    }

    /// `deferred_split_folio(folio, true)` after `__folio_remove_rmap` found the folio
    /// partially mapped: the first time, it is flagged and queued, which the kernel counts
    /// (`MTHP_STAT_SPLIT_DEFERRED`, `THP_DEFERRED_SPLIT_PAGE` for PMD size, and
    /// `MTHP_STAT_NR_ANON_PARTIALLY_MAPPED` + 1): a `DeferredSplit` event. Orders below 2
    /// have no deferred list (nothing happens), as in the kernel.
    #[cold]
    pub(crate) fn deferred_split_folio(&mut self, folio: FolioRef, events: &mut Events) {
        let order = self.order(folio.0);
        // A folio in the swap cache is reclaim's business, not the shrinker's.
        if order < 2
            || self.folio_test_partially_mapped(folio)
            || self.swap.folio_swap(folio.0).is_some()
        {
            return;
        }
        self.info[folio.0 as usize + 1] |= FLAG_BIT;
        self.deferred_queue.insert(folio.0);
        events.emit(Event::DeferredSplit {
            pfn: u64::from(folio.0),
            order,
        });
    }

    /// `folio_try_dup_anon_rmap_ptes(folio, page, nr, dst_vma)` without pins: clear AE on
    /// the pages, per-page mapcounts +1, then the large mapcount with the **child's** mm id.
    pub(crate) fn dup_anon_rmap_ptes(&mut self, folio: FolioRef, first: u32, nr: u32, child: u32) {
        let head = folio.0;
        for i in &mut self.info[first as usize..(first + nr) as usize] {
            *i = dup_page_info(*i);
        }
        if self.is_large(head) {
            self.add_large_mapcount(head, nr as i32, child);
        }
    }

    /// `folio_try_dup_anon_rmap_pmd(folio, page, dst_vma)` without pins: clear AE on the
    /// head, entire +1, large +1 with the child's mm id.
    pub(crate) fn dup_anon_rmap_pmd(&mut self, folio: FolioRef, child: u32) {
        let head = folio.0;
        self.set_anon_exclusive(head, false);
        self.count[head as usize + 2] += 1;
        self.add_large_mapcount(head, 1, child);
    }

    /// Snapshot of a folio's counters (the `FolioRow` of the protocol).
    #[must_use]
    pub(crate) fn folio_info(&self, folio: FolioRef) -> FolioInfo {
        let f = self.folio(folio);
        let nr = f.folio_nr_pages();
        let s = if f.folio_test_large() {
            f.folio_mm_slots()
        } else {
            Slots {
                ids: [0, 0],
                counts: [-1, -1],
                shared: false,
            }
        };
        FolioInfo {
            pfn: u64::from(folio.pfn()),
            order: f.folio_order(),
            refcount: i64::from(f.folio_ref_count()),
            page_mapcounts: (0..nr).map(|i| f.folio_page_mapcount(i)).collect(),
            large_mapcount: i64::from(f.folio_mapcount()),
            entire_mapcount: i64::from(f.folio_entire_mapcount()),
            nr_pages_mapped: i64::from(f.folio_nr_pages_mapped_raw() & FOLIO_PAGES_MAPPED),
            mm_ids: [
                (s.ids[0], i64::from(s.counts[0]) + 1),
                (s.ids[1], i64::from(s.counts[1]) + 1),
            ],
            maybe_mapped_shared: s.shared,
            anon_exclusive: (0..nr).map(|i| f.folio_test_anon_exclusive(i)).collect(),
            serial: f.folio_serial(),
            pincount: self.folio_pincount(folio),
            swap_slot: self.swap.folio_swap(folio.pfn()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem_with_folio(order: u32) -> (PhysMem, FolioRef) {
        let mut m = PhysMem::new(2048);
        let h = m.alloc_folio(order).unwrap();
        (m, h)
    }

    /// KS Appendix A, steps 1–4b (64 KiB mTHP, `PAGE_MAPCOUNT`).
    #[test]
    fn appendix_a_slots() {
        let (mut m, f) = mem_with_folio(4);
        let h = f.pfn();
        m.folio_ref_add(f, 15);
        m.add_new_anon_rmap(f, 1);
        let s = m.slots(h);
        assert_eq!((s.ids, s.counts, s.shared), ([1, 0], [15, -1], false));
        assert_eq!(m.folio_mapcount(h), 16);
        // fork: child mm 2 dups the 16 PTEs in one batch.
        m.folio_ref_add(f, 16);
        m.dup_anon_rmap_ptes(f, h, 16, 2);
        let s = m.slots(h);
        assert_eq!((s.ids, s.counts, s.shared), ([1, 2], [15, 15], true));
        assert!(!m.anon_exclusive(h + 3));
        assert_eq!(m.page_mapcount(h + 3), 2);
        // child exits: its slot frees, slot0 owns all 16 → shared clears.
        assert!(!m.remove_rmap_ptes(f, h, 16, 2)); // mm 1 still maps every page
        m.folio_ref_add(f, -16);
        let s = m.slots(h);
        assert_eq!((s.ids, s.counts, s.shared), ([1, 0], [15, -1], false));
        assert_eq!(m.folio_mapcount(h), m.refcount(h));
        assert_eq!(m.nr_pages_mapped_raw(h), 16);
    }

    /// Three MMs: the untracked one leaves a stale shared bit (KS §1.5 consequences).
    #[test]
    fn untracked_mm_keeps_shared() {
        let (mut m, f) = mem_with_folio(2);
        let h = f.pfn();
        m.add_new_anon_rmap(f, 1);
        m.dup_anon_rmap_ptes(f, h, 4, 2);
        m.dup_anon_rmap_ptes(f, h, 4, 3); // untracked
        let s = m.slots(h);
        assert_eq!((s.ids, s.shared), ([1, 2], true));
        assert!(!m.remove_rmap_ptes(f, h, 4, 1));
        assert!(!m.remove_rmap_ptes(f, h, 4, 2));
        // Only mm 3 maps it now, untracked: both slots −1, large 3 (biased) → no clear.
        let s = m.slots(h);
        assert_eq!((s.ids, s.counts, s.shared), ([0, 0], [-1, -1], true));
        assert!(m.folio(f).folio_maybe_mapped_shared());
        // Pages 0..3 are now mapped by nothing, page 3 still is: partially mapped.
        assert!(m.remove_rmap_ptes(f, h, 3, 3));
        assert!(!m.folio(f).folio_maybe_mapped_shared()); // mapcount 1
        assert!(!m.remove_rmap_ptes(f, h + 3, 1, 3)); // fully unmapped is not partial
        assert!(!m.slots(h).shared);
        assert_eq!(m.folio_mapcount(h), 0);
    }

    /// A PMD split then a partial unmap (KS §1.6, `CONFIG_PAGE_MAPCOUNT`): the PMD's removal
    /// after the PTEs are added is not partial; unmapping some PTEs then is, once.
    #[test]
    fn pmd_split_then_partial_unmap() {
        let (mut m, f) = mem_with_folio(9);
        let h = f.pfn();
        let mut events = Events::default();
        m.add_new_anon_rmap(f, 1);
        assert_eq!((m.nr_anon_mapped, m.nr_anon_thps), (512, 512));
        m.add_anon_rmap_ptes(f, h, 512, 1, false);
        assert!(!m.remove_rmap_pmd(f, 1));
        assert_eq!((m.nr_anon_mapped, m.nr_anon_thps), (512, 0));
        assert!(m.remove_rmap_ptes(f, h + 10, 2, 1));
        assert_eq!(m.nr_anon_mapped, 510);
        m.deferred_split_folio(f, &mut events);
        assert!(m.folio_test_partially_mapped(f));
        assert!(m.remove_rmap_ptes(f, h, 1, 1));
        m.deferred_split_folio(f, &mut events); // already flagged: no second event
        let s = events.stats();
        assert_eq!((s.split_deferred[7], s.nr_anon_partially_mapped[7]), (1, 1));
        assert_eq!(s.thp_deferred_split_page, 1);
    }

    #[test]
    fn pmd_rmap() {
        let (mut m, f) = mem_with_folio(9);
        let h = f.pfn();
        m.add_new_anon_rmap(f, 1);
        assert_eq!(m.entire_mapcount(h), 1);
        assert_eq!(m.nr_pages_mapped_raw(h), ENTIRELY_MAPPED);
        m.dup_anon_rmap_pmd(f, 2);
        assert_eq!(m.folio_mapcount(h), 2);
        assert!(m.slots(h).shared);
        assert!(!m.remove_rmap_pmd(f, 2));
        assert!(!m.slots(h).shared);
        assert!(!m.remove_rmap_pmd(f, 1)); // no PTE maps a page: not partial
        assert_eq!((m.nr_anon_mapped, m.nr_anon_thps), (0, 0));
        assert_eq!(m.nr_pages_mapped_raw(h), 0);
        assert_eq!(m.entire_mapcount(h), 0);
        let info = m.folio_info(f);
        assert_eq!(info.mm_ids, [(0, 0), (0, 0)]);
        assert_eq!(info.large_mapcount, 0);
    }
}
