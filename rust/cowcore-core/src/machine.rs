//! The simulated machine: physical memory, processes and the public API.
//!
//! [`Machine`] is what the Python binding wraps: every method takes pids and plain values
//! and returns plain Rust structs that map 1:1 onto the `Backend` protocol of
//! `python/cowcore/protocol.py` (`ObservationRow`, `TranslationRow`, `FolioRow`, the stats
//! dict). Every failing call leaves the machine as it was (DESIGN.md "Errors"), except that
//! an out-of-memory error in a multi-page `read`/`write` keeps the pages already done.

use crate::addr::{Pfn, VirtAddr};
use crate::error::CowError;
use crate::events::Event;
use crate::folio::FolioInfo;
use crate::kernel::Kernel;
use crate::khugepaged::ScanResult;
use crate::mm::{Advice, Mm, Prot, VmaInfo};
use crate::outcome::{Access, AccessKinds};
use crate::paging::walk::Translation;
use crate::policy::{KernelConfig, Profile, ThpMode, ThpSizeMode, NO_MTHP_SIZES};
use crate::smaps::SmapsInfo;
use crate::stats::{Stats, Vmstat};

/// Lowest user address (`mmap_min_addr` is at least one page).
pub const USER_START: u64 = 0x1000;
/// The largest simulated RAM: 1 TiB (2^28 frames). What bounds it is no longer the per-page
/// mapcount (its 24-bit field holds any count that [`PID_MAX_LIMIT`] processes can make) but
/// the host: the per-frame arrays are reserved at boot (20 bytes a frame, touched only for
/// frames in use) and frame numbers are `u32` indexes, which would allow up to 16 TiB
/// (DESIGN.md "Limits").
pub const MAX_MEMORY: u64 = 1 << 40;
/// `PID_MAX_LIMIT` on 64-bit (include/linux/threads.h): the largest `kernel.pid_max`, and
/// its default here (what systemd's `50-pid-max.conf` sets). A machine holds at most
/// `pid_max - 1` processes (pid 0 is the idle task); a fork beyond fails with
/// [`CowError::ProcessLimit`] (`EAGAIN` from `alloc_pid`). With at most 2^22 - 1 processes
/// no page's mapcount can pass its 24-bit field, and no large folio's `_refcount` (at most
/// 512 references per mm) can pass `i32`, whatever the memory size.
pub const PID_MAX_LIMIT: u32 = 4 << 20;
/// `PID_MAX_MIN` (`RESERVED_PIDS + 1`, include/linux/threads.h): the smallest `kernel.pid_max`
/// that `proc_dointvec_minmax` accepts.
pub const PID_MAX_MIN: u32 = 301;
/// Where the top-down `mmap` cursor starts (DESIGN.md "Addresses").
pub const MMAP_BASE: u64 = 0x7f00_0000_0000;

/// What kind of frame an observed page is (`FRAME_*` of the protocol).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// Not present (`FRAME_NONE` = 0).
    None = 0,
    /// A frame of an anonymous folio (`FRAME_NORMAL` = 1).
    Normal = 1,
    /// The shared zero page (`FRAME_ZERO` = 2).
    Zero = 2,
    /// The huge zero folio (`FRAME_HUGE_ZERO` = 3).
    HugeZero = 3,
    /// Not present: a swap entry (`FRAME_SWAP` = 4, pagemap's `PM_SWAP`; issue 16).
    Swap = 4,
}

impl FrameKind {
    /// Every kind, by protocol value (`FRAME_NONE` = 0 first).
    pub const ALL: [Self; 5] = [
        Self::None,
        Self::Normal,
        Self::Zero,
        Self::HugeZero,
        Self::Swap,
    ];
}

/// One page of an `observe` (the protocol's `ObservationRow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    /// The page is mapped (a present or `PROT_NONE` entry).
    pub present: bool,
    /// The kind of frame.
    pub kind: FrameKind,
    /// The 4 KiB frame (0 when not present).
    pub pfn: u64,
    /// Allocation serial of the folio (0 for the zero pages and absent pages).
    pub serial: u64,
    /// Pages in the folio (1 for the zero page, 512 for the huge zero page).
    pub folio_pages: u64,
    /// `/proc/kpagecount`: own PTE mapcount plus the folio's entire mapcount.
    pub mapcount: u64,
    /// pagemap's `PM_MMAP_EXCLUSIVE`.
    pub exclusive: bool,
    /// The 64-bit value at the first byte of the page.
    pub content: u64,
}

impl Observation {
    pub(crate) const ABSENT: Self = Self {
        present: false,
        kind: FrameKind::None,
        pfn: 0,
        serial: 0,
        folio_pages: 0,
        mapcount: 0,
        exclusive: false,
        content: 0,
    };
}
/// The simulated machine (one physical memory, many processes): a thin pid-keyed façade
/// over the kernel state. Every method checks its arguments and hands over to an
/// operation of the core (DESIGN.md "Architecture").
#[derive(Debug, Clone)]
pub struct Machine {
    pub(crate) k: Kernel,
}

const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Machine>();
};

impl Machine {
    /// A machine with `memory` bytes of RAM, 4- or 5-level paging and a kernel profile.
    /// Allocates the zero page (order 0), the huge zero folio (order 9) and the first
    /// process's PGD, in that order (DESIGN.md "Physical memory"); with `memory` a multiple
    /// of 4 MiB that puts the zero page at frame 0 and the huge zero folio at 512..1023.
    ///
    /// # Errors
    /// [`CowError::InvalidArgument`] if `memory` is not a multiple of 2 MiB, is below 4 MiB
    /// or above [`MAX_MEMORY`], or `levels` is not 4 or 5.
    ///
    /// # Examples
    ///
    /// ```rust
    /// use cowcore_core::{CowError, Machine, Profile};
    ///
    /// let m = Machine::new(8 << 20, 4, Profile::V6_15)?; // 8 MiB: 2048 frames
    /// assert_eq!(m.total_frames(), 2048);
    /// // Taken at boot: the zero page, the huge zero folio (512 frames) and pid 1's PGD.
    /// assert_eq!(m.free_frames(), 2048 - 1 - 512 - 1);
    /// assert_eq!(m.pids(), [m.init_pid()]);
    /// assert_eq!((m.levels(), m.profile()), (4, Profile::V6_15));
    ///
    /// let odd_size = Machine::new(3 << 20, 4, Profile::V6_15);
    /// assert!(matches!(odd_size, Err(CowError::InvalidArgument(_))));
    /// let three_levels = Machine::new(8 << 20, 3, Profile::V6_15);
    /// assert!(matches!(three_levels, Err(CowError::InvalidArgument(_))));
    /// # Ok::<(), CowError>(())
    /// ```
    pub fn new(memory: u64, levels: u8, profile: Profile) -> Result<Self, CowError> {
        Ok(Self {
            k: Kernel::new(memory, levels, profile)?,
        })
    }

    // -- properties ----------------------------------------------------------------------

    /// The kernel profile.
    #[must_use]
    pub fn profile(&self) -> Profile {
        self.k.cfg.profile()
    }

    /// The capabilities the profile resolved to ([`KernelConfig`]).
    #[must_use]
    pub fn config(&self) -> KernelConfig {
        self.k.cfg
    }

    /// 4 or 5.
    #[must_use]
    pub fn levels(&self) -> u8 {
        self.k.paging.levels()
    }

    /// Total frames.
    #[must_use]
    pub fn total_frames(&self) -> u64 {
        u64::from(self.k.mem.nr_frames())
    }

