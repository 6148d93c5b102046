//! The kernel state under the [`Machine`](crate::Machine) façade: physical memory, the
//! processes, the MM-id allocator, the configuration and the counters, with the shared
//! internals (process lookup, range checks, `mmap`, the walks of `translate`/`observe`).
//! The operations are in the modules named after what they model: `fault`, `fork`, `zap`,
//! `mprotect`, `check`.

use std::collections::BTreeSet;

use crate::addr::{Pfn, VirtAddr, PAGE_SIZE, PMD_NR, PMD_SIZE};
use crate::error::{CowError, SegvReason};
use crate::events::Events;
use crate::folio::{FolioInfo, FolioRef};
use crate::machine::{FrameKind, Observation, MAX_MEMORY, MMAP_BASE, PID_MAX_LIMIT, USER_START};
use crate::mm::{Mm, VmFlags, Vma, VmaInfo};
use crate::paging::table::{Level, Paging};
use crate::paging::walk::{self, Translation};
use crate::physmem::{PhysMem, TableFrame, ST_FOLIO, ST_ZERO};
use crate::policy::{KernelConfig, Policy, Profile};

/// The state of the simulated kernel: physical memory (with the zero pages, the
/// allocation serials and the PMD deposits), the processes and their address spaces, the
/// MM-id allocator, the configuration and the counters. Operations are modules over narrow
/// contexts that borrow the fields they need (`fault::Fault`, `zap::Zap`, `fork::ForkCopy`),
/// like the kernel's `struct vm_fault` passed through `mm/memory.c`.
#[derive(Debug, Clone)]
pub(crate) struct Kernel {
    pub(crate) paging: Paging,
    /// What the profile resolved to: code asks these capabilities, never the version.
    pub(crate) cfg: KernelConfig,
    pub(crate) mem: PhysMem,
    pub(crate) policy: Policy,
    /// The event channel; the counters are its fold.
    pub(crate) events: Events,
    /// Processes by pid − 1 (`None` once exited).
    pub(crate) procs: Vec<Option<Mm>>,
    pub(crate) used_mm_ids: BTreeSet<u32>,
    /// The last address-space id handed out (never reused).
    pub(crate) last_asid: u64,
    /// `kernel.pid_max`: a fork fails while `pid_max - 1` processes live (`alloc_pid`).
    pub(crate) pid_max: u32,
    /// The `mmu_gather`: `(folio head, references)` to drop at the end of a zap.
    pub(crate) gather: Vec<(FolioRef, u32)>,
}

const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Kernel>();
};

