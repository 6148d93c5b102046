//! The snapshot records a call returns, built from core values.
//!
//! Each record's fields are declared once, as a frozen dataclass (or `NamedTuple`) in
//! `python/cowcore/protocol.py`, which the reference backend constructs too; the binding
//! imports the classes (once, as `errors.rs` imports the exception classes) and calls them
//! with the fields in their declared order. An absent value is `None`, never a sentinel.

use cowcore_core::{
    Access, FolioInfo, FrameKind, KernelConfig, Observation, Profile, SmapsInfo, Stats,
    Translation, VmaInfo, Vmstat, PAGE_SIZE, POLICIES, THP_SIZES,
};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};
use pyo3::{intern, IntoPyObjectExt, Py};

/// A record class of `cowcore.protocol`, imported on first use.
fn class<'py>(
    py: Python<'py>,
    cell: &'static PyOnceLock<Py<PyType>>,
    name: &str,
) -> PyResult<&'py Bound<'py, PyType>> {
    cell.import(py, "cowcore.protocol", name)
}

macro_rules! record_class {
    ($fn:ident, $name:literal) => {
        #[doc = concat!("`cowcore.protocol.", $name, "`.")]
        fn $fn(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
            static CELL: PyOnceLock<Py<PyType>> = PyOnceLock::new();
            class(py, &CELL, $name)
        }
    };
}

record_class!(page_observation_class, "PageObservation");
record_class!(walk_level_class, "WalkLevel");
record_class!(translation_class, "Translation");
record_class!(mm_id_slot_class, "MmIdSlot");
record_class!(folio_snapshot_class, "FolioSnapshot");
record_class!(vma_info_class, "VmaInfo");
record_class!(smaps_class, "Smaps");
record_class!(stats_class, "Stats");
record_class!(vmstat_class, "Vmstat");
record_class!(policy_spec_class, "PolicySpec");
record_class!(kernel_config_class, "KernelConfig");

/// `cowcore.outcome.Access` (declared beside its codes, not in `protocol`).
fn access_class(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    static CELL: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    CELL.import(py, "cowcore.outcome", "Access")
}

/// An `Access` record, through its `from_raw` (the fields in the C layout's order), so
/// that the enum conversions live in one place.
pub(crate) fn access<'py>(py: Python<'py>, a: &Access) -> PyResult<Bound<'py, PyAny>> {
    let raw = PyTuple::new(
        py,
        [
            a.phys,
            u64::from(a.outcome as u8),
            u64::from(a.reason as u8),
            u64::from(a.split_reason as u8),
            u64::from(a.level as u8),
            u64::from(a.order),
            u64::from(a.faults),
            u64::from(a.flags.bits()),
            u64::from(a.reserved),
            u64::from(a.error_code),
            u64::from(a.orders_allowed),
            u64::from(a.orders_fit),
            u64::from(a.orders_empty),
            u64::from(a.orders_failed),
            u64::from(a.reserved2),
        ],
    )?;
    access_class(py)?.call_method1(intern!(py, "from_raw"), (raw,))
}

/// `PageObservation`s of the pages from `addr` on, one per core observation.
pub(crate) fn observations<'py>(
    py: Python<'py>,
    addr: u64,
    rows: &[Observation],
) -> PyResult<Vec<Bound<'py, PyAny>>> {
    let cls = page_observation_class(py)?;
    let mut out = Vec::with_capacity(rows.len());
    let mut page = addr;
    for o in rows {
        let kind = match o.kind {
            FrameKind::None => None,
            FrameKind::Normal => Some(intern!(py, "normal")),
            FrameKind::Zero => Some(intern!(py, "zero")),
            FrameKind::HugeZero => Some(intern!(py, "huge_zero")),
            FrameKind::Swap => Some(intern!(py, "swap")),
        };
        out.push(match kind {
            Some(kind) if o.present => cls.call1((
                page,
                true,
                o.pfn,
                kind,
                o.serial,
                o.folio_pages,
                o.mapcount,
                o.exclusive,
                o.content,
            ))?,
            // A swap entry: not present, frame kind "swap", the rest None (issue 16).
            Some(kind) if o.kind == FrameKind::Swap => {
                let none = py.None();
                cls.call1((page, false, &none, kind, &none, &none, &none, &none, &none))?
            }
            _ => {
                let none = py.None();
                cls.call1((page, false, &none, &none, &none, &none, &none, &none, &none))?
            }
        });
        page = page.wrapping_add(PAGE_SIZE);
    }
    Ok(out)
}

