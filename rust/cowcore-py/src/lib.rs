//! `cowcore._cowcore`: the thin PyO3 binding over `cowcore-core`.
//!
//! The binding holds no simulation logic. Until the Rust core passes the differential suite
//! against the pure-Python reference, it exposes only its version, so that packaging and
//! import are exercised from day one without offering a backend that does not work.

use pyo3::prelude::*;

/// The extension module `cowcore._cowcore`.
#[pymodule(gil_used = false)]
mod _cowcore {
    use pyo3::prelude::*;

    /// The version of the Rust crates (also the package version: `dynamic = ["version"]`).
    #[pymodule_export]
    const __version__: &str = env!("CARGO_PKG_VERSION");

    /// Names of the backends this extension provides (none yet: the Rust core is not bound).
    #[pyfunction]
    fn backends() -> Vec<&'static str> {
        Vec::new()
    }

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add("__doc__", "Native core of cowcore (PyO3 binding over cowcore-core).")?;
        Ok(())
    }
}
