//! The C API against the core it wraps: the same calls on a `cowcore_machine*` and on a
//! `cowcore_core::Machine` give the same statuses, records, events and counters; the codes
//! in the header are the core's and Python's numbers.

mod common;

use common::{last_error, status_of, Handle};
use cowcore_capi::*;
use cowcore_core::{
    Access, AccessFlags, AccessKinds, Advice, Event, EventRecord, Machine, MapLevel, Outcome,
    Profile, Reason, ScanResult, ThpSizeMode, VirtAddr, ZapCause,
};
use std::collections::BTreeMap;

const K4: u64 = 4096;

#[test]
fn codes_are_the_cores() {
    use CowcoreOutcome as C;
    use CowcoreReason as R;
    for (c, r) in [
        (C::NoFault, Outcome::NoFault),
        (C::AnonAlloc, Outcome::AnonAlloc),
        (C::ZeroPage, Outcome::ZeroPage),
        (C::HugeZeroPage, Outcome::HugeZeroPage),
        (C::CowReuse, Outcome::CowReuse),
        (C::CowCopy, Outcome::CowCopy),
        (C::PmdReuse, Outcome::PmdReuse),
        (C::PmdSplitCopy, Outcome::PmdSplitCopy),
        (C::Unshare, Outcome::Unshare),
        (C::Segfault, Outcome::Segfault),
        (C::OutOfMemory, Outcome::OutOfMemory),
    ] {
        assert_eq!(c as u8, r as u8, "{c:?}");
    }
    for (c, r) in [
        (R::None, Reason::None),
        (R::PteNone, Reason::PteNone),
        (R::PmdNone, Reason::PmdNone),
        (R::AnonExclusive, Reason::AnonExclusive),
        (R::SmallSoleRef, Reason::SmallSoleRef),
        (R::SmallOtherRefs, Reason::SmallOtherRefs),
        (R::LargeNoPteReuse, Reason::LargeNoPteReuse),
        (R::LargeLastMapped, Reason::LargeLastMapped),
        (R::LargeMaybeShared, Reason::LargeMaybeShared),
        (R::LargeExtraRefs, Reason::LargeExtraRefs),
        (R::LargeExclusive, Reason::LargeExclusive),
        (R::ZeroPage, Reason::ZeroPage),
        (R::HugeZeroNewThp, Reason::HugeZeroNewThp),
        (R::HugeZeroFallback, Reason::HugeZeroFallback),
        (R::PmdAnonExclusive, Reason::PmdAnonExclusive),
        (R::PmdSoleRef, Reason::PmdSoleRef),
        (R::PmdShared, Reason::PmdShared),
        (R::SegvUnmapped, Reason::SegvUnmapped),
        (R::SegvProtection, Reason::SegvProtection),
        (R::LargeMemoExclusive, Reason::LargeMemoExclusive),
        (R::LargeExactExclusive, Reason::LargeExactExclusive),
    ] {
        assert_eq!(c as u8, r as u8, "{c:?}");
    }
    for (c, r) in [
        (CowcoreMapLevel::None, MapLevel::None),
        (CowcoreMapLevel::Pte, MapLevel::Pte),
        (CowcoreMapLevel::Pmd, MapLevel::Pmd),
    ] {
        assert_eq!(c as u8, r as u8, "{c:?}");
    }
    for (c, r) in [
        (CowcoreZapCause::Unmap, ZapCause::Unmap),
        (CowcoreZapCause::Exit, ZapCause::Exit),
        (CowcoreZapCause::Dontneed, ZapCause::DontNeed),
    ] {
        assert_eq!(c as u8, r as u8, "{c:?}");
    }
    for (c, r) in [
        (COWCORE_ACCESS_FIRST_TOUCH, AccessFlags::FIRST_TOUCH),
        (COWCORE_ACCESS_ZEROED, AccessFlags::ZEROED),
        (COWCORE_ACCESS_COPIED, AccessFlags::COPIED),
        (COWCORE_ACCESS_SPLIT, AccessFlags::SPLIT),
        (COWCORE_ACCESS_FELL_BACK, AccessFlags::FELL_BACK),
        (COWCORE_ACCESS_FAULT_AROUND, AccessFlags::FAULT_AROUND),
        (COWCORE_ACCESS_SWAP_IN, AccessFlags::SWAP_IN),
    ] {
        assert_eq!(c, r.bits());
    }
    assert_eq!(COWCORE_NO_PHYS, Access::NO_PHYS);
}

