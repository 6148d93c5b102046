//! Address spaces: [`Mm`] (`struct mm_struct`) and its [`Vma`] list.
//!
//! VMAs are kept sorted and non-overlapping; adjacent VMAs with equal flags are merged after
//! every change (`vma_merge`; the halves of a split share their `anon_vma`, so the kernel
//! re-merges them too).

use crate::addr::VirtAddr;
use crate::error::CowError;
use crate::paging::entry::{PteFlags, PAGE_COPY, PAGE_NONE};
use crate::physmem::TableFrame;
use core::str::FromStr;

bitflags::bitflags! {
    /// `vm_flags` bits that cowcore models, with the kernel's values (include/linux/mm.h).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct VmFlags: u64 {
        /// `VM_READ`.
        const READ = 0x1;
        /// `VM_WRITE`.
        const WRITE = 0x2;
        /// `VM_MAYREAD`.
        const MAYREAD = 0x10;
        /// `VM_MAYWRITE` (with `VM_SHARED` clear: a COW mapping, `is_cow_mapping`).
        const MAYWRITE = 0x20;
        /// `VM_DONTCOPY` (`MADV_DONTFORK`).
        const DONTCOPY = 0x0002_0000;
        /// `VM_WIPEONFORK` (`MADV_WIPEONFORK`).
        const WIPEONFORK = 0x0200_0000;
        /// `VM_HUGEPAGE` (`MADV_HUGEPAGE`).
        const HUGEPAGE = 0x2000_0000;
        /// `VM_NOHUGEPAGE` (`MADV_NOHUGEPAGE`).
        const NOHUGEPAGE = 0x4000_0000;
    }
}

impl VmFlags {
    /// Names of the advice-controlled flags that are set, as `vmas()` reports them.
    #[must_use]
    pub fn names(self) -> Vec<&'static str> {
        let mut v = Vec::new();
        for (f, n) in [
            (Self::HUGEPAGE, "hugepage"),
            (Self::NOHUGEPAGE, "nohugepage"),
            (Self::DONTCOPY, "dontcopy"),
            (Self::WIPEONFORK, "wipeonfork"),
        ] {
            if self.contains(f) {
                v.push(n);
            }
        }
        v
    }
}

/// Protections that `mprotect` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Prot {
    /// `PROT_NONE`.
    None,
    /// `PROT_READ`.
    Read,
    /// `PROT_READ | PROT_WRITE`.
    ReadWrite,
}

impl Prot {
    /// Every protection, in the order of the protocol's names (`none`, `r`, `rw`).
    pub const ALL: [Self; 3] = [Self::None, Self::Read, Self::ReadWrite];

    /// `"none"`, `"r"` or `"rw"`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Read => "r",
            Self::ReadWrite => "rw",
        }
    }

    /// The `VM_READ`/`VM_WRITE` bits of this protection.
    #[must_use]
    pub const fn vm_flags(self) -> VmFlags {
        match self {
            Self::None => VmFlags::empty(),
            Self::Read => VmFlags::READ,
            Self::ReadWrite => VmFlags::READ.union(VmFlags::WRITE),
        }
    }
}

impl FromStr for Prot {
    type Err = CowError;
    fn from_str(s: &str) -> Result<Self, CowError> {
        match s {
            "none" => Ok(Self::None),
            "r" => Ok(Self::Read),
            "rw" => Ok(Self::ReadWrite),
            _ => Err(CowError::InvalidArgument(format!("unknown prot {s:?}"))),
        }
    }
}

/// The `madvise` advices cowcore models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Advice {
    /// `MADV_HUGEPAGE`.
    HugePage,
    /// `MADV_NOHUGEPAGE`.
    NoHugePage,
    /// `MADV_DONTNEED`.
    DontNeed,
    /// `MADV_DONTFORK`.
    DontFork,
    /// `MADV_DOFORK`.
    DoFork,
    /// `MADV_WIPEONFORK`.
    WipeOnFork,
    /// `MADV_KEEPONFORK`.
    KeepOnFork,
}

