//! Events, not counters: every counted thing is an [`Event`] on one channel.
//!
//! The operations never touch a counter: they `emit` an event where the kernel counts one
//! (`count_vm_event`, `count_mthp_stat`, or the simulator's own fault counts), and
//! [`Stats`] is the fold of those events ([`Stats::apply`]), so the counters and the
//! events can never disagree. The channel is `Events`, a concrete sink with an inlined
//! `emit` (no dynamic dispatch): it folds each event into the counters and, only while
//! recording (off by default), also keeps it.

use crate::addr::PMD_ORDER;
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
    /// `MTHP_STAT_SPLIT` (and `THP_SPLIT_PAGE` for PMD size): `split_folio()` split the
    /// folio at `pfn` into order-0 folios (the deferred-split shrinker of `drop_caches`,
    /// split.rs); it leaves `MTHP_STAT_NR_ANON` of its size.
    Split {
        /// The folio's first frame.
        pfn: u64,
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
    // --- What changes memory (issue 12); none of these moves a counter. ---
    /// An anonymous folio was allocated (`folio_alloc`, for a fault or a copy).
    FolioAlloc {
        /// Its first frame.
        pfn: u64,
        /// Its order.
        order: u32,
    },
    /// An anonymous folio's last reference went and it was freed (`folio_put` → free).
    FolioFree {
        /// Its first frame.
        pfn: u64,
        /// Its order.
        order: u32,
    },
    /// The kernel zero-filled `nr` frames from `pfn` (`clear_user_highpage`,
    /// `folio_zero_user`): a new anonymous folio, or the copy of a zero page.
    PagesZeroed {
        /// The first frame.
        pfn: u64,
        /// How many frames.
        nr: u64,
    },
    /// The kernel copied `nr` frames (`copy_user_highpage` in `wp_page_copy`).
    PagesCopied {
        /// The first source frame.
        src: u64,
        /// The first destination frame.
        dst: u64,
        /// How many frames.
        nr: u64,
    },
    /// `fork()` copied the parent's page tables into the child (`dup_mmap`), emitted once
    /// at the end of the fork.
    Fork {
        /// The parent's address-space id.
        parent: u64,
        /// The child's address-space id.
        child: u64,
        /// Present PTEs copied into the child.
        ptes: u64,
        /// Huge PMDs copied into the child.
        pmds: u64,
    },
    /// Entries were cleared by `munmap`, `exit` or `MADV_DONTNEED` (`zap_page_range`,
    /// `unmap_vmas`), emitted once per call with the call's range.
    Zap {
        /// The address-space id.
        asid: u64,
        /// Why.
        cause: ZapCause,
        /// The range's start (0 for `exit`).
        start: u64,
        /// The range's end (`u64::MAX` for `exit`).
        end: u64,
        /// Present PTEs cleared.
        ptes: u64,
        /// Huge PMDs cleared.
        pmds: u64,
    },
    /// `mprotect()` changed entries (`change_protection`), once per call.
    Mprotect {
        /// The address-space id.
        asid: u64,
        /// The range's start.
        start: u64,
        /// The range's end.
        end: u64,
        /// Present PTEs rewritten.
        ptes: u64,
        /// Huge PMDs rewritten.
        pmds: u64,
    },
    /// The TLB entries of `[start, end)` of one address space were invalidated
    /// (`flush_tlb_range`, `ptep_clear_flush`, `pmdp_huge_clear_flush`, `tlb_finish_mmu`);
    /// `[0, u64::MAX)` is the whole address space (`flush_tlb_mm`).
    TlbFlush {
        /// The address-space id.
        asid: u64,
        /// The range's start.
        start: u64,
        /// The range's end.
        end: u64,
    },
    // --- The deferred-split queue (issue 13). ---
    /// `deferred_split_folio(folio, true)`: an unmap left the large folio partially mapped
    /// and it was queued for deferred split, flagged `PG_partially_mapped`
    /// (`MTHP_STAT_SPLIT_DEFERRED`, `THP_DEFERRED_SPLIT_PAGE` for PMD size, and
    /// `MTHP_STAT_NR_ANON_PARTIALLY_MAPPED` + 1). Once per folio.
    DeferredSplit {
        /// Its first frame.
        pfn: u64,
        /// Its order.
        order: u32,
    },
    /// A partially mapped folio left the deferred-split queue
    /// (`__folio_unqueue_deferred_split`: it is being freed or split):
    /// `MTHP_STAT_NR_ANON_PARTIALLY_MAPPED` − 1.
    DeferredUnqueue {
        /// Its first frame.
        pfn: u64,
        /// Its order.
        order: u32,
    },
    // --- Folio splits (issue 16). `Split` above is a successful one. ---
    /// `split_folio()` refused a folio (`can_split_folio`: references beyond its mappings,
    /// such as a `ref` or a pin; or no mapping left): `MTHP_STAT_SPLIT_FAILED`, and
    /// `THP_SPLIT_PAGE_FAILED` for PMD size. Nothing else changes.
    SplitFailed {
        /// Its first frame.
        pfn: u64,
        /// Its order.
        order: u32,
    },
    // --- MADV_COLLAPSE (issue 16). ---
    /// `THP_COLLAPSE_ALLOC`: a collapse allocated its THP (`alloc_charge_folio`).
    ThpCollapseAlloc,
    /// `THP_COLLAPSE_ALLOC_FAILED`: a collapse found no free PMD-size block.
    ThpCollapseAllocFailed,
    /// `MADV_COLLAPSE` tried the 2 MiB block at `start` of one address space, with this
    /// result (`madvise_collapse`'s per-block `enum scan_result`): why it did or did not
    /// collapse.
    Collapse {
        /// The address-space id.
        asid: u64,
        /// The block's first address.
        start: u64,
        /// The block's result.
        result: crate::khugepaged::ScanResult,
    },
    // --- The swap device (issue 16). ---
    /// Reclaim wrote the folio at `pfn` to swap (`swap_writepage`: `PSWPOUT` += `nr`,
    /// `MTHP_STAT_SWPOUT`, `THP_SWPOUT` for PMD size), or, zero-filled with the zeromap,
    /// only marked its slots zero (`nr` = 0: nothing counted).
    SwapOut {
        /// The folio's first frame.
        pfn: u64,
        /// Its order.
        order: u32,
        /// Pages written.
        nr: u64,
    },
    /// The swap-in fault read the folio at `pfn` from swap (`swap_read_folio`: `PSWPIN` +=
    /// `nr`, `MTHP_STAT_SWPIN`); `nr` = 0 for zero slots (nothing read or counted).
    SwapIn {
        /// The new folio's first frame.
        pfn: u64,
        /// Its order.
        order: u32,
        /// Pages read.
        nr: u64,
    },
    /// `MTHP_STAT_SWPOUT_FALLBACK` (and `THP_SWPOUT_FALLBACK` for PMD size): no run of
    /// slots for a large folio, which is split and swapped out page by page.
    SwpoutFallback {
        /// The order that found no run of slots.
        order: u32,
    },
    /// `MTHP_STAT_SWPIN_FALLBACK`: no folio of this order for a large swap-in.
    SwpinFallback {
        /// The order that could not be allocated.
        order: u32,
    },
}

