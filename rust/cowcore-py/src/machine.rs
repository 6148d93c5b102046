//! `cowcore._cowcore.Machine`: the `Backend` protocol of `python/cowcore/protocol.py` over
//! [`cowcore_core::Machine`].
//!
//! Each method extracts its arguments into Rust values, calls the core inside
//! `run_core` (which releases the GIL and maps errors) and converts the result into plain
//! Python values (ints, strings, lists) or the snapshot records of `cowcore.protocol`
//! (built in [`crate::records`]). No simulation logic lives here.

use std::sync::{Mutex, MutexGuard};

use cowcore_core::{
    Access, AccessKinds, EventRecord, Machine, Pfn, Profile, ThpMode, ThpSizeMode, Translation,
    VirtAddr,
};
use pyo3::buffer::{PyBuffer, PyUntypedBuffer};
use pyo3::exceptions::{PyOverflowError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyByteArray, PyBytes, PyInt, PyList, PyMemoryView, PyTuple};

use crate::errors::{invalid, PyCowError};
use crate::records;

/// Runs a core call with the GIL released and maps its error (polars' `enter_polars`).
/// Every Python argument has been extracted before this is called.
fn run_core<T: Send>(
    py: Python<'_>,
    f: impl FnOnce() -> Result<T, cowcore_core::CowError> + Send,
) -> PyResult<T> {
    py.detach(f).map_err(|e| PyCowError(e).into())
}

/// Ranges below this many bytes run with the GIL held: releasing and re-taking it costs
/// about as much as such a call (a whole single-page `write` call takes ~0.1 µs, ~15 ns of
/// it in the core; see BENCHMARKS.md, "What each optimisation bought"). 64 pages.
const DETACH_BYTES: u64 = 64 * cowcore_core::PAGE_SIZE;

/// [`run_core`] for a call over `length` bytes: small ranges keep the GIL.
fn run_sized<T: Send>(
    py: Python<'_>,
    length: u64,
    f: impl FnOnce() -> Result<T, cowcore_core::CowError> + Send,
) -> PyResult<T> {
    if length < DETACH_BYTES {
        f().map_err(|e| PyCowError(e).into())
    } else {
        run_core(py, f)
    }
}

/// The addresses of a batch call (`write_pages`, `read_pages`), checked here rather than
/// in the Python facade so that the whole batch crosses into Rust once (issue 5: a
/// per-element check in Python cost about 75 ns per page, more than the fault). `addrs` is
/// a `list` or a one-dimensional buffer of 64-bit integers (issue 10: numpy arrays,
/// `array('Q')`); the reference backend applies the same rules, with the same messages, in
/// `reference/backend.py` (`_pages`).
fn page_addrs(addrs: &Bound<'_, PyAny>) -> PyResult<Vec<VirtAddr>> {
    Ok(batch_u64(addrs)?.into_iter().map(VirtAddr::new).collect())
}

/// [`page_addrs`] as the plain integers (what `access_batch` passes to the core).
fn batch_u64(addrs: &Bound<'_, PyAny>) -> PyResult<Vec<u64>> {
    match addrs.cast::<PyList>() {
        Ok(list) => list_addrs(list),
        Err(_) => buffer_addrs(addrs),
    }
}

/// The items of a list of addresses. Each must be an `int` or have `__index__` (numpy
/// integers, `IntEnum`), not be a `bool`, and lie in `[0, 2^64)`, as the facade's `_int`
/// (`check_u64` in protocol.py) requires of a single address.
fn list_addrs(addrs: &Bound<'_, PyList>) -> PyResult<Vec<u64>> {
    let mut out = Vec::with_capacity(addrs.len());
    for (i, item) in addrs.iter().enumerate() {
        // An exact `int` is the common case and needs only a type-pointer compare. `i64`
        // first: PyO3 reads it with `PyLong_AsLong`, which is several times faster than the
        // `PyLong_AsUnsignedLongLong` of a `u64` (it goes through a byte array); the top
        // half of the `u64` range and every other type take `index_item`.
        if item.is_exact_instance_of::<PyInt>() {
            if let Ok(v @ 0..) = item.extract::<i64>() {
                out.push(v as u64);
                continue;
            }
        }
        out.push(index_item(&item, i)?);
    }
    Ok(out)
}

