//! What one access did and why: the [`Access`] record of [`crate::Machine::access`].
//!
//! An access is a user load or store of one byte. The record says where it landed
//! physically, what the kernel did ([`Outcome`]), the decision exit that chose it
//! ([`Reason`], one code per condition of `do_wp_page`, `wp_can_reuse_anon_folio`,
//! `__wp_can_reuse_large_anon_folio`, `do_huge_pmd_wp_page`, `do_anonymous_page`), and for a
//! not-present write fault the evidence of the order choice (`alloc_anon_folio`): the orders
//! the THP settings allow, those whose naturally aligned block fits the VMA, those whose
//! block of entries is empty, and those whose allocation failed.
//!
//! The record is plain data with a C layout (`#[repr(C)]`, 32 bytes), so that a batch of
//! them is one contiguous buffer for Python (a numpy structured array) and C callers.
//! The codes are stable numbers: new ones are added, none is renumbered.

use bitflags::bitflags;

/// What the kernel did for one access (the last fault's decision when it took several).
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Outcome {
    /// The access went through: no fault.
    #[default]
    NoFault = 0,
    /// A not-present fault mapped a new anonymous folio of order [`Access::order`]
    /// (`do_anonymous_page`, `do_huge_pmd_anonymous_page`, or a write to the huge zero page
    /// since 6.14: `do_huge_zero_wp_pmd`).
    AnonAlloc = 1,
    /// A read fault mapped the shared zero page (`do_anonymous_page`, read).
    ZeroPage = 2,
    /// A read fault mapped the huge zero page (`do_huge_pmd_anonymous_page`, read).
    HugeZeroPage = 3,
    /// A write-protect fault made the PTE writable in place (`wp_page_reuse`).
    CowReuse = 4,
    /// A write-protect fault copied the page into a new order-0 folio (`wp_page_copy`).
    CowCopy = 5,
    /// A write-protect fault on a huge PMD made it writable in place.
    PmdReuse = 6,
    /// A write-protect fault on a huge PMD split it, and the retried fault copied the page
    /// at the PTE level (two faults).
    PmdSplitCopy = 7,
    /// An unshare fault (`FAULT_FLAG_UNSHARE`, [`crate::Machine::unshare`]): the page ended
    /// anon-exclusive, reused in place or copied and mapped read-only.
    Unshare = 8,
    /// The access is refused with SIGSEGV (`access_error`, or no VMA): nothing changed.
    Segfault = 9,
    /// The fault could not get memory (`VM_FAULT_OOM`): nothing changed.
    OutOfMemory = 10,
    /// The swap-in fault (`do_swap_page`) mapped the page (a read, or a write mapped
    /// writable at once).
    SwapIn = 11,
}