impl FromStr for Advice {
    type Err = CowError;
    fn from_str(s: &str) -> Result<Self, CowError> {
        Ok(match s {
            "hugepage" => Self::HugePage,
            "nohugepage" => Self::NoHugePage,
            "dontneed" => Self::DontNeed,
            "dontfork" => Self::DontFork,
            "dofork" => Self::DoFork,
            "wipeonfork" => Self::WipeOnFork,
            "keeponfork" => Self::KeepOnFork,
            _ => return Err(CowError::InvalidArgument(format!("unknown advice {s:?}"))),
        })
    }
}

impl Advice {
    /// Every advice, in declaration order.
    pub const ALL: [Self; 7] = [
        Self::HugePage,
        Self::NoHugePage,
        Self::DontNeed,
        Self::DontFork,
        Self::DoFork,
        Self::WipeOnFork,
        Self::KeepOnFork,
    ];

    /// The new flags of a VMA after this advice (`madvise_update_vma` & co.); `None` for
    /// `MADV_DONTNEED`, which changes no flags.
    #[must_use]
    pub fn apply(self, f: VmFlags) -> Option<VmFlags> {
        Some(match self {
            Self::HugePage => (f - VmFlags::NOHUGEPAGE) | VmFlags::HUGEPAGE,
            Self::NoHugePage => (f - VmFlags::HUGEPAGE) | VmFlags::NOHUGEPAGE,
            Self::DontFork => f | VmFlags::DONTCOPY,
            Self::DoFork => f - VmFlags::DONTCOPY,
            Self::WipeOnFork => f | VmFlags::WIPEONFORK,
            Self::KeepOnFork => f - VmFlags::WIPEONFORK,
            Self::DontNeed => return None,
        })
    }
}

/// A virtual memory area (`struct vm_area_struct`): `[start, end)` with flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vma {
    /// `vm_start`.
    pub start: VirtAddr,
    /// `vm_end` (exclusive).
    pub end: VirtAddr,
    /// `vm_flags`.
    pub flags: VmFlags,
    /// Whether the VMA has an `anon_vma` (set by the first fault that allocates, or maps
    /// the huge zero page; `vma_needs_copy` copies page tables at fork only then).
    pub anon_vma: bool,
    /// `vm_pgoff`, in pages: the linear page index of `start`. `mmap` sets it to
    /// `start >> PAGE_SHIFT`; a split keeps it linear; `mremap` keeps the moved range's
    /// (`copy_vma`), so that an anonymous folio's pages keep their index (`folio->index`,
    /// what the rmap's `vma_address` computes addresses from) wherever they move. Two
    /// neighbours merge only if their indices are contiguous (`can_vma_merge_after`).
    pub pgoff: u64,
}

impl Vma {
    /// A fresh VMA of `mmap` at `[start, end)` with `flags`: no `anon_vma` yet, its
    /// `vm_pgoff` the start's page number (`mmap_region` of an anonymous mapping).
    #[must_use]
    pub fn new(start: VirtAddr, end: VirtAddr, flags: VmFlags) -> Self {
        Self {
            start,
            end,
            flags,
            anon_vma: false,
            pgoff: start.as_u64() >> 12,
        }
    }

    /// The linear page index of `addr` in this VMA (`linear_page_index`).
    #[must_use]
    pub fn page_index(&self, addr: VirtAddr) -> u64 {
        self.pgoff + ((addr.as_u64() - self.start.as_u64()) >> 12)
    }

    /// The address of page index `index` in this VMA, if the VMA covers it (the rmap's
    /// `vma_address`).
    #[must_use]
    pub fn index_address(&self, index: u64) -> Option<VirtAddr> {
        let pages = (self.end.as_u64() - self.start.as_u64()) >> 12;
        let off = index.checked_sub(self.pgoff).filter(|&o| o < pages)?;
        Some(VirtAddr::new(self.start.as_u64() + (off << 12)))
    }

    /// Whether the VMA holds `addr`.
    #[must_use]
    pub fn contains(&self, addr: VirtAddr) -> bool {
        self.start <= addr && addr < self.end
    }

