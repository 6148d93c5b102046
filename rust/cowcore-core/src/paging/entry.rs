//! x86-64 page-table entries: [`PteFlags`] and [`PageTableEntry`].
//!
//! The bit layout is the real one (`arch/x86/include/asm/pgtable_types.h`, KS §8.2), and the
//! helpers model the kernel's `pte_*` accessors bit for bit, including the x86-64
//! saved-dirty shift (`pte_wrprotect` moves D to `SAVED_DIRTY`, `pte_mkwrite` moves it back,
//! KS §8.3). PMD leaves use the same helpers (the kernel's `pmd_*` variants behave alike).

use crate::addr::Pfn;

bitflags::bitflags! {
    /// The flag bits of a page-table entry (`_PAGE_*` in pgtable_types.h).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct PteFlags: u64 {
        /// `_PAGE_PRESENT` (bit 0).
        const PRESENT = 1 << 0;
        /// `_PAGE_RW` (bit 1): writable; cleared for COW.
        const WRITABLE = 1 << 1;
        /// `_PAGE_USER` (bit 2).
        const USER = 1 << 2;
        /// `_PAGE_PWT` (bit 3).
        const PWT = 1 << 3;
        /// `_PAGE_PCD` (bit 4).
        const PCD = 1 << 4;
        /// `_PAGE_ACCESSED` (bit 5), set by the walker.
        const ACCESSED = 1 << 5;
        /// `_PAGE_DIRTY` (bit 6), set by the walker on a write.
        const DIRTY = 1 << 6;
        /// `_PAGE_PSE` (bit 7): a huge leaf in a PMD/PUD entry (PAT in a 4K PTE).
        const HUGE = 1 << 7;
        /// `_PAGE_GLOBAL` (bit 8); `_PAGE_PROTNONE` when PRESENT is clear.
        const PROTNONE = 1 << 8;
        /// `_PAGE_SPECIAL` (bit 9, SW1): zero page, no `struct page` refcounting.
        const SPECIAL = 1 << 9;
        /// `_PAGE_UFFD_WP` (bit 10, SW2).
        const UFFD_WP = 1 << 10;
        /// `_PAGE_SOFT_DIRTY` (bit 11, SW3).
        const SOFT_DIRTY = 1 << 11;
        /// `_PAGE_SAVED_DIRTY` (bit 58, SW5): D moved here while RW is clear.
        const SAVED_DIRTY = 1 << 58;
        /// `_PAGE_NX` (bit 63).
        const NX = 1 << 63;
    }
}

/// `PTE_PFN_MASK`: physical address bits 12..51.
pub const PFN_MASK: u64 = 0x000f_ffff_ffff_f000;

/// Flags of a non-leaf entry: `_KERNPG_TABLE` = P|RW|US|A|D (DESIGN.md "Page tables").
pub const TABLE_FLAGS: PteFlags = PteFlags::PRESENT
    .union(PteFlags::WRITABLE)
    .union(PteFlags::USER)
    .union(PteFlags::ACCESSED)
    .union(PteFlags::DIRTY);

/// `PAGE_COPY`/`PAGE_READONLY` = P|US|A|NX, the `vm_page_prot` of a private readable VMA.
pub const PAGE_COPY: PteFlags = PteFlags::PRESENT
    .union(PteFlags::USER)
    .union(PteFlags::ACCESSED)
    .union(PteFlags::NX);

/// `PAGE_NONE` = A|PROTNONE, the `vm_page_prot` of a `PROT_NONE` VMA.
pub const PAGE_NONE: PteFlags = PteFlags::ACCESSED.union(PteFlags::PROTNONE);

/// `_PAGE_CHG_MASK` (bits `pte_modify` keeps from the old entry), without the PFN.
pub const CHG_MASK: PteFlags = PteFlags::PWT
    .union(PteFlags::PCD)
    .union(PteFlags::SPECIAL)
    .union(PteFlags::ACCESSED)
    .union(PteFlags::DIRTY)
    .union(PteFlags::SAVED_DIRTY)
    .union(PteFlags::SOFT_DIRTY)
    .union(PteFlags::UFFD_WP);

