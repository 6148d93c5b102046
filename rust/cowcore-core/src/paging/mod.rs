//! x86-64 paging: entries, tables and the walker (KS §8).
//!
//! 4-level paging (PGD, PUD, PMD, PTE) by default; 5-level paging adds a P4D level under the
//! PGD (LA57). Tables are order-0 frames of simulated physical memory holding 512 `u64`
//! entries.

pub mod entry;
pub mod table;
pub mod walk;

pub use entry::{EntryKind, PageTableEntry, PteFlags, SwapEntry};
pub use table::{Level, Paging};
pub use walk::{error_code, Translation, WalkStep};