impl Kernel {
    /// A machine with `memory` bytes of RAM, 4- or 5-level paging and a kernel profile.
    pub(crate) fn new(memory: u64, levels: u8, profile: Profile) -> Result<Self, CowError> {
        let paging = Paging::new(levels).ok_or_else(|| {
            CowError::InvalidArgument(format!("levels must be 4 or 5, not {levels}"))
        })?;
        if memory % PMD_SIZE != 0 || !(2 * PMD_SIZE..=MAX_MEMORY).contains(&memory) {
            return Err(CowError::InvalidArgument(format!(
                "memory must be a multiple of 2M in [4M, 1T], not {memory}"
            )));
        }
        let mut mem = PhysMem::new((memory / PAGE_SIZE) as u32);
        mem.faulted_folios_referenced = profile.config().faulted_folios_referenced();
        mem.reuses_sole_ref_large_pages = profile.config().reuses_sole_ref_large_pages();
        mem.queues_pmd_thp_at_fault = profile.config().queues_pmd_thp_at_fault();
        let zero = mem.alloc_block(0).ok_or(CowError::OutOfMemory)?;
        mem.mark_zero(zero, 0);
        let hz = mem.alloc_block(9).ok_or(CowError::OutOfMemory)?;
        mem.mark_zero(hz, 9);
        (mem.zero_pfn, mem.huge_zero_pfn) = (zero, hz);
        let pgd = mem.alloc_table().ok_or(CowError::OutOfMemory)?;
        let init = Mm {
            holds: Vec::new(),
            has_pinned: false,
            pid: 1,
            mm_id: 1,
            asid: 1,
            pgd,
            vmas: Vec::new(),
            cursor: MMAP_BASE,
            rss_anon: 0,
        };
        Ok(Self {
            paging,
            cfg: profile.config(),
            mem,
            policy: Policy::with_config(profile.config()),
            events: Events::default(),
            procs: vec![Some(init)],
            used_mm_ids: BTreeSet::from([1]),
            last_asid: 1,
            pid_max: PID_MAX_LIMIT,
            gather: Vec::new(),
        })
    }
    /// The next address-space id.
    pub(crate) fn new_asid(&mut self) -> u64 {
        self.last_asid += 1;
        self.last_asid
    }
    /// Live pids, ascending.
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.procs.iter().flatten().map(|m| m.pid).collect()
    }
    /// A live process's address space.
    pub(crate) fn mm(&self, pid: u32) -> Result<&Mm, CowError> {
        match pid.checked_sub(1).and_then(|i| self.procs.get(i as usize)) {
            Some(Some(mm)) => Ok(mm),
            Some(None) => Err(CowError::ProcessExited(pid)),
            None => Err(CowError::NoSuchProcess(pid)),
        }
    }

    pub(crate) fn mm_mut(&mut self, pid: u32) -> Result<&mut Mm, CowError> {
        proc_mut(&mut self.procs, pid)
    }
    /// A new private anonymous read/write mapping of `length` bytes, placed top-down below
    pub(crate) fn mmap(&mut self, pid: u32, length: u64) -> Result<VirtAddr, CowError> {
        let mm = self.mm_mut(pid)?;
        check_length(length)?;
        // Top-down below the cursor, 2 MiB-aligned, never overlapping or touching a VMA
        // (there are some only after `mmap_fixed` or `mremap`): a candidate that meets VMAs
        // moves below the lowest of them, with a 2 MiB gap (docs/access-and-events.md).
        let start = crate::mremap::get_unmapped_area(mm, length)?;
        let vma = Vma::new(
            VirtAddr::new(start),
            VirtAddr::new(start + length),
            VmFlags::READ | VmFlags::WRITE | VmFlags::MAYREAD | VmFlags::MAYWRITE,
        );
        let i = mm.vmas.partition_point(|v| v.start < vma.start);
        mm.vmas.insert(i, vma);
        mm.cursor = start.saturating_sub(PMD_SIZE);
        Ok(vma.start)
    }

    /// `mmap(addr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS |
    /// MAP_FIXED_NOREPLACE)`: a mapping exactly at `addr`, refused with `EEXIST` if the
    /// range meets a VMA; it merges with neighbours of equal flags (`vma_merge`).
    pub(crate) fn mmap_fixed(
        &mut self,
        pid: u32,
        addr: VirtAddr,
        length: u64,
    ) -> Result<VirtAddr, CowError> {
        self.mm(pid)?;
        let (start, end) = self.check_range(addr, length)?;
        let mm = self.mm_mut(pid)?;
        if mm.vmas.iter().any(|v| v.start < end && v.end > start) {
            return Err(CowError::InvalidAddress(format!(
                "range [{start}, {end}) overlaps an existing mapping (EEXIST)"
            )));
        }
        let vma = Vma::new(
            start,
            end,
            VmFlags::READ | VmFlags::WRITE | VmFlags::MAYREAD | VmFlags::MAYWRITE,
        );
        let i = mm.vmas.partition_point(|v| v.start < vma.start);
        mm.vmas.insert(i, vma);
        mm.merge();
        Ok(start)
    }

    /// Checks `[addr, addr+length)`: page-aligned, non-empty, inside user space. The
    /// messages say the rule broken, in the words of the reference's `_range` (the two
    /// backends raise the same message for the same mistake).
    pub(crate) fn check_range(
        &self,
        addr: VirtAddr,
        length: u64,
    ) -> Result<(VirtAddr, VirtAddr), CowError> {
        check_length(length)?;
        if !addr.is_aligned(PAGE_SIZE) {
            return Err(CowError::InvalidArgument(format!(
                "address {addr} is not a multiple of the page size ({PAGE_SIZE})"
            )));
        }
        let user_end = self.paging.user_end();
        let end = addr
            .checked_add(length)
            .filter(|e| addr.as_u64() >= USER_START && e.as_u64() <= user_end)
            .ok_or_else(|| {
                // u128: the end of a range that wraps past 2^64 is printed as is
                let end = u128::from(addr.as_u64()) + u128::from(length);
                CowError::InvalidAddress(format!(
                    "range [{addr}, {end:#x}) is outside user space \
                     [{USER_START:#x}, {user_end:#x})"
                ))
            })?;
        Ok((addr, end))
    }
    /// Stores `value` at the first byte of every page of the range, lowest address first;
    pub(crate) fn write(
        &mut self,
        pid: u32,
        addr: VirtAddr,
        length: u64,
        value: u64,
    ) -> Result<(), CowError> {
        let (start, end) = self.check_access(pid, addr, length, true)?;
        self.access_range(pid, start, end, true, value, None)
    }
    /// Loads the first 8 bytes of every page of the range, lowest address first.
    pub(crate) fn read(
        &mut self,
        pid: u32,
        addr: VirtAddr,
        length: u64,
    ) -> Result<Vec<u64>, CowError> {
        let (start, end) = self.check_access(pid, addr, length, false)?;
        let mut out = Vec::with_capacity(capacity_hint(start, end));
        self.access_range(pid, start, end, false, 0, Some(&mut out))?;
        Ok(out)
    }
    /// Stores `value` at the first byte of each page in `addrs`, in the order given: the
    pub(crate) fn write_pages(
        &mut self,
        pid: u32,
        addrs: &[VirtAddr],
        value: u64,
    ) -> Result<(), CowError> {
        self.check_pages(pid, addrs, true)?;
        for &a in addrs {
            self.access_range(
                pid,
                a,
                VirtAddr::new(a.as_u64() + PAGE_SIZE),
                true,
                value,
                None,
            )?;
        }
        Ok(())
    }
    /// Loads the first 8 bytes of each page in `addrs`, in the order given (the batch form
    pub(crate) fn read_pages(
        &mut self,
        pid: u32,
        addrs: &[VirtAddr],
    ) -> Result<Vec<u64>, CowError> {
        self.check_pages(pid, addrs, false)?;
        let mut out = Vec::with_capacity(addrs.len());
        for &a in addrs {
            let end = VirtAddr::new(a.as_u64() + PAGE_SIZE);
            self.access_range(pid, a, end, false, 0, Some(&mut out))?;
        }
        Ok(out)
    }

    /// [`Self::check_access`] for each page of a batch, in order. The process is checked
    /// first, so that an empty batch of an exited process fails as a non-empty one does.
    /// A page inside the VMA that let the previous page through needs no VMA lookup:
    /// scattered pages mostly fall in a few large VMAs.
    fn check_pages(&self, pid: u32, addrs: &[VirtAddr], write: bool) -> Result<(), CowError> {
        let mm = self.mm(pid)?;
        let mut last: Option<(VirtAddr, VirtAddr)> = None;
        for &a in addrs {
            self.check_range(a, PAGE_SIZE)?;
            if !last.is_some_and(|(s, e)| s <= a && a < e) {
                let v = access_error(mm, a, write)?;
                last = Some((v.start, v.end));
            }
        }
        Ok(())
    }

    /// `access_error()` over the whole range before touching anything.
    pub(crate) fn check_access(
        &self,
        pid: u32,
        addr: VirtAddr,
        length: u64,
        write: bool,
    ) -> Result<(VirtAddr, VirtAddr), CowError> {
        let mm = self.mm(pid)?;
        let (start, end) = self.check_range(addr, length)?;
        let mut a = start;
        while a < end {
            a = access_error(mm, a, write)?.end;
        }
        Ok((start, end))
    }
    /// The VMAs of a process.
    pub(crate) fn vmas(&self, pid: u32) -> Result<Vec<VmaInfo>, CowError> {
        Ok(self
            .mm(pid)?
            .vmas
            .iter()
            .map(|v| VmaInfo {
                start: v.start.as_u64(),
                end: v.end.as_u64(),
                prot: v.prot(),
                flags: v.flags.names(),
            })
            .collect())
    }
    /// Walks the page tables for `addr` without faulting.
    pub(crate) fn translate(&self, pid: u32, addr: VirtAddr) -> Result<Translation, CowError> {
        let mm = self.mm(pid)?;
        let user_end = self.paging.user_end();
        if addr.as_u64() >= user_end {
            return Err(CowError::InvalidAddress(format!(
                "address {addr} is outside user space, which ends at {user_end:#x}"
            )));
        }
        Ok(walk::translate(&self.mem, self.paging, mm.pgd, addr))
    }
    /// One observation per page of the range (the scenario format's page observation).
    pub(crate) fn observe(
        &self,
        pid: u32,
        addr: VirtAddr,
        length: u64,
    ) -> Result<Vec<Observation>, CowError> {
        let mm = self.mm(pid)?;
        let (start, end) = self.check_range(addr, length)?;
        let mut out = Vec::with_capacity(capacity_hint(start, end));
        let mut a = start.as_u64();
        while a < end.as_u64() {
            out.push(self.observe_page(mm.pgd, VirtAddr::new(a)));
            a += PAGE_SIZE;
        }
        Ok(out)
    }

    fn observe_page(&self, pgd: TableFrame, addr: VirtAddr) -> Observation {
        let Some(leaf) = walk::find_leaf(&self.mem, self.paging, pgd, addr) else {
            return Observation::ABSENT;
        };
        if !leaf.entry.is_present() {
            // A swap entry reads as not present, frame "swap" (pagemap's PM_SWAP), without
            // swapping anything in.
            return if matches!(leaf.entry.kind(), crate::paging::EntryKind::Swap(_)) {
                Observation {
                    kind: FrameKind::Swap,
                    ..Observation::ABSENT
                }
            } else {
                Observation::ABSENT
            };
        }
        let base = leaf.entry.frame();
        let pmd = leaf.level == Level::Pmd;
        let pfn = if pmd {
            base + ((addr.as_u64() & (PMD_SIZE - 1)) / PAGE_SIZE) as u32
        } else {
            base
        };
        let m = &self.mem;
        match m.state(pfn) {
            ST_ZERO => {
                let huge = m.order(pfn) == 9;
                Observation {
                    present: true,
                    kind: if huge {
                        FrameKind::HugeZero
                    } else {
                        FrameKind::Zero
                    },
                    pfn: u64::from(pfn),
                    serial: 0,
                    folio_pages: if huge { PMD_NR } else { 1 },
                    mapcount: 0,
                    exclusive: false,
                    content: 0,
                }
            }
            ST_FOLIO => {
                let folio = m.folio(m.page_folio(pfn));
                let h = folio.folio_ref().pfn();
                let entire = folio.folio_entire_mapcount() as u64;
                let mapcount = u64::from(m.page_mapcount(pfn)) + entire;
                // pagemap: 7.2 reports the first page's value for a whole PMD mapping.
                let exclusive = if pmd && self.cfg.pagemap_pmd_exclusive_from_first_page() {
                    u64::from(m.page_mapcount(h)) + entire == 1
                } else {
                    mapcount == 1
                };
                Observation {
                    present: true,
                    kind: FrameKind::Normal,
                    pfn: u64::from(pfn),
                    serial: folio.folio_serial(),
                    folio_pages: u64::from(folio.folio_nr_pages()),
                    mapcount,
                    exclusive,
                    content: m.content[pfn as usize],
                }
            }
            _ => Observation::ABSENT,
        }
    }
    /// The counters of the folio holding frame `pfn`.
    pub(crate) fn folio(&self, pfn: Pfn) -> Result<FolioInfo, CowError> {
        let p = pfn.as_u64();
        if p >= u64::from(self.mem.nr_frames()) || self.mem.state(p as u32) != ST_FOLIO {
            return Err(CowError::InvalidArgument(format!(
                "frame {p} is not part of an allocated folio"
            )));
        }
        Ok(self.mem.folio_info(self.mem.page_folio(p as u32)))
    }

    // -- internals shared by fault/fork/zap ----------------------------------------------
}