/// What an entry holds, as `handle_pte_fault` tells entries apart: the fault dispatch
/// matches on it, so that a kind the simulator does not model yet is an error rather
/// than an empty entry to overwrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// `pte_none`: nothing mapped.
    None,
    /// `pte_present` with P set: a mapping the MMU uses.
    Present,
    /// `pte_protnone`: present to the kernel but not to the MMU (`PROT_NONE`).
    ProtNone,
    /// `is_swap_pte`: neither none nor present, a software entry (`pte_to_swp_entry`): a
    /// swap entry, or a migration, device or marker entry, which are swap entries of the
    /// reserved types (`is_migration_entry` & co.). None is written yet (no swap, no
    /// migration); the fault path reports one as an invariant error (`do_swap_page` is
    /// not modelled) instead of overwriting it.
    Swap(SwapEntry),
}

/// A not-present, non-none entry read as x86-64 encodes a swap entry
/// (`arch/x86/include/asm/pgtable_64.h`): the type in the top 5 bits (`__swp_type`), the
/// offset inverted in the bits from `SWP_OFFSET_FIRST_BIT` = 9 up (`__swp_offset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SwapEntry(u64);

impl SwapEntry {
    /// `SWP_TYPE_BITS`.
    const TYPE_BITS: u32 = 5;
    /// `SWP_OFFSET_SHIFT` = `SWP_OFFSET_FIRST_BIT` (9) + `SWP_TYPE_BITS`.
    const OFFSET_SHIFT: u32 = 9 + Self::TYPE_BITS;

    /// `swp_entry_to_pte(__swp_entry(type, offset))`: the page-table entry of a swap entry.
    #[must_use]
    pub const fn to_pte(swp_type: u32, offset: u64) -> PageTableEntry {
        PageTableEntry(
            ((!offset) << Self::OFFSET_SHIFT >> Self::TYPE_BITS)
                | ((swp_type as u64) << (64 - Self::TYPE_BITS)),
        )
    }

    /// `__swp_type`.
    #[must_use]
    pub const fn swp_type(self) -> u32 {
        (self.0 >> (64 - Self::TYPE_BITS)) as u32
    }

    /// `__swp_offset`.
    #[must_use]
    pub const fn swp_offset(self) -> u64 {
        (!self.0) << Self::TYPE_BITS >> Self::OFFSET_SHIFT
    }

    /// `pte_swp_exclusive`: the exclusive marker, `PG_anon_exclusive` of the page when it was
    /// unmapped for swap-out (`try_to_unmap_one`); `do_swap_page` maps the page writable at once
    /// when it is set, and `copy_nonpresent_pte` clears it in the parent at fork.
    #[must_use]
    pub const fn is_exclusive(self) -> bool {
        self.0 & SWP_EXCLUSIVE.bits() != 0
    }

    /// `pte_swp_soft_dirty`: the soft-dirty bit a swap entry keeps for the page.
    #[must_use]
    pub const fn is_soft_dirty(self) -> bool {
        self.0 & SWP_SOFT_DIRTY.bits() != 0
    }
}

/// `_PAGE_SWP_EXCLUSIVE` = `_PAGE_PWT` (bit 3): the exclusive marker of a swap entry
/// (`arch/x86/include/asm/pgtable_64_types.h`). Bits 1 to 4 are outside the type and offset
/// fields, so the software bits of a swap entry borrow them.
pub const SWP_EXCLUSIVE: PteFlags = PteFlags::PWT;

/// `_PAGE_SWP_SOFT_DIRTY` = `_PAGE_RW` (bit 1): soft-dirty in a swap entry.
pub const SWP_SOFT_DIRTY: PteFlags = PteFlags::WRITABLE;

/// `_PAGE_SWP_UFFD_WP` = `_PAGE_USER` (bit 2): userfaultfd write-protect in a swap entry.
pub const SWP_UFFD_WP: PteFlags = PteFlags::USER;

/// A raw 64-bit page-table entry at any level (`pte_t`, `pmd_t`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PageTableEntry(u64);

impl PageTableEntry {
    /// The empty entry (`pte_none`).
    pub const NONE: Self = Self(0);

    /// Wraps a raw value.
    #[must_use]
    pub const fn from_raw(v: u64) -> Self {
        Self(v)
    }

    /// The raw value.
    #[must_use]
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// Builds an entry from a frame and flags (`pfn_pte`).
    #[must_use]
    pub const fn new(pfn: Pfn, flags: PteFlags) -> Self {
        Self(((pfn.as_u64() << 12) & PFN_MASK) | flags.bits())
    }