    /// Free frames.
    #[must_use]
    pub fn free_frames(&self) -> u64 {
        self.k.mem.nr_free()
    }

    /// `kernel.pid_max` (`/proc/sys/kernel/pid_max`): a fork fails with
    /// [`CowError::ProcessLimit`] while the machine holds `pid_max - 1` processes.
    #[must_use]
    pub fn pid_max(&self) -> u32 {
        self.k.pid_max
    }

    /// Sets `kernel.pid_max`. Processes already there stay, as in the kernel; only the next
    /// fork sees the new limit.
    ///
    /// # Errors
    /// [`CowError::InvalidArgument`] outside `[PID_MAX_MIN, PID_MAX_LIMIT]` (the sysctl's
    /// `extra1`/`extra2`).
    ///
    /// # Examples
    ///
    /// ```rust
    /// use cowcore_core::{CowError, Machine, Profile, PID_MAX_LIMIT, PID_MAX_MIN};
    ///
    /// let mut m = Machine::new(8 << 20, 4, Profile::V6_15)?;
    /// assert_eq!(m.pid_max(), PID_MAX_LIMIT);
    /// m.set_pid_max(PID_MAX_MIN.into())?;
    /// for _ in 0..PID_MAX_MIN - 2 {
    ///     m.fork(1)?; // 300 processes: pids 1..=300
    /// }
    /// assert!(matches!(m.fork(1), Err(CowError::ProcessLimit { .. })));
    /// m.exit(2)?;
    /// assert_eq!(m.fork(1)?, 301); // a free slot again (pids are not reused)
    /// assert!(m.set_pid_max(u64::from(PID_MAX_LIMIT) + 1).is_err());
    /// # Ok::<(), CowError>(())
    /// ```
    pub fn set_pid_max(&mut self, pid_max: u64) -> Result<(), CowError> {
        match u32::try_from(pid_max) {
            Ok(n) if (PID_MAX_MIN..=PID_MAX_LIMIT).contains(&n) => {
                self.k.pid_max = n;
                Ok(())
            }
            _ => Err(CowError::InvalidArgument(format!(
                "pid_max must be in [{PID_MAX_MIN}, {PID_MAX_LIMIT}], not {pid_max}"
            ))),
        }
    }

    // -- policy --------------------------------------------------------------------------

    /// `transparent_hugepage/enabled`.
    #[must_use]
    pub fn thp_enabled(&self) -> ThpMode {
        self.k.policy.enabled
    }

    /// Sets `transparent_hugepage/enabled`.
    ///
    /// # Examples
    ///
    /// With `enabled` at `always` and `hugepages-2048kB/enabled` at `inherit`, the first
    /// fault in a 2 MiB-aligned VMA maps a whole PMD-sized THP (`do_huge_pmd_anonymous_page`):
    ///
    /// ```rust
    /// use cowcore_core::{Machine, Profile, ThpMode, ThpSizeMode, PMD_SIZE};
    ///
    /// let mut m = Machine::new(16 << 20, 4, Profile::V6_15)?;
    /// assert_eq!(m.thp_enabled(), ThpMode::Never);
    /// m.set_thp_enabled(ThpMode::Always);
    /// m.set_thp_size_by_name("2M", ThpSizeMode::Inherit)?;
    /// let a = m.mmap(1, PMD_SIZE)?;
    /// m.write(1, a, 4096, 1)?;
    /// let t = m.translate(1, a)?;
    /// assert_eq!(t.page_size, Some(PMD_SIZE)); // a PMD leaf: the walk stops above the PTEs
    /// let f = m.folio(t.pfn.expect("mapped"))?;
    /// assert_eq!((f.order, f.entire_mapcount), (9, 1));
    /// assert_eq!(m.stats().thp_fault_alloc, 1);
    /// # Ok::<(), cowcore_core::CowError>(())
    /// ```
    pub fn set_thp_enabled(&mut self, mode: ThpMode) {
        self.k.policy.enabled = mode;
    }

    /// `hugepages-<size>/enabled` of an order in 2..=9.
    ///
    /// # Errors
    /// [`CowError::InvalidArgument`] for an order outside 2..=9, or one the profile's kernel
    /// does not have (every order but 9 under 6.1, [`KernelConfig::has_thp_order`]).
    pub fn thp_size(&self, order: u32) -> Result<ThpSizeMode, CowError> {
        self.check_thp_order(order)?;
        Ok(self.k.policy.size_mode(order))
    }

    /// Sets `hugepages-<size>/enabled` of an order in 2..=9.
    ///
    /// Under a profile with PMD-size THP only (6.1) the one size is order 9 (2M), and its
    /// mode works as under the others: 6.1's single `enabled` knob gets the effective 2M
    /// setting (2M's own, or `enabled` while 2M is at `inherit`), which is what
    /// [`crate::Policy::allowable_orders`] computes for order 9.
    ///
    /// # Errors
    /// [`CowError::InvalidArgument`] for an order outside 2..=9, or one the profile's kernel
    /// does not have (every order but 9 under 6.1: [`NO_MTHP_SIZES`]).
    ///
    /// # Examples
    ///
    /// ```rust
    /// use cowcore_core::{CowError, Machine, Profile, ThpSizeMode};
    ///
    /// let mut m = Machine::new(16 << 20, 4, Profile::V6_15)?;
    /// assert_eq!(m.thp_size(4)?, ThpSizeMode::Never); // order 4 is the 64K size
    /// m.set_thp_size(4, ThpSizeMode::Always)?;
    /// assert_eq!(m.thp_size_by_name("64K")?, ThpSizeMode::Always);
    /// let a = m.mmap(1, 2 << 20)?;
    /// m.write(1, a, 4096, 1)?; // one fault maps a whole 64K folio: 16 PTEs
    /// assert_eq!(m.stats().anon_fault_alloc[4 - 2], 1);
    /// assert_eq!(m.observe(1, a, 16 * 4096)?.iter().filter(|o| o.folio_pages == 16).count(), 16);
    ///
    /// let order_1 = m.set_thp_size(1, ThpSizeMode::Always);
    /// assert!(matches!(order_1, Err(CowError::InvalidArgument(_))));
    /// # Ok::<(), CowError>(())
    /// ```
    pub fn set_thp_size(&mut self, order: u32, mode: ThpSizeMode) -> Result<(), CowError> {
        self.check_thp_order(order)?;
        self.k.policy.sizes[(order - 2) as usize] = mode;
        Ok(())
    }

    /// An order with a `hugepages-<size>` directory under this profile: 2..=9, and one the
    /// kernel has (a kernel before 6.8 has no per-size directories at all, only the PMD size
    /// that the top-level `enabled` governs).
    fn check_thp_order(&self, order: u32) -> Result<(), CowError> {
        check_order(order)?;
        if self.k.cfg.has_thp_order(order) {
            Ok(())
        } else {
            Err(CowError::InvalidArgument(format!(
                "THP size {}: {NO_MTHP_SIZES}",
                crate::policy::size_name(order)
            )))
        }
    }

    /// `transparent_hugepage/use_zero_page`.
    #[must_use]
    pub fn use_zero_page(&self) -> bool {
        self.k.policy.use_zero_page
    }

    /// Sets `transparent_hugepage/use_zero_page`.
    pub fn set_use_zero_page(&mut self, on: bool) {
        self.k.policy.use_zero_page = on;
    }

    /// A policy toggle by name (`cow_reuse_pte_mapped_thp`).
    ///
    /// # Errors
    /// [`CowError::InvalidArgument`] for an unknown name.
    pub fn policy(&self, name: &str) -> Result<bool, CowError> {
        self.k.policy.get(name)
    }

