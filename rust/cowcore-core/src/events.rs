//! Events, not counters: every counted thing is an [`Event`] on one channel.
//!
//! The operations never touch a counter: they `emit` an event where the kernel counts one
//! (`count_vm_event`, `count_mthp_stat`, or the simulator's own fault counts), and
//! [`Stats`] is the fold of those events ([`Stats::apply`]), so the counters and the
//! events can never disagree. The channel is `Events`, a concrete sink with an inlined
//! `emit` (no dynamic dispatch): it folds each event into the counters and, only while
//! recording (off by default), also keeps it.

use crate::stats::Stats;

/// Something the kernel (or the simulator's fault accounting) counts, at the place it
/// happens. Orders are folio orders; per-size counters ignore orders outside 2..=9, as
/// `count_mthp_stat` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Event {
    /// A fault taken on a read access (`faults_read`).
    FaultRead,
    /// A fault taken on a write access to a not-present entry (`faults_write`).
    FaultWrite,
    /// A write-protect fault: a write to a present read-only entry (`faults_wp`).
    FaultWp,
    /// `MTHP_STAT_ANON_FAULT_ALLOC`: a fault mapped a new anonymous folio of this order.
    AnonFaultAlloc {
        /// The folio order.
        order: u32,
    },
    /// `MTHP_STAT_ANON_FAULT_FALLBACK`: no free block of this order; the fault tries the
    /// next smaller one.
    AnonFaultFallback {
        /// The order that could not be allocated.
        order: u32,
    },
    /// `MTHP_STAT_SPLIT`: a folio of this order was split (not modelled yet: never emitted).
    Split {
        /// The order of the folio split.
        order: u32,
    },
    /// `THP_FAULT_ALLOC`: a fault mapped a PMD-sized THP (`map_anon_folio_pmd`).
    ThpFaultAlloc,
    /// `THP_SPLIT_PMD`: a huge PMD became a PTE table (`__split_huge_pmd_locked`).
    ThpSplitPmd,
    /// `PGREUSE`: `wp_page_reuse` reused the page (the PTE path only).
    PgReuse,
    /// `wp_page_copy` made a copy.
    CowCopy,
    /// `do_huge_zero_wp_pmd` replaced the huge zero PMD with a fresh THP.
    HugeZeroWrite,
}

impl Stats {
    /// Folds one event into the counters: the only place a counter changes.
    ///
    /// # Examples
    ///
    /// ```rust
    /// use cowcore_core::{Event, Stats};
    ///
    /// let mut s = Stats::default();
    /// for e in [Event::FaultWrite, Event::AnonFaultAlloc { order: 4 }, Event::AnonFaultAlloc { order: 0 }] {
    ///     s.apply(e);
    /// }
    /// assert_eq!((s.faults_write, s.anon_fault_alloc[4 - 2]), (1, 1));
    /// assert_eq!(s.anon_fault_alloc.iter().sum::<u64>(), 1); // order 0 has no mTHP counter
    /// ```
    #[inline]
    pub fn apply(&mut self, e: Event) {
        match e {
            Event::FaultRead => self.faults_read += 1,
            Event::FaultWrite => self.faults_write += 1,
            Event::FaultWp => self.faults_wp += 1,
            Event::AnonFaultAlloc { order } => Self::count_mthp(&mut self.anon_fault_alloc, order),
            Event::AnonFaultFallback { order } => {
                Self::count_mthp(&mut self.anon_fault_fallback, order);
            }
            Event::Split { order } => Self::count_mthp(&mut self.split, order),
            Event::ThpFaultAlloc => self.thp_fault_alloc += 1,
            Event::ThpSplitPmd => self.thp_split_pmd += 1,
            Event::PgReuse => self.pgreuse += 1,
            Event::CowCopy => self.cow_copy += 1,
            Event::HugeZeroWrite => self.huge_zero_write += 1,
        }
    }
}

/// The event channel of one machine: the counters folded so far and, while recording, the
/// events themselves in emission order.
#[derive(Debug, Clone, Default)]
pub(crate) struct Events {
    stats: Stats,
    recorded: Option<Vec<Event>>,
}