    /// The protection (`VM_READ`/`VM_WRITE`).
    #[must_use]
    pub fn prot(&self) -> Prot {
        if self.flags.contains(VmFlags::WRITE) {
            Prot::ReadWrite
        } else if self.flags.contains(VmFlags::READ) {
            Prot::Read
        } else {
            Prot::None
        }
    }

    /// `vm_page_prot` (`vm_get_page_prot`): `PAGE_COPY`/`PAGE_READONLY` for a private
    /// readable VMA, `PAGE_NONE` for `PROT_NONE`.
    #[must_use]
    pub fn page_prot(&self) -> PteFlags {
        if self.flags.contains(VmFlags::READ) {
            PAGE_COPY
        } else {
            PAGE_NONE
        }
    }
}

/// A VMA as `vmas()` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmaInfo {
    /// Start address.
    pub start: u64,
    /// End address (exclusive).
    pub end: u64,
    /// Protection.
    pub prot: Prot,
    /// Flag names (`hugepage`, `nohugepage`, `dontcopy`, `wipeonfork`), as the reference names them.
    pub flags: Vec<&'static str>,
}

/// The index of the VMA of the sorted list `vmas` holding `addr` (`vma_lookup`).
pub(crate) fn vma_lookup(vmas: &[Vma], addr: VirtAddr) -> Option<usize> {
    let i = vmas.partition_point(|v| v.end <= addr);
    (i < vmas.len() && vmas[i].contains(addr)).then_some(i)
}

/// An address space (`struct mm_struct`).
#[derive(Debug, Clone)]
pub struct Mm {
    /// The process id.
    pub pid: u32,
    /// `mm->mm_id` (`CONFIG_MM_ID`).
    pub mm_id: u32,
    /// The address-space id: 1 for init, the next number for each new mm, never reused
    /// (MM ids are); what a TLB model tags entries with.
    pub asid: u64,
    /// The frame of the root table.
    pub(crate) pgd: TableFrame,
    /// Sorted, non-overlapping VMAs.
    pub(crate) vmas: Vec<Vma>,
    /// The top-down `mmap` cursor (DESIGN.md "Addresses").
    pub(crate) cursor: u64,
    /// `MM_ANONPAGES`.
    pub(crate) rss_anon: u64,
    /// The GUP references and pins this process holds (`ref`, `pin`; issue 16), in the
    /// order taken: what a pipe holding `vmsplice()`d pages or an `io_uring`'s registered
    /// buffers would hold. Not inherited by a fork; dropped at exit after the unmap.
    pub(crate) holds: Vec<GupHold>,
    /// `MMF_HAS_PINNED`: set by the first `FOLL_PIN` of this mm, never cleared, not
    /// inherited (`MMF_INIT_MASK` leaves it out).
    pub(crate) has_pinned: bool,
}

/// One `ref` or `pin` a process holds: the range it was taken on and the frame behind each
/// page of it at the time (the zero pages included: they hold no count). The frames, not
/// the range, are what is released: the pages may have been unmapped or replaced since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GupHold {
    /// First address of the range.
    pub start: u64,
    /// Length of the range in bytes.
    pub length: u64,
    /// `FOLL_PIN` (else `FOLL_GET`).
    pub pin: bool,
    /// The frame of each page, in address order.
    pub pages: Vec<u32>,
}

impl Mm {
    /// The index of the VMA holding `addr` (`vma_lookup`).
    #[must_use]
    pub fn find_vma(&self, addr: VirtAddr) -> Option<usize> {
        vma_lookup(&self.vmas, addr)
    }

    /// The VMAs.
    #[must_use]
    pub fn vmas(&self) -> &[Vma] {
        &self.vmas
    }

    /// `MM_ANONPAGES`.
    #[must_use]
    pub fn rss_anon(&self) -> u64 {
        self.rss_anon
    }

    /// Whether every page of `[start, end)` is covered by some VMA.
    #[must_use]
    pub fn fully_mapped(&self, start: VirtAddr, end: VirtAddr) -> bool {
        let mut a = start;
        while a < end {
            match self.find_vma(a) {
                Some(i) => a = self.vmas[i].end,
                None => return false,
            }
        }
        true
    }

