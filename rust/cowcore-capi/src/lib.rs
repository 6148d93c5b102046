//! The C API of cowcore: [`cowcore_core::Machine`] behind an opaque `cowcore_machine*`, for
//! simulators written in C or C++ (gem5, `ChampSim`, SST, Sniper) that embed cowcore.
//!
//! The header is `include/cowcore.h`, generated from this crate by cbindgen
//! (`tests/header.rs` fails when it is stale; `COWCORE_BLESS=1` rewrites it). The README
//! shows the C usage; `examples/replay.c` is a complete program.
//!
//! # The contract every function keeps
//!
//! * It returns a [`CowcoreStatus`] (`COWCORE_STATUS_OK` or why not) and writes results
//!   through out-pointers, which are written only on success. The message of the last
//!   failure on a handle is `cowcore_last_error(m)`; `cowcore_last_error(NULL)` is the one
//!   of the last call on this thread that had no handle to keep it (a failed
//!   `cowcore_machine_new`, or a NULL handle).
//! * It checks every pointer for NULL (and for the alignment of its type) and every length,
//!   and returns `COWCORE_STATUS_NULL_POINTER` / `COWCORE_STATUS_INVALID_ARGUMENT` rather
//!   than touching memory. A zero-length buffer may be NULL.
//! * No panic unwinds into C: each call runs under [`std::panic::catch_unwind`]; a panic
//!   (a bug in cowcore) returns `COWCORE_STATUS_PANIC` and poisons the handle.
//! * What it cannot check is the caller's: a handle must come from `cowcore_machine_new`
//!   and not be freed (using a freed handle is undefined behaviour), a buffer must hold
//!   the `n` elements it is said to hold, strings must be NUL-terminated, and one handle
//!   must not be used by two threads at once (different handles are independent; a handle
//!   may move between threads).
//!
//! An access never fails because of the address: an address outside user space or without
//! a VMA is a `COWCORE_OUTCOME_SEGFAULT` record with status `OK`, as a fault out of memory is
//! a `COWCORE_OUTCOME_OUT_OF_MEMORY` record. Only a bad pid or a bad argument is an error.

mod types;