/// Why entries were zapped.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ZapCause {
    /// `munmap()`.
    Unmap = 0,
    /// The process exited (`exit_mmap`).
    Exit = 1,
    /// `madvise(MADV_DONTNEED)`.
    DontNeed = 2,
}

/// One event, flat, with a C layout (72 bytes): what [`crate::Machine::take_events`]
/// gives to callers that cannot take a Rust enum (Python's numpy arrays, the C API). The
/// fields a kind does not use are 0; `cowcore.outcome.EventRecord` documents each.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct EventRecord {
    /// The kind: [`Event::code`].
    pub kind: u8,
    /// A folio order (`AnonFaultAlloc`, `AnonFaultFallback`, `Split`, `FolioAlloc`,
    /// `FolioFree`, `DeferredSplit`, `DeferredUnqueue`, `SplitFailed`).
    pub order: u8,
    /// A [`ZapCause`] (`Zap`), a [`crate::ScanResult`] (`Collapse`).
    pub cause: u8,
    /// Padding, always zero.
    pub reserved: u8,
    /// Padding, always zero.
    pub reserved2: u32,
    /// The address space (`Fork`: the parent).
    pub asid: u64,
    /// `Fork`: the child's address space.
    pub asid2: u64,
    /// A first frame (`FolioAlloc`, `FolioFree`, `PagesZeroed`, `DeferredSplit`,
    /// `DeferredUnqueue`, `Split`, `SplitFailed`; `PagesCopied`: the source).
    pub pfn: u64,
    /// `PagesCopied`: the destination.
    pub pfn2: u64,
    /// A range's start (`Zap`, `Mprotect`, `TlbFlush`).
    pub start: u64,
    /// A range's end.
    pub end: u64,
    /// Frames zeroed or copied; PTEs of `Fork`, `Zap`, `Mprotect`.
    pub nr: u64,
    /// Huge PMDs of `Fork`, `Zap`, `Mprotect`.
    pub pmds: u64,
}

