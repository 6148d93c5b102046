//! Address newtypes: [`VirtAddr`] and [`Pfn`].
//!
//! Following rust-vmm/vm-memory and rust-osdev/x86_64, addresses are newtypes with explicit
//! `checked_*` operations and no arithmetic operators, so that an overflow is a visible
//! `None` rather than a silent wrap (the kernel's `unsigned long` arithmetic is replaced by
//! checked arithmetic at every place where a caller's value enters).

use core::fmt;

/// Size of a base page (`PAGE_SIZE` on x86-64).
pub const PAGE_SIZE: u64 = 4096;
/// `PAGE_SHIFT` on x86-64.
pub const PAGE_SHIFT: u32 = 12;
/// Size of a PMD leaf (`HPAGE_PMD_SIZE`, 2 MiB).
pub const PMD_SIZE: u64 = 1 << 21;
/// Order of a PMD-sized folio (`HPAGE_PMD_ORDER`).
pub const PMD_ORDER: u32 = 9;
/// Pages in a PMD-sized folio (`HPAGE_PMD_NR`).
pub const PMD_NR: u64 = 512;

/// A user virtual address (a `unsigned long address` in `struct vm_fault`).
///
/// # Examples
///
/// ```rust
/// use cowcore_core::{VirtAddr, PMD_SIZE};
///
/// let a = VirtAddr::new(0x7f00_0020_1234);
/// assert_eq!(a.align_down(PMD_SIZE), VirtAddr::new(0x7f00_0020_0000));
/// assert_eq!(a.checked_add(0x1000), Some(VirtAddr::new(0x7f00_0020_2234)));
/// assert_eq!(VirtAddr::new(u64::MAX).checked_add(1), None); // no silent wrap
/// assert_eq!(a.to_string(), "0x7f0000201234");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct VirtAddr(u64);

impl VirtAddr {
    /// Wraps a raw address.
    #[must_use]
    pub const fn new(addr: u64) -> Self {
        Self(addr)
    }

    /// The raw address.
    #[must_use]
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// `self + bytes`, or `None` on overflow.
    #[must_use]
    pub const fn checked_add(self, bytes: u64) -> Option<Self> {
        match self.0.checked_add(bytes) {
            Some(v) => Some(Self(v)),
            None => None,
        }
    }

    /// `self - bytes`, or `None` on underflow.
    #[must_use]
    pub const fn checked_sub(self, bytes: u64) -> Option<Self> {
        match self.0.checked_sub(bytes) {
            Some(v) => Some(Self(v)),
            None => None,
        }
    }

    /// Rounds down to a multiple of `align` (a power of two), like the kernel's `ALIGN_DOWN`.
    #[must_use]
    pub const fn align_down(self, align: u64) -> Self {
        Self(self.0 & !(align - 1))
    }

    /// Whether the address is a multiple of `align` (a power of two): `IS_ALIGNED`.
    #[must_use]
    pub const fn is_aligned(self, align: u64) -> bool {
        self.0 & (align - 1) == 0
    }
}

impl From<u64> for VirtAddr {
    fn from(v: u64) -> Self {
        Self(v)
    }
}

impl fmt::Debug for VirtAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VirtAddr({:#x})", self.0)
    }
}

impl fmt::Display for VirtAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// A page frame number (`unsigned long pfn`, `page_to_pfn`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Pfn(u64);

impl Pfn {
    /// Wraps a raw frame number.
    #[must_use]
    pub const fn new(pfn: u64) -> Self {
        Self(pfn)
    }

    /// The raw frame number.
    #[must_use]
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// `self + n`, or `None` on overflow.
    #[must_use]
    pub const fn checked_add(self, n: u64) -> Option<Self> {
        match self.0.checked_add(n) {
            Some(v) => Some(Self(v)),
            None => None,
        }
    }
}

impl fmt::Debug for Pfn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pfn({:#x})", self.0)
    }
}

impl fmt::Display for Pfn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_ops() {
        assert_eq!(VirtAddr::new(u64::MAX).checked_add(1), None);
        assert_eq!(VirtAddr::new(0).checked_sub(1), None);
        assert_eq!(
            VirtAddr::new(0x3000).checked_add(0x1000),
            Some(VirtAddr::new(0x4000))
        );
        assert_eq!(
            VirtAddr::new(0x20_1234).align_down(PMD_SIZE),
            VirtAddr::new(0x20_0000)
        );
        assert!(VirtAddr::new(0x40_0000).is_aligned(PMD_SIZE));
        assert_eq!(Pfn::new(3).checked_add(1), Some(Pfn::new(4)));
        assert_eq!(Pfn::new(u64::MAX).checked_add(1), None);
    }
}