#[test]
fn event_kinds_and_records_are_the_cores() {
    use CowcoreEventKind as K;
    let zap = Event::Zap {
        asid: 1,
        cause: ZapCause::Exit,
        start: 0,
        end: 1,
        ptes: 0,
        pmds: 0,
    };
    for (c, e) in [
        (K::FaultRead, Event::FaultRead),
        (K::FaultWrite, Event::FaultWrite),
        (K::FaultWp, Event::FaultWp),
        (K::AnonFaultAlloc, Event::AnonFaultAlloc { order: 4 }),
        (K::AnonFaultFallback, Event::AnonFaultFallback { order: 4 }),
        (K::Split, Event::Split { pfn: 0, order: 4 }),
        (K::ThpFaultAlloc, Event::ThpFaultAlloc),
        (K::ThpSplitPmd, Event::ThpSplitPmd),
        (K::Pgreuse, Event::PgReuse),
        (K::CowCopy, Event::CowCopy),
        (K::HugeZeroWrite, Event::HugeZeroWrite),
        (K::FolioAlloc, Event::FolioAlloc { pfn: 1, order: 0 }),
        (K::FolioFree, Event::FolioFree { pfn: 1, order: 0 }),
        (K::PagesZeroed, Event::PagesZeroed { pfn: 1, nr: 1 }),
        (
            K::PagesCopied,
            Event::PagesCopied {
                src: 1,
                dst: 2,
                nr: 1,
            },
        ),
        (
            K::Fork,
            Event::Fork {
                parent: 1,
                child: 2,
                ptes: 0,
                pmds: 0,
            },
        ),
        (K::Zap, zap),
        (
            K::Mprotect,
            Event::Mprotect {
                asid: 1,
                start: 0,
                end: 1,
                ptes: 0,
                pmds: 0,
            },
        ),
        (
            K::TlbFlush,
            Event::TlbFlush {
                asid: 1,
                start: 0,
                end: 1,
            },
        ),
        (K::ThpCollapseAlloc, Event::ThpCollapseAlloc),
        (K::ThpCollapseAllocFailed, Event::ThpCollapseAllocFailed),
        (
            K::Collapse,
            Event::Collapse {
                asid: 1,
                start: 0,
                result: ScanResult::PageCount,
            },
        ),
    ] {
        assert_eq!(c as u8, e.code(), "{c:?}");
        // The C record is the core's flat record, field for field.
        let r: EventRecord = e.record();
        let ce = CowcoreEvent::from(r);
        assert_eq!(
            (ce.kind, ce.order, ce.cause, ce.asid, ce.asid2, ce.pfn, ce.pfn2),
            (r.kind, r.order, r.cause, r.asid, r.asid2, r.pfn, r.pfn2)
        );
        assert_eq!(
            (ce.start, ce.end, ce.nr, ce.pmds),
            (r.start, r.end, r.nr, r.pmds)
        );
    }
}

/// `NAME = value` lines of each class of python/cowcore/outcome.py.
fn python_codes() -> BTreeMap<String, Vec<(String, u64)>> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../python/cowcore/outcome.py"
    );
    let text = std::fs::read_to_string(path).expect("python/cowcore/outcome.py");
    let mut classes: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
    let mut current = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("class ") {
            current = rest.split(['(', ':']).next().map(str::to_owned);
            continue;
        }
        let Some(class) = &current else { continue };
        let Some((name, value)) = line.strip_prefix("    ").and_then(|l| l.split_once(" = "))
        else {
            continue;
        };
        if !name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') {
            continue;
        }
        let value = match value.split_once(" << ") {
            Some((a, b)) => a.parse::<u64>().unwrap() << b.parse::<u32>().unwrap(),
            None => value.parse().unwrap(),
        };
        classes
            .entry(class.clone())
            .or_default()
            .push((name.to_owned(), value));
    }
    classes
}