/// The names of the event kinds by [`Event::code`] (0 is unused).
pub const EVENT_NAMES: [&str; 30] = [
    "",
    "FAULT_READ",
    "FAULT_WRITE",
    "FAULT_WP",
    "ANON_FAULT_ALLOC",
    "ANON_FAULT_FALLBACK",
    "SPLIT",
    "THP_FAULT_ALLOC",
    "THP_SPLIT_PMD",
    "PGREUSE",
    "COW_COPY",
    "HUGE_ZERO_WRITE",
    "FOLIO_ALLOC",
    "FOLIO_FREE",
    "PAGES_ZEROED",
    "PAGES_COPIED",
    "FORK",
    "ZAP",
    "MPROTECT",
    "TLB_FLUSH",
    "DEFERRED_SPLIT",
    "DEFERRED_UNQUEUE",
    "SPLIT_FAILED",
    "THP_COLLAPSE_ALLOC",
    "THP_COLLAPSE_ALLOC_FAILED",
    "COLLAPSE",
    "SWAP_OUT",
    "SWAP_IN",
    "SWPOUT_FALLBACK",
    "SWPIN_FALLBACK",
];

impl EventRecord {
    /// The size of [`Self::to_le_bytes`]: the C layout's size.
    pub const SIZE: usize = 72;

    /// The record in its C layout, little-endian (`cowcore.outcome.EVENT_FIELDS`).
    #[must_use]
    pub fn to_le_bytes(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        b[0] = self.kind;
        b[1] = self.order;
        b[2] = self.cause;
        b[3] = self.reserved;
        b[4..8].copy_from_slice(&self.reserved2.to_le_bytes());
        let words = [
            self.asid, self.asid2, self.pfn, self.pfn2, self.start, self.end, self.nr, self.pmds,
        ];
        for (i, w) in words.iter().enumerate() {
            b[8 + 8 * i..16 + 8 * i].copy_from_slice(&w.to_le_bytes());
        }
        b
    }
}

impl Event {
    /// The stable number of the kind (`cowcore.outcome.EventCode`).
    #[must_use]
    pub fn code(&self) -> u8 {
        match self {
            Event::FaultRead => 1,
            Event::FaultWrite => 2,
            Event::FaultWp => 3,
            Event::AnonFaultAlloc { .. } => 4,
            Event::AnonFaultFallback { .. } => 5,
            Event::Split { .. } => 6,
            Event::ThpFaultAlloc => 7,
            Event::ThpSplitPmd => 8,
            Event::PgReuse => 9,
            Event::CowCopy => 10,
            Event::HugeZeroWrite => 11,
            Event::FolioAlloc { .. } => 12,
            Event::FolioFree { .. } => 13,
            Event::PagesZeroed { .. } => 14,
            Event::PagesCopied { .. } => 15,
            Event::Fork { .. } => 16,
            Event::Zap { .. } => 17,
            Event::Mprotect { .. } => 18,
            Event::TlbFlush { .. } => 19,
            Event::DeferredSplit { .. } => 20,
            Event::DeferredUnqueue { .. } => 21,
            Event::SplitFailed { .. } => 22,
            Event::ThpCollapseAlloc => 23,
            Event::ThpCollapseAllocFailed => 24,
            Event::Collapse { .. } => 25,
            Event::SwapOut { .. } => 26,
            Event::SwapIn { .. } => 27,
            Event::SwpoutFallback { .. } => 28,
            Event::SwpinFallback { .. } => 29,
        }
    }

