//! Simulated physical memory: the buddy allocator and the per-frame metadata arrays.
//!
//! Models the zone free lists of `mm/page_alloc.c` (`__rmqueue_smallest`, `__free_one_page`)
//! with the exact rules of DESIGN.md "Physical memory": orders 0..=10, allocation takes the
//! lowest-addressed block of the smallest sufficient order and keeps the lower half of each
//! split; a free merges with its buddy while the buddy is a free block of the same order.
//!
//! Memory layout (for 64 GiB = 16M frames): four arrays indexed by frame number, 24 bytes
//! per frame in total, and no heap allocation per page:
//! * `info: u32` — state (2 bits), order (4 bits), `PageAnonExclusive`, free-block head
//!   marker, and the page's logical PTE mapcount in the top 24 bits;
//! * `count: i32` — the head's `_refcount`; in a large folio page 1 holds
//!   `_large_mapcount`, page 2 `_entire_mapcount`, page 3 `_nr_pages_mapped` (the kernel
//!   also keeps folio fields in tail `struct page`s);
//! * `word: u64` — the head's allocation serial; page 1 holds `_mm_ids` (packed exactly
//!   as the kernel packs it), page 2 `_mm_id_mapcount[2]`; for a page-table frame, the
//!   slot of its 512 entries in the table pool;
//! * `content: u64` — the 64-bit value at the first byte of the page.
//!
//! Page tables live in a pool of 512-entry `u64` slots, one per table frame.

use std::collections::BTreeSet;

/// `MAX_PAGE_ORDER`: the largest buddy block is 2^10 frames (4 MiB).
pub const MAX_ORDER: u32 = 10;

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
const FREE_HEAD_BIT: u32 = 1 << 7;
pub(crate) const MAPCOUNT_SHIFT: u32 = 8;
/// Largest logical per-page mapcount the 24-bit field holds.
pub(crate) const MAPCOUNT_MAX: u32 = (1 << 24) - 1;

/// Entries in one page table.
pub const ENTRIES: usize = 512;

/// The simulated physical memory.
#[derive(Debug, Clone)]
pub struct PhysMem {
    nr_frames: u32,
    nr_free: u64,
    free_lists: Vec<BTreeSet<u32>>,
    pub(crate) info: Vec<u32>,
    pub(crate) count: Vec<i32>,
    pub(crate) word: Vec<u64>,
    pub(crate) content: Vec<u64>,
    tables: Vec<u64>,
    free_slots: Vec<u32>,
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
            content: vec![0; n],
            tables: Vec::new(),
            free_slots: Vec::new(),
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

    fn push_free(&mut self, b: u32, order: u32) {
        self.free_lists[order as usize].insert(b);
        self.info[b as usize] = ST_FREE | (order << ORDER_SHIFT) | FREE_HEAD_BIT;
    }

    fn is_free_head(&self, b: u32, order: u32) -> bool {
        let i = self.info[b as usize];
        i & FREE_HEAD_BIT != 0 && (i & ORDER_MASK) >> ORDER_SHIFT == order
    }

    /// Allocates a block of `2^order` frames (`__rmqueue_smallest`): the lowest-addressed
    /// block of the smallest order `>= order` that has one, split keeping the lower half.
    /// Returns the first frame; the caller sets the frames' state.
    pub(crate) fn alloc_block(&mut self, order: u32) -> Option<u32> {
        for j in order..=MAX_ORDER {
            if let Some(b) = self.free_lists[j as usize].pop_first() {
                self.info[b as usize] = 0;
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
                || !self.is_free_head(buddy, order)
            {
                break;
            }
            self.free_lists[order as usize].remove(&buddy);
            self.info[buddy as usize] = ST_FREE;
            b = b.min(buddy);
            order += 1;
        }
        self.push_free(b, order);
    }

    /// Allocates a folio of `2^order` frames with fresh counters (`prep_compound_head`):
    /// refcount 1, all mapcounts −1 (biased), both MM-ID slots free, contents zeroed
    /// (`folio_zero_user`).
    pub(crate) fn alloc_folio(&mut self, order: u32, serial: u64) -> Option<u32> {
        let h = self.alloc_block(order)?;
        self.init_frames(h, order, ST_FOLIO);
        let hu = h as usize;
        self.count[hu] = 1;
        self.word[hu] = serial;
        if order >= 2 {
            self.count[hu + 1] = -1;
            self.count[hu + 2] = -1;
            self.count[hu + 3] = 0;
            self.word[hu + 2] = crate::folio::pack_slot_counts(-1, -1);
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

    /// Returns a folio's frames to the buddy allocator.
    pub(crate) fn free_folio(&mut self, h: u32) {
        let order = self.order(h);
        self.free_block(h, order);
    }

    /// Allocates a page-table frame with 512 empty entries (`pte_alloc_one` & co.).
    pub(crate) fn alloc_table(&mut self) -> Option<u32> {
        let pfn = self.alloc_block(0)?;
        self.init_frames(pfn, 0, ST_TABLE);
        let slot = if let Some(s) = self.free_slots.pop() {
            let base = s as usize * ENTRIES;
            self.tables[base..base + ENTRIES].fill(0);
            s
        } else {
            let s = (self.tables.len() / ENTRIES) as u32;
            self.tables.resize(self.tables.len() + ENTRIES, 0);
            s
        };
        self.word[pfn as usize] = u64::from(slot);
        Some(pfn)
    }

    /// Frees a page-table frame (`pte_free`, `pmd_free`, ...).
    pub(crate) fn free_table(&mut self, pfn: u32) {
        debug_assert_eq!(self.state(pfn), ST_TABLE);
        self.free_slots.push(self.word[pfn as usize] as u32);
        self.free_block(pfn, 0);
    }

    /// Reads entry `idx` of the table in frame `table`.
    #[must_use]
    pub(crate) fn entry(&self, table: u32, idx: usize) -> u64 {
        self.tables[self.word[table as usize] as usize * ENTRIES + idx]
    }

    /// Writes entry `idx` of the table in frame `table`.
    pub(crate) fn set_entry(&mut self, table: u32, idx: usize, v: u64) {
        let slot = self.word[table as usize] as usize;
        self.tables[slot * ENTRIES + idx] = v;
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
    fn tables_recycle_slots() {
        let mut m = PhysMem::new(512);
        let t = m.alloc_table().unwrap();
        m.set_entry(t, 3, 42);
        assert_eq!(m.entry(t, 3), 42);
        m.free_table(t);
        let t2 = m.alloc_table().unwrap();
        assert_eq!(t2, t);
        assert_eq!(m.entry(t2, 3), 0);
    }
}