use cowcore_core::{AccessKinds, CowError, Machine, Profile, ThpMode, ThpSizeMode, VirtAddr};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::ffi::{c_char, c_int, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

pub use types::{
    CowcoreAccess, CowcoreEvent, CowcoreEventKind, CowcoreMapLevel, CowcoreOutcome, CowcoreReason,
    CowcoreScanResult, CowcoreStats, CowcoreStatus, CowcoreZapCause, COWCORE_ACCESS_COPIED,
    COWCORE_ACCESS_FAULT_AROUND, COWCORE_ACCESS_FELL_BACK, COWCORE_ACCESS_FIRST_TOUCH,
    COWCORE_ACCESS_SPLIT, COWCORE_ACCESS_SWAP_IN, COWCORE_ACCESS_ZEROED, COWCORE_NO_PHYS,
};

/// An opaque simulated machine: the core `Machine`, the events taken from it but not yet
/// handed to the caller, and the last error message.
#[derive(Debug)]
pub struct CowcoreMachine {
    machine: Machine,
    /// Events drained from the core and not yet copied out (`cowcore_take_events` hands
    /// out at most `cap` per call and keeps the rest here, in order).
    pending: VecDeque<CowcoreEvent>,
    /// The last failure's message (C string, valid until the next failing call).
    last_error: CString,
    /// Set by a panic: the machine may be half-updated, so nothing runs on it again.
    poisoned: bool,
}

/// Why a call failed, before it becomes a status and a message.
#[derive(Debug)]
struct Failure {
    status: CowcoreStatus,
    msg: String,
}

impl Failure {
    fn null(what: &str) -> Self {
        Self {
            status: CowcoreStatus::NullPointer,
            msg: format!("{what} is NULL"),
        }
    }

    fn invalid(msg: impl Into<String>) -> Self {
        Self {
            status: CowcoreStatus::InvalidArgument,
            msg: msg.into(),
        }
    }
}

impl From<CowError> for Failure {
    fn from(e: CowError) -> Self {
        let status = match e {
            CowError::NoSuchProcess(_) | CowError::ProcessExited(_) => CowcoreStatus::NoSuchProcess,
            CowError::InvalidArgument(_) => CowcoreStatus::InvalidArgument,
            CowError::InvalidAddress(_) => CowcoreStatus::InvalidAddress,
            CowError::Segfault { .. } => CowcoreStatus::Segfault,
            CowError::OutOfMemory => CowcoreStatus::OutOfMemory,
            CowError::Invariant { .. } => CowcoreStatus::Invariant,
            CowError::ProcessLimit { .. } => CowcoreStatus::ProcessLimit,
            CowError::NotModelled(_) => CowcoreStatus::NotModelled,
        };
        Self {
            status,
            msg: e.to_string(),
        }
    }
}

thread_local! {
    /// The message of the last failure that had no handle to keep it.
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// A message as a C string (an interior NUL, impossible from the core, becomes `?`).
fn c_message(msg: &str) -> CString {
    CString::new(msg.replace('\0', "?")).unwrap_or_default()
}

fn fail_without_handle(f: Failure) -> CowcoreStatus {
    let Failure { status, msg } = f;
    LAST_ERROR.with(|e| *e.borrow_mut() = c_message(&msg));
    status
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let what = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    format!("cowcore panicked (a bug; the machine is poisoned, free it): {what}")
}

/// The one chokepoint: checks the handle, runs `f` under `catch_unwind`, records a failure's
/// message on the handle.
///
/// # Safety
/// `m` is NULL or a live handle from [`cowcore_machine_new`] that no other thread uses.
unsafe fn with_machine(
    m: *mut CowcoreMachine,
    f: impl FnOnce(&mut CowcoreMachine) -> Result<(), Failure>,
) -> CowcoreStatus {
    if !m.is_aligned() {
        return fail_without_handle(Failure::invalid("the machine handle is misaligned"));
    }
    // SAFETY: aligned, and NULL or a live, unshared handle by the caller's contract.
    let Some(h) = (unsafe { m.as_mut() }) else {
        return fail_without_handle(Failure::null("the machine handle"));
    };
    if h.poisoned {
        h.last_error = c_message("the machine is poisoned by an earlier panic; free it");
        return CowcoreStatus::Panic;
    }
    let result = catch_unwind(AssertUnwindSafe(|| f(h))).unwrap_or_else(|payload| {
        h.poisoned = true;
        Err(Failure {
            status: CowcoreStatus::Panic,
            msg: panic_message(&*payload),
        })
    });
    match result {
        Ok(()) => CowcoreStatus::Ok,
        Err(failure) => {
            h.last_error = c_message(&failure.msg);
            failure.status
        }
    }
}

/// Writes `value` through an out-pointer after checking it.
///
/// # Safety
/// `out` is NULL or valid for a write of a `T`.
unsafe fn put<T>(out: *mut T, what: &str, value: T) -> Result<(), Failure> {
    if out.is_null() {
        return Err(Failure::null(what));
    }
    if !out.is_aligned() {
        return Err(Failure::invalid(format!("{what} is misaligned")));
    }
    // SAFETY: non-NULL, aligned, and valid for writes by the caller's contract.
    unsafe { out.write(value) };
    Ok(())
}

/// Checks an out-pointer before any work, so a call with a NULL out-pointer changes nothing.
fn check_out<T>(out: *mut T, what: &str) -> Result<(), Failure> {
    if out.is_null() {
        Err(Failure::null(what))
    } else if !out.is_aligned() {
        Err(Failure::invalid(format!("{what} is misaligned")))
    } else {
        Ok(())
    }
}

/// A NUL-terminated UTF-8 string argument.
///
/// # Safety
/// `s` is NULL or points to a NUL-terminated string that lives for the call.
unsafe fn string_arg<'a>(s: *const c_char, what: &str) -> Result<&'a str, Failure> {
    if s.is_null() {
        return Err(Failure::null(what));
    }
    // SAFETY: non-NULL and NUL-terminated by the caller's contract.
    let c = unsafe { CStr::from_ptr(s) };
    c.to_str()
        .map_err(|_| Failure::invalid(format!("{what} is not UTF-8")))
}

/// A slice of `n` elements from a C buffer; NULL is allowed when `n` is 0.
///
/// # Safety
/// When `n > 0`, `p` is NULL or valid for reads of `n` elements for the call.
unsafe fn slice_arg<'a, T>(p: *const T, n: usize, what: &str) -> Result<&'a [T], Failure> {
    if n == 0 {
        return Ok(&[]);
    }
    check_buffer(p, n, what)?;
    // SAFETY: non-NULL, aligned, n elements within isize::MAX bytes (checked), readable by
    // the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(p, n) })
}

/// Checks a buffer of `n > 0` elements: non-NULL, aligned, and not longer than a Rust slice
/// may be (`isize::MAX` bytes), which a huge `n` would otherwise break.
fn check_buffer<T>(p: *const T, n: usize, what: &str) -> Result<(), Failure> {
    if p.is_null() {
        return Err(Failure::null(what));
    }
    if !p.is_aligned() {
        return Err(Failure::invalid(format!("{what} is misaligned")));
    }
    if n > isize::MAX as usize / std::mem::size_of::<T>().max(1) {
        return Err(Failure::invalid(format!(
            "{what}: {n} elements is too many"
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Library information

/// The version of the library (the cowcore crate version), a static string.
#[unsafe(no_mangle)]
pub extern "C" fn cowcore_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The name of a status code (`"OK"`, `"NO_SUCH_PROCESS"`, ...; `"UNKNOWN"` for a number
/// that is no code), a static string.
#[unsafe(no_mangle)]
pub extern "C" fn cowcore_status_name(status: u8) -> *const c_char {
    CowcoreStatus::ALL
        .get(usize::from(status))
        .map_or(c"UNKNOWN", |s| s.name())
        .as_ptr()
}

/// The name of a `cowcore_outcome` (`"COW_COPY"`, as Python's `cowcore.outcome.Outcome`;
/// `"UNKNOWN"` for a number that is none), a static string.
#[unsafe(no_mangle)]
pub extern "C" fn cowcore_outcome_name(outcome: u8) -> *const c_char {
    static_name(&types::OUTCOME_NAMES, outcome)
}

/// The name of a `cowcore_reason` (`"LARGE_MAYBE_SHARED"`), a static string.
#[unsafe(no_mangle)]
pub extern "C" fn cowcore_reason_name(reason: u8) -> *const c_char {
    static_name(&types::REASON_NAMES, reason)
}

/// The name of a `cowcore_event_kind` (`"TLB_FLUSH"`), a static string.
#[unsafe(no_mangle)]
pub extern "C" fn cowcore_event_kind_name(kind: u8) -> *const c_char {
    static_name(&types::EVENT_KIND_NAMES, kind)
}

fn static_name(names: &[&'static CStr], code: u8) -> *const c_char {
    names
        .get(usize::from(code))
        .copied()
        .unwrap_or(c"UNKNOWN")
        .as_ptr()
}

/// The message of the last failed call on `m`, or with `m` NULL, of the last call on this
/// thread that had no handle to keep it (a failed `cowcore_machine_new`, a NULL handle).
/// `""` when there was none. The string stays valid until the next failing call on the
/// same handle (or thread); copy it to keep it.
///
/// # Safety
/// `m` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cowcore_last_error(m: *const CowcoreMachine) -> *const c_char {
    if m.is_null() || !m.is_aligned() {
        return LAST_ERROR.with(|e| e.borrow().as_ptr());
    }
    // SAFETY: non-NULL, aligned, live by the caller's contract; only read.
    unsafe { (*m).last_error.as_ptr() }
}

// ---------------------------------------------------------------------------------------
// Life cycle

/// Creates a machine with `memory_bytes` of RAM (a multiple of 2 MiB in [4 MiB, 1 TiB];
/// about 20 bytes of host memory per 4 KiB frame in use), `levels` of paging (4 or 5) and a kernel
/// `profile` (`"6.1"`, `"6.12"`, `"6.15"`), and stores its handle in `*out`. Process 1 exists.
///
/// # Errors
/// `NULL_POINTER` (`profile`, `out`), `INVALID_ARGUMENT` (size, levels, unknown profile);
/// `*out` is then left as it was, and `cowcore_last_error(NULL)` says why.
///
/// # Safety
/// `profile` is NULL or NUL-terminated; `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cowcore_machine_new(
    memory_bytes: u64,
    levels: u32,
    profile: *const c_char,
    out: *mut *mut CowcoreMachine,
) -> CowcoreStatus {
    let result = catch_unwind(|| {
        check_out(out, "out")?;
        // SAFETY: forwarded caller contract.
        let profile: Profile = unsafe { string_arg(profile, "profile") }?.parse()?;
        let levels = u8::try_from(levels)
            .map_err(|_| Failure::invalid(format!("levels must be 4 or 5, not {levels}")))?;
        let machine = Machine::new(memory_bytes, levels, profile)?;
        let handle = Box::into_raw(Box::new(CowcoreMachine {
            machine,
            pending: VecDeque::new(),
            last_error: CString::default(),
            poisoned: false,
        }));
        // SAFETY: checked non-NULL and aligned; writable by the caller's contract.
        unsafe { out.write(handle) };
        Ok(())
    });
    match result {
        Ok(Ok(())) => CowcoreStatus::Ok,
        Ok(Err(f)) => fail_without_handle(f),
        Err(payload) => fail_without_handle(Failure {
            status: CowcoreStatus::Panic,
            msg: panic_message(&*payload),
        }),
    }
}

/// Frees a machine. NULL is ignored. The handle must not be used afterwards (that is
/// undefined behaviour, which this library cannot detect).
///
/// # Safety
/// `m` is NULL or a live handle, not used again.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cowcore_machine_free(m: *mut CowcoreMachine) {
    if m.is_null() || !m.is_aligned() {
        return;
    }
    // SAFETY: a live handle from Box::into_raw in cowcore_machine_new, given up by the
    // caller. A panic while dropping (none is known) must not unwind into C.
    let _ = catch_unwind(AssertUnwindSafe(|| drop(unsafe { Box::from_raw(m) })));
}

// ---------------------------------------------------------------------------------------
// Processes and mappings

/// The init process's pid (1).
///
/// # Safety
/// `m` a live handle or NULL; `out` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cowcore_init_pid(m: *mut CowcoreMachine, out: *mut u32) -> CowcoreStatus {
    let body = |h: &mut CowcoreMachine| {
        // SAFETY: the out-pointer is NULL or writable (the caller's contract).
        unsafe { put(out, "out", h.machine.init_pid()) }
    };
    // SAFETY: `m` is NULL or a live, unshared handle (the caller's contract).
    unsafe { with_machine(m, body) }
}

/// The address-space id of a process (1 for init, the next number per fork; never reused).
///
/// # Safety
/// As [`cowcore_init_pid`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cowcore_asid(
    m: *mut CowcoreMachine,
    pid: u32,
    out: *mut u64,
) -> CowcoreStatus {
    let body = |h: &mut CowcoreMachine| {
        // SAFETY: the out-pointer is NULL or writable (the caller's contract).
        unsafe { put(out, "out", h.machine.asid(pid)?) }
    };
    // SAFETY: `m` is NULL or a live, unshared handle (the caller's contract).
    unsafe { with_machine(m, body) }
}

/// A new private anonymous read/write mapping of `length` bytes (a multiple of 4 KiB),
/// placed top-down; its address goes to `*addr_out`.
///
/// # Safety
/// As [`cowcore_init_pid`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cowcore_mmap(
    m: *mut CowcoreMachine,
    pid: u32,
    length: u64,
    addr_out: *mut u64,
) -> CowcoreStatus {
    let body = |h: &mut CowcoreMachine| {
        check_out(addr_out, "addr_out")?;
        let a = h.machine.mmap(pid, length)?;
        // SAFETY: the out-pointer is NULL or writable (the caller's contract).
        unsafe { put(addr_out, "addr_out", a.as_u64()) }
    };
    // SAFETY: `m` is NULL or a live, unshared handle (the caller's contract).
    unsafe { with_machine(m, body) }
}

/// A new mapping at exactly `addr` (page-aligned); `INVALID_ADDRESS` if the range is outside
/// user space or meets an existing mapping (`EEXIST`). `addr_out` may be NULL.
///
/// # Safety
/// As [`cowcore_init_pid`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cowcore_mmap_fixed(
    m: *mut CowcoreMachine,
    pid: u32,
    addr: u64,
    length: u64,
    addr_out: *mut u64,
) -> CowcoreStatus {
    let body = |h: &mut CowcoreMachine| {
        if !addr_out.is_null() {
            check_out(addr_out, "addr_out")?;
        }
        let a = h.machine.mmap_fixed(pid, VirtAddr::new(addr), length)?;
        if addr_out.is_null() {
            Ok(())
        } else {
            // SAFETY: the out-pointer is NULL or writable (the caller's contract).
            unsafe { put(addr_out, "addr_out", a.as_u64()) }
        }
    };
    // SAFETY: `m` is NULL or a live, unshared handle (the caller's contract).
    unsafe { with_machine(m, body) }
}

/// Unmaps `[addr, addr + length)`; unmapped pages in the range are fine.
///
/// # Safety
/// `m` a live handle or NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cowcore_munmap(
    m: *mut CowcoreMachine,
    pid: u32,
    addr: u64,
    length: u64,
) -> CowcoreStatus {
    let body = |h: &mut CowcoreMachine| Ok(h.machine.munmap(pid, VirtAddr::new(addr), length)?);
    // SAFETY: `m` is NULL or a live, unshared handle (the caller's contract).
    unsafe { with_machine(m, body) }
}

/// Forks `pid`; the child's pid goes to `*child_out`.
///
/// # Safety
/// As [`cowcore_init_pid`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cowcore_fork(
    m: *mut CowcoreMachine,
    pid: u32,
    child_out: *mut u32,
) -> CowcoreStatus {
    let body = |h: &mut CowcoreMachine| {
        check_out(child_out, "child_out")?;
        let child = h.machine.fork(pid)?;
        // SAFETY: the out-pointer is NULL or writable (the caller's contract).
        unsafe { put(child_out, "child_out", child) }
    };
    // SAFETY: `m` is NULL or a live, unshared handle (the caller's contract).
    unsafe { with_machine(m, body) }
}