    /// A non-leaf entry pointing at the table in `pfn` (`_KERNPG_TABLE`).
    #[must_use]
    pub const fn table(pfn: Pfn) -> Self {
        Self::new(pfn, TABLE_FLAGS)
    }

    /// The flag bits (bits outside the PFN field).
    #[must_use]
    pub const fn flags(self) -> PteFlags {
        PteFlags::from_bits_truncate(self.0 & !PFN_MASK)
    }

    /// The frame the entry points at (`pte_pfn`; for a 2 MiB leaf the first frame).
    #[must_use]
    pub const fn pfn(self) -> Pfn {
        Pfn::new((self.0 & PFN_MASK) >> 12)
    }

    /// The frame the entry points at as an index of the per-frame arrays (`pte_pfn`;
    /// frames fit in 32 bits, `MAX_MEMORY`).
    #[must_use]
    #[inline]
    pub(crate) const fn frame(self) -> u32 {
        self.pfn().as_u64() as u32
    }

    /// `pfn_pte(frame, prot)` for a frame index.
    #[must_use]
    #[inline]
    pub(crate) const fn of_frame(frame: u32, flags: PteFlags) -> Self {
        Self::new(Pfn::new(frame as u64), flags)
    }

    /// The same entry pointing at the frame index `frame`.
    #[must_use]
    #[inline]
    pub(crate) const fn with_frame(self, frame: u32) -> Self {
        self.with_pfn(Pfn::new(frame as u64))
    }

    /// The kind of entry: none, present, `PROT_NONE` or a software (swap) entry.
    #[must_use]
    #[inline]
    pub const fn kind(self) -> EntryKind {
        if self.is_none() {
            EntryKind::None
        } else if self.0 & PteFlags::PRESENT.bits() != 0 {
            EntryKind::Present
        } else if self.is_protnone() {
            EntryKind::ProtNone
        } else {
            EntryKind::Swap(SwapEntry(self.0))
        }
    }

    /// `pte_none`.
    #[must_use]
    pub const fn is_none(self) -> bool {
        self.0 == 0
    }

    /// `pte_present`: PRESENT, or PROTNONE (a `PROT_NONE` entry is present to the kernel).
    #[must_use]
    pub const fn is_present(self) -> bool {
        self.0 & (PteFlags::PRESENT.bits() | PteFlags::PROTNONE.bits()) != 0
    }

    /// `pte_protnone`: PROTNONE without PRESENT.
    #[must_use]
    pub const fn is_protnone(self) -> bool {
        self.0 & (PteFlags::PRESENT.bits() | PteFlags::PROTNONE.bits()) == PteFlags::PROTNONE.bits()
    }

    /// `pmd_leaf`/`pmd_trans_huge`: a present entry with PSE.
    #[must_use]
    pub const fn is_huge(self) -> bool {
        self.is_present() && self.0 & PteFlags::HUGE.bits() != 0
    }

    /// `pte_write`.
    #[must_use]
    pub const fn is_writable(self) -> bool {
        self.0 & PteFlags::WRITABLE.bits() != 0
    }

    /// `pte_special`.
    #[must_use]
    pub const fn is_special(self) -> bool {
        self.0 & PteFlags::SPECIAL.bits() != 0
    }

    /// `pte_young`.
    #[must_use]
    pub const fn is_young(self) -> bool {
        self.0 & PteFlags::ACCESSED.bits() != 0
    }

    /// `pte_dirty`: D or `SAVED_DIRTY`.
    #[must_use]
    pub const fn is_dirty(self) -> bool {
        self.0 & (PteFlags::DIRTY.bits() | PteFlags::SAVED_DIRTY.bits()) != 0
    }

    /// `pte_soft_dirty`.
    #[must_use]
    pub const fn is_soft_dirty(self) -> bool {
        self.0 & PteFlags::SOFT_DIRTY.bits() != 0
    }

    const fn set(self, f: PteFlags) -> Self {
        Self(self.0 | f.bits())
    }

    const fn clear(self, f: PteFlags) -> Self {
        Self(self.0 & !f.bits())
    }

    /// `pte_mksaveddirty`: if RW is clear, move D to `SAVED_DIRTY`.
    #[must_use]
    pub const fn mksaveddirty(self) -> Self {
        if self.is_writable() || self.0 & PteFlags::DIRTY.bits() == 0 {
            self
        } else {
            self.clear(PteFlags::DIRTY).set(PteFlags::SAVED_DIRTY)
        }
    }

