//! The C API never crashes on what C can hand it: NULL and misaligned pointers, zero and
//! huge lengths, any byte as a write flag, unknown names, bad pids, addresses anywhere; and
//! random call sequences behave as the core does (a property test in lockstep).
//!
//! Not tested, because it cannot be detected: a freed handle, a buffer shorter than its
//! stated length, a string without its NUL (undefined behaviour, documented in the header).

// The calls are the test: one SAFETY line per test body (or per `step`) states what every
// pointer handed over is, rather than one per call; short names (h, a, n) as in C.
#![allow(clippy::undocumented_unsafe_blocks, clippy::many_single_char_names)]

mod common;

use common::{last_error, status_of, Handle};
use cowcore_capi::*;
use cowcore_core::machine::MMAP_BASE;
use cowcore_core::{Access, AccessKinds, Machine, Profile, VirtAddr};
use proptest::prelude::*;
use std::ptr::{null, null_mut};

const K4: u64 = 4096;

/// A machine with a 2 MiB mapping at `a` (the second value).
fn mapped() -> (Handle, u64) {
    let h = Handle::new(8 << 20, c"6.15");
    let mut a = 0;
    // SAFETY: a live handle; a writable out-pointer.
    let s = unsafe { cowcore_mmap(h.0, 1, 2 << 20, &raw mut a) };
    assert_eq!(s, CowcoreStatus::Ok);
    (h, a)
}

fn free_frames(h: &Handle) -> u64 {
    let mut n = 0;
    // SAFETY: a live handle; a writable out-pointer.
    assert_eq!(
        unsafe { cowcore_free_frames(h.0, &raw mut n) },
        CowcoreStatus::Ok
    );
    n
}

#[test]
fn a_null_handle_is_an_error_everywhere() {
    let null_m: *mut CowcoreMachine = null_mut();
    let mut rec = CowcoreAccess::default();
    let (mut u32_out, mut u64_out, mut n) = (0u32, 0u64, 0usize);
    let mut stats = CowcoreStats::default();
    let addrs = [0x1000u64];
    // SAFETY: every pointer but the handle is valid; the handle is NULL, which is checked.
    let statuses = unsafe {
        [
            cowcore_init_pid(null_m, &raw mut u32_out),
            cowcore_asid(null_m, 1, &raw mut u64_out),
            cowcore_mmap(null_m, 1, K4, &raw mut u64_out),
            cowcore_mmap_fixed(null_m, 1, 0x1000, K4, null_mut()),
            cowcore_munmap(null_m, 1, 0x1000, K4),
            cowcore_fork(null_m, 1, &raw mut u32_out),
            cowcore_exit(null_m, 1),
            cowcore_mprotect(null_m, 1, 0x1000, K4, c"r".as_ptr()),
            cowcore_madvise(null_m, 1, 0x1000, K4, c"dontneed".as_ptr()),
            cowcore_set_thp_size(null_m, 4, c"always".as_ptr()),
            cowcore_set_thp_enabled(null_m, c"always".as_ptr()),
            cowcore_set_policy(null_m, c"use_zero_page".as_ptr(), true),
            cowcore_access(null_m, 1, 0x1000, true, 1, &raw mut rec),
            cowcore_access_batch(null_m, 1, addrs.as_ptr(), null(), 0, 1, 0, &raw mut rec),
            cowcore_record_events(null_m, true),
            cowcore_take_events(null_m, null_mut(), 0, &raw mut n),
            cowcore_stats(null_m, &raw mut stats),
            cowcore_free_frames(null_m, &raw mut u64_out),
            cowcore_check(null_m),
            cowcore_drop_caches(null_m),
        ]
    };
    for (i, s) in statuses.into_iter().enumerate() {
        assert_eq!(s, CowcoreStatus::NullPointer, "call {i}");
    }
    assert_eq!(last_error(null()), "the machine handle is NULL");
    // SAFETY: NULL is ignored.
    unsafe { cowcore_machine_free(null_mut()) };
    // SAFETY: NULL profile / out: checked.
    unsafe {
        let mut m = null_mut();
        assert_eq!(
            cowcore_machine_new(8 << 20, 4, null(), &raw mut m),
            CowcoreStatus::NullPointer
        );
        let s = cowcore_machine_new(8 << 20, 4, c"6.15".as_ptr(), null_mut());
        assert_eq!(s, CowcoreStatus::NullPointer);
        assert!(m.is_null());
    }
}

