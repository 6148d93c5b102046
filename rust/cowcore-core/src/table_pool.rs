//! The host memory behind the simulated page tables: a pool of 512-entry slots, one per
//! page-table frame (`PhysMem::word` holds a table frame's slot).
//!
//! A machine of `N` frames never has more than `N` tables, so the pool is one anonymous
//! host mapping of `N` slots (4 KiB per simulated frame, as much address space as the
//! simulated memory), reserved at boot without swap reservation and backed by the host
//! only where slots are used. The host hands the mapping out zero-filled, so a fresh slot
//! needs no clearing and the pool never moves or copies when it grows. Past its first 2 MiB
//! the mapping is advised `MADV_HUGEPAGE`: where the host has transparent huge pages in
//! `madvise` mode it backs 512 tables with one huge page instead of 512 page faults, which
//! was most of the cost of a first fork (the child's tables are all fresh; BENCHMARKS.md).
//! The first 2 MiB stay on small pages, so a small machine costs a few KiB.
//!
//! Where the reservation fails (a host with strict overcommit, `vm.overcommit_memory=2`,
//! or a platform without it) the pool is a `Vec` that grows slot by slot, as before.

use memmap2::{MmapMut, MmapOptions};

/// Entries in one page table.
pub const ENTRIES: usize = 512;

/// Bytes of one slot (one 4 KiB table).
const SLOT_BYTES: usize = ENTRIES * 8;

/// Bytes of the pool's head left on small pages (512 tables, one host huge page).
const SMALL_HEAD: usize = 2 << 20;

/// Where the entries live.
enum Store {
    /// The reserved mapping, `capacity` slots.
    Mapped(MmapMut),
    /// The fallback: `len` slots, grown as needed.
    Heap(Vec<u64>),
}

/// The pool: `len` slots have been handed out, numbered from 0.
pub(crate) struct TablePool {
    store: Store,
    capacity: usize,
    len: usize,
}

impl TablePool {
    /// A pool for at most `capacity` tables (the machine's frame count); no host memory
    /// is used yet.
    pub(crate) fn new(capacity: usize) -> Self {
        let store =
            Self::reserve_mapping(capacity).map_or_else(|| Store::Heap(Vec::new()), Store::Mapped);
        Self {
            store,
            capacity,
            len: 0,
        }
    }

    #[cfg(target_os = "linux")]
    fn reserve_mapping(capacity: usize) -> Option<MmapMut> {
        let bytes = capacity.checked_mul(SLOT_BYTES)?.max(SLOT_BYTES);
        let map = MmapOptions::new()
            .len(bytes)
            .no_reserve_swap()
            .map_anon()
            .ok()?;
        if bytes > SMALL_HEAD {
            // Advice only: without THP on the host the pool is small pages, as before.
            let _ = map.advise_range(memmap2::Advice::HugePage, SMALL_HEAD, bytes - SMALL_HEAD);
        }
        Some(map)
    }

    #[cfg(not(target_os = "linux"))]
    fn reserve_mapping(_capacity: usize) -> Option<MmapMut> {
        None
    }

    /// A never-used slot, all entries zero.
    ///
    /// # Panics
    /// If more slots are asked for than the capacity given to [`Self::new`] (a machine
    /// has at most one table per frame).
    pub(crate) fn fresh_slot(&mut self) -> u32 {
        assert!(self.len < self.capacity, "more tables than frames");
        if let Store::Heap(v) = &mut self.store {
            v.resize(v.len() + ENTRIES, 0);
        }
        self.len += 1;
        (self.len - 1) as u32
    }

    /// Makes room for `n` more fresh slots at once (fork knows how many the child needs):
    /// the fallback `Vec` then grows once instead of table by table.
    pub(crate) fn reserve(&mut self, n: usize) {
        if let Store::Heap(v) = &mut self.store {
            v.reserve(n.min(self.capacity - self.len) * ENTRIES);
        }
    }

    #[inline]
    fn entries(&self) -> &[u64] {
        match &self.store {
            Store::Mapped(m) => bytemuck::cast_slice(m),
            Store::Heap(v) => v,
        }
    }

    #[inline]
    fn entries_mut(&mut self) -> &mut [u64] {
        match &mut self.store {
            Store::Mapped(m) => bytemuck::cast_slice_mut(m),
            Store::Heap(v) => v,
        }
    }