    /// Whether any VMA overlaps `[start, end)`.
    #[must_use]
    pub fn overlaps(&self, start: u64, end: u64) -> bool {
        let i = self.vmas.partition_point(|v| v.end.as_u64() <= start);
        i < self.vmas.len() && self.vmas[i].start.as_u64() < end
    }

    /// Splits the VMA holding `addr` so that a VMA boundary lies at `addr` (`__split_vma`).
    pub(crate) fn split_at(&mut self, addr: VirtAddr) {
        if let Some(i) = self.find_vma(addr) {
            let v = self.vmas[i];
            if v.start != addr {
                self.vmas[i].end = addr;
                let pgoff = v.page_index(addr);
                self.vmas.insert(
                    i + 1,
                    Vma {
                        start: addr,
                        pgoff,
                        ..v
                    },
                );
            }
        }
    }

    /// Merges adjacent VMAs with equal flags and contiguous `vm_pgoff` (`vma_merge`:
    /// `can_vma_merge_after`; within one mm the `anon_vma`s of such neighbours are
    /// compatible, as one of them has none or both come from one mapping).
    pub(crate) fn merge(&mut self) {
        let mut out: Vec<Vma> = Vec::with_capacity(self.vmas.len());
        for v in self.vmas.drain(..) {
            if let Some(last) = out.last_mut() {
                if last.end == v.start
                    && last.flags == v.flags
                    && last.page_index(v.start) == v.pgoff
                {
                    last.end = v.end;
                    last.anon_vma |= v.anon_vma;
                    continue;
                }
            }
            out.push(v);
        }
        self.vmas = out;
    }

    /// Removes `[start, end)` from the VMA list (the VMA part of `do_vmi_munmap`).
    pub(crate) fn remove_range(&mut self, start: VirtAddr, end: VirtAddr) {
        self.split_at(start);
        self.split_at(end);
        self.vmas.retain(|v| v.end <= start || v.start >= end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mm() -> Mm {
        Mm {
            holds: Vec::new(),
            has_pinned: false,
            pid: 1,
            mm_id: 1,
            asid: 1,
            pgd: TableFrame::at(0),
            vmas: vec![Vma::new(
                VirtAddr::new(0x20_0000),
                VirtAddr::new(0x40_0000),
                VmFlags::READ | VmFlags::WRITE,
            )],
            cursor: 0,
            rss_anon: 0,
        }
    }

    #[test]
    fn split_merge_remove() {
        let mut m = mm();
        m.split_at(VirtAddr::new(0x30_0000));
        assert_eq!(m.vmas.len(), 2);
        m.merge();
        assert_eq!(m.vmas.len(), 1);
        m.remove_range(VirtAddr::new(0x30_0000), VirtAddr::new(0x31_0000));
        assert_eq!(m.vmas.len(), 2);
        assert!(!m.fully_mapped(VirtAddr::new(0x20_0000), VirtAddr::new(0x40_0000)));
        assert!(m.fully_mapped(VirtAddr::new(0x20_0000), VirtAddr::new(0x30_0000)));
        assert_eq!(m.find_vma(VirtAddr::new(0x30_0000)), None);
        assert_eq!(m.find_vma(VirtAddr::new(0x31_0000)), Some(1));
        assert!(m.overlaps(0x2f_f000, 0x30_1000));
        assert!(!m.overlaps(0x30_0000, 0x31_0000));
    }

    #[test]
    fn advice_and_prot() {
        let f = VmFlags::READ | VmFlags::NOHUGEPAGE;
        assert_eq!(
            Advice::HugePage.apply(f),
            Some(VmFlags::READ | VmFlags::HUGEPAGE)
        );
        assert_eq!(Advice::DontNeed.apply(f), None);
        assert_eq!("rw".parse::<Prot>().unwrap(), Prot::ReadWrite);
        assert!("x".parse::<Advice>().is_err());
        assert_eq!(
            (VmFlags::DONTCOPY | VmFlags::HUGEPAGE).names(),
            ["hugepage", "dontcopy"]
        );
    }
}