/// Ends a process (its pid is never reused).
///
/// # Safety
/// `m` a live handle or NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cowcore_exit(m: *mut CowcoreMachine, pid: u32) -> CowcoreStatus {
    let body = |h: &mut CowcoreMachine| Ok(h.machine.exit(pid)?);
    // SAFETY: `m` is NULL or a live, unshared handle (the caller's contract).
    unsafe { with_machine(m, body) }
}

/// Changes the protection of a fully mapped range; `prot` is `"none"`, `"r"` or `"rw"`.
///
/// # Safety
/// `m` a live handle or NULL; `prot` NULL or NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cowcore_mprotect(
    m: *mut CowcoreMachine,
    pid: u32,
    addr: u64,
    length: u64,
    prot: *const c_char,
) -> CowcoreStatus {
    let body = |h: &mut CowcoreMachine| {
        // SAFETY: the string is NULL or NUL-terminated (the caller's contract).
        let prot = unsafe { string_arg(prot, "prot") }?.parse()?;
        Ok(h.machine.mprotect(pid, VirtAddr::new(addr), length, prot)?)
    };
    // SAFETY: `m` is NULL or a live, unshared handle (the caller's contract).
    unsafe { with_machine(m, body) }
}

/// Applies an advice to a fully mapped range: `"hugepage"`, `"nohugepage"`, `"dontneed"`,
/// `"dontfork"`, `"dofork"`, `"wipeonfork"`, `"keeponfork"`.
///
/// # Safety
/// As [`cowcore_mprotect`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cowcore_madvise(
    m: *mut CowcoreMachine,
    pid: u32,
    addr: u64,
    length: u64,
    advice: *const c_char,
) -> CowcoreStatus {
    let body = |h: &mut CowcoreMachine| {
        // SAFETY: the string is NULL or NUL-terminated (the caller's contract).
        let advice = unsafe { string_arg(advice, "advice") }?.parse()?;
        Ok(h.machine
            .madvise(pid, VirtAddr::new(addr), length, advice)?)
    };
    // SAFETY: `m` is NULL or a live, unshared handle (the caller's contract).
    unsafe { with_machine(m, body) }
}

