//! Helpers shared by the C API tests: a machine handle that frees itself, and the status a
//! core result maps to.

#![allow(dead_code)] // each test file uses a part

use cowcore_capi::*;
use cowcore_core::CowError;
use std::ffi::CStr;

/// An owned `cowcore_machine*`.
pub struct Handle(pub *mut CowcoreMachine);

impl Handle {
    pub fn new(memory: u64, profile: &CStr) -> Self {
        let mut m = std::ptr::null_mut();
        // SAFETY: a NUL-terminated profile and a writable out-pointer.
        let s = unsafe { cowcore_machine_new(memory, 4, profile.as_ptr(), &raw mut m) };
        assert_eq!(s, CowcoreStatus::Ok, "{}", last_error(std::ptr::null()));
        assert!(!m.is_null());
        Self(m)
    }

    pub fn error(&self) -> String {
        last_error(self.0)
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: a live handle, not used again.
        unsafe { cowcore_machine_free(self.0) };
    }
}

/// `cowcore_last_error(m)` as a Rust string.
pub fn last_error(m: *const CowcoreMachine) -> String {
    // SAFETY: NULL or a live handle; the result is a NUL-terminated string.
    unsafe { CStr::from_ptr(cowcore_last_error(m)) }
        .to_string_lossy()
        .into_owned()
}

/// The status the C API returns for a core result.
pub fn status_of<T>(r: &Result<T, CowError>) -> CowcoreStatus {
    match r {
        Ok(_) => CowcoreStatus::Ok,
        Err(CowError::NoSuchProcess(_) | CowError::ProcessExited(_)) => {
            CowcoreStatus::NoSuchProcess
        }
        Err(CowError::InvalidArgument(_)) => CowcoreStatus::InvalidArgument,
        Err(CowError::InvalidAddress(_)) => CowcoreStatus::InvalidAddress,
        Err(CowError::Segfault { .. }) => CowcoreStatus::Segfault,
        Err(CowError::OutOfMemory) => CowcoreStatus::OutOfMemory,
        Err(CowError::Invariant { .. }) => CowcoreStatus::Invariant,
        Err(CowError::ProcessLimit { .. }) => CowcoreStatus::ProcessLimit,
        Err(CowError::NotModelled(_)) => CowcoreStatus::NotModelled,
    }
}