/// A NULL out-pointer or string is refused before any work: nothing changes.
#[test]
fn null_arguments_change_nothing() {
    let (h, a) = mapped();
    let free = free_frames(&h);
    // SAFETY: a live handle; the NULL pointers are checked.
    unsafe {
        assert_eq!(
            cowcore_init_pid(h.0, null_mut()),
            CowcoreStatus::NullPointer
        );
        assert_eq!(cowcore_asid(h.0, 1, null_mut()), CowcoreStatus::NullPointer);
        assert_eq!(
            cowcore_mmap(h.0, 1, K4, null_mut()),
            CowcoreStatus::NullPointer
        );
        assert_eq!(cowcore_fork(h.0, 1, null_mut()), CowcoreStatus::NullPointer);
        assert_eq!(
            cowcore_access(h.0, 1, a, true, 1, null_mut()),
            CowcoreStatus::NullPointer
        );
        let s = cowcore_mprotect(h.0, 1, a, K4, null());
        assert_eq!(s, CowcoreStatus::NullPointer);
        assert_eq!(
            cowcore_madvise(h.0, 1, a, K4, null()),
            CowcoreStatus::NullPointer
        );
        assert_eq!(
            cowcore_set_thp_size(h.0, 4, null()),
            CowcoreStatus::NullPointer
        );
        assert_eq!(
            cowcore_set_thp_enabled(h.0, null()),
            CowcoreStatus::NullPointer
        );
        assert_eq!(
            cowcore_set_policy(h.0, null(), true),
            CowcoreStatus::NullPointer
        );
        assert_eq!(cowcore_stats(h.0, null_mut()), CowcoreStatus::NullPointer);
        assert_eq!(
            cowcore_free_frames(h.0, null_mut()),
            CowcoreStatus::NullPointer
        );
        assert_eq!(
            cowcore_take_events(h.0, null_mut(), 0, null_mut()),
            CowcoreStatus::NullPointer
        );
        let mut n = 0usize;
        let s = cowcore_take_events(h.0, null_mut(), 4, &raw mut n);
        assert_eq!(s, CowcoreStatus::NullPointer);
    }
    assert!(h.error().contains("NULL"), "{}", h.error());
    assert_eq!(free_frames(&h), free);
    let mut child = 0;
    // SAFETY: as above. The fork refused above did not happen: this child is pid 2.
    assert_eq!(
        unsafe { cowcore_fork(h.0, 1, &raw mut child) },
        CowcoreStatus::Ok
    );
    assert_eq!(child, 2);
    // SAFETY: as above.
    unsafe {
        let mut out = [CowcoreAccess::default(); 1];
        let s = cowcore_access_batch(h.0, 1, null(), null(), 0, 1, 0, out.as_mut_ptr());
        assert_eq!(s, CowcoreStatus::NullPointer);
        let addrs = [a];
        let s = cowcore_access_batch(h.0, 1, addrs.as_ptr(), null(), 0, 1, 0, null_mut());
        assert_eq!(s, CowcoreStatus::NullPointer);
    }
    // One fork happened and nothing else: what the core has after the same two calls.
    let mut core = Machine::new(8 << 20, 4, Profile::V6_15).unwrap();
    core.mmap(1, 2 << 20).unwrap();
    core.fork(1).unwrap();
    assert_eq!(free_frames(&h), core.free_frames());
}