/// `madvise(MADV_PAGEOUT)` (issue 16): reclaims to the swap device the private anonymous
/// folios of a fully mapped range that only this range maps; a length of 0 does nothing.
///
/// # Safety
/// `m` a live handle or NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cowcore_pageout(
    m: *mut CowcoreMachine,
    pid: u32,
    addr: u64,
    length: u64,
) -> CowcoreStatus {
    let body = |h: &mut CowcoreMachine| Ok(h.machine.pageout(pid, VirtAddr::new(addr), length)?);
    // SAFETY: `m` is NULL or a live, unshared handle (the caller's contract).
    unsafe { with_machine(m, body) }
}

// ---------------------------------------------------------------------------------------
// Policy

/// Sets `hugepages-<size>/enabled` for a folio order in 2..=9 (4 = 64K, 9 = 2M): `mode` is
/// `"always"`, `"madvise"`, `"inherit"` or `"never"`.
///
/// # Safety
/// `m` a live handle or NULL; `mode` NULL or NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cowcore_set_thp_size(
    m: *mut CowcoreMachine,
    order: u32,
    mode: *const c_char,
) -> CowcoreStatus {
    let body = |h: &mut CowcoreMachine| {
        // SAFETY: the string is NULL or NUL-terminated (the caller's contract).
        let mode: ThpSizeMode = unsafe { string_arg(mode, "mode") }?.parse()?;
        Ok(h.machine.set_thp_size(order, mode)?)
    };
    // SAFETY: `m` is NULL or a live, unshared handle (the caller's contract).
    unsafe { with_machine(m, body) }
}