    /// Sets a policy toggle by name.
    ///
    /// # Errors
    /// [`CowError::InvalidArgument`] for an unknown name.
    ///
    /// # Examples
    ///
    /// The 6.12 profile with 6.15's reuse rule turned on reuses a PTE-mapped large folio:
    ///
    /// ```rust
    /// use cowcore_core::{CowError, Machine, Profile, ThpSizeMode};
    ///
    /// let mut m = Machine::new(16 << 20, 4, Profile::V6_12)?;
    /// assert!(!m.policy("cow_reuse_pte_mapped_thp")?);
    /// m.set_policy("cow_reuse_pte_mapped_thp", true)?;
    /// m.set_thp_size_by_name("64K", ThpSizeMode::Always)?;
    /// let a = m.mmap(1, 2 << 20)?;
    /// m.write(1, a, 4096, 1)?;
    /// let pfn = m.translate(1, a)?.pfn;
    /// let child = m.fork(1)?;
    /// m.exit(child)?;
    /// m.write(1, a, 4096, 2)?;
    /// assert_eq!(m.translate(1, a)?.pfn, pfn); // reused, not copied
    /// assert_eq!((m.stats().pgreuse, m.stats().cow_copy), (1, 0));
    ///
    /// let unknown = m.set_policy("cow_reuse_everything", true);
    /// assert!(matches!(unknown, Err(CowError::InvalidArgument(_))));
    /// # Ok::<(), CowError>(())
    /// ```
    pub fn set_policy(&mut self, name: &str, value: bool) -> Result<(), CowError> {
        self.k.policy.set(name, value)
    }

    // -- processes -----------------------------------------------------------------------

    /// The pid of the first process (1).
    #[must_use]
    pub fn init_pid(&self) -> u32 {
        1
    }

    /// Live pids, ascending.
    #[must_use]
    pub fn pids(&self) -> Vec<u32> {
        self.k.pids()
    }

    /// The mm id of a process.
    ///
    /// # Errors
    /// [`CowError::NoSuchProcess`].
    pub fn mm_id(&self, pid: u32) -> Result<u32, CowError> {
        Ok(self.k.mm(pid)?.mm_id)
    }

    /// `get_mm_counter(mm, MM_ANONPAGES)`: the anonymous pages mapped by a process, what
    /// `/proc/PID/status` prints as `RssAnon` (in pages here, in kB there). A PMD-mapped THP
    /// counts 512; the zero pages count nothing.
    ///
    /// # Errors
    /// [`CowError::NoSuchProcess`], [`CowError::ProcessExited`].
    ///
    /// # Examples
    ///
    /// ```rust
    /// use cowcore_core::{Machine, Profile};
    ///
    /// let mut m = Machine::new(8 << 20, 4, Profile::V6_15)?;
    /// let a = m.mmap(1, 4 * 4096)?;
    /// m.read(1, a, 4 * 4096)?; // the zero page: not anonymous RSS
    /// assert_eq!(m.rss_anon(1)?, 0);
    /// m.write(1, a, 3 * 4096, 1)?;
    /// assert_eq!(m.rss_anon(1)?, 3);
    /// let child = m.fork(1)?; // the child maps the same three pages
    /// assert_eq!(m.rss_anon(child)?, 3);
    /// # Ok::<(), cowcore_core::CowError>(())
    /// ```
    pub fn rss_anon(&self, pid: u32) -> Result<u64, CowError> {
        Ok(self.k.mm(pid)?.rss_anon)
    }

    /// A live process's address space.
    ///
    /// # Errors
    /// [`CowError::NoSuchProcess`] for a pid never given out, [`CowError::ProcessExited`]
    /// for one that has exited.
    pub fn mm(&self, pid: u32) -> Result<&Mm, CowError> {
        self.k.mm(pid)
    }

    /// A new private anonymous read/write mapping of `length` bytes, placed top-down below
    /// the process's cursor with a 2 MiB guard gap (DESIGN.md "Addresses"). Allocates
    /// nothing.
    ///
    /// # Errors
    /// [`CowError::NoSuchProcess`]; [`CowError::InvalidArgument`] for a length that is zero
    /// or not a multiple of 4 KiB; [`CowError::InvalidAddress`] when there is no room.
    ///
    /// # Examples
    ///
    /// ```rust
    /// use cowcore_core::machine::MMAP_BASE;
    /// use cowcore_core::{Machine, Profile, Prot};
    ///
    /// let mut m = Machine::new(8 << 20, 4, Profile::V6_15)?;
    /// let free = m.free_frames();
    /// let a = m.mmap(1, 4 << 20)?;
    /// assert_eq!(a.as_u64(), MMAP_BASE - (4 << 20));
    /// // The next mapping goes below a 2 MiB guard gap, 2 MiB-aligned: no merging.
    /// let b = m.mmap(1, 4096)?;
    /// assert_eq!(b.as_u64(), a.as_u64() - (4 << 20));
    /// let vmas = m.vmas(1)?;
    /// assert_eq!((vmas.len(), vmas[0].start, vmas[0].prot), (2, b.as_u64(), Prot::ReadWrite));
    /// assert_eq!(m.free_frames(), free); // nothing is allocated before the first fault
    /// # Ok::<(), cowcore_core::CowError>(())
    /// ```
    pub fn mmap(&mut self, pid: u32, length: u64) -> Result<VirtAddr, CowError> {
        self.k.mmap(pid, length)
    }

    /// Stores `value` at the first byte of every page of the range, lowest address first;
    /// each page access faults as needed (DESIGN.md "Order of operations").
    ///
    /// # Errors
    /// [`CowError::NoSuchProcess`], range errors, [`CowError::Segfault`] (checked for the
    /// whole range first), [`CowError::OutOfMemory`] (pages before the failing one stay
    /// written).
    ///
    /// # Examples
    ///
    /// ```rust
    /// use cowcore_core::{Machine, Profile};
    ///
    /// let mut m = Machine::new(8 << 20, 4, Profile::V6_15)?;
    /// let a = m.mmap(1, 3 * 4096)?;
    /// m.write(1, a, 2 * 4096, 7)?; // two write faults (do_anonymous_page): two 4K folios
    /// assert_eq!(m.stats().faults_write, 2);
    /// assert_eq!(m.read(1, a, 3 * 4096)?, [7, 7, 0]);
    /// m.write(1, a, 4096, 8)?; // the PTE is writable now: no fault
    /// assert_eq!(m.stats().faults_write, 2);
    /// assert_eq!(m.read(1, a, 4096)?, [8]);
    /// # Ok::<(), cowcore_core::CowError>(())
    /// ```
    pub fn write(
        &mut self,
        pid: u32,
        addr: VirtAddr,
        length: u64,
        value: u64,
    ) -> Result<(), CowError> {
        self.k.write(pid, addr, length, value)
    }