#[test]
fn lengths_zero_huge_and_misaligned() {
    let (h, a) = mapped();
    let addrs = [a, a + K4];
    let mut out = [CowcoreAccess::default(); 2];
    let mut n = 7usize;
    // SAFETY: a live handle; n = 0 allows NULL; the huge lengths are refused before any
    // read; the misaligned pointers are refused before any access.
    unsafe {
        let s = cowcore_access_batch(h.0, 1, null(), null(), 0, 0, 0, null_mut());
        assert_eq!(s, CowcoreStatus::Ok);
        let s = cowcore_access_batch(h.0, 9, null(), null(), 0, 0, 0, null_mut());
        assert_eq!(s, CowcoreStatus::NoSuchProcess); // the pid is checked even for n = 0
        assert_eq!(
            cowcore_take_events(h.0, null_mut(), 0, &raw mut n),
            CowcoreStatus::Ok
        );
        assert_eq!(n, 0);
        for huge in [usize::MAX, usize::MAX / 2, isize::MAX as usize / 8 + 1] {
            let s =
                cowcore_access_batch(h.0, 1, addrs.as_ptr(), null(), 1, huge, 0, out.as_mut_ptr());
            assert_eq!(s, CowcoreStatus::InvalidArgument, "{huge}");
            let mut ev = [CowcoreEvent::default()];
            let s = cowcore_take_events(h.0, ev.as_mut_ptr(), huge, &raw mut n);
            assert_eq!(s, CowcoreStatus::InvalidArgument, "{huge}");
        }
        let misaligned: *mut CowcoreAccess = out.as_mut_ptr().cast::<u8>().add(1).cast();
        let s = cowcore_access(h.0, 1, a, true, 1, misaligned);
        assert_eq!(s, CowcoreStatus::InvalidArgument);
        let s = cowcore_access_batch(h.0, 1, addrs.as_ptr(), null(), 0, 1, 0, misaligned);
        assert_eq!(s, CowcoreStatus::InvalidArgument);
        let odd_addrs: *const u64 = addrs.as_ptr().cast::<u8>().add(4).cast();
        let s = cowcore_access_batch(h.0, 1, odd_addrs, null(), 0, 1, 0, out.as_mut_ptr());
        assert_eq!(s, CowcoreStatus::InvalidArgument);
        // Both a writes buffer and all_writes: ambiguous, refused.
        let w = [1u8, 1];
        let s = cowcore_access_batch(
            h.0,
            1,
            addrs.as_ptr(),
            w.as_ptr(),
            1,
            2,
            0,
            out.as_mut_ptr(),
        );
        assert_eq!(s, CowcoreStatus::InvalidArgument);
    }
    let mut stats = CowcoreStats::default();
    // SAFETY: as above.
    assert_eq!(
        unsafe { cowcore_stats(h.0, &raw mut stats) },
        CowcoreStatus::Ok
    );
    assert_eq!(stats, CowcoreStats::default()); // nothing was accessed
}