/// Sets `transparent_hugepage/enabled`: `"always"`, `"madvise"` or `"never"`.
///
/// # Safety
/// As [`cowcore_set_thp_size`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cowcore_set_thp_enabled(
    m: *mut CowcoreMachine,
    mode: *const c_char,
) -> CowcoreStatus {
    let body = |h: &mut CowcoreMachine| {
        // SAFETY: the string is NULL or NUL-terminated (the caller's contract).
        let mode: ThpMode = unsafe { string_arg(mode, "mode") }?.parse()?;
        h.machine.set_thp_enabled(mode);
        Ok(())
    };
    // SAFETY: `m` is NULL or a live, unshared handle (the caller's contract).
    unsafe { with_machine(m, body) }
}

/// Sets a policy toggle by name (`"use_zero_page"`, `"cow_reuse_pte_mapped_thp"`, ...; the
/// names of `cowcore_core::POLICIES`).
///
/// # Safety
/// `m` a live handle or NULL; `name` NULL or NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cowcore_set_policy(
    m: *mut CowcoreMachine,
    name: *const c_char,
    value: bool,
) -> CowcoreStatus {
    let body = |h: &mut CowcoreMachine| {
        // SAFETY: the string is NULL or NUL-terminated (the caller's contract).
        let name = unsafe { string_arg(name, "name") }?;
        Ok(h.machine.set_policy(name, value)?)
    };
    // SAFETY: `m` is NULL or a live, unshared handle (the caller's contract).
    unsafe { with_machine(m, body) }
}

// ---------------------------------------------------------------------------------------
// Accesses

/// One user load (`write` false) or store of the byte at `addr`; a store writes `value` into
/// the page's first 8 bytes. The record goes to `*out`. A segfault or an out-of-memory fault
/// is an outcome in the record (status `OK`), not an error.
///
/// # Errors
/// `NO_SUCH_PROCESS`, `NULL_POINTER` (`out`).
///
/// # Safety
/// `m` a live handle or NULL; `out` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cowcore_access(
    m: *mut CowcoreMachine,
    pid: u32,
    addr: u64,
    write: bool,
    value: u64,
    out: *mut CowcoreAccess,
) -> CowcoreStatus {
    let body = |h: &mut CowcoreMachine| {
        check_out(out, "out")?;
        let a = h.machine.access(pid, VirtAddr::new(addr), write, value)?;
        // SAFETY: the out-pointer is NULL or writable (the caller's contract).
        unsafe { put(out, "out", a.into()) }
    };
    // SAFETY: `m` is NULL or a live, unshared handle (the caller's contract).
    unsafe { with_machine(m, body) }
}

/// How many records [`cowcore_access_batch`] converts at a time: the core writes Rust
/// records into a buffer of this size, copied out as C records, so the host memory a batch
/// takes is bounded whatever `n` is.
const BATCH_CHUNK: usize = 1024;

