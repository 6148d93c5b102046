//! Random operation sequences on the core's public entry points.
//!
//! The input bytes choose a machine (memory 4M..16M, 4 or 5 levels, a profile) and then a
//! sequence of calls with raw and near-valid arguments (pids that exited or never existed,
//! addresses inside and outside mappings and user space, lengths that are zero, misaligned
//! or huge). After every call: no panic (libFuzzer reports one as a crash), `check()` holds,
//! and a failing call other than an out-of-memory `write`/`read` left the state unchanged.
//! At the end every process exits and all memory must be free again.
#![no_main]

use cowcore_core::{
    Access, AccessKinds, Advice, CowError, Machine, Outcome, Pfn, Profile, Prot, ThpMode,
    ThpSizeMode, VirtAddr,
};
use libfuzzer_sys::fuzz_target;

const PAGE: u64 = 4096;
const SIZE_MODES: [ThpSizeMode; 4] = ThpSizeMode::ALL;
const MODES: [ThpMode; 3] = ThpMode::ALL;

/// A little-endian reader over the fuzz input that yields zeros once exhausted.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        let (first, rest) = self.0.split_first().map_or((0, &[][..]), |(f, r)| (*f, r));
        self.0 = rest;
        first
    }
    fn u16(&mut self) -> u16 {
        u16::from(self.u8()) | (u16::from(self.u8()) << 8)
    }
    fn u64(&mut self) -> u64 {
        (0..8).fold(0, |acc, i| acc | (u64::from(self.u8()) << (8 * i)))
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[usize::from(self.u8()) % items.len()]
    }
}