    /// Loads the first 8 bytes of every page of the range, lowest address first.
    ///
    /// # Errors
    /// As [`Self::write`].
    ///
    /// # Examples
    ///
    /// A read fault on an untouched page maps the shared zero page; the first write then
    /// copies it (`wp_page_copy`):
    ///
    /// ```rust
    /// use cowcore_core::{CowError, FrameKind, Machine, Pfn, Profile};
    ///
    /// let mut m = Machine::new(8 << 20, 4, Profile::V6_15)?;
    /// let a = m.mmap(1, 4096)?;
    /// assert_eq!(m.read(1, a, 4096)?, [0]);
    /// assert_eq!(m.stats().faults_read, 1);
    /// let o = m.observe(1, a, 4096)?[0];
    /// assert_eq!((o.kind, o.pfn), (FrameKind::Zero, 0));
    /// // The zero page is not an anonymous folio.
    /// assert!(matches!(m.folio(Pfn::new(0)), Err(CowError::InvalidArgument(_))));
    ///
    /// m.write(1, a, 4096, 5)?;
    /// assert_eq!(m.observe(1, a, 4096)?[0].kind, FrameKind::Normal);
    /// assert_eq!((m.stats().faults_wp, m.stats().cow_copy), (1, 1));
    /// # Ok::<(), CowError>(())
    /// ```
    pub fn read(&mut self, pid: u32, addr: VirtAddr, length: u64) -> Result<Vec<u64>, CowError> {
        self.k.read(pid, addr, length)
    }

    /// Stores `value` at the first byte of each page in `addrs`, in the order given: the
    /// batch form of [`Self::write`] for scattered pages (one call instead of one per page).
    /// Every page is checked (alignment, user range, `access_error()`) before any is
    /// touched.
    ///
    /// # Errors
    /// As [`Self::write`]; the first failing page in `addrs` order is reported.
    pub fn write_pages(
        &mut self,
        pid: u32,
        addrs: &[VirtAddr],
        value: u64,
    ) -> Result<(), CowError> {
        self.k.write_pages(pid, addrs, value)
    }

    /// Loads the first 8 bytes of each page in `addrs`, in the order given (the batch form
    /// of [`Self::read`]).
    ///
    /// # Errors
    /// As [`Self::write_pages`].
    pub fn read_pages(&mut self, pid: u32, addrs: &[VirtAddr]) -> Result<Vec<u64>, CowError> {
        self.k.read_pages(pid, addrs)
    }

    /// One user access of one byte at `addr` (any alignment), and what the kernel did and
    /// why ([`Access`]): a load, or a store of `value` at the page's first byte (the
    /// simulator's content model). A segfault or an out-of-memory fault is an
    /// [`Outcome`](crate::Outcome) with nothing changed, not an error.
    ///
    /// # Errors
    /// [`CowError::NoSuchProcess`] and [`CowError::ProcessExited`] only.
    ///
    /// # Examples
    ///
    /// ```rust
    /// use cowcore_core::{AccessFlags, MapLevel, Machine, Outcome, Profile, Reason, VirtAddr};
    ///
    /// let mut m = Machine::new(8 << 20, 4, Profile::V6_15)?;
    /// let a = m.mmap(1, 4096)?;
    /// let r = m.access(1, VirtAddr::new(a.as_u64() + 8), false, 0)?;
    /// assert_eq!((r.outcome, r.reason, r.level), (Outcome::ZeroPage, Reason::PteNone, MapLevel::Pte));
    /// assert_eq!((r.faults, r.error_code), (1, 0x4)); // PF_USER
    /// assert!(r.flags.contains(AccessFlags::FIRST_TOUCH));
    /// let w = m.access(1, a, true, 7)?;
    /// assert_eq!((w.outcome, w.reason, w.error_code), (Outcome::CowCopy, Reason::ZeroPage, 0x7));
    /// assert_eq!(m.access(1, a, true, 8)?.outcome, Outcome::NoFault);
    /// let s = m.access(1, VirtAddr::new(a.as_u64() + 4096), false, 0)?;
    /// assert_eq!((s.outcome, s.reason, s.phys()), (Outcome::Segfault, Reason::SegvUnmapped, None));
    /// # Ok::<(), cowcore_core::CowError>(())
    /// ```
    pub fn access(
        &mut self,
        pid: u32,
        addr: VirtAddr,
        write: bool,
        value: u64,
    ) -> Result<Access, CowError> {
        self.k.access(pid, addr.as_u64(), write, value)
    }

    /// [`Self::access`] for each of `addrs` in order, the records into the caller's `out`.
    ///
    /// # Errors
    /// [`CowError::NoSuchProcess`]; [`CowError::InvalidArgument`] (nothing done) when `out`
    /// or the per-access write flags are not as long as `addrs`.
    ///
    /// # Examples
    ///
    /// ```rust
    /// use cowcore_core::{Access, AccessKinds, Machine, Outcome, Profile};
    ///
    /// let mut m = Machine::new(8 << 20, 4, Profile::V6_15)?;
    /// let a = m.mmap(1, 2 * 4096)?.as_u64();
    /// let addrs = [a, a + 4096, a + 100];
    /// let mut out = [Access::default(); 3];
    /// m.access_batch(1, &addrs, AccessKinds::Writes, 1, &mut out)?;
    /// let outcomes: Vec<_> = out.iter().map(|r| r.outcome).collect();
    /// assert_eq!(outcomes, [Outcome::AnonAlloc, Outcome::AnonAlloc, Outcome::NoFault]);
    /// # Ok::<(), cowcore_core::CowError>(())
    /// ```
    pub fn access_batch(
        &mut self,
        pid: u32,
        addrs: &[u64],
        kinds: AccessKinds<'_>,
        value: u64,
        out: &mut [Access],
    ) -> Result<(), CowError> {
        self.k.access_batch(pid, addrs, kinds, value, out)
    }

    /// A mapping exactly at `addr` (`MAP_FIXED_NOREPLACE`), so that a trace with real
    /// addresses replays; read/write, merged with equal neighbours.
    ///
    /// # Errors
    /// [`CowError::NoSuchProcess`]; [`CowError::InvalidArgument`] for a misaligned address or
    /// a bad length; [`CowError::InvalidAddress`] outside user space, or (`EEXIST`) when the
    /// range meets a mapping.
    ///
    /// # Examples
    ///
    /// ```rust
    /// use cowcore_core::{CowError, Machine, Profile, VirtAddr};
    ///
    /// let mut m = Machine::new(8 << 20, 4, Profile::V6_15)?;
    /// let a = m.mmap_fixed(1, VirtAddr::new(0x5555_0000_0000), 8192)?;
    /// assert_eq!(a.as_u64(), 0x5555_0000_0000);
    /// let again = m.mmap_fixed(1, VirtAddr::new(0x5555_0000_1000), 8192);
    /// assert!(matches!(again, Err(CowError::InvalidAddress(msg)) if msg.ends_with("(EEXIST)")));
    /// # Ok::<(), CowError>(())
    /// ```
    pub fn mmap_fixed(
        &mut self,
        pid: u32,
        addr: VirtAddr,
        length: u64,
    ) -> Result<VirtAddr, CowError> {
        self.k.mmap_fixed(pid, addr, length)
    }

    /// The address-space id of a process: 1 for init, the next number for each new mm,
    /// never reused (MM ids are), what a TLB model tags its entries with.
    ///
    /// # Errors
    /// [`CowError::NoSuchProcess`].
    pub fn asid(&self, pid: u32) -> Result<u64, CowError> {
        Ok(self.k.mm(pid)?.asid)
    }

    /// Starts keeping the events (`true`), or stops and drops what was kept (`false`).
    /// Off by default: the counters are kept either way.
    pub fn record_events(&mut self, on: bool) {
        self.k.events.record(on);
    }

