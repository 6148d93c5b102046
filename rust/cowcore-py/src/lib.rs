//! `cowcore._cowcore`: the thin `PyO3` binding over `cowcore-core`.
//!
//! It holds no simulation logic: [`machine::PyMachine`] implements the `Backend` protocol of
//! `python/cowcore/protocol.py` by extracting arguments, calling the core with the GIL
//! released, and converting results to plain Python values or the records of
//! `cowcore.protocol` ([`records`]); [`errors`] maps core errors to
//! the exception classes defined in `python/cowcore/errors.py`.

pub mod errors;
pub mod machine;
pub mod records;

use pyo3::prelude::*;

/// The extension module `cowcore._cowcore`.
#[pymodule(gil_used = false)]
mod _cowcore {
    use pyo3::prelude::*;

    #[pymodule_export]
    use crate::machine::PyMachine;

    /// The version of the Rust crates (also the package version: `dynamic = ["version"]`).
    // Python's dunder name, not a Rust constant.
    #[allow(non_upper_case_globals)]
    #[pymodule_export]
    const __version__: &str = env!("CARGO_PKG_VERSION");

    /// Names of the simulation backends this extension provides.
    #[pyfunction]
    fn backends() -> Vec<&'static str> {
        vec!["rust"]
    }

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        // setattr, not add: add() would also list __doc__ in __all__.
        m.setattr(
            "__doc__",
            "Native core of cowcore (PyO3 binding over cowcore-core).",
        )?;
        Ok(())
    }
}