    /// The name of the kind, as `cowcore.outcome.EventCode` and the C API spell it.
    #[must_use]
    pub fn name(&self) -> &'static str {
        EVENT_NAMES[usize::from(self.code())]
    }

    /// The flat record of this event.
    #[must_use]
    pub fn record(&self) -> EventRecord {
        let mut r = EventRecord {
            kind: self.code(),
            ..EventRecord::default()
        };
        match *self {
            Event::FaultRead
            | Event::FaultWrite
            | Event::FaultWp
            | Event::ThpFaultAlloc
            | Event::ThpSplitPmd
            | Event::PgReuse
            | Event::CowCopy
            | Event::HugeZeroWrite
            | Event::ThpCollapseAlloc
            | Event::ThpCollapseAllocFailed => {}
            Event::Collapse {
                asid,
                start,
                result,
            } => {
                (r.asid, r.start, r.end, r.cause) =
                    (asid, start, start + crate::addr::PMD_SIZE, result as u8);
            }
            Event::AnonFaultAlloc { order }
            | Event::AnonFaultFallback { order }
            | Event::SwpoutFallback { order }
            | Event::SwpinFallback { order } => {
                r.order = order as u8;
            }
            Event::SwapOut { pfn, order, nr } | Event::SwapIn { pfn, order, nr } => {
                (r.pfn, r.order, r.nr) = (pfn, order as u8, nr);
            }
            Event::FolioAlloc { pfn, order }
            | Event::Split { pfn, order }
            | Event::FolioFree { pfn, order }
            | Event::DeferredSplit { pfn, order }
            | Event::DeferredUnqueue { pfn, order }
            | Event::SplitFailed { pfn, order } => {
                r.pfn = pfn;
                r.order = order as u8;
            }
            Event::PagesZeroed { pfn, nr } => {
                r.pfn = pfn;
                r.nr = nr;
            }
            Event::PagesCopied { src, dst, nr } => {
                r.pfn = src;
                r.pfn2 = dst;
                r.nr = nr;
            }
            Event::Fork {
                parent,
                child,
                ptes,
                pmds,
            } => {
                r.asid = parent;
                r.asid2 = child;
                r.nr = ptes;
                r.pmds = pmds;
            }
            Event::Zap {
                asid,
                cause,
                start,
                end,
                ptes,
                pmds,
            } => {
                (r.asid, r.cause, r.start, r.end, r.nr, r.pmds) =
                    (asid, cause as u8, start, end, ptes, pmds);
            }
            Event::Mprotect {
                asid,
                start,
                end,
                ptes,
                pmds,
            } => {
                (r.asid, r.start, r.end, r.nr, r.pmds) = (asid, start, end, ptes, pmds);
            }
            Event::TlbFlush { asid, start, end } => {
                (r.asid, r.start, r.end) = (asid, start, end);
            }
        }
        r
    }
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
    // Inlined into `Events::emit` (itself always inlined): with the swap events (issue 16)
    // plain `#[inline]` left it out of line, a call per event (callgrind: +1.4 M
    // instructions, 3%, in benches/callgrind_core.py write 4K; BENCHMARKS.md).
    #[expect(clippy::inline_always, reason = "measured: see the comment above")]
    #[inline(always)]
    pub fn apply(&mut self, e: Event) {
        match e {
            Event::FaultRead => self.faults_read += 1,
            Event::FaultWrite => self.faults_write += 1,
            Event::FaultWp => self.faults_wp += 1,
            Event::AnonFaultAlloc { order } => Self::count_mthp(&mut self.anon_fault_alloc, order),
            Event::AnonFaultFallback { order } => {
                Self::count_mthp(&mut self.anon_fault_fallback, order);
                if order == PMD_ORDER {
                    self.thp_fault_fallback += 1; // counted beside it, vma_alloc_anon_folio_pmd
                }
            }
            Event::Split { order, .. } => {
                // split_folio: MTHP_STAT_SPLIT, THP_SPLIT_PAGE, and the folio leaves
                // MTHP_STAT_NR_ANON of its size (its pieces are order 0, uncounted).
                Self::count_mthp(&mut self.split, order);
                Self::gauge_mthp(&mut self.nr_anon, order, -1);
                if order == PMD_ORDER {
                    self.thp_split_page += 1;
                }
            }
            Event::SplitFailed { order, .. } => {
                Self::count_mthp(&mut self.split_failed, order);
                if order == PMD_ORDER {
                    self.thp_split_page_failed += 1;
                }
            }
            Event::FolioAlloc { order, .. } => Self::gauge_mthp(&mut self.nr_anon, order, 1),
            Event::FolioFree { order, .. } => Self::gauge_mthp(&mut self.nr_anon, order, -1),
            Event::DeferredSplit { order, .. } => {
                Self::count_mthp(&mut self.split_deferred, order);
                Self::gauge_mthp(&mut self.nr_anon_partially_mapped, order, 1);
                if order == PMD_ORDER {
                    self.thp_deferred_split_page += 1;
                }
            }
            Event::DeferredUnqueue { order, .. } => {
                Self::gauge_mthp(&mut self.nr_anon_partially_mapped, order, -1);
            }
            Event::ThpFaultAlloc => self.thp_fault_alloc += 1,
            Event::ThpSplitPmd => self.thp_split_pmd += 1,
            Event::PgReuse => self.pgreuse += 1,
            Event::CowCopy => self.cow_copy += 1,
            Event::HugeZeroWrite => self.huge_zero_write += 1,
            Event::ThpCollapseAlloc => self.thp_collapse_alloc += 1,
            Event::ThpCollapseAllocFailed => self.thp_collapse_alloc_failed += 1,
            Event::SwapOut { .. }
            | Event::SwapIn { .. }
            | Event::SwpoutFallback { .. }
            | Event::SwpinFallback { .. } => self.apply_swap(e),
            Event::PagesZeroed { .. }
            | Event::Collapse { .. }
            | Event::PagesCopied { .. }
            | Event::Fork { .. }
            | Event::Zap { .. }
            | Event::Mprotect { .. }
            | Event::TlbFlush { .. } => {}
        }
    }

    /// The swap counters (issue 16), out of line: rare next to the fault events, they would
    /// otherwise grow [`Self::apply`] past what the fault handlers inline.
    #[cold]
    #[inline(never)]
    fn apply_swap(&mut self, e: Event) {
        match e {
            // nothing is counted for a zero-filled folio (only its zeromap bits are set)
            Event::SwapOut { order, nr, .. } if nr > 0 => {
                self.pswpout += nr;
                Self::count_mthp(&mut self.swpout, order);
                if order == PMD_ORDER {
                    self.thp_swpout += 1;
                }
            }
            Event::SwapIn { order, nr, .. } if nr > 0 => {
                self.pswpin += nr;
                Self::count_mthp(&mut self.swpin, order);
            }
            Event::SwpoutFallback { order } => {
                Self::count_mthp(&mut self.swpout_fallback, order);
                if order == PMD_ORDER {
                    self.thp_swpout_fallback += 1;
                }
            }
            Event::SwpinFallback { order } => Self::count_mthp(&mut self.swpin_fallback, order),
            _ => {}
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
    // Always inlined: with a constant event the fold is one increment, but the Python
    // extension's build (lto, one codegen unit, a larger crate graph) otherwise calls it
    // out of line from the fault handlers, passing the event through memory (callgrind:
    // 17 instructions instead of 2 per event, 5% of the COW-reuse benchmark).
    #[expect(clippy::inline_always, reason = "measured: see the comment above")]
    #[inline(always)]
    pub(crate) fn emit(&mut self, e: Event) {
        self.stats.apply(e);
        if self.recorded.is_some() {
            self.keep(e);
        }
    }

    /// Keeps `e` while recording. Out of line, so that the inlined `emit` stays a counter
    /// increment and a test.
    #[inline(never)]
    fn keep(&mut self, e: Event) {
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
    /// Starting while recording keeps what was recorded.
    pub(crate) fn record(&mut self, on: bool) {
        if !on {
            self.recorded = None;
        } else if self.recorded.is_none() {
            self.recorded = Some(Vec::new());
        }
    }

    /// The events recorded since the last call (recording goes on).
    pub(crate) fn take_recorded(&mut self) -> Vec<Event> {
        self.recorded
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// How many events are recorded and not taken yet.
    pub(crate) fn recorded_len(&self) -> usize {
        self.recorded.as_ref().map_or(0, Vec::len)
    }

    /// Hands the recorded events to `sink` and empties the buffer, keeping its capacity.
    pub(crate) fn drain_recorded(&mut self, sink: &mut impl FnMut(&Event)) {
        if let Some(r) = &mut self.recorded {
            for e in r.drain(..) {
                sink(&e);
            }
        }
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
        let e = m.k.events.take_recorded();
        assert_eq!(e[0], Event::FaultWrite);
        assert!(matches!(e[1], Event::FolioAlloc { order: 0, .. }));
        assert!(matches!(e[2], Event::PagesZeroed { nr: 1, .. }));
        assert_eq!(e.len(), 3); // no AnonFaultAlloc for order 0 (count_mthp_stat)
        assert!(m.k.events.take_recorded().is_empty());
        m.k.events.record(false);
        m.write(1, VirtAddr::new(a.as_u64() + 2 * K4), K4, 1)
            .unwrap();
        assert!(m.k.events.take_recorded().is_empty());
        assert_eq!(m.stats().faults_write, 3);
    }
}
