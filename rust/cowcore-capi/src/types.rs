//! The plain C types of the API: the status codes, the records (`cowcore_access_t`,
//! `cowcore_event_t`, `cowcore_stats_t`) and the named codes of their fields.
//!
//! The records have the core's own layouts ([`cowcore_core::Access`] and
//! [`cowcore_core::EventRecord`] are `#[repr(C)]` already); they are re-declared here with
//! integer fields because a C caller may hand back any byte, and a Rust enum field holding
//! an unknown value would be undefined behaviour. The compile-time assertions below pin every
//! field offset to the core's, and the code enums mirror the core's `#[repr(u8)]` values (the
//! tests compare them one by one), so a value read in C means what the core meant.

use cowcore_core::{Access, EventRecord, Stats};
use std::mem::{align_of, offset_of, size_of};

/// The result of every call: `COWCORE_STATUS_OK` or why it failed. The message of a failure
/// is `cowcore_last_error()`.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CowcoreStatus {
    /// Success.
    Ok = 0,
    /// The pid names no process, or one that has exited.
    NoSuchProcess = 1,
    /// An argument has a bad value: a length, an alignment, an unknown name or profile,
    /// mismatched lengths, a string that is not UTF-8.
    InvalidArgument = 2,
    /// A range outside user space, unmapped pages where mapped ones are required, no room
    /// for `mmap`, or an overlap for `mmap_fixed` (the message ends in `(EEXIST)`).
    InvalidAddress = 3,
    /// An operation the kernel answers with SIGSEGV (not an access: an access reports a
    /// segfault in its record and returns `OK`).
    Segfault = 4,
    /// No memory for page tables or pages.
    OutOfMemory = 5,
    /// `cowcore_check()` found a broken invariant.
    Invariant = 6,
    /// A required pointer argument is NULL.
    NullPointer = 7,
    /// The core panicked (a bug in cowcore). The machine is poisoned: every later call on it
    /// returns `COWCORE_STATUS_PANIC`; free it.
    Panic = 8,
    /// `fork` found no free pid: the machine holds `pid_max - 1` processes (the kernel's
    /// `EAGAIN` from `alloc_pid`).
    ProcessLimit = 9,
    /// The model does not cover this case (issue 16): a large swap-in whose answer depends on
    /// the kernel's swap cluster allocator, `MADV_COLLAPSE` over swap entries; the message
    /// says which.
    NotModelled = 10,
}

impl CowcoreStatus {
    /// The name of the code, as in the header (without the prefix).
    #[must_use]
    pub(crate) const fn name(self) -> &'static std::ffi::CStr {
        match self {
            Self::Ok => c"OK",
            Self::NoSuchProcess => c"NO_SUCH_PROCESS",
            Self::InvalidArgument => c"INVALID_ARGUMENT",
            Self::InvalidAddress => c"INVALID_ADDRESS",
            Self::Segfault => c"SEGFAULT",
            Self::OutOfMemory => c"OUT_OF_MEMORY",
            Self::Invariant => c"INVARIANT",
            Self::NullPointer => c"NULL_POINTER",
            Self::Panic => c"PANIC",
            Self::ProcessLimit => c"PROCESS_LIMIT",
            Self::NotModelled => c"NOT_MODELLED",
        }
    }

    /// Every code, in numeric order.
    pub(crate) const ALL: [Self; 10] = [
        Self::Ok,
        Self::NoSuchProcess,
        Self::InvalidArgument,
        Self::InvalidAddress,
        Self::Segfault,
        Self::OutOfMemory,
        Self::Invariant,
        Self::NullPointer,
        Self::Panic,
        Self::ProcessLimit,
    ];
}

/// `cowcore_access_t.outcome`: what the kernel did (`cowcore_core::Outcome`, same numbers).
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CowcoreOutcome {
    /// No fault.
    NoFault = 0,
    /// A not-present fault mapped a new anonymous folio.
    AnonAlloc = 1,
    /// A read fault mapped the shared zero page.
    ZeroPage = 2,
    /// A read fault mapped the huge zero page.
    HugeZeroPage = 3,
    /// A write-protect fault reused the page (`wp_page_reuse`).
    CowReuse = 4,
    /// A write-protect fault copied the page (`wp_page_copy`).
    CowCopy = 5,
    /// A write-protect fault reused a huge PMD.
    PmdReuse = 6,
    /// A huge PMD was split and the retried fault copied the page (two faults).
    PmdSplitCopy = 7,
    /// An unshare fault (`FAULT_FLAG_UNSHARE`, [`crate::cowcore_unshare`]).
    Unshare = 8,
    /// SIGSEGV: nothing changed.
    Segfault = 9,
    /// The fault found no memory: nothing changed.
    OutOfMemory = 10,
    /// The swap-in fault (`do_swap_page`) mapped the page.
    SwapIn = 11,
}