/// `n` accesses in order, as [`cowcore_access`] each: `addrs[i]`, a write when
/// `writes[i] != 0` (any nonzero byte is a write, C's truth), or, with `writes` NULL, all
/// writes when `all_writes` is nonzero and all reads otherwise. Records go to `out[0..n)`.
/// `n` may be 0 (then the pointers may be NULL).
///
/// # Errors
/// `NO_SUCH_PROCESS` (nothing is accessed), `NULL_POINTER` (`addrs`, `out` when `n > 0`),
/// `INVALID_ARGUMENT` (`writes` given together with a nonzero `all_writes`; a misaligned
/// buffer; `n` too large for memory).
///
/// # Safety
/// `m` a live handle or NULL; `addrs` and `out` (and `writes` when not NULL) hold `n`
/// elements and do not overlap.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cowcore_access_batch(
    m: *mut CowcoreMachine,
    pid: u32,
    addrs: *const u64,
    writes: *const u8,
    all_writes: c_int,
    n: usize,
    value: u64,
    out: *mut CowcoreAccess,
) -> CowcoreStatus {
    let body = |h: &mut CowcoreMachine| {
        if !writes.is_null() && all_writes != 0 {
            return Err(Failure::invalid(
                "give either a writes buffer or all_writes, not both",
            ));
        }
        // SAFETY: `addrs` (and `writes` when not NULL) hold n elements, readable and not
        // overlapping `out`, for the call (the caller's contract).
        let addrs = unsafe { slice_arg(addrs, n, "addrs") }?;
        let writes = if writes.is_null() {
            None
        } else {
            // SAFETY: as for `addrs`.
            Some(unsafe { slice_arg(writes, n, "writes") }?)
        };
        if n > 0 {
            check_buffer(out.cast_const(), n, "out")?;
        }
        // The pid is checked before the first access, so a bad pid changes nothing.
        h.machine.asid(pid)?;
        let mut rust = vec![cowcore_core::Access::default(); n.min(BATCH_CHUNK)];
        let mut kinds_buf = Vec::new();
        for (chunk_index, chunk) in addrs.chunks(BATCH_CHUNK).enumerate() {
            let start = chunk_index * BATCH_CHUNK;
            let records = &mut rust[..chunk.len()];
            let kinds = match writes {
                None if all_writes != 0 => AccessKinds::Writes,
                None => AccessKinds::Reads,
                Some(w) => {
                    kinds_buf.clear();
                    kinds_buf.extend(w[start..start + chunk.len()].iter().map(|&b| b != 0));
                    AccessKinds::PerAccess(&kinds_buf)
                }
            };
            h.machine.access_batch(pid, chunk, kinds, value, records)?;
            for (i, r) in records.iter().enumerate() {
                // SAFETY: start + i < n, and `out` holds n elements (checked non-NULL,
                // aligned, in size; writable by the caller's contract).
                unsafe { out.add(start + i).write((*r).into()) };
            }
        }
        Ok(())
    };
    // SAFETY: `m` is NULL or a live, unshared handle (the caller's contract).
    unsafe { with_machine(m, body) }
}

// ---------------------------------------------------------------------------------------
// References, pins and unshare (issue 16)

/// `ref`: one extra reference on the page behind every address of `[addr, addr + length)`,
/// as `vmsplice()` takes them (a read fault first where nothing is mapped), held until
/// [`cowcore_unref`] of the same range or `pid`'s exit (the core's `Machine::ref_pages`).
///
/// # Errors
/// As a read of the range: `SEGFAULT` where it is not readable (nothing taken);
/// `OUT_OF_MEMORY` (the faults done stay, nothing is held).
///
/// # Safety
/// `m` a live handle or NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cowcore_ref(
    m: *mut CowcoreMachine,
    pid: u32,
    addr: u64,
    length: u64,
) -> CowcoreStatus {
    let body =
        |h: &mut CowcoreMachine| Ok(h.machine.ref_pages(pid, VirtAddr::new(addr), length)?);
    // SAFETY: `m` is NULL or a live, unshared handle (the caller's contract).
    unsafe { with_machine(m, body) }
}

/// Drops the references of the latest [`cowcore_ref`] of exactly this range.
///
/// # Errors
/// `INVALID_ARGUMENT` if `pid` holds no `ref` of exactly this range.
///
/// # Safety
/// `m` a live handle or NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cowcore_unref(
    m: *mut CowcoreMachine,
    pid: u32,
    addr: u64,
    length: u64,
) -> CowcoreStatus {
    let body =
        |h: &mut CowcoreMachine| Ok(h.machine.unref_pages(pid, VirtAddr::new(addr), length)?);
    // SAFETY: `m` is NULL or a live, unshared handle (the caller's contract).
    unsafe { with_machine(m, body) }
}

