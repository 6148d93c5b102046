// The crate's front page is its README (what it models, an example that runs as a doctest,
// the determinism contract, MSRV), so crates.io and docs.rs show the same text.
#![doc = include_str!("../README.md")]
//!
//! ## Where things are
//!
//! The behaviour follows `docs/kernel-semantics.md` of the cowcore repository ("KS §n" in
//! comments) and the determinism contract of its `DESIGN.md`, so that it matches cowcore's
//! pure-Python reference bit for bit.
//!
//! * [`Machine`] ([`machine`]) is the entry point: a thin façade whose methods take pids
//!   and plain values and return plain structs that map 1:1 onto cowcore's Python
//!   `Backend` protocol. Under it, the private `kernel` module holds the state (physical
//!   memory, processes, MM ids, policy, counters), and the operations are private modules
//!   named after what they model (`fault`, `fork`, `zap`, `mprotect`, `check`, `smaps`), each over a
//!   narrow context that borrows only what it needs (`fault::Fault` is the kernel's
//!   `struct vm_fault`).
//! * [`addr`]: the [`VirtAddr`] and [`Pfn`] newtypes.
//! * [`paging`]: [`PageTableEntry`] and [`PteFlags`] with the real x86-64 bits, the levels,
//!   and the result of a walk ([`Translation`]).
//! * [`folio`]: [`FolioInfo`], a snapshot of a folio's counters; [`physmem`]: the buddy
//!   allocator and the per-frame arrays.
//! * [`mm`]: address spaces ([`Mm`], [`Vma`]), [`Prot`] and [`Advice`].
//! * [`policy`]: the kernel [`Profile`], the THP sysfs knobs and the toggles ([`Policy`]).
//! * [`error`]: [`CowError`], the one error type; [`events`]: every counted thing as an
//!   [`Event`] on one channel; [`stats`]: the counters, the fold of the events.
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations)]
// Page-walk loops use the kernel's own short names (addr a, end e, table t, index i).
#![allow(clippy::many_single_char_names)]

pub mod addr;
pub mod check;
pub mod error;
pub mod events;
mod fault;
pub mod folio;
mod fork;
mod gup;
mod kernel;
mod khugepaged;
pub mod machine;
pub mod mm;
mod mprotect;
mod mremap;
pub mod outcome;
mod pagewalk;
pub mod paging;
pub mod physmem;
pub mod policy;
mod smaps;
pub mod split;
pub mod stats;
mod swap;
mod swapin;
mod table_pool;
mod zap;

pub use addr::{Pfn, VirtAddr, PAGE_SIZE, PMD_SIZE};
pub use error::{CowError, SegvReason};
pub use events::{Event, EventRecord, ZapCause};
pub use folio::FolioInfo;
pub use khugepaged::ScanResult;
pub use machine::{FrameKind, Machine, Observation, MAX_MEMORY, PID_MAX_LIMIT, PID_MAX_MIN};
pub use mm::{Advice, Mm, Prot, VmFlags, Vma, VmaInfo};
pub use outcome::{Access, AccessFlags, AccessKinds, MapLevel, Outcome, Reason};
pub use paging::{EntryKind, Level, PageTableEntry, PteFlags, SwapEntry, Translation, WalkStep};
pub use physmem::PhysMem;
pub use policy::{
    KernelConfig, Policy, PolicySpec, Profile, ThpMode, ThpSizeMode, NO_MTHP_SIZES, POLICIES,
    THP_SIZES,
};
pub use smaps::{SmapsInfo, PSS_SHIFT};
pub use stats::{Stats, Vmstat};
pub use swap::SWAP_SLOTS;