/// Everything observable that a failing call must leave alone.
fn state(m: &Machine) -> impl PartialEq + std::fmt::Debug {
    let procs: Vec<_> = m
        .pids()
        .into_iter()
        .map(|pid| {
            let vmas = m.vmas(pid).unwrap();
            let pages: Vec<_> = vmas
                .iter()
                .map(|v| {
                    m.observe(pid, VirtAddr::new(v.start), (v.end - v.start).min(4 << 20))
                        .unwrap()
                })
                .collect();
            (pid, vmas, pages)
        })
        .collect();
    (m.free_frames(), m.stats().clone(), procs)
}

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let memory = (4 + 2 * u64::from(b.u8() % 7)) << 20;
    let levels = if b.u8() % 4 == 0 { 5 } else { 4 };
    let profile = Profile::ALL[usize::from(b.u8()) % Profile::ALL.len()];
    let mut m = Machine::new(memory, levels, profile).unwrap();
    let boot_free = m.free_frames();
    let mut maps: Vec<(u64, u64)> = Vec::new();
    let mut steps = 0;
    while !b.0.is_empty() && steps < 200 {
        steps += 1;
        let op = b.u8() % 30;
        // Mostly live pids, sometimes 0, exited ones or ones never used.
        let pids = m.pids();
        let pid = match b.u8() {
            0 => 0,
            1 => u32::MAX,
            x if pids.is_empty() => u32::from(x),
            x => pids[usize::from(x) % pids.len()],
        };
        // Mostly a page range inside a mapping, sometimes raw values.
        let (addr, len) = if maps.is_empty() || b.u8() % 8 == 0 {
            (b.u64(), b.u64() % (1 << 40))
        } else {
            let (start, npages) = maps[usize::from(b.u8()) % maps.len()];
            let first = u64::from(b.u16()) % npages;
            let count = 1 + u64::from(b.u16()) % (npages - first + 1);
            (start + first * PAGE, count * PAGE)
        };
        let before = state(&m);
        let result: Result<(), CowError> = match op {
            0 | 1 => {
                let pages = 1 + u64::from(b.u16() % 1024);
                m.mmap(pid, pages * PAGE)
                    .map(|a| maps.push((a.as_u64(), pages)))
            }
            2 => m.mmap(pid, b.u64()).map(|_| ()),
            3..=5 => m.write(pid, VirtAddr::new(addr), len, b.u64()),
            6 | 7 => m.read(pid, VirtAddr::new(addr), len).map(|_| ()),
            8 => m.fork(pid).map(|_| ()),
            9 => m.exit(pid),
            10 => m.munmap(pid, VirtAddr::new(addr), len),
            11 => {
                let prot = b.pick(&Prot::ALL);
                m.mprotect(pid, VirtAddr::new(addr), len, prot)
            }
            12 => {
                let advice = b.pick(&Advice::ALL);
                m.madvise(pid, VirtAddr::new(addr), len, advice)
            }
            13 => {
                let order = u32::from(b.u8() % 12);
                let mode = b.pick(&SIZE_MODES);
                m.set_thp_size(order, mode)
            }
            14 => {
                let mode = b.pick(&MODES);
                m.set_thp_enabled(mode);
                m.set_use_zero_page(b.u8() % 2 == 0);
                let name = [
                    "cow_reuse_pte_mapped_thp",
                    "huge_zero_wp_alloc",
                    "cow_reuse_remember_exclusive",
                    "cow_reuse_fault_around",
                    "cow_reuse_fault_around_window",
                    "mm_id_exact",
                    "bogus",
                ][usize::from(b.u8() % 7)];
                m.set_policy(name, b.u8() % 2 == 0)
            }
            16 => m
                .access(
                    pid,
                    VirtAddr::new(addr.wrapping_add(u64::from(b.u16()))),
                    b.u8() % 2 == 0,
                    b.u64(),
                )
                .map(|r| {
                    assert!(
                        r.phys().is_some()
                            || matches!(r.outcome, Outcome::Segfault | Outcome::OutOfMemory)
                    )
                }),
            17 => {
                let n = usize::from(b.u8() % 24);
                let addrs: Vec<u64> = (0..n).map(|i| addr + (i as u64) * PAGE).collect();
                let writes: Vec<bool> = (0..n).map(|_| b.u8() % 2 == 0).collect();
                let mut out = vec![Access::default(); n + usize::from(b.u8() % 2)];
                m.access_batch(
                    pid,
                    &addrs,
                    AccessKinds::PerAccess(&writes),
                    b.u64(),
                    &mut out,
                )
            }
            18 => {
                let pages = 1 + u64::from(b.u16() % 1024);
                let at = if b.u8() % 2 == 0 {
                    addr & !(PAGE - 1)
                } else {
                    b.u64()
                };
                m.mmap_fixed(pid, VirtAddr::new(at), pages * PAGE)
                    .map(|a| maps.push((a.as_u64(), pages)))
            }
            19 => m.touch(pid, VirtAddr::new(addr), len),
            20 => {
                // A fresh destination (atomic: a failure changes nothing), or a fixed one,
                // which mremap_to unmaps before it looks the source up: a failed fixed move
                // may have unmapped it, so only its success is checked.
                let fixed = b.u8() % 3 == 0;
                if fixed {
                    let to = if maps.is_empty() { b.u64() } else { maps[0].0 };
                    let _ = m.mremap(pid, VirtAddr::new(addr), len, Some(VirtAddr::new(to)));
                    Ok(())
                } else {
                    m.mremap(pid, VirtAddr::new(addr), len, None)
                        .map(|a| maps.push((a.as_u64(), len / PAGE)))
                }
            }
            // Issue 16: references and pins (held until the matching call or exit) and the
            // unshare faults of a short R/O pin.
            21 => m.ref_pages(pid, VirtAddr::new(addr), len),
            22 => m.unref_pages(pid, VirtAddr::new(addr), len),
            23 => m.pin_pages(pid, VirtAddr::new(addr), len),
            24 => m.unpin_pages(pid, VirtAddr::new(addr), len),
            25 => m.unshare(pid, VirtAddr::new(addr), len).map(|r| {
                assert!(r
                    .iter()
                    .all(|a| a.phys().is_some() && a.outcome != Outcome::Segfault));
            }),
            // Issue 16: the deferred-split shrinker (folio splits change no content).
            26 => m.drop_caches(),
            // MADV_COLLAPSE: its failures are results (ENOMEM included), so only a bad or
            // unmapped range is an error, and it must change nothing.
            27 => m.collapse(pid, VirtAddr::new(addr), len).map(|_| ()),
            // MADV_PAGEOUT (issue 16): reclaim to the swap device.
            28 => m.pageout(pid, VirtAddr::new(addr), len),
            _ => {
                // Inspection only: these must never fail except on bad input.
                let _ = m.translate(pid, VirtAddr::new(addr));
                let _ = m.folio(Pfn::new(b.u64() % (m.total_frames() + 8)));
                if len <= 4 << 20 {
                    let _ = m.observe(pid, VirtAddr::new(addr), len);
                }
                Ok(())
            }
        };
        m.check().unwrap();
        match result {
            Ok(()) | Err(CowError::OutOfMemory) if matches!(op, 3..=7 | 16 | 17 | 20 | 22 | 24) => {}
            // A large swap-in the model refuses stops a multi-page access part way, as OOM does.
            Err(CowError::NotModelled(_)) if matches!(op, 3..=7 | 16 | 17 | 20 | 22 | 24 | 27) => {}
            Ok(()) => {}
            Err(e) => assert_eq!(state(&m), before, "{e} changed the machine"),
        }
    }
    for pid in m.pids() {
        m.exit(pid).unwrap();
    }
    m.check().unwrap();
    assert_eq!(m.free_frames(), boot_free + 1, "a frame leaked");
});