/// Every code of Python's `cowcore.outcome` is in the header under the same name and number,
/// and the header has no other: C, Python and the core read a record the same way.
#[test]
fn header_codes_are_pythons() {
    let header = include_str!("../include/cowcore.h");
    let python = python_codes();
    for (class, prefix) in [
        ("Outcome", "COWCORE_OUTCOME_"),
        ("Reason", "COWCORE_REASON_"),
        ("MapLevel", "COWCORE_MAP_LEVEL_"),
        ("EventCode", "COWCORE_EVENT_KIND_"),
        ("ZapCause", "COWCORE_ZAP_CAUSE_"),
    ] {
        let codes = &python[class];
        assert!(!codes.is_empty(), "{class}");
        for (name, value) in codes {
            let line = format!("  {prefix}{name} = {value},");
            assert!(header.contains(&line), "header lacks {line:?}");
        }
        let in_header = header
            .lines()
            .filter(|l| l.starts_with(&format!("  {prefix}")))
            .count();
        assert_eq!(in_header, codes.len(), "{class}: codes only in the header");
    }
    let name_fns: [(&str, extern "C" fn(u8) -> *const std::ffi::c_char); 3] = [
        ("Outcome", cowcore_outcome_name),
        ("Reason", cowcore_reason_name),
        ("EventCode", cowcore_event_kind_name),
    ];
    for (class, name_of) in name_fns {
        for (name, value) in &python[class] {
            // SAFETY: a static NUL-terminated string.
            let got = unsafe { std::ffi::CStr::from_ptr(name_of(*value as u8)) };
            assert_eq!(got.to_str().unwrap(), name, "{class}");
        }
        // SAFETY: as above.
        let unknown = unsafe { std::ffi::CStr::from_ptr(name_of(200)) };
        assert_eq!(unknown.to_str().unwrap(), "UNKNOWN");
    }
    for (name, value) in &python["AccessFlags"] {
        let line = format!(
            "#define COWCORE_ACCESS_{name} (1 << {})",
            value.trailing_zeros()
        );
        assert!(header.contains(&line), "header lacks {line:?}");
    }
}

/// Drains every pending event through a small buffer (several calls).
fn take_all(m: &Handle, cap: usize) -> Vec<CowcoreEvent> {
    let mut all = Vec::new();
    let mut buf = vec![CowcoreEvent::default(); cap];
    loop {
        let mut n = usize::MAX;
        // SAFETY: `buf` holds `cap` records; `n` is writable.
        let s = unsafe { cowcore_take_events(m.0, buf.as_mut_ptr(), cap, &raw mut n) };
        assert_eq!(s, CowcoreStatus::Ok);
        assert!(n <= cap);
        all.extend_from_slice(&buf[..n]);
        if n < cap {
            return all;
        }
    }
}