/// `cowcore_access_t.reason` and `.split_reason`: the kernel condition that decided
/// (`cowcore_core::Reason`, same numbers; docs/access-and-events.md says which handler gives
/// which).
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CowcoreReason {
    /// No fault.
    None = 0,
    /// A not-present PTE (`do_anonymous_page`).
    PteNone = 1,
    /// A not-present PMD where a PMD THP fits (`do_huge_pmd_anonymous_page`).
    PmdNone = 2,
    /// `PageAnonExclusive`: reuse.
    AnonExclusive = 3,
    /// A small folio whose only reference is this mapping: reuse.
    SmallSoleRef = 4,
    /// A small folio with other references: copy.
    SmallOtherRefs = 5,
    /// A PTE-mapped large folio before 6.15: copy.
    LargeNoPteReuse = 6,
    /// A large folio's last mapped page: copy.
    LargeLastMapped = 7,
    /// A large folio maybe mapped by another mm: copy.
    LargeMaybeShared = 8,
    /// A large folio with references other than mappings: copy.
    LargeExtraRefs = 9,
    /// A large folio mapped only by this mm: reuse.
    LargeExclusive = 10,
    /// A write to the shared zero page: copy into a zeroed page.
    ZeroPage = 11,
    /// A write to the huge zero page allocated a new THP (6.14+).
    HugeZeroNewThp = 12,
    /// A write to the huge zero page split it.
    HugeZeroFallback = 13,
    /// A huge PMD whose head is `PageAnonExclusive`: reuse.
    PmdAnonExclusive = 14,
    /// A huge PMD whose THP has one reference: reuse.
    PmdSoleRef = 15,
    /// A shared huge PMD: split.
    PmdShared = 16,
    /// SIGSEGV: no VMA, or outside user space.
    SegvUnmapped = 17,
    /// SIGSEGV: the VMA forbids the access.
    SegvProtection = 18,
    /// `cow_reuse_remember_exclusive`: the folio was remembered exclusive: reuse.
    LargeMemoExclusive = 19,
    /// `mm_id_exact`: maybe shared by the two slots, exclusive in fact: reuse.
    LargeExactExclusive = 20,
    /// `do_swap_page`: a new folio read outside the swap cache, certainly exclusive.
    SwapFresh = 21,
    /// `do_swap_page`: the swap entry's exclusive bit.
    SwapExclusive = 22,
    /// `do_swap_page`: the only reference once the swap cache was freed.
    SwapSoleRef = 23,
    /// `do_swap_page`: maybe shared, mapped read-only.
    SwapMaybeShared = 24,
}

/// `cowcore_access_t.level`: the entry mapping the page afterwards
/// (`cowcore_core::MapLevel`).
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CowcoreMapLevel {
    /// Not mapped (segfault, out of memory).
    None = 0,
    /// A 4 KiB PTE.
    Pte = 1,
    /// A 2 MiB huge PMD.
    Pmd = 2,
}