/// Any nonzero byte of `writes` is a write; a batch longer than the internal chunk is the
/// core's batch, record for record.
#[test]
fn write_flags_and_long_batches_are_the_cores() {
    let (h, a) = mapped();
    let mut core = Machine::new(8 << 20, 4, Profile::V6_15).unwrap();
    assert_eq!(core.mmap(1, 2 << 20).unwrap().as_u64(), a);
    let n = 3000; // more than one chunk of 1024
    let addrs: Vec<u64> = (0..n as u64)
        .map(|i| a + (i * 7919 % 600) * K4 + i % 4096)
        .collect();
    let writes: Vec<u8> = (0..n).map(|i| (i * 37 % 256) as u8).collect();
    let mut out = vec![CowcoreAccess::default(); n];
    // SAFETY: n elements in each buffer.
    let s = unsafe {
        cowcore_access_batch(
            h.0,
            1,
            addrs.as_ptr(),
            writes.as_ptr(),
            0,
            n,
            3,
            out.as_mut_ptr(),
        )
    };
    assert_eq!(s, CowcoreStatus::Ok);
    let kinds: Vec<bool> = writes.iter().map(|&w| w != 0).collect();
    let mut want = vec![Access::default(); n];
    core.access_batch(1, &addrs, AccessKinds::PerAccess(&kinds), 3, &mut want)
        .unwrap();
    let want: Vec<CowcoreAccess> = want.into_iter().map(Into::into).collect();
    assert_eq!(out, want);
    // all_writes with any nonzero int.
    let mut out2 = vec![CowcoreAccess::default(); 2];
    // SAFETY: two elements.
    let s = unsafe {
        cowcore_access_batch(h.0, 1, addrs.as_ptr(), null(), -5, 2, 3, out2.as_mut_ptr())
    };
    assert_eq!(s, CowcoreStatus::Ok);
    let mut want2 = vec![Access::default(); 2];
    core.access_batch(1, &addrs[..2], AccessKinds::Writes, 3, &mut want2)
        .unwrap();
    assert_eq!(
        out2,
        want2
            .into_iter()
            .map(CowcoreAccess::from)
            .collect::<Vec<_>>()
    );
}

/// Addresses anywhere are records, not errors; bad pids are errors everywhere.
#[test]
fn addresses_anywhere_and_bad_pids() {
    let (h, a) = mapped();
    let mut child = 0;
    // SAFETY: a live handle; writable out-pointers.
    unsafe {
        assert_eq!(cowcore_fork(h.0, 1, &raw mut child), CowcoreStatus::Ok);
        assert_eq!(cowcore_exit(h.0, child), CowcoreStatus::Ok);
    }
    for addr in [
        0,
        0xfff,
        a - 1,
        a + (2 << 20),
        (1 << 47) - 1,
        1 << 47,
        1 << 63,
        u64::MAX,
    ] {
        for write in [false, true] {
            let mut r = CowcoreAccess::default();
            // SAFETY: as above.
            let s = unsafe { cowcore_access(h.0, 1, addr, write, 1, &raw mut r) };
            assert_eq!(s, CowcoreStatus::Ok, "{addr:#x}");
            assert_eq!(r.outcome, CowcoreOutcome::Segfault as u8, "{addr:#x}");
            assert_eq!(r.reason, CowcoreReason::SegvUnmapped as u8, "{addr:#x}");
            assert_eq!(r.phys, COWCORE_NO_PHYS);
        }
    }
    for pid in [0, child, 3, u32::MAX] {
        let mut r = CowcoreAccess::default();
        let (mut o32, mut o64) = (0u32, 0u64);
        // SAFETY: as above.
        let statuses = unsafe {
            [
                cowcore_access(h.0, pid, a, false, 0, &raw mut r),
                cowcore_asid(h.0, pid, &raw mut o64),
                cowcore_mmap(h.0, pid, K4, &raw mut o64),
                cowcore_mmap_fixed(h.0, pid, 0x1000_0000, K4, null_mut()),
                cowcore_munmap(h.0, pid, a, K4),
                cowcore_fork(h.0, pid, &raw mut o32),
                cowcore_exit(h.0, pid),
                cowcore_mprotect(h.0, pid, a, K4, c"r".as_ptr()),
                cowcore_madvise(h.0, pid, a, K4, c"dontneed".as_ptr()),
            ]
        };
        for (i, s) in statuses.into_iter().enumerate() {
            assert_eq!(s, CowcoreStatus::NoSuchProcess, "pid {pid} call {i}");
        }
    }
    // SAFETY: as above.
    assert_eq!(unsafe { cowcore_check(h.0) }, CowcoreStatus::Ok);
}

