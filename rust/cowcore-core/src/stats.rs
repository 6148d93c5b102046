//! Event counters (DESIGN.md "Stats").
//!
//! The per-size mTHP counters of `hugepages-*/stats/` (`count_mthp_stat()`, and the two
//! gauges `mod_mthp_stat()` keeps), the vmstat events (`thp_*`, `pgreuse`), and the
//! simulator's own counts; all folds of events ([`Stats::apply`]).

use crate::policy::THP_SIZES;

/// The counters of one machine since it was created.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// `MTHP_STAT_ANON_FAULT_ALLOC` per size (index = order − 2).
    pub anon_fault_alloc: [u64; 8],
    /// `MTHP_STAT_ANON_FAULT_FALLBACK` per size.
    pub anon_fault_fallback: [u64; 8],
    /// `MTHP_STAT_SPLIT` per size (folio splits; the deferred-split shrinker never runs).
    pub split: [u64; 8],
    /// `MTHP_STAT_SPLIT_DEFERRED` per size: folios queued for deferred split as partially
    /// mapped.
    pub split_deferred: [u64; 8],
    /// `MTHP_STAT_NR_ANON` per size: anonymous folios of that size that exist now (a gauge:
    /// + 1 when one is allocated, − 1 when freed).
    pub nr_anon: [u64; 8],
    /// `MTHP_STAT_NR_ANON_PARTIALLY_MAPPED` per size: those waiting on the deferred-split
    /// queue as partially mapped now (a gauge).
    pub nr_anon_partially_mapped: [u64; 8],
    /// `THP_FAULT_ALLOC`.
    pub thp_fault_alloc: u64,
    /// `THP_SPLIT_PMD`.
    pub thp_split_pmd: u64,
    /// `THP_FAULT_FALLBACK`: no PMD-size folio for a fault (with `anon_fault_fallback` of 2M).
    pub thp_fault_fallback: u64,
    /// `THP_SPLIT_PAGE`: PMD-size folios split (with `split` of 2M).
    pub thp_split_page: u64,
    /// `THP_DEFERRED_SPLIT_PAGE`: PMD-size folios queued as partially mapped.
    pub thp_deferred_split_page: u64,
    /// `MTHP_STAT_SPLIT_FAILED` per size: splits `can_split_folio` refused (issue 16).
    pub split_failed: [u64; 8],
    /// `THP_SPLIT_PAGE_FAILED`: PMD-size folios that could not be split.
    pub thp_split_page_failed: u64,
    /// `PGREUSE`: reuse in `do_wp_page` (`wp_page_reuse`); a PMD reuse does not count it.
    pub pgreuse: u64,
    /// Copies made by `wp_page_copy`.
    pub cow_copy: u64,
    /// Faults taken on read accesses.
    pub faults_read: u64,
    /// Faults taken on write accesses to a not-present entry.
    pub faults_write: u64,
    /// Write-protect faults (a write to a present read-only entry).
    pub faults_wp: u64,
    /// `do_huge_zero_wp_pmd` allocations.
    pub huge_zero_write: u64,
    /// `THP_COLLAPSE_ALLOC`: THPs a collapse allocated (`MADV_COLLAPSE`).
    pub thp_collapse_alloc: u64,
    /// `THP_COLLAPSE_ALLOC_FAILED`: collapses that found no free PMD-size block.
    pub thp_collapse_alloc_failed: u64,
    /// `PSWPIN`: pages read from swap (issue 16).
    pub pswpin: u64,
    /// `PSWPOUT`: pages written to swap.
    pub pswpout: u64,
    /// `THP_SWPOUT`: PMD-size folios written to swap whole.
    pub thp_swpout: u64,
    /// `THP_SWPOUT_FALLBACK`: PMD-size folios split for want of a run of slots.
    pub thp_swpout_fallback: u64,
    /// `MTHP_STAT_SWPOUT` per size: large folios written whole.
    pub swpout: [u64; 8],
    /// `MTHP_STAT_SWPOUT_FALLBACK` per size.
    pub swpout_fallback: [u64; 8],
    /// `MTHP_STAT_SWPIN` per size: large folios read whole.
    pub swpin: [u64; 8],
    /// `MTHP_STAT_SWPIN_FALLBACK` per size.
    pub swpin_fallback: [u64; 8],
}

/// The `/proc/vmstat` lines the simulator keeps, named as the kernel prints them: the
/// gauges of physical memory and the THP events (the fold of [`Stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Vmstat {
    /// `nr_free_pages`: free frames.
    pub nr_free_pages: u64,
    /// `nr_anon_pages` (`NR_ANON_MAPPED`): anonymous pages mapped by at least one entry,
    /// a PMD-mapped THP counting all its pages.
    pub nr_anon_pages: u64,
    /// `nr_anon_transparent_hugepages` (`NR_ANON_THPS` / 512): PMD-mapped THPs.
    pub nr_anon_transparent_hugepages: u64,
    /// `nr_page_table_pages` (`NR_PAGETABLE`): page-table frames, every level, PGDs and
    /// the tables deposited for huge PMDs included.
    pub nr_page_table_pages: u64,
    /// `thp_fault_alloc`.
    pub thp_fault_alloc: u64,
    /// `thp_fault_fallback`.
    pub thp_fault_fallback: u64,
    /// `thp_split_pmd`.
    pub thp_split_pmd: u64,
    /// `thp_split_page`.
    pub thp_split_page: u64,
    /// `thp_deferred_split_page`.
    pub thp_deferred_split_page: u64,
    /// `thp_split_page_failed`.
    pub thp_split_page_failed: u64,
    /// `pgreuse`.
    pub pgreuse: u64,
}

impl Stats {
    /// The per-size counter maps as `(size name, value)` pairs, all sizes, zero included.
    #[must_use]
    pub fn by_size(counts: &[u64; 8]) -> Vec<(&'static str, u64)> {
        THP_SIZES
            .iter()
            .zip(counts.iter())
            .map(|(&(n, _), &v)| (n, v))
            .collect()
    }

    pub(crate) fn count_mthp(counts: &mut [u64; 8], order: u32) {
        if (2..=9).contains(&order) {
            counts[(order - 2) as usize] += 1;
        }
    }

    /// `mod_mthp_stat(order, item, delta)` on a gauge; orders outside 2..=9 have none.
    pub(crate) fn gauge_mthp(counts: &mut [u64; 8], order: u32, delta: i64) {
        if (2..=9).contains(&order) {
            let c = &mut counts[(order - 2) as usize];
            *c = c.wrapping_add_signed(delta);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_size() {
        let mut s = Stats::default();
        Stats::count_mthp(&mut s.anon_fault_alloc, 3);
        Stats::count_mthp(&mut s.anon_fault_alloc, 0);
        let v = Stats::by_size(&s.anon_fault_alloc);
        assert_eq!(v.len(), 8);
        assert_eq!(v[1], ("32K", 1));
        assert_eq!(v.iter().map(|x| x.1).sum::<u64>(), 1);
    }
}
