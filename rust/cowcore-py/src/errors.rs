//! The one place where core errors become Python exceptions.
//!
//! The exception classes are defined once, in `python/cowcore/errors.py`, and imported here,
//! so the Rust backend raises exactly the classes the reference raises.

use cowcore_core::CowError;
use pyo3::prelude::*;

pyo3::import_exception!(cowcore.errors, NoSuchProcessError);
pyo3::import_exception!(cowcore.errors, InvalidArgumentError);
pyo3::import_exception!(cowcore.errors, InvalidAddressError);
pyo3::import_exception!(cowcore.errors, SegmentationFault);
pyo3::import_exception!(cowcore.errors, OutOfMemoryError);
pyo3::import_exception!(cowcore.errors, InvariantError);
pyo3::import_exception!(cowcore.errors, ProcessLimitError);
pyo3::import_exception!(cowcore.errors, NotModelledError);

/// A core error on its way to Python (a newtype because of the orphan rule).
#[derive(Debug)]
pub struct PyCowError(pub CowError);

impl From<CowError> for PyCowError {
    fn from(err: CowError) -> Self {
        Self(err)
    }
}

impl From<PyCowError> for PyErr {
    fn from(err: PyCowError) -> Self {
        let message = err.0.to_string();
        match err.0 {
            CowError::NoSuchProcess(_) | CowError::ProcessExited(_) => {
                NoSuchProcessError::new_err(message)
            }
            // Without the Display prefix ("invalid argument: "): the class says it, and the
            // reference raises the bare message.
            CowError::InvalidArgument(msg) => InvalidArgumentError::new_err(msg),
            CowError::InvalidAddress(msg) => InvalidAddressError::new_err(msg),
            CowError::Segfault { addr, reason } => {
                SegmentationFault::new_err((addr.as_u64(), reason.to_string(), message))
            }
            CowError::OutOfMemory => OutOfMemoryError::new_err(message),
            CowError::Invariant { name, msg } => InvariantError::new_err((name, msg)),
            CowError::ProcessLimit { .. } => ProcessLimitError::new_err(message),
            // The bare message: the class says "not modelled" (issue 16).
            CowError::NotModelled(msg) => NotModelledError::new_err(msg),
        }
    }
}

/// An `InvalidArgumentError` raised by the binding itself (argument parsing).
#[must_use]
pub fn invalid(message: String) -> PyErr {
    InvalidArgumentError::new_err(message)
}