/// The same program through the C API and on the core directly: same statuses, same
/// records, same events (drained 3 at a time), same counters.
#[test]
fn the_c_api_is_the_core() {
    for (profile, name) in [(Profile::V6_15, c"6.15"), (Profile::V6_12, c"6.12")] {
        let h = Handle::new(16 << 20, name);
        let mut core = Machine::new(16 << 20, 4, profile).unwrap();
        core.record_events(true);
        // SAFETY: a live handle; NUL-terminated strings; writable out-pointers.
        unsafe {
            assert_eq!(cowcore_record_events(h.0, true), CowcoreStatus::Ok);
            assert_eq!(
                cowcore_set_thp_size(h.0, 4, c"always".as_ptr()),
                CowcoreStatus::Ok
            );
        }
        core.set_thp_size(4, ThpSizeMode::Always).unwrap();
        let mut a = 0;
        // SAFETY: as above.
        let s = unsafe { cowcore_mmap(h.0, 1, 2 << 20, &raw mut a) };
        assert_eq!(s, CowcoreStatus::Ok);
        assert_eq!(core.mmap(1, 2 << 20).unwrap().as_u64(), a);
        let mut child = 0;
        let program: [(u32, u64, bool); 7] = [
            (1, a + 0x10, true),
            (1, a + 0x5123, false),
            (1, a + 0x3000, true),
            (0, 0, false), // fork
            (1, a + 0x3008, true),
            (2, a + 0x4000, true),
            (1, 1 << 47, false), // outside user space: a segfault record, not an error
        ];
        for (pid, addr, write) in program {
            if pid == 0 {
                // SAFETY: as above.
                let s = unsafe { cowcore_fork(h.0, 1, &raw mut child) };
                assert_eq!((s, core.fork(1)), (CowcoreStatus::Ok, Ok(child)));
                continue;
            }
            let mut rec = CowcoreAccess::default();
            // SAFETY: as above.
            let s = unsafe { cowcore_access(h.0, pid, addr, write, 7, &raw mut rec) };
            let want = core.access(pid, VirtAddr::new(addr), write, 7);
            assert_eq!(s, status_of(&want));
            assert_eq!(rec, CowcoreAccess::from(want.unwrap()));
        }
        // A batch: per-access kinds (any nonzero byte is a write) = the core's.
        let addrs = [a, a + K4, a + 0x7000, 1 << 50, a + 0x3000];
        let writes = [0u8, 2, 0xff, 1, 0];
        let mut out = [CowcoreAccess::default(); 5];
        // SAFETY: five elements in each buffer.
        let s = unsafe {
            cowcore_access_batch(
                h.0,
                child,
                addrs.as_ptr(),
                writes.as_ptr(),
                0,
                5,
                9,
                out.as_mut_ptr(),
            )
        };
        assert_eq!(s, CowcoreStatus::Ok, "{}", h.error());
        let mut want = [Access::default(); 5];
        let kinds = writes.map(|w| w != 0);
        core.access_batch(child, &addrs, AccessKinds::PerAccess(&kinds), 9, &mut want)
            .unwrap();
        assert_eq!(out, want.map(CowcoreAccess::from));
        assert_eq!(out[3].outcome, CowcoreOutcome::Segfault as u8);
        // SAFETY: as above.
        unsafe {
            assert_eq!(cowcore_exit(h.0, child), CowcoreStatus::Ok);
            assert_eq!(cowcore_munmap(h.0, 1, a, K4), CowcoreStatus::Ok);
            assert_eq!(
                cowcore_mprotect(h.0, 1, a + K4, K4, c"r".as_ptr()),
                CowcoreStatus::Ok
            );
        }
        core.exit(child).unwrap();
        core.munmap(1, VirtAddr::new(a), K4).unwrap();
        core.mprotect(1, VirtAddr::new(a + K4), K4, "r".parse().unwrap())
            .unwrap();
        let events = take_all(&h, 3);
        let want: Vec<CowcoreEvent> = core
            .take_events()
            .iter()
            .map(|e| e.record().into())
            .collect();
        assert!(!want.is_empty());
        assert_eq!(events, want);
        let mut stats = CowcoreStats::default();
        let (mut asid, mut free) = (0, 0);
        // SAFETY: as above.
        unsafe {
            assert_eq!(cowcore_stats(h.0, &raw mut stats), CowcoreStatus::Ok);
            assert_eq!(cowcore_asid(h.0, 1, &raw mut asid), CowcoreStatus::Ok);
            assert_eq!(cowcore_free_frames(h.0, &raw mut free), CowcoreStatus::Ok);
            assert_eq!(cowcore_check(h.0), CowcoreStatus::Ok);
        }
        assert_eq!(stats, CowcoreStats::from(core.stats()));
        assert!(stats.faults_write > 0);
        assert_eq!((asid, free), (core.asid(1).unwrap(), core.free_frames()));
    }
}

/// Events not taken stay for the next call; starting again keeps them, stopping drops them.
#[test]
fn take_events_keeps_the_rest() {
    let h = Handle::new(8 << 20, c"6.15");
    let mut a = 0;
    let mut rec = CowcoreAccess::default();
    // SAFETY: a live handle; writable out-pointers.
    unsafe {
        assert_eq!(cowcore_record_events(h.0, true), CowcoreStatus::Ok);
        assert_eq!(cowcore_mmap(h.0, 1, 8 * K4, &raw mut a), CowcoreStatus::Ok);
        for i in 0..4 {
            assert_eq!(
                cowcore_access(h.0, 1, a + i * K4, true, 1, &raw mut rec),
                CowcoreStatus::Ok
            );
        }
    }
    let all = take_all(&h, 1);
    assert!(all.len() >= 4, "{all:?}");
    assert_eq!(all[0].kind, CowcoreEventKind::FaultWrite as u8);
    // SAFETY: as above.
    unsafe {
        let s = cowcore_access(h.0, 1, a + 5 * K4, true, 1, &raw mut rec);
        assert_eq!(s, CowcoreStatus::Ok);
    }
    // One event taken: the rest stays in the handle; starting again keeps it, in order.
    let mut one = [CowcoreEvent::default()];
    let mut n = 0;
    // SAFETY: a one-record buffer; a writable count.
    let s = unsafe { cowcore_take_events(h.0, one.as_mut_ptr(), 1, &raw mut n) };
    assert_eq!(
        (s, n, one[0].kind),
        (CowcoreStatus::Ok, 1, CowcoreEventKind::FaultWrite as u8)
    );
    // SAFETY: as above.
    unsafe {
        assert_eq!(cowcore_record_events(h.0, true), CowcoreStatus::Ok);
    }
    assert!(!take_all(&h, 8).is_empty());
    // SAFETY: as above.
    unsafe {
        let s = cowcore_access(h.0, 1, a + 6 * K4, true, 1, &raw mut rec);
        assert_eq!(s, CowcoreStatus::Ok);
        let s = cowcore_take_events(h.0, one.as_mut_ptr(), 1, &raw mut n);
        assert_eq!((s, n), (CowcoreStatus::Ok, 1));
        assert_eq!(cowcore_record_events(h.0, false), CowcoreStatus::Ok);
        assert_eq!(cowcore_record_events(h.0, true), CowcoreStatus::Ok);
    }
    assert!(take_all(&h, 8).is_empty());
}