/// `cowcore_event_t.kind` (`cowcore_core::Event::code`, `cowcore.outcome.EventCode`).
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CowcoreEventKind {
    /// A fault on a read.
    FaultRead = 1,
    /// A fault on a write to a not-present entry.
    FaultWrite = 2,
    /// A write-protect fault.
    FaultWp = 3,
    /// `MTHP_STAT_ANON_FAULT_ALLOC` (`order`).
    AnonFaultAlloc = 4,
    /// `MTHP_STAT_ANON_FAULT_FALLBACK` (`order`).
    AnonFaultFallback = 5,
    /// `MTHP_STAT_SPLIT`: a folio split by `split_folio` (`pfn`, `order`).
    Split = 6,
    /// `THP_FAULT_ALLOC`.
    ThpFaultAlloc = 7,
    /// `THP_SPLIT_PMD`.
    ThpSplitPmd = 8,
    /// `PGREUSE`.
    Pgreuse = 9,
    /// A copy by `wp_page_copy`.
    CowCopy = 10,
    /// `do_huge_zero_wp_pmd`.
    HugeZeroWrite = 11,
    /// A folio allocated (`pfn`, `order`).
    FolioAlloc = 12,
    /// A folio freed (`pfn`, `order`).
    FolioFree = 13,
    /// Frames zeroed (`pfn`, `nr`).
    PagesZeroed = 14,
    /// Frames copied (`pfn` source, `pfn2` destination, `nr`).
    PagesCopied = 15,
    /// A fork (`asid` parent, `asid2` child, `nr` PTEs, `pmds`).
    Fork = 16,
    /// Entries zapped (`asid`, `cause`, `start`, `end`, `nr` PTEs, `pmds`).
    Zap = 17,
    /// Entries changed by `mprotect` (`asid`, `start`, `end`, `nr`, `pmds`).
    Mprotect = 18,
    /// A TLB flush of `[start, end)` of `asid` (`[0, UINT64_MAX)`: the whole space).
    TlbFlush = 19,
    /// A large folio queued for deferred split as partially mapped (`pfn`, `order`).
    DeferredSplit = 20,
    /// A partially mapped folio off the deferred-split queue as it is freed (`pfn`,
    /// `order`).
    DeferredUnqueue = 21,
    /// A folio `split_folio` refused (`pfn`, `order`): `split_failed`.
    SplitFailed = 22,
    /// `THP_COLLAPSE_ALLOC`: a collapse allocated its THP.
    ThpCollapseAlloc = 23,
    /// `THP_COLLAPSE_ALLOC_FAILED`: a collapse found no free PMD-size block.
    ThpCollapseAllocFailed = 24,
    /// `MADV_COLLAPSE` tried the 2 MiB block `[start, end)` of `asid`; `cause` is its
    /// [`CowcoreScanResult`].
    Collapse = 25,
    /// A folio written to swap (`pfn`, `order`, `nr` pages written; 0 when zero-filled).
    SwapOut = 26,
    /// A folio read from swap (`pfn`, `order`, `nr` pages read; 0 for zero slots).
    SwapIn = 27,
    /// `MTHP_STAT_SWPOUT_FALLBACK` (`order`).
    SwpoutFallback = 28,
    /// `MTHP_STAT_SWPIN_FALLBACK` (`order`).
    SwpinFallback = 29,
}

/// The result of [`crate::cowcore_collapse`] and the `cause` of a `COLLAPSE` event: the
/// kernel's `enum scan_result` member (`cowcore_core::ScanResult`, same numbers). The
/// errno the system call returned follows from it (`madvise_collapse_errno`): none for
/// `SUCCEED` and `PMD_MAPPED`, `ENOMEM` for `ALLOC_HUGE_PAGE_FAIL`, `EAGAIN` for
/// `PAGE_COUNT`, `EINVAL` for the others.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CowcoreScanResult {
    /// `SCAN_FAIL`.
    Fail = 0,
    /// Every block of the range is PMD-mapped now.
    Succeed = 1,
    /// No page table maps the block.
    PmdNull = 2,
    /// A huge PMD maps the block already.
    PmdMapped = 3,
    /// No PTE of the block is writable (6.1, 6.12).
    PageRo = 4,
    /// A folio has references beyond its mappings (a ref or a pin).
    PageCount = 5,
    /// The VMA has no `anon_vma` (found again after the allocation).
    PageAnon = 6,
    /// The VMA refuses `MADV_COLLAPSE`: `VM_NOHUGEPAGE`, no `anon_vma`, or no whole
    /// aligned 2 MiB block in it.
    VmaCheck = 7,
    /// No free PMD-size block.
    AllocHugePageFail = 8,
}

/// `cowcore_event_t.cause` of a `ZAP` event (`cowcore_core::ZapCause`).
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CowcoreZapCause {
    /// `munmap()`.
    Unmap = 0,
    /// The process exited.
    Exit = 1,
    /// `madvise(MADV_DONTNEED)`.
    Dontneed = 2,
}

/// `cowcore_access_t.flags`: the first fault was on an empty entry.
pub const COWCORE_ACCESS_FIRST_TOUCH: u8 = 1 << 0;
/// `cowcore_access_t.flags`: the kernel zero-filled new memory.
pub const COWCORE_ACCESS_ZEROED: u8 = 1 << 1;
/// `cowcore_access_t.flags`: the kernel copied a page.
pub const COWCORE_ACCESS_COPIED: u8 = 1 << 2;
/// `cowcore_access_t.flags`: a huge PMD was split.
pub const COWCORE_ACCESS_SPLIT: u8 = 1 << 3;
/// `cowcore_access_t.flags`: an allocation failed and a smaller order was used.
pub const COWCORE_ACCESS_FELL_BACK: u8 = 1 << 4;
/// `cowcore_access_t.flags`: `cow_reuse_fault_around` made other PTEs of the folio writable.
pub const COWCORE_ACCESS_FAULT_AROUND: u8 = 1 << 5;
/// `cowcore_access_t.flags`: the fault swapped the page in (read from a swap slot or found in
/// the swap cache; issue 16).
pub const COWCORE_ACCESS_SWAP_IN: u8 = 1 << 6;
/// `cowcore_access_t.phys` of an access that did not complete (segfault, out of memory).
pub const COWCORE_NO_PHYS: u64 = u64::MAX;

