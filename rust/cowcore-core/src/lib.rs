//! cowcore-core: the pure-Rust simulation core of cowcore.
//!
//! It models Linux anonymous memory and copy-on-write on x86-64: page tables stored in
//! simulated physical frames, folios with the kernel's counters (refcount, per-page and
//! large mapcounts, MM-ID owner slots), fork, the COW write fault that reuses or copies
//! (including Linux 6.15's reuse of PTE-mapped THPs), unmapping and THP splitting. The
//! behaviour follows `docs/kernel-semantics.md` ("KS §n" in comments) and the determinism
//! contract of `DESIGN.md`, so that it matches the pure-Python reference bit for bit.
//!
//! The entry point is [`Machine`]: methods take pids and plain values and return plain
//! structs that map 1:1 onto the Python `Backend` protocol.
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations)]
// Page-walk loops use the kernel's own short names (addr a, end e, table t, index i).
#![allow(clippy::many_single_char_names)]

pub mod addr;
pub mod check;
pub mod error;
mod fault;
pub mod folio;
mod fork;
pub mod machine;
pub mod mm;
mod mprotect;
pub mod paging;
pub mod physmem;
pub mod policy;
pub mod stats;
mod table_pool;
mod zap;

pub use addr::{Pfn, PhysAddr, VirtAddr, PAGE_SIZE, PMD_SIZE};
pub use error::{CowError, SegvReason};
pub use folio::FolioInfo;
pub use machine::{FrameKind, Machine, Observation};
pub use mm::{Advice, Mm, Prot, VmFlags, Vma, VmaInfo};
pub use paging::{Level, PageTableEntry, PteFlags, Translation, WalkStep};
pub use physmem::PhysMem;
pub use policy::{Policy, Profile, ThpMode, ThpSizeMode, THP_SIZES};
pub use stats::Stats;