#[test]
fn failures_have_codes_and_messages() {
    let mut m = std::ptr::null_mut();
    // SAFETY: NUL-terminated strings; a writable out-pointer.
    unsafe {
        let s = cowcore_machine_new(8 << 20, 4, c"6.13".as_ptr(), &raw mut m);
        assert_eq!(s, CowcoreStatus::InvalidArgument);
        assert!(m.is_null());
        assert!(last_error(std::ptr::null()).contains("6.13"));
        let s = cowcore_machine_new(8 << 20, 260, c"6.15".as_ptr(), &raw mut m);
        assert_eq!(s, CowcoreStatus::InvalidArgument); // not truncated to 4
        let s = cowcore_machine_new(3 << 20, 4, c"6.15".as_ptr(), &raw mut m);
        assert_eq!(s, CowcoreStatus::InvalidArgument);
        let bad_utf8 = [0xffu8, 0];
        let s = cowcore_machine_new(8 << 20, 4, bad_utf8.as_ptr().cast(), &raw mut m);
        assert_eq!(s, CowcoreStatus::InvalidArgument);
        assert!(m.is_null());
    }
    let h = Handle::new(8 << 20, c"6.15");
    assert_eq!(h.error(), "");
    let (mut a, mut child) = (0, 0);
    // SAFETY: a live handle; NUL-terminated strings; writable out-pointers.
    unsafe {
        assert_eq!(
            cowcore_fork(h.0, 9, &raw mut child),
            CowcoreStatus::NoSuchProcess
        );
        assert_eq!(h.error(), "no process with pid 9");
        assert_eq!(
            cowcore_mmap(h.0, 1, 100, &raw mut a),
            CowcoreStatus::InvalidArgument
        );
        let message = h.error();
        assert!(
            message.starts_with("invalid argument:") && message.contains("100"),
            "{message}"
        );
        assert_eq!(cowcore_mmap(h.0, 1, K4, &raw mut a), CowcoreStatus::Ok);
        assert_eq!(h.error(), message); // a success leaves the last failure's message
        let s = cowcore_mprotect(h.0, 1, a, K4, c"rwx".as_ptr());
        assert_eq!(s, CowcoreStatus::InvalidArgument);
        assert!(h.error().contains("rwx"));
        let s = cowcore_mprotect(h.0, 1, a + K4, K4, c"r".as_ptr());
        assert_eq!(s, CowcoreStatus::InvalidAddress);
        assert_eq!(
            cowcore_set_thp_size(h.0, 1, c"always".as_ptr()),
            CowcoreStatus::InvalidArgument
        );
        assert_eq!(
            cowcore_set_thp_enabled(h.0, c"sometimes".as_ptr()),
            CowcoreStatus::InvalidArgument
        );
        assert_eq!(
            cowcore_set_policy(h.0, c"no_such".as_ptr(), true),
            CowcoreStatus::InvalidArgument
        );
        assert_eq!(
            cowcore_madvise(h.0, 1, a, K4, c"dontneed".as_ptr()),
            CowcoreStatus::Ok
        );
        assert_eq!(cowcore_exit(h.0, 1), CowcoreStatus::Ok);
        assert_eq!(cowcore_exit(h.0, 1), CowcoreStatus::NoSuchProcess);
        assert_eq!(h.error(), "process 1 has exited");
        let mut rec = CowcoreAccess::default();
        assert_eq!(
            cowcore_access(h.0, 1, a, true, 1, &raw mut rec),
            CowcoreStatus::NoSuchProcess
        );
        assert_eq!(rec, CowcoreAccess::default()); // not written on failure
    }
    for (i, s) in [
        (0u8, "OK"),
        (1, "NO_SUCH_PROCESS"),
        (7, "NULL_POINTER"),
        (8, "PANIC"),
        (9, "PROCESS_LIMIT"),
        (10, "UNKNOWN"),
        (255, "UNKNOWN"),
    ] {
        // SAFETY: a static NUL-terminated string.
        let name = unsafe { std::ffi::CStr::from_ptr(cowcore_status_name(i)) };
        assert_eq!(name.to_str().unwrap(), s);
    }
    // SAFETY: a static NUL-terminated string.
    let v = unsafe { std::ffi::CStr::from_ptr(cowcore_version()) };
    assert_eq!(v.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
}

/// Issue 16: `ref`, `pin`, `unshare` and their releases through the C API are the core's:
/// the same statuses (a release of a range not held is `INVALID_ARGUMENT`), the same
/// unshare records, the same counters afterwards.
#[test]
fn references_pins_and_unshare_are_the_cores() {
    let h = Handle::new(16 << 20, c"6.15");
    let mut core = Machine::new(16 << 20, 4, Profile::V6_15).unwrap();
    let mut a = 0;
    let mut child = 0;
    // SAFETY: a live handle; writable out-pointers.
    unsafe {
        assert_eq!(cowcore_mmap(h.0, 1, 2 << 20, &raw mut a), CowcoreStatus::Ok);
        let mut rec = CowcoreAccess::default();
        assert_eq!(
            cowcore_access(h.0, 1, a, true, 5, &raw mut rec),
            CowcoreStatus::Ok
        );
        assert_eq!(
            cowcore_access(h.0, 1, a + K4, true, 6, &raw mut rec),
            CowcoreStatus::Ok
        );
        assert_eq!(cowcore_ref(h.0, 1, a, K4), CowcoreStatus::Ok);
        assert_eq!(cowcore_pin(h.0, 1, a + K4, K4), CowcoreStatus::Ok);
        assert_eq!(cowcore_fork(h.0, 1, &raw mut child), CowcoreStatus::Ok);
        assert_eq!(
            cowcore_unref(h.0, 1, a, 2 * K4),
            CowcoreStatus::InvalidArgument
        );
    }
    let va = VirtAddr::new(a);
    let vb = VirtAddr::new(a + K4);
    core.mmap(1, 2 << 20).unwrap();
    core.access(1, va, true, 5).unwrap();
    core.access(1, vb, true, 6).unwrap();
    core.ref_pages(1, va, K4).unwrap();
    core.pin_pages(1, vb, K4).unwrap();
    assert_eq!(core.fork(1).unwrap(), child);
    let mut out = [CowcoreAccess::default(); 2];
    // SAFETY: two records in `out`.
    let s = unsafe { cowcore_unshare(h.0, child, a, 2 * K4, out.as_mut_ptr(), 2) };
    assert_eq!(s, CowcoreStatus::Ok, "{}", h.error());
    let want = core.unshare(child, va, 2 * K4).unwrap();
    assert_eq!(out, [want[0].into(), want[1].into()]);
    assert_eq!(out[0].outcome, CowcoreOutcome::Unshare as u8);
    // SAFETY: as above; a wrong record count is refused before anything is done.
    unsafe {
        assert_eq!(
            cowcore_unshare(h.0, child, a, 2 * K4, out.as_mut_ptr(), 1),
            CowcoreStatus::InvalidArgument
        );
        assert_eq!(cowcore_unpin(h.0, 1, a + K4, K4), CowcoreStatus::Ok);
        assert_eq!(cowcore_unref(h.0, 1, a, K4), CowcoreStatus::Ok);
        assert_eq!(cowcore_check(h.0), CowcoreStatus::Ok);
    }
    core.unpin_pages(1, vb, K4).unwrap();
    core.unref_pages(1, va, K4).unwrap();
    let (mut stats, mut free) = (CowcoreStats::default(), 0);
    // SAFETY: as above.
    unsafe {
        assert_eq!(cowcore_stats(h.0, &raw mut stats), CowcoreStatus::Ok);
        assert_eq!(cowcore_free_frames(h.0, &raw mut free), CowcoreStatus::Ok);
    }
    assert_eq!(
        (stats, free),
        (CowcoreStats::from(core.stats()), core.free_frames())
    );
}

/// Issue 16: `cowcore_drop_caches` splits a partially mapped 64K folio as the core does: the
/// same statuses and the same counters afterwards (`split` of 64K is 1, `nr_anon` back to 0).
#[test]
fn drop_caches_is_the_cores() {
    let h = Handle::new(16 << 20, c"6.12");
    let mut core = Machine::new(16 << 20, 4, Profile::V6_12).unwrap();
    let mut a = 0;
    // SAFETY: a live handle; writable out-pointers; static NUL-terminated strings.
    unsafe {
        assert_eq!(
            cowcore_set_thp_size(h.0, 4, c"always".as_ptr()),
            CowcoreStatus::Ok
        );
        assert_eq!(cowcore_mmap(h.0, 1, 2 << 20, &raw mut a), CowcoreStatus::Ok);
        let mut rec = CowcoreAccess::default();
        assert_eq!(
            cowcore_access(h.0, 1, a, true, 5, &raw mut rec),
            CowcoreStatus::Ok
        );
        assert_eq!(
            cowcore_madvise(h.0, 1, a, 4 * K4, c"dontneed".as_ptr()),
            CowcoreStatus::Ok
        );
        assert_eq!(cowcore_drop_caches(h.0), CowcoreStatus::Ok);
        assert_eq!(
            cowcore_drop_caches(std::ptr::null_mut()),
            CowcoreStatus::NullPointer
        );
        assert_eq!(cowcore_check(h.0), CowcoreStatus::Ok);
    }
    core.set_thp_size(4, ThpSizeMode::Always).unwrap();
    let va = core.mmap(1, 2 << 20).unwrap();
    assert_eq!(va.as_u64(), a);
    core.access(1, va, true, 5).unwrap();
    core.madvise(1, va, 4 * K4, Advice::DontNeed).unwrap();
    core.drop_caches().unwrap();
    let mut stats = CowcoreStats::default();
    // SAFETY: as above.
    unsafe { assert_eq!(cowcore_stats(h.0, &raw mut stats), CowcoreStatus::Ok) };
    assert_eq!(stats, CowcoreStats::from(core.stats()));
    assert_eq!((stats.split[2], stats.nr_anon[2]), (1, 0));
}

/// Issue 16: `cowcore_collapse` is the core's `collapse`: the same results (a success, then
/// `PAGE_COUNT` with a ref), the same counters afterwards.
#[test]
fn collapse_is_the_cores() {
    let h = Handle::new(16 << 20, c"6.12");
    let mut core = Machine::new(16 << 20, 4, Profile::V6_12).unwrap();
    let (mut a, mut r) = (0, 0u8);
    let two_m = 2u64 << 20;
    // SAFETY: a live handle; writable out-pointers.
    unsafe {
        assert_eq!(
            cowcore_mmap(h.0, 1, 2 * two_m, &raw mut a),
            CowcoreStatus::Ok
        );
        let mut rec = CowcoreAccess::default();
        for off in [0, two_m] {
            assert_eq!(
                cowcore_access(h.0, 1, a + off, true, 5, &raw mut rec),
                CowcoreStatus::Ok
            );
        }
        assert_eq!(cowcore_ref(h.0, 1, a + two_m, K4), CowcoreStatus::Ok);
        assert_eq!(
            cowcore_collapse(h.0, 1, a, 2 * two_m, &raw mut r),
            CowcoreStatus::Ok
        );
        assert_eq!(r, CowcoreScanResult::PageCount as u8);
        assert_eq!(
            cowcore_collapse(h.0, 1, a + K4, K4, std::ptr::null_mut()),
            CowcoreStatus::NullPointer
        );
        assert_eq!(cowcore_check(h.0), CowcoreStatus::Ok);
    }
    let va = VirtAddr::new(a);
    core.mmap(1, 2 * two_m).unwrap();
    core.access(1, va, true, 5).unwrap();
    core.access(1, VirtAddr::new(a + two_m), true, 5).unwrap();
    core.ref_pages(1, VirtAddr::new(a + two_m), K4).unwrap();
    assert_eq!(
        core.collapse(1, va, 2 * two_m).unwrap(),
        ScanResult::PageCount
    );
    let mut stats = CowcoreStats::default();
    // SAFETY: as above.
    unsafe { assert_eq!(cowcore_stats(h.0, &raw mut stats), CowcoreStatus::Ok) };
    assert_eq!(stats, CowcoreStats::from(core.stats()));
    assert_eq!(stats.thp_collapse_alloc, 1);
}