/// The record of one access (32 bytes, the layout of `cowcore_core::Access`).
///
/// The enum-valued fields are `uint8_t` holding a `cowcore_outcome`, `cowcore_reason`,
/// `cowcore_map_level` and a set of `COWCORE_ACCESS_*` flags.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CowcoreAccess {
    /// `pfn << 12 | (addr & 0xfff)`, or `COWCORE_NO_PHYS`.
    pub phys: u64,
    /// A `cowcore_outcome`.
    pub outcome: u8,
    /// A `cowcore_reason`: the last decision.
    pub reason: u8,
    /// A `cowcore_reason`: why a huge PMD was split first, or `COWCORE_REASON_NONE`.
    pub split_reason: u8,
    /// A `cowcore_map_level`.
    pub level: u8,
    /// The folio order of the page accessed afterwards.
    pub order: u8,
    /// Faults taken (0, 1 or 2).
    pub faults: u8,
    /// `COWCORE_ACCESS_*` flags.
    pub flags: u8,
    /// Zero.
    pub reserved: u8,
    /// The x86 error code of the first fault (`PF_PROT=1 | PF_WRITE=2 | PF_USER=4`), or 0.
    pub error_code: u32,
    /// Orders the THP settings allow (bit k = order k).
    pub orders_allowed: u16,
    /// ... whose aligned block fits the VMA.
    pub orders_fit: u16,
    /// ... whose block of entries is empty.
    pub orders_empty: u16,
    /// Orders whose allocation failed.
    pub orders_failed: u16,
    /// Zero.
    pub reserved2: u32,
}

impl From<Access> for CowcoreAccess {
    fn from(a: Access) -> Self {
        Self {
            phys: a.phys,
            outcome: a.outcome as u8,
            reason: a.reason as u8,
            split_reason: a.split_reason as u8,
            level: a.level as u8,
            order: a.order,
            faults: a.faults,
            flags: a.flags.bits(),
            reserved: 0,
            error_code: a.error_code,
            orders_allowed: a.orders_allowed,
            orders_fit: a.orders_fit,
            orders_empty: a.orders_empty,
            orders_failed: a.orders_failed,
            reserved2: 0,
        }
    }
}

/// One event, flat (72 bytes, the layout of `cowcore_core::EventRecord`); the fields a kind
/// does not use are 0 (see `cowcore_event_kind`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CowcoreEvent {
    /// A `cowcore_event_kind`.
    pub kind: u8,
    /// A folio order.
    pub order: u8,
    /// A `cowcore_zap_cause` (`ZAP`).
    pub cause: u8,
    /// Zero.
    pub reserved: u8,
    /// Zero.
    pub reserved2: u32,
    /// The address space (`FORK`: the parent).
    pub asid: u64,
    /// `FORK`: the child's address space.
    pub asid2: u64,
    /// A first frame (`FOLIO_*`, `PAGES_ZEROED`, `DEFERRED_*`; `PAGES_COPIED`: the source).
    pub pfn: u64,
    /// `PAGES_COPIED`: the destination.
    pub pfn2: u64,
    /// A range's start.
    pub start: u64,
    /// A range's end.
    pub end: u64,
    /// Frames zeroed or copied; PTEs of `FORK`, `ZAP`, `MPROTECT`.
    pub nr: u64,
    /// Huge PMDs of `FORK`, `ZAP`, `MPROTECT`.
    pub pmds: u64,
}

impl From<EventRecord> for CowcoreEvent {
    fn from(r: EventRecord) -> Self {
        Self {
            kind: r.kind,
            order: r.order,
            cause: r.cause,
            reserved: 0,
            reserved2: 0,
            asid: r.asid,
            asid2: r.asid2,
            pfn: r.pfn,
            pfn2: r.pfn2,
            start: r.start,
            end: r.end,
            nr: r.nr,
            pmds: r.pmds,
        }
    }
}