/// A `Translation` of `addr` with its `WalkLevel` steps.
pub(crate) fn translation<'py>(
    py: Python<'py>,
    addr: u64,
    t: &Translation,
) -> PyResult<Bound<'py, PyAny>> {
    let step = walk_level_class(py)?;
    let steps = t
        .steps
        .iter()
        .map(|s| step.call1((s.level.name(), s.table.as_u64(), s.index, s.entry.raw())))
        .collect::<PyResult<Vec<_>>>()?;
    translation_class(py)?.call1((
        addr,
        PyTuple::new(py, steps)?,
        t.pfn.map(cowcore_core::Pfn::as_u64),
        t.page_size,
    ))
}

/// A `FolioSnapshot` with its two `MmIdSlot`s.
pub(crate) fn folio_snapshot<'py>(py: Python<'py>, f: &FolioInfo) -> PyResult<Bound<'py, PyAny>> {
    let slot = mm_id_slot_class(py)?;
    let slots = (slot.call1(f.mm_ids[0])?, slot.call1(f.mm_ids[1])?);
    let args = [
        f.pfn.into_bound_py_any(py)?,
        f.order.into_bound_py_any(py)?,
        f.refcount.into_bound_py_any(py)?,
        PyTuple::new(py, &f.page_mapcounts)?.into_any(),
        f.large_mapcount.into_bound_py_any(py)?,
        f.entire_mapcount.into_bound_py_any(py)?,
        f.nr_pages_mapped.into_bound_py_any(py)?,
        slots.into_bound_py_any(py)?,
        f.maybe_mapped_shared.into_bound_py_any(py)?,
        PyTuple::new(py, &f.anon_exclusive)?.into_any(),
        f.serial.into_bound_py_any(py)?,
        f.pincount.into_bound_py_any(py)?,
        f.swap_slot.into_bound_py_any(py)?,
    ];
    folio_snapshot_class(py)?.call1(PyTuple::new(py, args)?)
}

/// `VmaInfo`s.
pub(crate) fn vmas<'py>(py: Python<'py>, vmas: &[VmaInfo]) -> PyResult<Vec<Bound<'py, PyAny>>> {
    let cls = vma_info_class(py)?;
    vmas.iter()
        .map(|v| {
            let flags = PyTuple::new(py, &v.flags)?;
            cls.call1((v.start, v.end, v.prot.as_str(), flags))
        })
        .collect()
}

/// One `Smaps` record per VMA, the fields in their declared order.
pub(crate) fn smaps<'py>(py: Python<'py>, rows: &[SmapsInfo]) -> PyResult<Vec<Bound<'py, PyAny>>> {
    let cls = smaps_class(py)?;
    rows.iter()
        .map(|s| {
            let mut args = vec![
                s.start.into_bound_py_any(py)?,
                s.end.into_bound_py_any(py)?,
                s.prot.as_str().into_bound_py_any(py)?,
                PyTuple::new(py, &s.flags)?.into_any(),
            ];
            for v in [
                s.rss,
                s.pss,
                s.pss_dirty,
                s.shared_clean,
                s.shared_dirty,
                s.private_clean,
                s.private_dirty,
                s.referenced,
                s.anonymous,
                s.anon_huge_pages,
                s.swap,
                s.swap_pss,
            ] {
                args.push(v.into_bound_py_any(py)?);
            }
            cls.call1(PyTuple::new(py, args)?)
        })
        .collect()
}

/// The `Stats` record; the per-size counters as dicts by size name, every size present.
pub(crate) fn stats<'py>(py: Python<'py>, s: &Stats) -> PyResult<Bound<'py, PyAny>> {
    let sizes = |counts: &[u64; 8]| -> PyResult<Bound<'py, PyAny>> {
        let d = PyDict::new(py);
        for (name, value) in Stats::by_size(counts) {
            d.set_item(name, value)?;
        }
        Ok(d.into_any())
    };
    let n = |v: u64| v.into_bound_py_any(py);
    // More fields than a tuple literal converts: one tuple of objects, in field order.
    let args = PyTuple::new(
        py,
        [
            sizes(&s.anon_fault_alloc)?,
            sizes(&s.anon_fault_fallback)?,
            sizes(&s.split)?,
            n(s.thp_fault_alloc)?,
            n(s.thp_split_pmd)?,
            n(s.pgreuse)?,
            n(s.cow_copy)?,
            n(s.faults_read)?,
            n(s.faults_write)?,
            n(s.faults_wp)?,
            n(s.huge_zero_write)?,
            sizes(&s.split_deferred)?,
            sizes(&s.nr_anon)?,
            sizes(&s.nr_anon_partially_mapped)?,
            n(s.thp_fault_fallback)?,
            n(s.thp_split_page)?,
            n(s.thp_deferred_split_page)?,
            sizes(&s.split_failed)?,
            n(s.thp_split_page_failed)?,
            n(s.thp_collapse_alloc)?,
            n(s.thp_collapse_alloc_failed)?,
        ],
    )?;
    // The swap counters (issue 16) by keyword, so that their place in the record does not
    // matter.
    let kw = PyDict::new(py);
    kw.set_item("pswpin", s.pswpin)?;
    kw.set_item("pswpout", s.pswpout)?;
    kw.set_item("thp_swpout", s.thp_swpout)?;
    kw.set_item("thp_swpout_fallback", s.thp_swpout_fallback)?;
    kw.set_item("swpout", sizes(&s.swpout)?)?;
    kw.set_item("swpout_fallback", sizes(&s.swpout_fallback)?)?;
    kw.set_item("swpin", sizes(&s.swpin)?)?;
    kw.set_item("swpin_fallback", sizes(&s.swpin_fallback)?)?;
    stats_class(py)?.call(args, Some(&kw))
}