/// An item that is not a non-negative `int` below 2^63: an int subclass, an object with
/// `__index__`, or a bad item (the error names it as `check_u64` does).
#[cold]
fn index_item(item: &Bound<'_, PyAny>, i: usize) -> PyResult<u64> {
    let py = item.py();
    if item.is_instance_of::<PyBool>() {
        return Err(invalid(format!("addrs[{i}] must be an int, not bool")));
    }
    // `u64` extraction calls `__index__` (`PyNumber_Index`) on a non-int first.
    match item.extract::<u64>() {
        Ok(v) => Ok(v),
        Err(e) if e.is_instance_of::<PyOverflowError>(py) => {
            // the value as `operator.index` gives it, as the reference prints it
            let value = py.import("operator")?.getattr("index")?.call1((item,))?;
            Err(invalid(format!(
                "addrs[{i}] must be in [0, 2^64), not {value}"
            )))
        }
        Err(e) if e.is_instance_of::<PyTypeError>(py) => {
            let ty = item.get_type().name()?;
            Err(invalid(format!("addrs[{i}] must be an int, not {ty}")))
        }
        Err(e) => Err(e),
    }
}

/// The addresses of a buffer: one-dimensional (contiguous or strided), items of format
/// `q`, `Q`, `l` or `L` (native byte order) and 8 bytes. Copied in one
/// `PyBuffer_ToContiguous`, with no Python object per item; negative signed items fail as
/// negative ints do. A misaligned buffer (which `PyBuffer<T>` refuses) is read through
/// `memoryview.tolist()`, as the reference reads every buffer.
fn buffer_addrs(addrs: &Bound<'_, PyAny>) -> PyResult<Vec<u64>> {
    let py = addrs.py();
    let Ok(buf) = PyUntypedBuffer::get(addrs) else {
        // Not a buffer, or one `PyBuffer` refuses (a 0-dimensional one has no shape): the
        // message names the format when there is one, as the reference's does.
        let ty = addrs.get_type().name()?;
        return Err(invalid(match PyMemoryView::from(addrs) {
            Ok(view) => format!(
                "{BATCH_TYPES}, not {ty} of format '{}'",
                view.getattr("format")?
            ),
            Err(_) => format!("{BATCH_TYPES}, not {ty}"),
        }));
    };
    if buf.dimensions() > 1 {
        return Err(invalid(format!(
            "addrs must be one-dimensional, not a {}-dimensional buffer",
            buf.dimensions()
        )));
    }
    let format = buf.format().to_bytes();
    let code = match format {
        [c] | [b'@', c] => *c,
        _ => 0,
    };
    if buf.dimensions() != 1 || buf.item_size() != 8 || !b"qQlL".contains(&code) {
        let ty = addrs.get_type().name()?;
        let format = String::from_utf8_lossy(format);
        return Err(invalid(format!(
            "{BATCH_TYPES}, not {ty} of format '{format}'"
        )));
    }
    let signed = matches!(code, b'q' | b'l');
    let values: Vec<u64> = if signed {
        let Ok(typed) = buf.as_typed::<i64>() else {
            return list_addrs(&misaligned(addrs)?);
        };
        let values = typed.to_vec(py)?;
        if let Some(i) = values.iter().position(|&v| v < 0) {
            return Err(invalid(format!(
                "addrs[{i}] must be in [0, 2^64), not {}",
                values[i]
            )));
        }
        values.into_iter().map(|v| v as u64).collect()
    } else {
        let Ok(typed) = buf.as_typed::<u64>() else {
            return list_addrs(&misaligned(addrs)?);
        };
        typed.to_vec(py)?
    };
    Ok(values)
}

/// A buffer whose items are not 8-byte aligned, as a list of ints (`memoryview.tolist()`).
#[cold]
fn misaligned<'py>(addrs: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyList>> {
    Ok(PyMemoryView::from(addrs)?
        .call_method0("tolist")?
        .cast_into::<PyList>()?)
}

/// What a batch call's `addrs` may be (the start of the message for anything else).
const BATCH_TYPES: &str =
    "addrs must be a list of ints or a one-dimensional buffer of 64-bit integers (format q, Q, l or L)";