/// The counters of a machine since it was created (`cowcore_core::Stats`). The per-size
/// arrays are indexed by order − 2 (16K, 32K, 64K, 128K, 256K, 512K, 1M, 2M).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CowcoreStats {
    /// `MTHP_STAT_ANON_FAULT_ALLOC` per size.
    pub anon_fault_alloc: [u64; 8],
    /// `MTHP_STAT_ANON_FAULT_FALLBACK` per size.
    pub anon_fault_fallback: [u64; 8],
    /// `MTHP_STAT_SPLIT` per size.
    pub split: [u64; 8],
    /// `THP_FAULT_ALLOC`.
    pub thp_fault_alloc: u64,
    /// `THP_SPLIT_PMD`.
    pub thp_split_pmd: u64,
    /// `PGREUSE`.
    pub pgreuse: u64,
    /// Copies made by `wp_page_copy`.
    pub cow_copy: u64,
    /// Faults on reads.
    pub faults_read: u64,
    /// Faults on writes to not-present entries.
    pub faults_write: u64,
    /// Write-protect faults.
    pub faults_wp: u64,
    /// `do_huge_zero_wp_pmd` allocations.
    pub huge_zero_write: u64,
    /// `MTHP_STAT_SPLIT_DEFERRED` per size.
    pub split_deferred: [u64; 8],
    /// `MTHP_STAT_NR_ANON` per size (folios that exist now).
    pub nr_anon: [u64; 8],
    /// `MTHP_STAT_NR_ANON_PARTIALLY_MAPPED` per size (queued as partially mapped now).
    pub nr_anon_partially_mapped: [u64; 8],
    /// `THP_FAULT_FALLBACK`.
    pub thp_fault_fallback: u64,
    /// `THP_SPLIT_PAGE`.
    pub thp_split_page: u64,
    /// `THP_DEFERRED_SPLIT_PAGE`.
    pub thp_deferred_split_page: u64,
    /// `MTHP_STAT_SPLIT_FAILED` per size (splits `can_split_folio` refused).
    pub split_failed: [u64; 8],
    /// `THP_SPLIT_PAGE_FAILED`.
    pub thp_split_page_failed: u64,
    /// `THP_COLLAPSE_ALLOC`.
    pub thp_collapse_alloc: u64,
    /// `THP_COLLAPSE_ALLOC_FAILED`.
    pub thp_collapse_alloc_failed: u64,
    /// `PSWPIN`.
    pub pswpin: u64,
    /// `PSWPOUT`.
    pub pswpout: u64,
    /// `THP_SWPOUT`.
    pub thp_swpout: u64,
    /// `THP_SWPOUT_FALLBACK`.
    pub thp_swpout_fallback: u64,
    /// `MTHP_STAT_SWPOUT` per size.
    pub swpout: [u64; 8],
    /// `MTHP_STAT_SWPOUT_FALLBACK` per size.
    pub swpout_fallback: [u64; 8],
    /// `MTHP_STAT_SWPIN` per size.
    pub swpin: [u64; 8],
    /// `MTHP_STAT_SWPIN_FALLBACK` per size.
    pub swpin_fallback: [u64; 8],
}

impl From<&Stats> for CowcoreStats {
    fn from(s: &Stats) -> Self {
        // No `..`: a new counter in the core fails to compile here until it is exported.
        let Stats {
            anon_fault_alloc,
            anon_fault_fallback,
            split,
            thp_fault_alloc,
            thp_split_pmd,
            pgreuse,
            cow_copy,
            faults_read,
            faults_write,
            faults_wp,
            huge_zero_write,
            split_deferred,
            nr_anon,
            nr_anon_partially_mapped,
            thp_fault_fallback,
            thp_split_page,
            thp_deferred_split_page,
            split_failed,
            thp_split_page_failed,
            thp_collapse_alloc,
            thp_collapse_alloc_failed,
            pswpin,
            pswpout,
            thp_swpout,
            thp_swpout_fallback,
            swpout,
            swpout_fallback,
            swpin,
            swpin_fallback,
        } = *s;
        Self {
            anon_fault_alloc,
            anon_fault_fallback,
            split,
            thp_fault_alloc,
            thp_split_pmd,
            pgreuse,
            cow_copy,
            faults_read,
            faults_write,
            faults_wp,
            huge_zero_write,
            split_deferred,
            nr_anon,
            nr_anon_partially_mapped,
            thp_fault_fallback,
            thp_split_page,
            thp_deferred_split_page,
            split_failed,
            thp_split_page_failed,
            thp_collapse_alloc,
            thp_collapse_alloc_failed,
            pswpin,
            pswpout,
            thp_swpout,
            thp_swpout_fallback,
            swpout,
            swpout_fallback,
            swpin,
            swpin_fallback,
        }
    }
}