    /// The events kept since the last call, in emission order (recording goes on).
    ///
    /// # Examples
    ///
    /// ```rust
    /// use cowcore_core::{Event, Machine, Profile};
    ///
    /// let mut m = Machine::new(8 << 20, 4, Profile::V6_15)?;
    /// let a = m.mmap(1, 4096)?;
    /// m.record_events(true);
    /// m.write(1, a, 4096, 1)?;
    /// let e = m.take_events();
    /// assert_eq!(e[0], Event::FaultWrite);
    /// assert!(matches!(e[1], Event::FolioAlloc { order: 0, .. }));
    /// assert!(matches!(e[2], Event::PagesZeroed { nr: 1, .. }));
    /// assert!(m.take_events().is_empty());
    /// # Ok::<(), cowcore_core::CowError>(())
    /// ```
    pub fn take_events(&mut self) -> Vec<Event> {
        self.k.events.take_recorded()
    }

    /// How many events are kept and not taken yet (what the next [`Self::drain_events`]
    /// hands over), so that a caller can size its buffer once.
    #[must_use]
    pub fn recorded_events(&self) -> usize {
        self.k.events.recorded_len()
    }

    /// Hands each event kept since the last call to `sink`, in order, without allocating
    /// a new buffer (a generic, monomorphised sink for embedders).
    pub fn drain_events(&mut self, mut sink: impl FnMut(&Event)) {
        self.k.events.drain_recorded(&mut sink);
    }

    /// The VMAs of a process.
    ///
    /// # Errors
    /// [`CowError::NoSuchProcess`].
    pub fn vmas(&self, pid: u32) -> Result<Vec<VmaInfo>, CowError> {
        self.k.vmas(pid)
    }

    /// `/proc/<pid>/smaps`: one [`SmapsInfo`] per VMA, lowest first, as
    /// `fs/proc/task_mmu.c` computes it (docs/accounting.md). A walk of the page tables:
    /// a few reads per mapped PTE, one step per PMD-mapped THP.
    ///
    /// # Errors
    /// [`CowError::NoSuchProcess`], [`CowError::ProcessExited`].
    pub fn smaps(&self, pid: u32) -> Result<Vec<SmapsInfo>, CowError> {
        self.k.smaps(pid)
    }

    /// Walks the page tables for `addr` without faulting.
    ///
    /// # Errors
    /// [`CowError::NoSuchProcess`]; [`CowError::InvalidAddress`] outside user space.
    ///
    /// # Examples
    ///
    /// ```rust
    /// use cowcore_core::{Level, Machine, Profile, PteFlags};
    ///
    /// let mut m = Machine::new(8 << 20, 4, Profile::V6_15)?;
    /// let a = m.mmap(1, 4096)?;
    /// let t = m.translate(1, a)?; // nothing mapped: the walk stops at the PGD's none entry
    /// assert_eq!((t.steps.len(), t.pfn), (1, None));
    ///
    /// m.write(1, a, 4096, 1)?;
    /// let t = m.translate(1, a)?;
    /// let levels: Vec<Level> = t.steps.iter().map(|s| s.level).collect();
    /// assert_eq!(levels, [Level::Pgd, Level::Pud, Level::Pmd, Level::Pte]);
    /// assert_eq!(t.page_size, Some(4096));
    /// let pte = t.steps[3].entry;
    /// assert_eq!(Some(pte.pfn()), t.pfn);
    /// assert!(pte.flags().contains(PteFlags::PRESENT | PteFlags::WRITABLE | PteFlags::DIRTY));
    ///
    /// // After fork both processes map the frame write-protected, for COW.
    /// let child = m.fork(1)?;
    /// for pid in [1, child] {
    ///     let t2 = m.translate(pid, a)?;
    ///     assert_eq!(t2.pfn, t.pfn);
    ///     assert!(!t2.steps[3].entry.is_writable());
    /// }
    /// # Ok::<(), cowcore_core::CowError>(())
    /// ```
    pub fn translate(&self, pid: u32, addr: VirtAddr) -> Result<Translation, CowError> {
        self.k.translate(pid, addr)
    }

    /// One observation per page of the range (the scenario format's page observation).
    ///
    /// # Errors
    /// [`CowError::NoSuchProcess`], range errors.
    pub fn observe(
        &self,
        pid: u32,
        addr: VirtAddr,
        length: u64,
    ) -> Result<Vec<Observation>, CowError> {
        self.k.observe(pid, addr, length)
    }

    /// Reads `[addr, addr + length)` of `pid` from outside, as a debugger or
    /// `/proc/<pid>/mem` does (GUP with `FOLL_TOUCH`): the folio of every present PTE of the
    /// range is marked accessed (`PG_referenced`, which smaps counts as `Referenced`);
    /// PMD-mapped THPs and holes are left alone, nothing is faulted in (`gup` module).
    ///
    /// # Errors
    /// [`CowError::NoSuchProcess`] for a bad pid; [`CowError::InvalidArgument`] for an
    /// unaligned or out-of-range `addr`/`length`.
    pub fn touch(&mut self, pid: u32, addr: VirtAddr, length: u64) -> Result<(), CowError> {
        self.k.touch(pid, addr, length)
    }

    /// `ref`: one extra reference on the page behind every address of the range, as
    /// `vmsplice()` into a pipe takes them (`get_user_pages_fast`, read access; a read fault
    /// first where nothing is mapped; no unshare), held until [`Self::unref_pages`] of the
    /// same range or `pid`'s exit. A reference outlives the mapping: a folio unmapped
    /// meanwhile is freed when the reference goes.
    ///
    /// # Errors
    /// [`CowError::NoSuchProcess`], range errors, [`CowError::Segfault`] where the range is
    /// not readable (the kernel's `EFAULT`; nothing is taken), [`CowError::OutOfMemory`]
    /// (the faults done stay, nothing is held).
    pub fn ref_pages(&mut self, pid: u32, addr: VirtAddr, length: u64) -> Result<(), CowError> {
        self.k.gup_get(pid, addr, length, false)
    }

    /// Drops the references of the latest [`Self::ref_pages`] of exactly this range.
    ///
    /// # Errors
    /// [`CowError::InvalidArgument`] if `pid` holds no `ref` of exactly this range.
    pub fn unref_pages(&mut self, pid: u32, addr: VirtAddr, length: u64) -> Result<(), CowError> {
        self.k.gup_put(pid, addr, length, false)
    }

    /// `pin`: a long-term writable pin of every page of the range (`FOLL_PIN |
    /// FOLL_LONGTERM | FOLL_WRITE`, as `io_uring`'s buffer registration takes it): a write
    /// fault first where the page is not writable (COW copy or reuse), then per page
    /// `GUP_PIN_COUNTING_BIAS` references (small folio) or a reference and `_pincount` + 1
    /// (large folio); the mm gets `MMF_HAS_PINNED`, and a fork copies its pinned
    /// anon-exclusive pages into the child at once. Held until [`Self::unpin_pages`] or exit.
    ///
    /// # Errors
    /// As [`Self::ref_pages`], with [`CowError::Segfault`] where the range is not writable.
    pub fn pin_pages(&mut self, pid: u32, addr: VirtAddr, length: u64) -> Result<(), CowError> {
        self.k.gup_get(pid, addr, length, true)
    }

    /// `drop_caches`: writes 2 to `/proc/sys/vm/drop_caches`, so the shrinkers run once,
    /// among them the deferred-split queue's (`deferred_split_scan`): every partially mapped
    /// large folio waiting there is split into order-0 folios on the same frames (its PMD
    /// mappings split first, its unmapped pages freed; on 6.12+ its zero-filled pages mapped
    /// to the shared zero page), unless references beyond its mappings (`ref`, `pin`) make
    /// `can_split_folio` refuse it (`split_failed`). On 6.12+ a PMD THP queued at its fault
    /// is split too if it has a zero-filled page (`thp_underused`, split.rs).
    ///
    /// # Errors
    /// [`CowError::Invariant`] only if the model's state is broken.
    pub fn drop_caches(&mut self) -> Result<(), CowError> {
        self.k.drop_caches()
    }