/// The records `access_batch` makes per call into the core (16 KiB on the stack).
const BATCH_CHUNK: usize = 512;

/// The write flags of `access_batch`: `True`/`False` for all, or a buffer of `n` one-byte
/// items, each 0 or 1. The facade normalises what users pass (numpy bool arrays, lists);
/// the reference backend (`_writes`) checks the same rules with the same messages.
fn write_flags(writes: &Bound<'_, PyAny>, n: usize) -> PyResult<Option<Vec<bool>>> {
    if writes.is_instance_of::<PyBool>() {
        return Ok(None);
    }
    let not_bytes = || -> PyResult<PyErr> {
        let ty = writes.get_type().name()?;
        Ok(invalid(format!(
            "writes must be a bool or a buffer of one byte (0 or 1) per address, not {ty}"
        )))
    };
    let Ok(buf) = PyBuffer::<u8>::get(writes) else {
        return Err(not_bytes()?);
    };
    let bytes = buf.to_vec(writes.py())?;
    if bytes.len() != n {
        return Err(invalid(format!(
            "writes must have one byte per address ({n}), not {}",
            bytes.len()
        )));
    }
    if let Some(i) = bytes.iter().position(|&b| b > 1) {
        return Err(invalid(format!(
            "writes[{i}] must be 0 or 1, not {}",
            bytes[i]
        )));
    }
    Ok(Some(bytes.into_iter().map(|b| b == 1).collect()))
}

fn parse<T: std::str::FromStr<Err = cowcore_core::CowError>>(s: &str) -> PyResult<T> {
    s.parse().map_err(|e| PyCowError(e).into())
}

/// A simulated machine run by the Rust core.
#[pyclass(name = "Machine", module = "cowcore._cowcore", frozen)]
#[derive(Debug)]
pub struct PyMachine {
    inner: Mutex<Machine>,
}

impl PyMachine {
    fn lock(&self) -> MutexGuard<'_, Machine> {
        // A panic while holding the lock would be a core bug; the state is still readable.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[pymethods]
impl PyMachine {
    /// A machine of `total_frames` 4 KiB frames with 4- or 5-level paging.
    #[new]
    fn new(py: Python<'_>, kernel: &str, total_frames: u64, levels: u8) -> PyResult<Self> {
        let profile: Profile = parse(kernel)?;
        let memory = total_frames
            .checked_mul(cowcore_core::PAGE_SIZE)
            .ok_or_else(|| invalid(format!("{total_frames} frames is too much memory")))?;
        let machine = run_core(py, || Machine::new(memory, levels, profile))?;
        Ok(Self {
            inner: Mutex::new(machine),
        })
    }

    #[getter]
    fn kernel(&self) -> &'static str {
        self.lock().profile().as_str()
    }

    #[getter]
    fn levels(&self) -> u8 {
        self.lock().levels()
    }

    #[getter]
    fn total_frames(&self) -> u64 {
        self.lock().total_frames()
    }