/// `pin`: a long-term writable pin of every page of the range (`FOLL_PIN | FOLL_LONGTERM |
/// FOLL_WRITE`, as `io_uring` buffer registration takes it), held until [`cowcore_unpin`] or
/// exit; a fork copies the pinned folios' exclusive pages into the child at once.
///
/// # Errors
/// As a write of the range: `SEGFAULT` where it is not writable; `OUT_OF_MEMORY`.
///
/// # Safety
/// `m` a live handle or NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cowcore_pin(
    m: *mut CowcoreMachine,
    pid: u32,
    addr: u64,
    length: u64,
) -> CowcoreStatus {
    let body =
        |h: &mut CowcoreMachine| Ok(h.machine.pin_pages(pid, VirtAddr::new(addr), length)?);
    // SAFETY: `m` is NULL or a live, unshared handle (the caller's contract).
    unsafe { with_machine(m, body) }
}

/// Releases the pins of the latest [`cowcore_pin`] of exactly this range.
///
/// # Errors
/// `INVALID_ARGUMENT` if `pid` holds no `pin` of exactly this range.
///
/// # Safety
/// `m` a live handle or NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cowcore_unpin(
    m: *mut CowcoreMachine,
    pid: u32,
    addr: u64,
    length: u64,
) -> CowcoreStatus {
    let body =
        |h: &mut CowcoreMachine| Ok(h.machine.unpin_pages(pid, VirtAddr::new(addr), length)?);
    // SAFETY: `m` is NULL or a live, unshared handle (the caller's contract).
    unsafe { with_machine(m, body) }
}

/// `unshare`: a short read-only pin of the range taken and dropped by another process, as
/// `process_vm_readv()` does: every anonymous page that is not anon-exclusive goes through
/// the unshare fault (`COWCORE_OUTCOME_UNSHARE`). One record per page goes to `out[0..n)`;
/// `n` must be `length / 4096`.
///
/// # Errors
/// `INVALID_ARGUMENT` (`n` is not the page count; a misaligned buffer), `NULL_POINTER`
/// (`out`), the errors of a read of the range; `OUT_OF_MEMORY` (the pages before the failing
/// one are unshared, `out` is not written).
///
/// # Safety
/// `m` a live handle or NULL; `out` holds `n` writable elements.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cowcore_unshare(
    m: *mut CowcoreMachine,
    pid: u32,
    addr: u64,
    length: u64,
    out: *mut CowcoreAccess,
    n: usize,
) -> CowcoreStatus {
    let body = |h: &mut CowcoreMachine| {
        if u64::try_from(n).ok() != Some(length / cowcore_core::PAGE_SIZE) {
            return Err(Failure::invalid(format!(
                "out holds {n} records, the range has {} pages",
                length / cowcore_core::PAGE_SIZE
            )));
        }
        if n > 0 {
            check_buffer(out.cast_const(), n, "out")?;
        }
        let records = h.machine.unshare(pid, VirtAddr::new(addr), length)?;
        for (i, r) in records.iter().enumerate().take(n) {
            // SAFETY: i < n, and `out` holds n elements (checked non-NULL, aligned, in size;
            // writable by the caller's contract).
            unsafe { out.add(i).write((*r).into()) };
        }
        Ok(())
    };
    // SAFETY: `m` is NULL or a live, unshared handle (the caller's contract).
    unsafe { with_machine(m, body) }
}

/// `madvise(MADV_COLLAPSE)` of a fully mapped range: every whole, aligned 2 MiB block
/// becomes a new PMD-mapped THP (its pages copied, their folios freed with their last
/// mapping). The result, a [`CowcoreScanResult`] number, goes to `*out`: `SUCCEED` when
/// every block is PMD-mapped now, else the last failure (a result, not an error status).
///
/// # Errors
/// `INVALID_ADDRESS` for a range with unmapped pages or outside user space,
/// `INVALID_ARGUMENT` for a misaligned one, `NO_SUCH_PROCESS`.
///
/// # Safety
/// As [`cowcore_init_pid`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cowcore_collapse(
    m: *mut CowcoreMachine,
    pid: u32,
    addr: u64,
    length: u64,
    out: *mut u8,
) -> CowcoreStatus {
    let body = |h: &mut CowcoreMachine| {
        check_out(out, "out")?;
        let r = h.machine.collapse(pid, VirtAddr::new(addr), length)?;
        // SAFETY: the out-pointer is NULL or writable (the caller's contract).
        unsafe { put(out, "out", r as u8) }
    };
    // SAFETY: `m` is NULL or a live, unshared handle (the caller's contract).
    unsafe { with_machine(m, body) }
}

// ---------------------------------------------------------------------------------------
// Events and counters

/// Starts recording events (from now on) with `on`, or stops and drops what was recorded
/// and not yet taken. Starting while recording keeps what was recorded (the core's
/// `Machine::record_events`). Off after `cowcore_machine_new`.
///
/// # Safety
/// `m` a live handle or NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cowcore_record_events(m: *mut CowcoreMachine, on: bool) -> CowcoreStatus {
    let body = |h: &mut CowcoreMachine| {
        h.machine.record_events(on);
        if !on {
            h.pending.clear();
        }
        Ok(())
    };
    // SAFETY: `m` is NULL or a live, unshared handle (the caller's contract).
    unsafe { with_machine(m, body) }
}