    /// `pte_clear_saveddirty`: if RW is set, move `SAVED_DIRTY` to D.
    #[must_use]
    pub const fn clear_saveddirty(self) -> Self {
        if !self.is_writable() || self.0 & PteFlags::SAVED_DIRTY.bits() == 0 {
            self
        } else {
            self.clear(PteFlags::SAVED_DIRTY).set(PteFlags::DIRTY)
        }
    }

    /// `pte_wrprotect`: clear RW, then D moves to `SAVED_DIRTY`.
    #[must_use]
    pub const fn wrprotect(self) -> Self {
        self.clear(PteFlags::WRITABLE).mksaveddirty()
    }

    /// `pte_mkwrite` (non-shadow-stack VMA): set RW, then `SAVED_DIRTY` moves to D.
    #[must_use]
    pub const fn mkwrite(self) -> Self {
        self.set(PteFlags::WRITABLE).clear_saveddirty()
    }

    /// `pte_mkdirty`: set D and `SOFT_DIRTY`, then D moves to `SAVED_DIRTY` if RW is clear.
    #[must_use]
    pub const fn mkdirty(self) -> Self {
        self.set(PteFlags::DIRTY.union(PteFlags::SOFT_DIRTY))
            .mksaveddirty()
    }

    /// `pte_mkclean`: clear D and `SAVED_DIRTY`.
    #[must_use]
    pub const fn mkclean(self) -> Self {
        self.clear(PteFlags::DIRTY.union(PteFlags::SAVED_DIRTY))
    }

    /// `pte_mkyoung`.
    #[must_use]
    pub const fn mkyoung(self) -> Self {
        self.set(PteFlags::ACCESSED)
    }

    /// `pte_mkold`.
    #[must_use]
    pub const fn mkold(self) -> Self {
        self.clear(PteFlags::ACCESSED)
    }

    /// `pte_clear_soft_dirty`.
    #[must_use]
    pub const fn clear_soft_dirty(self) -> Self {
        self.clear(PteFlags::SOFT_DIRTY)
    }

    /// `pte_mksoft_dirty`.
    #[must_use]
    pub const fn mksoft_dirty(self) -> Self {
        self.set(PteFlags::SOFT_DIRTY)
    }

    /// The hardware's dirty-bit update on a write through a writable entry (only D; the
    /// CPU knows nothing of soft-dirty).
    #[must_use]
    pub const fn hw_dirty(self) -> Self {
        self.set(PteFlags::DIRTY)
    }

    /// `pte_modify(pte, newprot)` on x86-64: keep `_PAGE_CHG_MASK` bits (plus PSE for a
    /// huge PMD, `_HPAGE_CHG_MASK`), take the rest from `newprot`, then avoid Write=0,Dirty=1
    /// with the saved-dirty shift.
    ///
    /// The L1TF PFN inversion of `flip_protnone_guard` is *not* modelled: a `PROT_NONE` entry
    /// keeps its PFN as is (DESIGN.md's "real bit layout" does not mention the inversion).
    #[must_use]
    pub const fn modify(self, newprot: PteFlags) -> Self {
        let keep = CHG_MASK.bits() | PteFlags::HUGE.bits();
        let v = (self.0 & (PFN_MASK | keep)) | (newprot.bits() & !keep);
        let r = Self(v);
        if self.is_writable() {
            r.mksaveddirty()
        } else {
            r.clear_saveddirty()
        }
    }

    /// `pte_swp_mkexclusive` (a swap entry only).
    #[must_use]
    pub const fn swp_mkexclusive(self) -> Self {
        self.set(SWP_EXCLUSIVE)
    }

    /// `pte_swp_clear_exclusive` (a swap entry only).
    #[must_use]
    pub const fn swp_clear_exclusive(self) -> Self {
        self.clear(SWP_EXCLUSIVE)
    }

    /// `pte_swp_mksoft_dirty` (a swap entry only).
    #[must_use]
    pub const fn swp_mksoft_dirty(self) -> Self {
        self.set(SWP_SOFT_DIRTY)
    }