    fn config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let cfg = self.lock().config();
        records::kernel_config(py, cfg)
    }

    fn free_frames(&self) -> u64 {
        self.lock().free_frames()
    }

    fn pid_max(&self) -> u32 {
        self.lock().pid_max()
    }

    fn set_pid_max(&self, pid_max: u64) -> PyResult<()> {
        Ok(self.lock().set_pid_max(pid_max).map_err(PyCowError)?)
    }

    fn thp_enabled(&self) -> &'static str {
        self.lock().thp_enabled().as_str()
    }

    fn set_thp_enabled(&self, mode: &str) -> PyResult<()> {
        let mode: ThpMode = parse(mode)?;
        self.lock().set_thp_enabled(mode);
        Ok(())
    }

    fn thp_size(&self, size: &str) -> PyResult<&'static str> {
        Ok(self
            .lock()
            .thp_size_by_name(size)
            .map_err(PyCowError)?
            .as_str())
    }

    fn set_thp_size(&self, size: &str, mode: &str) -> PyResult<()> {
        let mode: ThpSizeMode = parse(mode)?;
        Ok(self
            .lock()
            .set_thp_size_by_name(size, mode)
            .map_err(PyCowError)?)
    }

    fn use_zero_page(&self) -> bool {
        self.lock().use_zero_page()
    }

    fn set_use_zero_page(&self, on: bool) {
        self.lock().set_use_zero_page(on);
    }

    // An instance method, as the `Backend` protocol has it: the table is the core's, the same
    // for every machine.
    #[allow(clippy::unused_self)]
    fn policies<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        records::policies(py)
    }

    fn policy(&self, name: &str) -> PyResult<bool> {
        Ok(self.lock().policy(name).map_err(PyCowError)?)
    }

    fn set_policy(&self, name: &str, value: bool) -> PyResult<()> {
        Ok(self.lock().set_policy(name, value).map_err(PyCowError)?)
    }

    fn init_pid(&self) -> u32 {
        self.lock().init_pid()
    }

    fn pids(&self) -> Vec<u32> {
        self.lock().pids()
    }

    fn mm_id(&self, pid: u32) -> PyResult<u32> {
        Ok(self.lock().mm_id(pid).map_err(PyCowError)?)
    }

    fn mmap(&self, py: Python<'_>, pid: u32, length: u64) -> PyResult<u64> {
        run_sized(py, 0, || self.lock().mmap(pid, length)).map(VirtAddr::as_u64)
    }

    fn touch(&self, py: Python<'_>, pid: u32, addr: u64, length: u64) -> PyResult<()> {
        run_sized(py, length, || {
            self.lock().touch(pid, VirtAddr::new(addr), length)
        })
    }

    #[pyo3(name = "ref")]
    fn ref_pages(&self, py: Python<'_>, pid: u32, addr: u64, length: u64) -> PyResult<()> {
        run_sized(py, length, || {
            self.lock().ref_pages(pid, VirtAddr::new(addr), length)
        })
    }

    fn unref(&self, py: Python<'_>, pid: u32, addr: u64, length: u64) -> PyResult<()> {
        run_sized(py, length, || {
            self.lock().unref_pages(pid, VirtAddr::new(addr), length)
        })
    }

    fn pin(&self, py: Python<'_>, pid: u32, addr: u64, length: u64) -> PyResult<()> {
        run_sized(py, length, || {
            self.lock().pin_pages(pid, VirtAddr::new(addr), length)
        })
    }

    fn unpin(&self, py: Python<'_>, pid: u32, addr: u64, length: u64) -> PyResult<()> {
        run_sized(py, length, || {
            self.lock().unpin_pages(pid, VirtAddr::new(addr), length)
        })
    }

    fn unshare<'py>(
        &self,
        py: Python<'py>,
        pid: u32,
        addr: u64,
        length: u64,
    ) -> PyResult<Bound<'py, PyByteArray>> {
        let recs = run_sized(py, length, || {
            self.lock().unshare(pid, VirtAddr::new(addr), length)
        })?;
        let bytes: Vec<u8> = recs.iter().flat_map(Access::to_le_bytes).collect();
        Ok(PyByteArray::new(py, &bytes))
    }

    fn munmap(&self, py: Python<'_>, pid: u32, addr: u64, length: u64) -> PyResult<()> {
        run_sized(py, length, || {
            self.lock().munmap(pid, VirtAddr::new(addr), length)
        })
    }

    fn collapse(&self, py: Python<'_>, pid: u32, addr: u64, length: u64) -> PyResult<u8> {
        run_core(py, || {
            self.lock()
                .collapse(pid, VirtAddr::new(addr), length)
                .map(|r| r as u8)
        })
    }

    #[pyo3(signature = (pid, addr, length, new_addr))]
    fn mremap(
        &self,
        py: Python<'_>,
        pid: u32,
        addr: u64,
        length: u64,
        new_addr: Option<u64>,
    ) -> PyResult<u64> {
        run_core(py, || {
            self.lock()
                .mremap(
                    pid,
                    VirtAddr::new(addr),
                    length,
                    new_addr.map(VirtAddr::new),
                )
                .map(VirtAddr::as_u64)
        })
    }

    fn mprotect(
        &self,
        py: Python<'_>,
        pid: u32,
        addr: u64,
        length: u64,
        prot: &str,
    ) -> PyResult<()> {
        let prot = Machine::parse_prot(prot).map_err(PyCowError)?;
        run_core(py, || {
            self.lock().mprotect(pid, VirtAddr::new(addr), length, prot)
        })
    }

    fn madvise(
        &self,
        py: Python<'_>,
        pid: u32,
        addr: u64,
        length: u64,
        advice: &str,
    ) -> PyResult<()> {
        let advice = Machine::parse_advice(advice).map_err(PyCowError)?;
        run_core(py, || {
            self.lock()
                .madvise(pid, VirtAddr::new(addr), length, advice)
        })
    }

    /// `madvise(MADV_PAGEOUT)` (issue 16).
    fn pageout(&self, py: Python<'_>, pid: u32, addr: u64, length: u64) -> PyResult<()> {
        run_core(py, || self.lock().pageout(pid, VirtAddr::new(addr), length))
    }

    fn write(&self, py: Python<'_>, pid: u32, addr: u64, length: u64, value: u64) -> PyResult<()> {
        run_sized(py, length, || {
            self.lock().write(pid, VirtAddr::new(addr), length, value)
        })
    }

    fn write_pages(
        &self,
        py: Python<'_>,
        pid: u32,
        addrs: &Bound<'_, PyAny>,
        value: u64,
    ) -> PyResult<()> {
        let addrs = page_addrs(addrs)?;
        let bytes = (addrs.len() as u64).saturating_mul(cowcore_core::PAGE_SIZE);
        run_sized(py, bytes, || self.lock().write_pages(pid, &addrs, value))
    }

    fn read_pages(&self, py: Python<'_>, pid: u32, addrs: &Bound<'_, PyAny>) -> PyResult<Vec<u64>> {
        let addrs = page_addrs(addrs)?;
        let bytes = (addrs.len() as u64).saturating_mul(cowcore_core::PAGE_SIZE);
        run_sized(py, bytes, || self.lock().read_pages(pid, &addrs))
    }

    fn read(&self, py: Python<'_>, pid: u32, addr: u64, length: u64) -> PyResult<Vec<u64>> {
        run_sized(py, length, || {
            self.lock().read(pid, VirtAddr::new(addr), length)
        })
    }

    fn mmap_fixed(&self, pid: u32, addr: u64, length: u64) -> PyResult<u64> {
        Ok(self
            .lock()
            .mmap_fixed(pid, VirtAddr::new(addr), length)
            .map_err(PyCowError)?
            .as_u64())
    }

    fn asid(&self, pid: u32) -> PyResult<u64> {
        Ok(self.lock().asid(pid).map_err(PyCowError)?)
    }

    fn access<'py>(
        &self,
        py: Python<'py>,
        pid: u32,
        addr: u64,
        write: bool,
        value: u64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let r = self
            .lock()
            .access(pid, VirtAddr::new(addr), write, value)
            .map_err(PyCowError)?;
        records::access(py, &r)
    }

    /// The records as one `bytearray` of `n * 32` bytes (the layout of
    /// `cowcore.outcome.ACCESS_FIELDS`), which the facade wraps as a numpy structured array
    /// without a copy: no Python object per access. The core writes each chunk of records
    /// on the stack (the GIL released for a large chunk), and their bytes go straight into
    /// the new array.
    fn access_batch<'py>(
        &self,
        py: Python<'py>,
        pid: u32,
        addrs: &Bound<'py, PyAny>,
        writes: &Bound<'py, PyAny>,
        value: u64,
    ) -> PyResult<Bound<'py, PyByteArray>> {
        let addrs = batch_u64(addrs)?;
        let n = addrs.len();
        let flags = write_flags(writes, n)?;
        let all_writes = flags.is_none() && writes.is_truthy()?;
        self.lock().mm_id(pid).map_err(PyCowError)?; // an empty batch checks the pid too
        let len = n
            .checked_mul(Access::SIZE)
            .ok_or_else(|| invalid("batch too large".into()))?;
        let mut failed = None;
        let out = PyByteArray::new_with(py, len, |dst| {
            let mut recs = [Access::default(); BATCH_CHUNK];
            for (c, chunk) in addrs.chunks(BATCH_CHUNK).enumerate() {
                let first = c * BATCH_CHUNK;
                let kinds = match &flags {
                    Some(f) => AccessKinds::PerAccess(&f[first..first + chunk.len()]),
                    None if all_writes => AccessKinds::Writes,
                    None => AccessKinds::Reads,
                };
                let recs = &mut recs[..chunk.len()];
                let bytes = (chunk.len() as u64).saturating_mul(cowcore_core::PAGE_SIZE);
                if let Err(e) = run_sized(py, bytes, || {
                    self.lock().access_batch(pid, chunk, kinds, value, recs)
                }) {
                    failed = Some(e);
                    return Ok(());
                }
                let out = &mut dst[first * Access::SIZE..(first + chunk.len()) * Access::SIZE];
                for (r, d) in recs.iter().zip(out.chunks_exact_mut(Access::SIZE)) {
                    d.copy_from_slice(&r.to_le_bytes());
                }
            }
            Ok(())
        })?;
        match failed {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    fn record(&self, on: bool) {
        self.lock().record_events(on);
    }

    /// The kept events as `EVENT_SIZE`-byte records (`cowcore.outcome.EVENT_FIELDS`),
    /// written straight into the new `bytes` (sized once: no growing buffer in between).
    fn take_events<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let mut m = self.lock();
        let n = m.recorded_events();
        PyBytes::new_with(py, n * EventRecord::SIZE, |buf| {
            let mut out = buf.chunks_exact_mut(EventRecord::SIZE);
            m.drain_events(|e| {
                if let Some(d) = out.next() {
                    d.copy_from_slice(&e.record().to_le_bytes());
                }
            });
            Ok(())
        })
    }

    fn fork(&self, py: Python<'_>, pid: u32) -> PyResult<u32> {
        run_core(py, || self.lock().fork(pid))
    }

    fn exit(&self, py: Python<'_>, pid: u32) -> PyResult<()> {
        run_core(py, || self.lock().exit(pid))
    }

    fn rss_anon(&self, pid: u32) -> PyResult<u64> {
        Ok(self.lock().rss_anon(pid).map_err(PyCowError)?)
    }

    fn smaps<'py>(&self, py: Python<'py>, pid: u32) -> PyResult<Vec<Bound<'py, PyAny>>> {
        // A walk of every mapped page table: the GIL goes while it runs.
        let rows = run_core(py, || self.lock().smaps(pid))?;
        records::smaps(py, &rows)
    }

    fn vmas<'py>(&self, py: Python<'py>, pid: u32) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let vmas = self.lock().vmas(pid).map_err(PyCowError)?;
        records::vmas(py, &vmas)
    }

    fn translate<'py>(&self, py: Python<'py>, pid: u32, addr: u64) -> PyResult<Bound<'py, PyAny>> {
        let t: Translation = self
            .lock()
            .translate(pid, VirtAddr::new(addr))
            .map_err(PyCowError)?;
        records::translation(py, addr, &t)
    }

    fn observe<'py>(
        &self,
        py: Python<'py>,
        pid: u32,
        addr: u64,
        length: u64,
    ) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let rows = run_sized(py, length, || {
            self.lock().observe(pid, VirtAddr::new(addr), length)
        })?;
        records::observations(py, addr, &rows)
    }

    fn folio<'py>(&self, py: Python<'py>, pfn: u64) -> PyResult<Bound<'py, PyAny>> {
        let f = self.lock().folio(Pfn::new(pfn)).map_err(PyCowError)?;
        records::folio_snapshot(py, &f)
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let s = self.lock().stats().clone();
        records::stats(py, &s)
    }

    /// The `/proc/vmstat` lines the simulator keeps (`cowcore.protocol.Vmstat`).
    fn vmstat<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let v = self.lock().vmstat();
        records::vmstat(py, &v)
    }

    fn check(&self, py: Python<'_>) -> PyResult<()> {
        run_core(py, || self.lock().check())
    }

    fn drop_caches(&self, py: Python<'_>) -> PyResult<()> {
        run_core(py, || self.lock().drop_caches())
    }

    fn __repr__(&self) -> String {
        let m = self.lock();
        format!(
            "<cowcore._cowcore.Machine kernel={} frames={} processes={}>",
            m.profile().as_str(),
            m.total_frames(),
            m.pids().len()
        )
    }
}