/// Copies at most `cap` recorded events, oldest first, into `buf` and their number into
/// `*n_out`; the rest stay for the next call (so `*n_out < cap` means none is left).
/// `buf` may be NULL when `cap` is 0.
///
/// # Safety
/// `m` a live handle or NULL; `buf` holds `cap` elements; `n_out` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cowcore_take_events(
    m: *mut CowcoreMachine,
    buf: *mut CowcoreEvent,
    cap: usize,
    n_out: *mut usize,
) -> CowcoreStatus {
    let body = |h: &mut CowcoreMachine| {
        check_out(n_out, "n_out")?;
        if cap > 0 {
            check_buffer(buf.cast_const(), cap, "buf")?;
        }
        let pending = &mut h.pending;
        h.machine
            .drain_events(|e| pending.push_back(e.record().into()));
        let n = cap.min(h.pending.len());
        for (i, e) in h.pending.drain(..n).enumerate() {
            // SAFETY: i < n <= cap and `buf` holds cap elements (checked non-NULL,
            // aligned, in size; writable by the caller's contract).
            unsafe { buf.add(i).write(e) };
        }
        // SAFETY: the out-pointer is NULL or writable (the caller's contract).
        unsafe { put(n_out, "n_out", n) }
    };
    // SAFETY: `m` is NULL or a live, unshared handle (the caller's contract).
    unsafe { with_machine(m, body) }
}

/// The machine's counters since it was created.
///
/// # Safety
/// `m` a live handle or NULL; `out` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cowcore_stats(
    m: *mut CowcoreMachine,
    out: *mut CowcoreStats,
) -> CowcoreStatus {
    let body = |h: &mut CowcoreMachine| {
        // SAFETY: the out-pointer is NULL or writable (the caller's contract).
        unsafe { put(out, "out", h.machine.stats().into()) }
    };
    // SAFETY: `m` is NULL or a live, unshared handle (the caller's contract).
    unsafe { with_machine(m, body) }
}

/// The number of free 4 KiB frames (every frame is free again, but for the boot-time ones,
/// once all processes exited: a leak check).
///
/// # Safety
/// As [`cowcore_stats`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cowcore_free_frames(
    m: *mut CowcoreMachine,
    out: *mut u64,
) -> CowcoreStatus {
    let body = |h: &mut CowcoreMachine| {
        // SAFETY: the out-pointer is NULL or writable (the caller's contract).
        unsafe { put(out, "out", h.machine.free_frames()) }
    };
    // SAFETY: `m` is NULL or a live, unshared handle (the caller's contract).
    unsafe { with_machine(m, body) }
}

/// Recomputes every counter from the page tables; `INVARIANT` names the first broken one.
///
/// # Safety
/// `m` a live handle or NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cowcore_check(m: *mut CowcoreMachine) -> CowcoreStatus {
    let body = |h: &mut CowcoreMachine| Ok(h.machine.check()?);
    // SAFETY: `m` is NULL or a live, unshared handle (the caller's contract).
    unsafe { with_machine(m, body) }
}

/// `drop_caches` (writes 2 to `/proc/sys/vm/drop_caches`): the deferred-split shrinker
/// splits the partially mapped large folios waiting on its queue, and on 6.12+ the underused
/// PMD THPs queued at their fault (`cowcore_core::Machine::drop_caches`). A folio with
/// references beyond its mappings is not split (`split_failed` of [`cowcore_stats`]).
///
/// # Safety
/// `m` a live handle or NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cowcore_drop_caches(m: *mut CowcoreMachine) -> CowcoreStatus {
    let body = |h: &mut CowcoreMachine| Ok(h.machine.drop_caches()?);
    // SAFETY: `m` is NULL or a live, unshared handle (the caller's contract).
    unsafe { with_machine(m, body) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A panic under the chokepoint becomes `PANIC` with its message, and poisons the
    /// handle: later calls refuse to run on a machine a panic may have left half-updated.
    #[test]
    fn a_panic_poisons_the_handle() {
        let mut m = std::ptr::null_mut();
        // SAFETY: a NUL-terminated profile; a writable out-pointer.
        let s = unsafe { cowcore_machine_new(8 << 20, 4, c"6.15".as_ptr(), &raw mut m) };
        assert_eq!(s, CowcoreStatus::Ok);
        // SAFETY: a live handle, used by this thread only.
        let s = unsafe { with_machine(m, |_| panic!("boom")) };
        assert_eq!(s, CowcoreStatus::Panic);
        // SAFETY: as above; the message is NUL-terminated.
        let msg = unsafe { CStr::from_ptr(cowcore_last_error(m)) };
        assert!(msg.to_str().unwrap().ends_with("boom"), "{msg:?}");
        let mut pid = 0;
        // SAFETY: as above.
        unsafe {
            assert_eq!(cowcore_init_pid(m, &raw mut pid), CowcoreStatus::Panic);
            assert_eq!(pid, 0);
            cowcore_machine_free(m);
        }
    }
}