/// The decision exit that produced the [`Outcome`], named after the kernel condition.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Reason {
    /// No fault was taken.
    #[default]
    None = 0,
    /// A not-present PTE (`do_pte_missing` → `do_anonymous_page`): read maps the zero page,
    /// write a new folio chosen by the order evidence.
    PteNone = 1,
    /// A not-present PMD where a PMD THP is allowed and fits
    /// (`do_huge_pmd_anonymous_page`).
    PmdNone = 2,
    /// `do_wp_page`: `PageAnonExclusive` is set on the page: reuse.
    AnonExclusive = 3,
    /// `wp_can_reuse_anon_folio`: a small folio whose only reference is this mapping: reuse.
    SmallSoleRef = 4,
    /// `wp_can_reuse_anon_folio`: a small folio with other references: copy.
    SmallOtherRefs = 5,
    /// A PTE-mapped large folio before 6.15: never reused: copy.
    LargeNoPteReuse = 6,
    /// `__wp_can_reuse_large_anon_folio`: `folio_large_mapcount() <= 1`, this page is the
    /// last one mapped: copy, so that the large folio can be freed.
    LargeLastMapped = 7,
    /// `__wp_can_reuse_large_anon_folio`: `folio_maybe_mapped_shared()` (the MM-id shared
    /// bit): copy.
    LargeMaybeShared = 8,
    /// `__wp_can_reuse_large_anon_folio`: `folio_ref_count() != folio_large_mapcount()`
    /// (pins, swap cache, `ref`): copy.
    LargeExtraRefs = 9,
    /// `__wp_can_reuse_large_anon_folio`: every reference is a mapping of this mm: reuse
    /// (this one PTE).
    LargeExclusive = 10,
    /// `do_wp_page` on the shared zero page (`vm_normal_page()` is NULL): copy into a new
    /// zeroed page.
    ZeroPage = 11,
    /// `do_huge_pmd_wp_page` on the huge zero page since 6.14: a new PMD THP
    /// (`do_huge_zero_wp_pmd`).
    HugeZeroNewThp = 12,
    /// `do_huge_pmd_wp_page` on the huge zero page with no new THP (before 6.14, or no
    /// order-9 block): split, then the PTE fault copies.
    HugeZeroFallback = 13,
    /// `do_huge_pmd_wp_page`: the head page is `PageAnonExclusive`: reuse the PMD.
    PmdAnonExclusive = 14,
    /// `do_huge_pmd_wp_page`: the THP's only reference is this PMD: reuse.
    PmdSoleRef = 15,
    /// `do_huge_pmd_wp_page`: the THP is shared: split the PMD (`__split_huge_pmd`), fall
    /// back to the PTE level.
    PmdShared = 16,
    /// SIGSEGV: no VMA covers the address (`SEGV_MAPERR`), or it is outside user space.
    SegvUnmapped = 17,
    /// SIGSEGV: the VMA forbids the access (`SEGV_ACCERR`, `access_error`).
    SegvProtection = 18,
    /// `cow_reuse_remember_exclusive` (a policy, no kernel has it): an earlier write fault
    /// found this large folio exclusive to this mm and remembered it, and its mapcount has
    /// not changed since: reuse without the mapcount/refcount checks.
    LargeMemoExclusive = 19,
    /// `mm_id_exact` (a policy, no kernel has it): the two MM-id slots say "maybe mapped
    /// shared" (the kernel would copy), but the exact tracker knows only this mm maps the
    /// folio, and every reference is a mapping: reuse.
    LargeExactExclusive = 20,
    /// `do_swap_page`: read into a new folio outside the swap cache, certainly exclusive.
    SwapFresh = 21,
    /// `do_swap_page`: the swap entry's exclusive bit (`pte_swp_exclusive`).
    SwapExclusive = 22,
    /// `do_swap_page`: only the fault's reference once the swap cache was freed.
    SwapSoleRef = 23,
    /// `do_swap_page`: maybe shared, mapped read-only.
    SwapMaybeShared = 24,
}

/// The level of the entry that maps the accessed page after the access.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MapLevel {
    /// Not mapped (a segfault or an out-of-memory access).
    #[default]
    None = 0,
    /// A 4 KiB PTE.
    Pte = 1,
    /// A 2 MiB huge PMD.
    Pmd = 2,
}

bitflags! {
    /// What the kernel did along the way, as flags.
    #[repr(transparent)]
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct AccessFlags: u8 {
        /// The first fault was on an empty entry (the page's first touch in this mm).
        const FIRST_TOUCH = 1 << 0;
        /// The kernel zero-filled new memory (a new folio, or the copy of a zero page).
        const ZEROED = 1 << 1;
        /// The kernel copied a page's content (`wp_page_copy` of a real page).
        const COPIED = 1 << 2;
        /// A huge PMD was split (`__split_huge_pmd`).
        const SPLIT = 1 << 3;
        /// An allocation failed and a smaller order was used (see [`Access::orders_failed`]).
        const FELL_BACK = 1 << 4;
        /// `cow_reuse_fault_around` (a policy): the reuse also made other PTEs of the same
        /// large folio writable, so their first writes take no fault.
        const FAULT_AROUND = 1 << 5;
        /// The fault swapped the page in (`do_swap_page`: read from a slot or found in the
        /// swap cache).
        const SWAP_IN = 1 << 6;
    }
}