    /// Releases the pins of the latest [`Self::pin_pages`] of exactly this range.
    ///
    /// # Errors
    /// [`CowError::InvalidArgument`] if `pid` holds no `pin` of exactly this range.
    pub fn unpin_pages(&mut self, pid: u32, addr: VirtAddr, length: u64) -> Result<(), CowError> {
        self.k.gup_put(pid, addr, length, true)
    }

    /// `unshare`: a short read-only pin of the range taken and dropped by another process,
    /// as `process_vm_readv()` does: every anonymous page of the range that is not
    /// anon-exclusive goes through the unshare fault (`FAULT_FLAG_UNSHARE`) and ends
    /// exclusive to `pid`, reused or copied as the profile decides; nothing is written, the
    /// zero pages are left as they are. One record per page ([`crate::Outcome::Unshare`] where the
    /// unshare fault ran; docs/access-and-events.md).
    ///
    /// # Errors
    /// As [`Self::read`]; [`CowError::OutOfMemory`] for a copy that gets no frame (the pages
    /// before it stay unshared).
    pub fn unshare(
        &mut self,
        pid: u32,
        addr: VirtAddr,
        length: u64,
    ) -> Result<Vec<Access>, CowError> {
        self.k.unshare(pid, addr, length)
    }

    /// The counters of the folio holding frame `pfn`.
    ///
    /// # Errors
    /// [`CowError::InvalidArgument`] if the frame is not part of an anonymous folio.
    ///
    /// # Examples
    ///
    /// A 64K folio before and after fork: every PTE mapping holds one reference, and the
    /// MM-ID slots count the mappings of each mm:
    ///
    /// ```rust
    /// use cowcore_core::{Machine, Profile, ThpSizeMode};
    ///
    /// let mut m = Machine::new(16 << 20, 4, Profile::V6_15)?;
    /// m.set_thp_size_by_name("64K", ThpSizeMode::Always)?;
    /// let a = m.mmap(1, 2 << 20)?;
    /// m.write(1, a, 4096, 1)?;
    /// let pfn = m.translate(1, a)?.pfn.expect("mapped");
    /// let f = m.folio(pfn)?;
    /// assert_eq!((f.order, f.refcount, f.large_mapcount), (4, 16, 16));
    /// assert_eq!(f.mm_ids, [(m.mm_id(1)?, 16), (0, 0)]);
    /// assert!(!f.maybe_mapped_shared && f.anon_exclusive.iter().all(|&x| x));
    ///
    /// let child = m.fork(1)?;
    /// let f = m.folio(pfn)?;
    /// assert_eq!((f.refcount, f.large_mapcount), (32, 32));
    /// assert_eq!(f.mm_ids, [(m.mm_id(1)?, 16), (m.mm_id(child)?, 16)]);
    /// assert!(f.maybe_mapped_shared && f.page_mapcounts.iter().all(|&c| c == 2));
    /// assert!(f.anon_exclusive.iter().all(|&x| !x)); // fork cleared PageAnonExclusive
    /// # Ok::<(), cowcore_core::CowError>(())
    /// ```
    pub fn folio(&self, pfn: Pfn) -> Result<FolioInfo, CowError> {
        self.k.folio(pfn)
    }

    /// The counters since the machine was created.
    #[must_use]
    pub fn stats(&self) -> &Stats {
        self.k.events.stats()
    }

    /// The `/proc/vmstat` lines the simulator keeps ([`Vmstat`]).
    #[must_use]
    pub fn vmstat(&self) -> Vmstat {
        let (s, m) = (self.k.events.stats(), &self.k.mem);
        Vmstat {
            nr_free_pages: m.nr_free(),
            nr_anon_pages: m.nr_anon_mapped,
            nr_anon_transparent_hugepages: m.nr_anon_thps >> crate::addr::PMD_ORDER,
            nr_page_table_pages: m.nr_tables,
            thp_fault_alloc: s.thp_fault_alloc,
            thp_fault_fallback: s.thp_fault_fallback,
            thp_split_pmd: s.thp_split_pmd,
            thp_split_page: s.thp_split_page,
            thp_deferred_split_page: s.thp_deferred_split_page,
            thp_split_page_failed: s.thp_split_page_failed,
            pgreuse: s.pgreuse,
        }
    }

    /// `hugepages-<size>/enabled` by sysfs size name (`"64K"`).
    ///
    /// # Errors
    /// [`CowError::InvalidArgument`] for an unknown size.
    pub fn thp_size_by_name(&self, size: &str) -> Result<ThpSizeMode, CowError> {
        self.thp_size(crate::policy::size_order(size)?)
    }

    /// Sets `hugepages-<size>/enabled` by sysfs size name (`"64K"`).
    ///
    /// # Errors
    /// [`CowError::InvalidArgument`] for an unknown size.
    pub fn set_thp_size_by_name(&mut self, size: &str, mode: ThpSizeMode) -> Result<(), CowError> {
        self.set_thp_size(crate::policy::size_order(size)?, mode)
    }

    /// `mprotect` and `madvise` argument parsing helpers for bindings.
    ///
    /// # Errors
    /// [`CowError::InvalidArgument`] for an unknown name.
    pub fn parse_prot(s: &str) -> Result<Prot, CowError> {
        s.parse()
    }

    /// Parses an advice name.
    ///
    /// # Errors
    /// [`CowError::InvalidArgument`] for an unknown name.
    pub fn parse_advice(s: &str) -> Result<Advice, CowError> {
        s.parse()
    }

    /// Forks a process; returns the child's pid.
    ///
    /// # Errors
    /// [`CowError::NoSuchProcess`]; [`CowError::OutOfMemory`] if the child's page tables
    /// do not fit (nothing is changed then).
    ///
    /// # Examples
    ///
    /// ```rust
    /// use cowcore_core::{Machine, Profile};
    ///
    /// let mut m = Machine::new(8 << 20, 4, Profile::V6_15)?;
    /// let a = m.mmap(1, 4096)?;
    /// m.write(1, a, 4096, 7)?;
    /// let pfn = m.translate(1, a)?.pfn.expect("mapped");
    /// let child = m.fork(1)?;
    /// assert_eq!(child, 2); // pids in fork order, never reused
    /// // Both map the same frame: one more reference and one more mapping.
    /// assert_eq!(m.translate(child, a)?.pfn, Some(pfn));
    /// let f = m.folio(pfn)?;
    /// assert_eq!((f.refcount, f.large_mapcount), (2, 2));
    ///
    /// // The child's write takes the COW fault and gets a copy; the parent keeps the frame.
    /// m.write(child, a, 4096, 9)?;
    /// assert_ne!(m.translate(child, a)?.pfn, Some(pfn));
    /// assert_eq!((m.read(1, a, 4096)?, m.read(child, a, 4096)?), (vec![7], vec![9]));
    /// assert_eq!((m.folio(pfn)?.refcount, m.stats().cow_copy), (1, 1));
    /// // The parent's frame has one reference left, so its write reuses it (`wp_page_reuse`).
    /// m.write(1, a, 4096, 8)?;
    /// assert_eq!(m.translate(1, a)?.pfn, Some(pfn));
    /// assert_eq!(m.stats().pgreuse, 1);
    /// # Ok::<(), cowcore_core::CowError>(())
    /// ```
    pub fn fork(&mut self, pid: u32) -> Result<u32, CowError> {
        self.k.fork(pid)
    }