/// One call of the random programs: the argument values are near the valid ones.
#[derive(Debug, Clone)]
enum Op {
    Mmap(u32, u64),
    MmapFixed(u32, u64, u64),
    Munmap(u32, u64, u64),
    Fork(u32),
    Exit(u32),
    Mprotect(u32, u64, u64, &'static str),
    Access(u32, u64, bool),
    Batch(u32, Vec<(u64, u8)>),
    Thp(u32, &'static str),
}

fn op() -> impl Strategy<Value = Op> {
    let pid = prop_oneof![4 => 1u32..4, 1 => Just(0u32), 1 => Just(u32::MAX)];
    let len = prop_oneof![
        Just(K4),
        Just(16 * K4),
        Just(2u64 << 20),
        Just(0u64),
        Just(100u64),
        Just(u64::MAX)
    ];
    // Addresses in and around the first mapping (2 MiB below MMAP_BASE), or anywhere.
    let addr = prop_oneof![
        4 => (0u64..1024).prop_map(|i| MMAP_BASE - (2 << 20) + i * 0x1003),
        1 => any::<u64>(),
        1 => (0u64..512).prop_map(|i| 0x1000_0000 + i * K4),
    ];
    let prot = prop_oneof![Just("none"), Just("r"), Just("rw"), Just("rwx")];
    let mode = prop_oneof![
        Just("always"),
        Just("never"),
        Just("inherit"),
        Just("bogus")
    ];
    prop_oneof![
        1 => (pid.clone(), len.clone()).prop_map(|(p, l)| Op::Mmap(p, l)),
        1 => (pid.clone(), addr.clone(), len.clone()).prop_map(|(p, a, l)| Op::MmapFixed(p, a, l)),
        1 => (pid.clone(), addr.clone(), len.clone()).prop_map(|(p, a, l)| Op::Munmap(p, a, l)),
        1 => pid.clone().prop_map(Op::Fork),
        1 => pid.clone().prop_map(Op::Exit),
        1 => (pid.clone(), addr.clone(), len, prot).prop_map(|(p, a, l, r)| Op::Mprotect(p, a, l, r)),
        4 => (pid.clone(), addr.clone(), any::<bool>()).prop_map(|(p, a, w)| Op::Access(p, a, w)),
        2 => (pid, prop::collection::vec((addr, any::<u8>()), 0..40))
            .prop_map(|(p, v)| Op::Batch(p, v)),
        1 => (0u32..11, mode).prop_map(|(o, m)| Op::Thp(o, m)),
    ]
}

/// Runs one op through the C API and on the core; both must agree on the status and the
/// results.
fn step(h: &Handle, core: &mut Machine, op: &Op) {
    use std::ffi::CString;
    let cstr = |s: &str| CString::new(s).unwrap();
    // SAFETY (for every call below): a live handle; NUL-terminated strings that outlive the
    // call; buffers of the stated lengths; writable out-pointers.
    match op {
        Op::Mmap(pid, len) => {
            let mut a = 0;
            let s = unsafe { cowcore_mmap(h.0, *pid, *len, &raw mut a) };
            let want = core.mmap(*pid, *len);
            assert_eq!(s, status_of(&want), "{}", h.error());
            if let Ok(w) = want {
                assert_eq!(a, w.as_u64());
            }
        }
        Op::MmapFixed(pid, addr, len) => {
            let s = unsafe { cowcore_mmap_fixed(h.0, *pid, *addr, *len, null_mut()) };
            assert_eq!(
                s,
                status_of(&core.mmap_fixed(*pid, VirtAddr::new(*addr), *len))
            );
        }
        Op::Munmap(pid, addr, len) => {
            let s = unsafe { cowcore_munmap(h.0, *pid, *addr, *len) };
            assert_eq!(s, status_of(&core.munmap(*pid, VirtAddr::new(*addr), *len)));
        }
        Op::Fork(pid) => {
            let mut c = 0;
            let s = unsafe { cowcore_fork(h.0, *pid, &raw mut c) };
            let want = core.fork(*pid);
            assert_eq!(s, status_of(&want));
            if let Ok(w) = want {
                assert_eq!(c, w);
            }
        }
        Op::Exit(pid) => {
            let s = unsafe { cowcore_exit(h.0, *pid) };
            assert_eq!(s, status_of(&core.exit(*pid)));
        }
        Op::Mprotect(pid, addr, len, prot) => {
            let p = cstr(prot);
            let s = unsafe { cowcore_mprotect(h.0, *pid, *addr, *len, p.as_ptr()) };
            let want = prot
                .parse()
                .and_then(|prot| core.mprotect(*pid, VirtAddr::new(*addr), *len, prot));
            assert_eq!(s, status_of(&want));
        }
        Op::Access(pid, addr, write) => {
            let mut r = CowcoreAccess::default();
            let s = unsafe { cowcore_access(h.0, *pid, *addr, *write, 5, &raw mut r) };
            let want = core.access(*pid, VirtAddr::new(*addr), *write, 5);
            assert_eq!(s, status_of(&want));
            if let Ok(w) = want {
                assert_eq!(r, w.into());
            }
        }
        Op::Batch(pid, v) => {
            let addrs: Vec<u64> = v.iter().map(|x| x.0).collect();
            let writes: Vec<u8> = v.iter().map(|x| x.1).collect();
            let mut out = vec![CowcoreAccess::default(); v.len()];
            let s = unsafe {
                cowcore_access_batch(
                    h.0,
                    *pid,
                    addrs.as_ptr(),
                    writes.as_ptr(),
                    0,
                    v.len(),
                    6,
                    out.as_mut_ptr(),
                )
            };
            let kinds: Vec<bool> = writes.iter().map(|&w| w != 0).collect();
            let mut want = vec![Access::default(); v.len()];
            let r = core.access_batch(*pid, &addrs, AccessKinds::PerAccess(&kinds), 6, &mut want);
            assert_eq!(s, status_of(&r));
            if r.is_ok() {
                assert_eq!(
                    out,
                    want.into_iter()
                        .map(CowcoreAccess::from)
                        .collect::<Vec<_>>()
                );
            }
        }
        Op::Thp(order, mode) => {
            let m = cstr(mode);
            let s = unsafe { cowcore_set_thp_size(h.0, *order, m.as_ptr()) };
            let want = mode
                .parse()
                .and_then(|mode| core.set_thp_size(*order, mode));
            assert_eq!(s, status_of(&want));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Random programs: the C API and the core agree on every status and result, the events
    /// drained through a 5-record buffer are the core's, and the invariants hold.
    #[test]
    fn random_programs_are_the_cores(ops in prop::collection::vec(op(), 1..40)) {
        let h = Handle::new(8 << 20, c"6.15");
        let mut core = Machine::new(8 << 20, 4, Profile::V6_15).unwrap();
        // SAFETY: a live handle.
        prop_assert_eq!(unsafe { cowcore_record_events(h.0, true) }, CowcoreStatus::Ok);
        core.record_events(true);
        // The first mapping, where most addresses of `op()` land.
        step(&h, &mut core, &Op::Mmap(1, 2 << 20));
        for op in &ops {
            step(&h, &mut core, op);
        }
        let mut got = Vec::new();
        let mut buf = [CowcoreEvent::default(); 5];
        loop {
            let mut n = 0;
            // SAFETY: a 5-record buffer; a writable count.
            let s = unsafe { cowcore_take_events(h.0, buf.as_mut_ptr(), 5, &raw mut n) };
            prop_assert_eq!(s, CowcoreStatus::Ok);
            got.extend_from_slice(&buf[..n]);
            if n < 5 {
                break;
            }
        }
        let want: Vec<CowcoreEvent> =
            core.take_events().iter().map(|e| e.record().into()).collect();
        prop_assert_eq!(got, want);
        // SAFETY: a live handle.
        prop_assert_eq!(unsafe { cowcore_check(h.0) }, CowcoreStatus::Ok);
    }
}
