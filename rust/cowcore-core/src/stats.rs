//! Event counters (DESIGN.md "Stats").
//!
//! The per-size mTHP counters of `hugepages-*/stats/` (`count_mthp_stat()`), the vmstat
//! events `thp_fault_alloc`, `thp_split_pmd`, `pgreuse`, and the simulator's own counts.

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
    /// `THP_FAULT_ALLOC`.
    pub thp_fault_alloc: u64,
    /// `THP_SPLIT_PMD`.
    pub thp_split_pmd: u64,
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