    /// `mremap(addr, length, length, MREMAP_MAYMOVE | MREMAP_FIXED, new_addr)`: moves the
    /// range, which must lie inside one mapping, to `new_addr` (unmapping what is there
    /// first), or without it to a fresh address (where `mmap` would place
    /// `addr % 2M + length` bytes, plus `addr % 2M`). Pages move with their frames, counts
    /// and exclusivity; the old range becomes a hole. Returns the new address.
    ///
    /// # Errors
    /// [`CowError::InvalidArgument`] for a bad length or address or a destination that
    /// overlaps the range (`EINVAL`), [`CowError::InvalidAddress`] for a range outside user
    /// space, a range not inside one mapping (`EFAULT`) or no room (`ENOMEM`),
    /// [`CowError::OutOfMemory`] when a page table cannot be allocated (nothing moves).
    ///
    /// # Examples
    ///
    /// ```rust
    /// use cowcore_core::{Machine, Profile, VirtAddr};
    ///
    /// let mut m = Machine::new(16 << 20, 4, Profile::V6_15)?;
    /// let a = m.mmap(1, 4 << 12)?;
    /// m.write(1, a, 4 << 12, 7)?;
    /// let pfn = m.translate(1, a)?.pfn;
    /// let b = m.mremap(1, a, 4 << 12, None)?;
    /// assert_eq!(m.translate(1, b)?.pfn, pfn);
    /// assert!(m.translate(1, a)?.pfn.is_none());
    /// m.check()?;
    /// # Ok::<(), cowcore_core::CowError>(())
    /// ```
    pub fn mremap(
        &mut self,
        pid: u32,
        addr: VirtAddr,
        length: u64,
        new_addr: Option<VirtAddr>,
    ) -> Result<VirtAddr, CowError> {
        self.k.mremap(pid, addr, length, new_addr)
    }

    /// `madvise(addr, length, MADV_COLLAPSE)`: every whole, aligned 2 MiB block of the
    /// range becomes a new PMD-mapped THP, whatever the THP modes say (`madvise_collapse` in
    /// `mm/khugepaged.c`; DESIGN.md "`MADV_COLLAPSE`"): its pages are copied into a fresh folio
    /// (none and zero-page entries zero-filled) and their folios freed with their last
    /// mapping. Returns the [`ScanResult`] that decided the call ([`ScanResult::Succeed`]
    /// when every block is PMD-mapped now, else the last failure; [`ScanResult::errno`] is
    /// what the system call returned).
    ///
    /// # Errors
    /// A bad range, or one with unmapped pages ([`CowError::InvalidAddress`]); an unknown
    /// pid. The collapse's own failures are results.
    ///
    /// # Examples
    ///
    /// ```rust
    /// use cowcore_core::{Machine, Profile, ScanResult};
    ///
    /// let mut m = Machine::new(16 << 20, 4, Profile::V6_15)?;
    /// let a = m.mmap(1, 2 << 20)?;
    /// m.write(1, a, 2 << 20, 7)?; // THP never: 512 small folios
    /// assert_eq!(m.collapse(1, a, 2 << 20)?, ScanResult::Succeed);
    /// assert_eq!(m.folio(m.translate(1, a)?.pfn.unwrap())?.order, 9);
    /// assert_eq!(m.stats().thp_collapse_alloc, 1);
    /// m.check()?;
    /// # Ok::<(), cowcore_core::CowError>(())
    /// ```
    pub fn collapse(
        &mut self,
        pid: u32,
        addr: VirtAddr,
        length: u64,
    ) -> Result<ScanResult, CowError> {
        self.k.collapse(pid, addr, length)
    }

    /// Unmaps `[addr, addr+length)`; unmapped pages in the range are fine.
    ///
    /// # Errors
    /// [`CowError::NoSuchProcess`], range errors.
    pub fn munmap(&mut self, pid: u32, addr: VirtAddr, length: u64) -> Result<(), CowError> {
        self.k.munmap(pid, addr, length)
    }

    /// Ends a process: zaps every VMA, drops the gathered references, frees every table
    /// (bottom-up, lowest address first, the PGD last) and then the mm id.
    ///
    /// # Errors
    /// [`CowError::NoSuchProcess`].
    ///
    /// # Examples
    ///
    /// ```rust
    /// use cowcore_core::{Machine, Profile};
    ///
    /// let mut m = Machine::new(8 << 20, 4, Profile::V6_15)?;
    /// let a = m.mmap(1, 16 * 4096)?;
    /// m.write(1, a, 16 * 4096, 1)?;
    /// let free = m.free_frames();
    /// let child = m.fork(1)?; // the child's page tables: PGD, PUD, PMD and PTE tables
    /// assert_eq!(m.free_frames(), free - 4);
    /// m.write(child, a, 4096, 2)?; // and a COW copy of one page
    /// m.exit(child)?;
    /// // The copy and the tables are freed; the shared pages lose the child's references.
    /// assert_eq!(m.free_frames(), free);
    /// assert_eq!(m.folio(m.translate(1, a)?.pfn.expect("mapped"))?.refcount, 1);
    /// assert_eq!(m.pids(), [1]);
    /// assert!(m.exit(child).is_err()); // the pid is gone for good
    /// # Ok::<(), cowcore_core::CowError>(())
    /// ```
    pub fn exit(&mut self, pid: u32) -> Result<(), CowError> {
        self.k.exit(pid)
    }

    /// Changes the protection of a fully mapped range.
    ///
    /// # Errors
    /// [`CowError::NoSuchProcess`], range errors, [`CowError::InvalidAddress`] if a page of
    /// the range is unmapped (`ENOMEM`; nothing is changed).
    pub fn mprotect(
        &mut self,
        pid: u32,
        addr: VirtAddr,
        length: u64,
        prot: Prot,
    ) -> Result<(), CowError> {
        self.k.mprotect(pid, addr, length, prot)
    }

    /// Applies an advice to a fully mapped range.
    ///
    /// # Errors
    /// As [`Self::mprotect`].
    pub fn madvise(
        &mut self,
        pid: u32,
        addr: VirtAddr,
        length: u64,
        advice: Advice,
    ) -> Result<(), CowError> {
        self.k.madvise(pid, addr, length, advice)
    }

    /// `madvise(MADV_PAGEOUT)` (issue 16): reclaims the private anonymous folios that only
    /// this range maps to the swap device, PMD block by PMD block
    /// (`madvise_cold_or_pageout_pte_range`, then `shrink_folio_list`); a length of 0 does
    /// nothing.
    ///
    /// # Errors
    /// As [`Self::madvise`]; [`CowError::Invariant`] only if the model's state is broken.
    pub fn pageout(&mut self, pid: u32, addr: VirtAddr, length: u64) -> Result<(), CowError> {
        self.k.pageout(pid, addr, length)
    }

    /// Recomputes every counter from the page tables and compares (KS §1.3).
    ///
    /// # Errors
    /// [`CowError::Invariant`] naming the first broken invariant.
    pub fn check(&self) -> Result<(), CowError> {
        self.k.check()
    }
}