    /// The same entry pointing at another frame (`pte_advance_pfn`-style).
    #[must_use]
    pub const fn with_pfn(self, pfn: Pfn) -> Self {
        Self((self.0 & !PFN_MASK) | ((pfn.as_u64() << 12) & PFN_MASK))
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn entry_kinds() {
        let e = PageTableEntry::new(Pfn::new(7), PAGE_COPY);
        assert_eq!(PageTableEntry::NONE.kind(), EntryKind::None);
        assert_eq!(e.kind(), EntryKind::Present);
        assert_eq!(e.modify(PAGE_NONE).kind(), EntryKind::ProtNone);
        let swp = SwapEntry::to_pte(3, 0x1234);
        assert!(!swp.is_none() && !swp.is_present());
        let EntryKind::Swap(s) = swp.kind() else {
            panic!("{swp:?} is not a swap entry");
        };
        assert_eq!((s.swp_type(), s.swp_offset()), (3, 0x1234));
    }
    use super::*;

    #[test]
    fn swap_entry_bits() {
        // __swp_entry(0, 5): offset 5 inverted from bit 9 (after the 5 type bits are shifted
        // out), type 0 in the top bits; the same raw values as tests/reference/test_paging.py.
        let e = SwapEntry::to_pte(0, 5);
        assert_eq!(e.raw(), 0x07ff_ffff_ffff_f400);
        let x = e.swp_mkexclusive();
        assert_eq!(x.raw(), 0x07ff_ffff_ffff_f408);
        let EntryKind::Swap(s) = x.kind() else {
            panic!("{x:?} is not a swap entry");
        };
        assert!(s.is_exclusive() && !s.is_soft_dirty());
        assert_eq!((s.swp_type(), s.swp_offset()), (0, 5));
        let back = x.swp_clear_exclusive();
        assert_eq!(back, e);
        let EntryKind::Swap(d) = back.swp_mksoft_dirty().kind() else {
            panic!("a soft-dirty swap entry is a swap entry");
        };
        assert!(d.is_soft_dirty() && !d.is_exclusive() && d.swp_offset() == 5);
        assert_eq!(SWP_EXCLUSIVE.bits(), 1 << 3);
        assert_eq!(SWP_SOFT_DIRTY.bits(), 1 << 1);
        assert_eq!(SWP_UFFD_WP.bits(), 1 << 2);
    }

    #[test]
    fn real_bits() {
        assert_eq!(PteFlags::SPECIAL.bits(), 1 << 9);
        assert_eq!(PteFlags::SOFT_DIRTY.bits(), 1 << 11);
        assert_eq!(PteFlags::PROTNONE.bits(), 1 << 8);
        assert_eq!(PteFlags::SAVED_DIRTY.bits(), 1 << 58);
        assert_eq!(PteFlags::NX.bits(), 1 << 63);
        assert_eq!(TABLE_FLAGS.bits(), 0x67);
    }

    #[test]
    fn saved_dirty_shift() {
        let e = PageTableEntry::new(Pfn::new(5), PAGE_COPY)
            .mkdirty()
            .mkwrite();
        assert!(e
            .flags()
            .contains(PteFlags::DIRTY | PteFlags::WRITABLE | PteFlags::SOFT_DIRTY));
        let w = e.wrprotect();
        assert!(!w.flags().contains(PteFlags::DIRTY));
        assert!(w.flags().contains(PteFlags::SAVED_DIRTY));
        assert!(w.is_dirty());
        let back = w.mkwrite();
        assert_eq!(back, e);
        assert_eq!(w.pfn(), Pfn::new(5));
        // mkdirty on a read-only entry goes straight to SAVED_DIRTY.
        let r = PageTableEntry::new(Pfn::new(1), PAGE_COPY).mkdirty();
        assert!(r.flags().contains(PteFlags::SAVED_DIRTY));
        assert!(!r.flags().contains(PteFlags::DIRTY));
    }

    #[test]
    fn modify_to_none_and_back() {
        let e = PageTableEntry::new(Pfn::new(7), PAGE_COPY)
            .mkdirty()
            .mkwrite();
        let n = e.modify(PAGE_NONE);
        assert!(n.is_present() && n.is_protnone() && !n.is_writable());
        assert!(n.flags().contains(PteFlags::SAVED_DIRTY));
        assert_eq!(n.pfn(), Pfn::new(7));
        let r = n.modify(PAGE_COPY);
        assert!(r.flags().contains(PteFlags::PRESENT) && !r.is_protnone());
        assert!(r.flags().contains(PteFlags::SAVED_DIRTY));
    }
}