/// The C records keep the core's layouts byte for byte, so that documentation, Python's
/// numpy dtypes and C agree on one layout.
macro_rules! same_layout {
    ($c:ty, $core:ty: $($f:ident),*) => {
        const _: () = {
            assert!(size_of::<$c>() == size_of::<$core>());
            assert!(align_of::<$c>() == align_of::<$core>());
            $(assert!(offset_of!($c, $f) == offset_of!($core, $f));)*
        };
    };
}
same_layout!(CowcoreAccess, Access: phys, outcome, reason, split_reason, level, order, faults,
    flags, reserved, error_code, orders_allowed, orders_fit, orders_empty, orders_failed,
    reserved2);
same_layout!(CowcoreEvent, EventRecord: kind, order, cause, reserved, reserved2, asid, asid2,
    pfn, pfn2, start, end, nr, pmds);
const _: () = assert!(size_of::<CowcoreAccess>() == 32 && size_of::<CowcoreEvent>() == 72);

/// The names of the codes, indexed by value, as Python's `cowcore.outcome` spells them
/// (`tests/api.rs` checks both against `python/cowcore/outcome.py`).
pub(crate) const OUTCOME_NAMES: [&std::ffi::CStr; 12] = [
    c"NO_FAULT",
    c"ANON_ALLOC",
    c"ZERO_PAGE",
    c"HUGE_ZERO_PAGE",
    c"COW_REUSE",
    c"COW_COPY",
    c"PMD_REUSE",
    c"PMD_SPLIT_COPY",
    c"UNSHARE",
    c"SEGFAULT",
    c"OUT_OF_MEMORY",
    c"SWAP_IN",
];

/// See [`OUTCOME_NAMES`].
pub(crate) const REASON_NAMES: [&std::ffi::CStr; 25] = [
    c"NONE",
    c"PTE_NONE",
    c"PMD_NONE",
    c"ANON_EXCLUSIVE",
    c"SMALL_SOLE_REF",
    c"SMALL_OTHER_REFS",
    c"LARGE_NO_PTE_REUSE",
    c"LARGE_LAST_MAPPED",
    c"LARGE_MAYBE_SHARED",
    c"LARGE_EXTRA_REFS",
    c"LARGE_EXCLUSIVE",
    c"ZERO_PAGE",
    c"HUGE_ZERO_NEW_THP",
    c"HUGE_ZERO_FALLBACK",
    c"PMD_ANON_EXCLUSIVE",
    c"PMD_SOLE_REF",
    c"PMD_SHARED",
    c"SEGV_UNMAPPED",
    c"SEGV_PROTECTION",
    c"LARGE_MEMO_EXCLUSIVE",
    c"LARGE_EXACT_EXCLUSIVE",
    c"SWAP_FRESH",
    c"SWAP_EXCLUSIVE",
    c"SWAP_SOLE_REF",
    c"SWAP_MAYBE_SHARED",
];

/// See [`OUTCOME_NAMES`]; index 0 is no kind.
pub(crate) const EVENT_KIND_NAMES: [&std::ffi::CStr; 30] = [
    c"UNKNOWN",
    c"FAULT_READ",
    c"FAULT_WRITE",
    c"FAULT_WP",
    c"ANON_FAULT_ALLOC",
    c"ANON_FAULT_FALLBACK",
    c"SPLIT",
    c"THP_FAULT_ALLOC",
    c"THP_SPLIT_PMD",
    c"PGREUSE",
    c"COW_COPY",
    c"HUGE_ZERO_WRITE",
    c"FOLIO_ALLOC",
    c"FOLIO_FREE",
    c"PAGES_ZEROED",
    c"PAGES_COPIED",
    c"FORK",
    c"ZAP",
    c"MPROTECT",
    c"TLB_FLUSH",
    c"DEFERRED_SPLIT",
    c"DEFERRED_UNQUEUE",
    c"SPLIT_FAILED",
    c"THP_COLLAPSE_ALLOC",
    c"THP_COLLAPSE_ALLOC_FAILED",
    c"COLLAPSE",
    c"SWAP_OUT",
    c"SWAP_IN",
    c"SWPOUT_FALLBACK",
    c"SWPIN_FALLBACK",
];
