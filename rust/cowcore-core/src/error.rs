//! The one error type of the core, [`CowError`].
//!
//! Each variant maps 1:1 onto an exception class of `python/cowcore/errors.py`, so the
//! binding holds a single `match`. Every failing operation leaves the machine as it was
//! (DESIGN.md "Errors"), except where DESIGN.md says otherwise (an OOM in the middle of a
//! multi-page `write`/`read` keeps the pages before the failing one).

use crate::addr::VirtAddr;

/// Why a `read`/`write` was answered with SIGSEGV (`access_error()` in arch/x86/mm/fault.c).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SegvReason {
    /// No VMA covers the address (`SEGV_MAPERR`).
    Unmapped,
    /// A VMA covers the address but forbids the access (`SEGV_ACCERR`).
    Protection,
}

impl SegvReason {
    /// Both reasons.
    pub const ALL: [Self; 2] = [Self::Unmapped, Self::Protection];

    /// The reason string of `cowcore.errors.SegmentationFault`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Unmapped => "unmapped",
            Self::Protection => "protection",
        }
    }
}

impl core::fmt::Display for SegvReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every error the core returns.
///
/// # Examples
///
/// Match on the variant; the messages are for people and may change.
///
/// ```rust
/// use cowcore_core::{CowError, Machine, Profile, Prot, SegvReason, VirtAddr};
///
/// let mut m = Machine::new(8 << 20, 4, Profile::V6_15)?;
/// let a = m.mmap(1, 4096)?;
/// match m.write(1, a, 2 * 4096, 1) {
///     Err(CowError::Segfault { addr, reason: SegvReason::Unmapped }) => {
///         assert_eq!(addr.as_u64(), a.as_u64() + 4096); // the first page with no VMA
///     }
///     other => panic!("expected SIGSEGV, got {other:?}"),
/// }
/// // The whole range was checked first: the mapped page was not written either.
/// assert!(!m.observe(1, a, 4096)?[0].present);
///
/// m.mprotect(1, a, 4096, Prot::Read)?;
/// let e = m.write(1, a, 4096, 1).unwrap_err();
/// assert_eq!(e, CowError::Segfault { addr: a, reason: SegvReason::Protection });
///
/// assert!(matches!(m.mmap(1, 100), Err(CowError::InvalidArgument(_))));
/// assert!(matches!(m.read(1, VirtAddr::new(0), 4096), Err(CowError::InvalidAddress(_))));
/// assert_eq!(m.fork(7), Err(CowError::NoSuchProcess(7)));
///
/// // 4 MiB leave 510 free frames after boot: a 1024-page write runs out part way, keeping
/// // the pages it had written, and every invariant still holds.
/// let mut small = Machine::new(4 << 20, 4, Profile::V6_15)?;
/// let b = small.mmap(1, 4 << 20)?;
/// assert_eq!(small.write(1, b, 4 << 20, 1), Err(CowError::OutOfMemory));
/// assert!(small.observe(1, b, 4096)?[0].present);
/// small.check()?;
/// # Ok::<(), CowError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CowError {
    /// The pid names no process (`NoSuchProcessError`; the kernel's `ESRCH`).
    #[error("no process with pid {0}")]
    NoSuchProcess(u32),
    /// The pid names a process that has exited (`NoSuchProcessError` too: the two differ only
    /// in the message, which says which it is, as the reference's does).
    #[error("process {0} has exited")]
    ProcessExited(u32),
    /// An argument has a bad value: a length that is zero or not a multiple of 4 KiB, a
    /// misaligned address, an unknown name (`InvalidArgumentError`; `EINVAL`).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A range outside user space, a range with unmapped pages where mapped pages are
    /// required (`ENOMEM` of `mprotect`/`madvise`), or no room for `mmap`
    /// (`InvalidAddressError`).
    #[error("invalid address: {0}")]
    InvalidAddress(String),
    /// An access the kernel would answer with SIGSEGV (`SegmentationFault`).
    #[error("segmentation fault at {addr}: {reason}")]
    Segfault {
        /// The faulting address (the first page of the range that fails the check).
        addr: VirtAddr,
        /// `unmapped` or `protection`.
        reason: SegvReason,
    },
    /// No frame for a page table or an order-0 page (`OutOfMemoryError`; `VM_FAULT_OOM`).
    #[error("out of memory")]
    OutOfMemory,
    /// `fork` found no free pid: the machine already holds `pid_max - 1` processes
    /// (`ProcessLimitError`; the kernel's `EAGAIN` from `alloc_pid`).
    #[error(
        "fork: no free pid (EAGAIN): {processes} processes, the most pid_max {pid_max} allows"
    )]
    ProcessLimit {
        /// The live processes.
        processes: u32,
        /// `kernel.pid_max`.
        pid_max: u32,
    },
    /// The model does not cover this case (`NotModelledError`, issue 16); the message says
    /// which and why (a large swap-in whose answer depends on the kernel's cluster
    /// allocator, `MADV_COLLAPSE` over swap entries).
    #[error("not modelled: {0}")]
    NotModelled(String),
    /// [`crate::Machine::check`] found a broken invariant (`InvariantError`).
    #[error("{name}: {msg}")]
    Invariant {
        /// Short name of the broken invariant (kernel-semantics.md §1.3).
        name: &'static str,
        /// What was found.
        msg: String,
    },
}

impl CowError {
    /// Shorthand for an [`CowError::Invariant`].
    pub(crate) fn invariant(name: &'static str, msg: impl Into<String>) -> Self {
        Self::Invariant {
            name,
            msg: msg.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages() {
        let e = CowError::Segfault {
            addr: VirtAddr::new(0x1000),
            reason: SegvReason::Unmapped,
        };
        assert_eq!(e.to_string(), "segmentation fault at 0x1000: unmapped");
        assert_eq!(CowError::invariant("x", "y").to_string(), "x: y");
        assert_eq!(SegvReason::Protection.as_str(), "protection");
        assert_eq!(
            CowError::NoSuchProcess(9).to_string(),
            "no process with pid 9"
        );
        assert_eq!(
            CowError::ProcessExited(2).to_string(),
            "process 2 has exited"
        );
    }
}