/// The record of one access (C layout, 32 bytes).
///
/// # Examples
///
/// ```rust
/// use cowcore_core::{Machine, Outcome, Profile, Reason, ThpSizeMode, VirtAddr};
///
/// let mut m = Machine::new(16 << 20, 4, Profile::V6_15)?;
/// m.set_thp_size(4, ThpSizeMode::Always)?; // 64K mTHP
/// let a = m.mmap(1, 2 << 20)?;
/// let first = m.access(1, a, true, 1)?;
/// assert_eq!((first.outcome, first.reason, first.order), (Outcome::AnonAlloc, Reason::PteNone, 4));
/// let child = m.fork(1)?;
/// let copy = m.access(1, VirtAddr::new(a.as_u64() + 0x3010), true, 2)?;
/// assert_eq!((copy.outcome, copy.reason), (Outcome::CowCopy, Reason::LargeMaybeShared));
/// assert_eq!(copy.phys().unwrap() & 0xfff, 0x010); // the byte's offset in its frame
/// m.exit(child)?;
/// let reuse = m.access(1, VirtAddr::new(a.as_u64() + 0x4000), true, 3)?;
/// assert_eq!((reuse.outcome, reuse.reason), (Outcome::CowReuse, Reason::LargeExclusive));
/// # Ok::<(), cowcore_core::CowError>(())
/// ```
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Access {
    /// The physical address of the byte (`pfn << 12 | offset`), or [`Access::NO_PHYS`] when
    /// the access did not complete (segfault, out of memory).
    pub phys: u64,
    /// What the kernel did.
    pub outcome: Outcome,
    /// Why (the last decision taken).
    pub reason: Reason,
    /// Why a huge PMD was split first ([`Reason::PmdShared`] or
    /// [`Reason::HugeZeroFallback`]), or [`Reason::None`].
    pub split_reason: Reason,
    /// The level mapping the page afterwards.
    pub level: MapLevel,
    /// The order of the folio (or zero page: 0; huge zero page: 9) the access landed in.
    pub order: u8,
    /// The number of faults taken (a PMD split and its PTE fault are two).
    pub faults: u8,
    /// What the kernel did along the way.
    pub flags: AccessFlags,
    /// Padding, always zero.
    pub reserved: u8,
    /// The x86 page-fault error code of the first fault (`PF_PROT | PF_WRITE | PF_USER`),
    /// or 0.
    pub error_code: u32,
    /// Evidence of a not-present write fault, bit `k` for order `k`: the orders the THP
    /// settings allow for the VMA (`thp_vma_allowable_orders`).
    pub orders_allowed: u16,
    /// ... of those, the orders kept by `thp_vma_suitable_orders` (the aligned block fits
    /// the VMA; from the highest that fits down).
    pub orders_fit: u16,
    /// ... of those, the orders kept because their aligned block of entries is empty (from
    /// the highest such down; for order 9 the PMD is none).
    pub orders_empty: u16,
    /// The orders whose allocation was tried and failed (`MTHP_STAT_ANON_FAULT_FALLBACK`).
    pub orders_failed: u16,
    /// Padding, always zero.
    pub reserved2: u32,
}

impl Access {
    /// The `phys` of an access that did not complete.
    pub const NO_PHYS: u64 = u64::MAX;

    /// The physical address of the byte, if the access completed.
    #[must_use]
    pub fn phys(&self) -> Option<u64> {
        (self.phys != Self::NO_PHYS).then_some(self.phys)
    }

    /// The frame number accessed, if the access completed.
    #[must_use]
    pub fn pfn(&self) -> Option<u64> {
        self.phys().map(|p| p >> 12)
    }

    /// The size of [`Self::to_le_bytes`]: the C layout's size.
    pub const SIZE: usize = 32;

    /// The record in its C layout, little-endian (numpy's `cowcore.outcome.ACCESS_FIELDS`):
    /// what a batch hands to Python, byte for byte, without unsafe code.
    #[must_use]
    pub fn to_le_bytes(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        b[0..8].copy_from_slice(&self.phys.to_le_bytes());
        b[8] = self.outcome as u8;
        b[9] = self.reason as u8;
        b[10] = self.split_reason as u8;
        b[11] = self.level as u8;
        b[12] = self.order;
        b[13] = self.faults;
        b[14] = self.flags.bits();
        b[15] = self.reserved;
        b[16..20].copy_from_slice(&self.error_code.to_le_bytes());
        b[20..22].copy_from_slice(&self.orders_allowed.to_le_bytes());
        b[22..24].copy_from_slice(&self.orders_fit.to_le_bytes());
        b[24..26].copy_from_slice(&self.orders_empty.to_le_bytes());
        b[26..28].copy_from_slice(&self.orders_failed.to_le_bytes());
        b[28..32].copy_from_slice(&self.reserved2.to_le_bytes());
        b
    }
}