fn check_order(order: u32) -> Result<(), CowError> {
    if (2..=9).contains(&order) {
        Ok(())
    } else {
        Err(CowError::InvalidArgument(format!(
            "no THP size of order {order}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::{PAGE_SIZE, PMD_NR};
    use crate::error::SegvReason;
    use crate::kernel::capacity_hint;
    use crate::paging::table::Level;

    #[test]
    fn boot_layout() {
        let m = Machine::new(8 << 20, 4, Profile::V6_15).unwrap();
        assert_eq!(m.k.mem.zero_pfn, 0);
        assert_eq!(m.k.mem.huge_zero_pfn, 512);
        assert_eq!(m.mm(1).unwrap().pgd.frame(), 1);
        assert_eq!(m.free_frames(), 2048 - 514);
        assert!(Machine::new(3 << 20, 4, Profile::V6_15).is_err());
        assert!(Machine::new(8 << 20, 3, Profile::V6_15).is_err());
        assert_eq!(m.mm(2).unwrap_err(), CowError::NoSuchProcess(2));
        assert_eq!(m.mm(0).unwrap_err(), CowError::NoSuchProcess(0));
    }

    #[test]
    fn argument_errors_say_the_rule() {
        // Regression (issue 10): "bad length 107374182" did not say what was wrong. These
        // are also the reference's messages (tests/test_bad_input.py compares them).
        let mut m = Machine::new(8 << 20, 4, Profile::V6_15).unwrap();
        let msg = |e: CowError| match e {
            CowError::InvalidArgument(s) | CowError::InvalidAddress(s) => s,
            other => other.to_string(),
        };
        assert_eq!(msg(m.mmap(1, 0).unwrap_err()), "length must be positive");
        assert_eq!(
            msg(m.mmap(1, 107_374_182).unwrap_err()),
            "length 107374182 is not a multiple of the page size (4096)"
        );
        let a = m.mmap(1, 8192).unwrap();
        assert_eq!(
            msg(m.read(1, VirtAddr::new(a.as_u64() + 1), 4096).unwrap_err()),
            format!(
                "address {:#x} is not a multiple of the page size (4096)",
                a.as_u64() + 1
            )
        );
        assert_eq!(
            msg(m.read(1, VirtAddr::new(u64::MAX - 4095), 8192).unwrap_err()),
            "range [0xfffffffffffff000, 0x10000000000001000) is outside user space \
             [0x1000, 0x800000000000)"
        );
        assert_eq!(
            msg(m.translate(1, VirtAddr::new(1 << 47)).unwrap_err()),
            "address 0x800000000000 is outside user space, which ends at 0x800000000000"
        );
        assert_eq!(
            msg(m.folio(Pfn::new(4095)).unwrap_err()),
            "frame 4095 is not part of an allocated folio"
        );
        let c = m.fork(1).unwrap();
        m.exit(c).unwrap();
        assert_eq!(m.mm(c).unwrap_err(), CowError::ProcessExited(c));
        assert_eq!(
            msg(m.mmap(c, 4096).unwrap_err()),
            format!("process {c} has exited")
        );
    }

    #[test]
    fn rss_anon_counts_anonymous_pages() {
        let mut m = Machine::new(16 << 20, 4, Profile::V6_15).unwrap();
        m.set_thp_size(9, ThpSizeMode::Always).unwrap();
        let a = m.mmap(1, 2 << 20).unwrap();
        let b = m.mmap(1, 8 * PAGE_SIZE).unwrap();
        m.write(1, a, PAGE_SIZE, 1).unwrap(); // a PMD THP: 512 pages at once
        m.read(1, b, 8 * PAGE_SIZE).unwrap(); // zero pages: nothing
        assert_eq!(m.rss_anon(1).unwrap(), PMD_NR);
        m.write(1, b, 2 * PAGE_SIZE, 2).unwrap(); // two zero-page COW copies
        assert_eq!(m.rss_anon(1).unwrap(), PMD_NR + 2);
        m.munmap(1, VirtAddr::new(a.as_u64() + PAGE_SIZE), PAGE_SIZE)
            .unwrap(); // split, one page gone
        assert_eq!(m.rss_anon(1).unwrap(), PMD_NR + 1);
        let c = m.fork(1).unwrap();
        assert_eq!(m.rss_anon(c).unwrap(), PMD_NR + 1);
        m.madvise(c, b, PAGE_SIZE, Advice::DontNeed).unwrap();
        assert_eq!(m.rss_anon(c).unwrap(), PMD_NR);
        assert_eq!(m.rss_anon(1).unwrap(), PMD_NR + 1);
        m.check().unwrap();
        m.exit(c).unwrap();
        assert_eq!(m.rss_anon(c), Err(CowError::ProcessExited(c)));
        assert_eq!(m.rss_anon(9), Err(CowError::NoSuchProcess(9)));
    }

    #[test]
    fn all_arrays_list_each_value_once() {
        for (i, k) in FrameKind::ALL.iter().enumerate() {
            assert_eq!(*k as usize, i);
        }
        for p in Prot::ALL {
            assert_eq!(p.as_str().parse::<Prot>(), Ok(p));
        }
        let names = [
            "hugepage",
            "nohugepage",
            "dontneed",
            "dontfork",
            "dofork",
            "wipeonfork",
            "keeponfork",
        ];
        for (a, n) in Advice::ALL.iter().zip(names) {
            assert_eq!(n.parse::<Advice>().as_ref(), Ok(a));
        }
        assert_eq!(Advice::ALL.len(), names.len());
        assert_eq!(
            SegvReason::ALL.map(SegvReason::as_str),
            ["unmapped", "protection"]
        );
        assert_eq!(
            Level::ALL.map(Level::name),
            ["pgd", "p4d", "pud", "pmd", "pte"]
        );
    }

    #[test]
    fn mmap_placement() {
        let mut m = Machine::new(8 << 20, 4, Profile::V6_15).unwrap();
        let a = m.mmap(1, 2 << 20).unwrap();
        assert_eq!(a.as_u64(), MMAP_BASE - (2 << 20));
        let b = m.mmap(1, 4096).unwrap();
        assert_eq!(b.as_u64(), MMAP_BASE - (6 << 20));
        assert!(matches!(m.mmap(1, 0), Err(CowError::InvalidArgument(_))));
        assert!(matches!(
            m.mmap(1, 1 << 50),
            Err(CowError::InvalidAddress(_))
        ));
        assert_eq!(m.vmas(1).unwrap().len(), 2);
    }

    #[test]
    fn huge_ranges_do_not_reserve_everything_up_front() {
        // Regression: `read` reserved one slot per page of the range before the first
        // access, so a 16 TiB read aborted the process (allocation failure) instead of
        // running out of simulated memory.
        let mut m = Machine::new(4 << 20, 4, Profile::V6_15).unwrap();
        let a = m.mmap(1, 1 << 44).unwrap();
        assert_eq!(m.read(1, a, 1 << 44), Err(CowError::OutOfMemory));
        m.check().unwrap();
        assert_eq!(
            capacity_hint(a, VirtAddr::new(a.as_u64() + (1 << 44))),
            1 << 16
        );
    }

    #[test]
    fn segfaults_checked_first() {
        let mut m = Machine::new(8 << 20, 4, Profile::V6_15).unwrap();
        let a = m.mmap(1, 8192).unwrap();
        let e = m.write(1, a, 3 * 4096, 1).unwrap_err();
        assert_eq!(
            e,
            CowError::Segfault {
                addr: VirtAddr::new(a.as_u64() + 8192),
                reason: SegvReason::Unmapped
            }
        );
        assert!(!m.observe(1, a, 4096).unwrap()[0].present);
        assert!(matches!(
            m.read(1, VirtAddr::new(0), 4096),
            Err(CowError::InvalidAddress(_))
        ));
        assert!(matches!(
            m.read(1, VirtAddr::new(0x1001), 4096),
            Err(CowError::InvalidArgument(_))
        ));
    }
}