/// The live process `pid` of `procs` (by pid − 1), borrowed alone so that an operation
/// can hold it beside the other fields of [`Kernel`].
pub(crate) fn proc_mut(procs: &mut [Option<Mm>], pid: u32) -> Result<&mut Mm, CowError> {
    match pid.checked_sub(1).and_then(|i| procs.get_mut(i as usize)) {
        Some(Some(mm)) => Ok(mm),
        Some(None) => Err(CowError::ProcessExited(pid)),
        None => Err(CowError::NoSuchProcess(pid)),
    }
}

/// `access_error()` for the page at `addr`: the VMA holding it, which must permit the
/// access; otherwise the segfault the access takes.
pub(crate) fn access_error(mm: &Mm, addr: VirtAddr, write: bool) -> Result<&Vma, CowError> {
    let Some(i) = mm.find_vma(addr) else {
        return Err(CowError::Segfault {
            addr,
            reason: SegvReason::Unmapped,
        });
    };
    let v = &mm.vmas[i];
    let need = if write { VmFlags::WRITE } else { VmFlags::READ };
    if !v.flags.contains(need) {
        return Err(CowError::Segfault {
            addr,
            reason: SegvReason::Protection,
        });
    }
    Ok(v)
}

/// How many results to reserve for a per-page call over `[start, end)`: the page count, but
/// at most [`MAX_RESERVE`]. The range comes from the caller and may be huge (a `read` of a
/// 16 TiB mapping that runs out of simulated memory after a few thousand pages): reserving
/// it all up front would abort the host process instead of failing or growing as needed.
pub(crate) fn capacity_hint(start: VirtAddr, end: VirtAddr) -> usize {
    ((end.as_u64() - start.as_u64()) / PAGE_SIZE).min(MAX_RESERVE) as usize
}

/// The largest up-front reservation of [`capacity_hint`] (a 256 MiB range).
const MAX_RESERVE: u64 = 1 << 16;

/// A range's length: positive and a whole number of pages (the messages are the reference's).
fn check_length(length: u64) -> Result<(), CowError> {
    if length == 0 {
        return Err(CowError::InvalidArgument("length must be positive".into()));
    }
    if length % PAGE_SIZE != 0 {
        return Err(CowError::InvalidArgument(format!(
            "length {length} is not a multiple of the page size ({PAGE_SIZE})"
        )));
    }
    Ok(())
}