impl Outcome {
    /// The name of the code, as `cowcore.outcome.Outcome` and the C API spell it.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::NoFault => "NO_FAULT",
            Self::AnonAlloc => "ANON_ALLOC",
            Self::ZeroPage => "ZERO_PAGE",
            Self::HugeZeroPage => "HUGE_ZERO_PAGE",
            Self::CowReuse => "COW_REUSE",
            Self::CowCopy => "COW_COPY",
            Self::PmdReuse => "PMD_REUSE",
            Self::PmdSplitCopy => "PMD_SPLIT_COPY",
            Self::Unshare => "UNSHARE",
            Self::Segfault => "SEGFAULT",
            Self::OutOfMemory => "OUT_OF_MEMORY",
            Self::SwapIn => "SWAP_IN",
        }
    }
}

impl Reason {
    /// The name of the code, as `cowcore.outcome.Reason` and the C API spell it.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::None => "NONE",
            Self::PteNone => "PTE_NONE",
            Self::PmdNone => "PMD_NONE",
            Self::AnonExclusive => "ANON_EXCLUSIVE",
            Self::SmallSoleRef => "SMALL_SOLE_REF",
            Self::SmallOtherRefs => "SMALL_OTHER_REFS",
            Self::LargeNoPteReuse => "LARGE_NO_PTE_REUSE",
            Self::LargeLastMapped => "LARGE_LAST_MAPPED",
            Self::LargeMaybeShared => "LARGE_MAYBE_SHARED",
            Self::LargeExtraRefs => "LARGE_EXTRA_REFS",
            Self::LargeExclusive => "LARGE_EXCLUSIVE",
            Self::ZeroPage => "ZERO_PAGE",
            Self::HugeZeroNewThp => "HUGE_ZERO_NEW_THP",
            Self::HugeZeroFallback => "HUGE_ZERO_FALLBACK",
            Self::PmdAnonExclusive => "PMD_ANON_EXCLUSIVE",
            Self::PmdSoleRef => "PMD_SOLE_REF",
            Self::PmdShared => "PMD_SHARED",
            Self::SegvUnmapped => "SEGV_UNMAPPED",
            Self::SegvProtection => "SEGV_PROTECTION",
            Self::LargeMemoExclusive => "LARGE_MEMO_EXCLUSIVE",
            Self::LargeExactExclusive => "LARGE_EXACT_EXCLUSIVE",
            Self::SwapFresh => "SWAP_FRESH",
            Self::SwapExclusive => "SWAP_EXCLUSIVE",
            Self::SwapSoleRef => "SWAP_SOLE_REF",
            Self::SwapMaybeShared => "SWAP_MAYBE_SHARED",
        }
    }
}

/// Which accesses of a batch are stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessKinds<'a> {
    /// All loads.
    Reads,
    /// All stores.
    Writes,
    /// One flag per access (`true`: a store); as long as the addresses.
    PerAccess(&'a [bool]),
}

impl AccessKinds<'_> {
    /// Whether access `i` is a store.
    #[inline]
    #[must_use]
    pub fn is_write(&self, i: usize) -> bool {
        match self {
            Self::Reads => false,
            Self::Writes => true,
            Self::PerAccess(w) => w[i],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_c_and_small() {
        assert_eq!(std::mem::size_of::<Access>(), Access::SIZE);
        assert_eq!(std::mem::align_of::<Access>(), 8);
        assert_eq!(std::mem::offset_of!(Access, error_code), 16);
        assert_eq!(std::mem::offset_of!(Access, orders_failed), 26);
        assert_eq!(Access::default().phys(), Some(0));
    }

    #[test]
    fn bytes_follow_the_c_layout() {
        let a = Access {
            phys: 0x1234_5678,
            outcome: Outcome::CowCopy,
            reason: Reason::LargeMaybeShared,
            split_reason: Reason::PmdShared,
            level: MapLevel::Pte,
            order: 4,
            faults: 2,
            flags: AccessFlags::SPLIT | AccessFlags::COPIED,
            error_code: 7,
            orders_allowed: 0x210,
            orders_fit: 0x10,
            orders_empty: 0x10,
            orders_failed: 0x200,
            ..Access::default()
        };
        let b = a.to_le_bytes();
        assert_eq!(&b[0..8], &0x1234_5678u64.to_le_bytes());
        assert_eq!(&b[8..16], &[5, 8, 16, 1, 4, 2, 0b1100, 0]);
        assert_eq!(&b[16..20], &7u32.to_le_bytes());
        assert_eq!(&b[20..28], &[0x10, 0x02, 0x10, 0, 0x10, 0, 0, 0x02]);
    }
}