impl Events {
    /// Emits one event: folds it into the counters and records it if recording.
    #[inline]
    pub(crate) fn emit(&mut self, e: Event) {
        self.stats.apply(e);
        if let Some(r) = &mut self.recorded {
            r.push(e);
        }
    }

    /// The counters: the fold of every event emitted so far.
    #[inline]
    pub(crate) fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Starts recording events (from now on), or stops and drops what was recorded.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn record(&mut self, on: bool) {
        self.recorded = on.then(Vec::new);
    }

    /// The events recorded since the last call (recording goes on).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn take_recorded(&mut self) -> Vec<Event> {
        self.recorded
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Machine, Profile, ThpMode, ThpSizeMode, VirtAddr};

    const K4: u64 = 4096;

    /// A scenario that takes every kind of event the core emits; the fold of the recorded
    /// events is `stats()`, and each counter moved.
    #[test]
    fn recorded_events_fold_to_stats() {
        for profile in [Profile::V6_15, Profile::V6_12] {
            let mut m = Machine::new(16 << 20, 4, profile).unwrap();
            m.k.events.record(true);
            m.set_thp_size(4, ThpSizeMode::Always).unwrap();
            m.set_thp_size(9, ThpSizeMode::Inherit).unwrap();
            m.set_thp_enabled(ThpMode::Always);
            let a = m.mmap(1, 4 << 20).unwrap();
            let b = m.mmap(1, 2 << 20).unwrap();
            m.read(1, b, K4).unwrap(); // huge zero PMD
            m.write(1, b, K4, 1).unwrap(); // 6.15: huge zero write; 6.12: split + copy
            m.write(1, a, K4, 1).unwrap(); // PMD THP
            let d = m.mmap(1, 32 * K4).unwrap(); // too small for a PMD: 64K folios
            m.write(1, d, 32 * K4, 2).unwrap();
            let c = m.fork(1).unwrap();
            m.write(c, d, K4, 3).unwrap(); // COW copy
            m.exit(c).unwrap();
            m.write(1, VirtAddr::new(d.as_u64() + K4), K4, 4).unwrap(); // reuse (6.15) or copy (6.12)
            m.munmap(1, VirtAddr::new(a.as_u64() + K4), K4).unwrap(); // PMD split
            let events = m.k.events.take_recorded();
            let mut fold = Stats::default();
            for &e in &events {
                fold.apply(e);
            }
            assert_eq!(&fold, m.stats(), "{profile:?}");
            let s = m.stats();
            assert!(s.faults_read > 0 && s.faults_write > 0 && s.faults_wp > 0);
            assert!(s.thp_fault_alloc > 0 && s.thp_split_pmd > 0 && s.cow_copy > 0);
            assert!(s.anon_fault_alloc[4 - 2] > 0);
            if profile == Profile::V6_15 {
                assert!(s.huge_zero_write > 0 && s.pgreuse > 0);
            }
            assert!(events.contains(&Event::AnonFaultAlloc { order: 9 }));
            m.check().unwrap();
        }
    }

    #[test]
    fn recording_is_off_by_default_and_restartable() {
        let mut m = Machine::new(8 << 20, 4, Profile::V6_15).unwrap();
        let a = m.mmap(1, 4 * K4).unwrap();
        m.write(1, a, K4, 1).unwrap();
        assert!(m.k.events.take_recorded().is_empty());
        m.k.events.record(true);
        m.write(1, VirtAddr::new(a.as_u64() + K4), K4, 1).unwrap();
        assert_eq!(
            m.k.events.take_recorded(),
            [Event::FaultWrite, Event::AnonFaultAlloc { order: 0 }]
        );
        assert!(m.k.events.take_recorded().is_empty());
        m.k.events.record(false);
        m.write(1, VirtAddr::new(a.as_u64() + 2 * K4), K4, 1)
            .unwrap();
        assert!(m.k.events.take_recorded().is_empty());
        assert_eq!(m.stats().faults_write, 3);
    }
}