    /// Entry `idx` of `slot`.
    #[inline]
    pub(crate) fn get(&self, slot: u32, idx: usize) -> u64 {
        self.entries()[slot as usize * ENTRIES + idx]
    }

    /// Sets entry `idx` of `slot`.
    #[inline]
    pub(crate) fn set(&mut self, slot: u32, idx: usize, v: u64) {
        self.entries_mut()[slot as usize * ENTRIES + idx] = v;
    }

    /// The 512 entries of `slot`.
    #[inline]
    pub(crate) fn table(&self, slot: u32) -> &[u64] {
        let b = slot as usize * ENTRIES;
        &self.entries()[b..b + ENTRIES]
    }

    /// The 512 entries of `slot`, writable.
    #[inline]
    pub(crate) fn table_mut(&mut self, slot: u32) -> &mut [u64] {
        let b = slot as usize * ENTRIES;
        &mut self.entries_mut()[b..b + ENTRIES]
    }

    /// Two distinct tables, both writable (fork's copy loop reads one and writes both).
    ///
    /// # Panics
    /// If `a == b` (a caller bug: a table is never copied onto itself).
    pub(crate) fn two_tables_mut(&mut self, a: u32, b: u32) -> (&mut [u64], &mut [u64]) {
        assert_ne!(a, b, "a table copied onto itself");
        let (ia, ib) = (a as usize * ENTRIES, b as usize * ENTRIES);
        let e = self.entries_mut();
        if ia < ib {
            let (lo, hi) = e.split_at_mut(ib);
            (&mut lo[ia..ia + ENTRIES], &mut hi[..ENTRIES])
        } else {
            let (lo, hi) = e.split_at_mut(ia);
            let (y, x) = (&mut lo[ib..ib + ENTRIES], &mut hi[..ENTRIES]);
            (x, y)
        }
    }
}

impl Clone for TablePool {
    /// A copy of the handed-out slots in a new pool of the same capacity.
    fn clone(&self) -> Self {
        let mut pool = Self::new(self.capacity);
        for _ in 0..self.len {
            pool.fresh_slot();
        }
        let n = self.len * ENTRIES;
        pool.entries_mut()[..n].copy_from_slice(&self.entries()[..n]);
        pool
    }
}

impl std::fmt::Debug for TablePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.store {
            Store::Mapped(_) => "mapped",
            Store::Heap(_) => "heap",
        };
        f.debug_struct("TablePool")
            .field("store", &kind)
            .field("slots", &self.len)
            .field("capacity", &self.capacity)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn both(capacity: usize) -> [TablePool; 2] {
        let heap = TablePool {
            store: Store::Heap(Vec::new()),
            capacity,
            len: 0,
        };
        [TablePool::new(capacity), heap]
    }

    #[test]
    fn fresh_slots_are_zero_and_writable() {
        for mut p in both(1100) {
            for s in 0..1030 {
                assert_eq!(p.fresh_slot(), s);
                assert!(p.table(s).iter().all(|&e| e == 0));
                p.table_mut(s)[7] = u64::from(s) + 1;
            }
            p.set(3, 6, 42);
            assert_eq!((p.get(1, 7), p.get(1029, 7), p.get(3, 6)), (2, 1030, 42));
        }
    }

    #[test]
    fn two_tables_either_order() {
        for mut p in both(8) {
            for _ in 0..4 {
                p.fresh_slot();
            }
            for (a, b) in [(3, 1), (1, 3), (0, 2)] {
                let (x, y) = p.two_tables_mut(a, b);
                x[0] = u64::from(a);
                y[511] = u64::from(b);
                assert_eq!((p.get(a, 0), p.get(b, 511)), (u64::from(a), u64::from(b)));
            }
        }
    }

    #[test]
    fn clone_copies_contents() {
        for mut p in both(4) {
            let s = p.fresh_slot();
            p.set(s, 5, 9);
            let mut q = p.clone();
            q.set(s, 5, 10);
            assert_eq!((p.get(s, 5), q.get(s, 5), q.len), (9, 10, 1));
        }
    }

    #[test]
    #[should_panic(expected = "more tables than frames")]
    fn capacity_is_the_frame_count() {
        let mut p = TablePool::new(1);
        p.fresh_slot();
        p.fresh_slot();
    }
}