/// The `Vmstat` record.
pub(crate) fn vmstat<'py>(py: Python<'py>, v: &Vmstat) -> PyResult<Bound<'py, PyAny>> {
    vmstat_class(py)?.call1((
        v.nr_free_pages,
        v.nr_anon_pages,
        v.nr_anon_transparent_hugepages,
        v.nr_page_table_pages,
        v.thp_fault_alloc,
        v.thp_fault_fallback,
        v.thp_split_pmd,
        v.thp_split_page,
        v.thp_deferred_split_page,
        v.thp_split_page_failed,
        v.pgreuse,
    ))
}

/// The core's policy table ([`POLICIES`]) as `PolicySpec` records, with each toggle's
/// default under every profile.
pub(crate) fn policies(py: Python<'_>) -> PyResult<Bound<'_, PyTuple>> {
    let cls = policy_spec_class(py)?;
    let specs = POLICIES
        .iter()
        .map(|spec| {
            let defaults = PyDict::new(py);
            for profile in Profile::ALL {
                defaults.set_item(profile.as_str(), spec.default_for(profile.config()))?;
            }
            cls.call1((spec.name, spec.doc, defaults))
        })
        .collect::<PyResult<Vec<_>>>()?;
    PyTuple::new(py, specs)
}

/// A profile's capabilities ([`KernelConfig`]) as the `KernelConfig` record.
pub(crate) fn kernel_config(py: Python<'_>, cfg: KernelConfig) -> PyResult<Bound<'_, PyAny>> {
    let orders: Vec<u32> = THP_SIZES
        .iter()
        .map(|&(_, order)| order)
        .filter(|&order| cfg.has_thp_order(order))
        .collect();
    // By keyword: more fields than PyO3 converts as one positional tuple.
    let kw = PyDict::new(py);
    kw.set_item("profile", cfg.profile().as_str())?;
    kw.set_item("per_page_mapcounts", cfg.per_page_mapcounts())?;
    kw.set_item("mm_ids", cfg.mm_ids())?;
    kw.set_item("anon_thp_orders", PyTuple::new(py, orders)?)?;
    kw.set_item("per_size_thp_stats", cfg.per_size_thp_stats())?;
    kw.set_item(
        "reuses_pte_mapped_large_folios",
        cfg.reuses_pte_mapped_large_folios(),
    )?;
    kw.set_item(
        "allocates_on_huge_zero_write",
        cfg.allocates_on_huge_zero_write(),
    )?;
    kw.set_item(
        "pagemap_pmd_exclusive_from_first_page",
        cfg.pagemap_pmd_exclusive_from_first_page(),
    )?;
    kw.set_item("faulted_folios_referenced", cfg.faulted_folios_referenced())?;
    kw.set_item(
        "collapse_needs_writable_pte",
        cfg.collapse_needs_writable_pte(),
    )?;
    kw.set_item("collapse_batches_ptes", cfg.collapse_batches_ptes())?;
    kw.set_item("mremap_realigns", cfg.mremap_realigns())?;
    kw.set_item(
        "reuses_sole_ref_large_pages",
        cfg.reuses_sole_ref_large_pages(),
    )?;
    kw.set_item("swap_zeromap", cfg.swap_zeromap())?;
    kw.set_item("swapin_large", cfg.swapin_large())?;
    kw.set_item("swapin_large_shared", cfg.swapin_large_shared())?;
    kernel_config_class(py)?.call((), Some(&kw))
}
