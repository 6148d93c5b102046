"""The boundary's records (issue 11): declared once in ``cowcore.protocol``, constructed by
both backends, ``None`` for an absent value; the policy table declared once per side and
equal across them; the ``Backend`` protocol as the union of its concerns."""

from __future__ import annotations

import dataclasses
from typing import get_type_hints

import pytest

import cowcore
from cowcore import protocol
from cowcore.errors import InvalidArgumentError, NoSuchProcessError
from cowcore.protocol import (
    POLICIES,
    STATS_KEYS,
    AccessBackend,
    AddressSpaceBackend,
    Backend,
    EventsBackend,
    FolioSnapshot,
    InspectionBackend,
    MmIdSlot,
    PageObservation,
    PolicySpec,
    Stats,
    SysfsBackend,
    Translation,
    VmaInfo,
    WalkLevel,
)
from cowcore.reference import ReferenceBackend
from tests.conftest import MachineFactory, MiB


def _members(proto: type) -> set[str]:
    return {n for n in dir(proto) if not n.startswith("_")}


def test_backend_is_the_union_of_its_concerns() -> None:
    parts = (SysfsBackend, AddressSpaceBackend, AccessBackend, InspectionBackend, EventsBackend)
    union = set().union(*(_members(p) for p in parts))
    assert _members(Backend) == union
    # each member belongs to exactly one concern
    assert sum(len(_members(p)) for p in parts) == len(union)
    for name in union:
        assert hasattr(ReferenceBackend, name), name


def test_rust_policy_table_equals_the_reference_table() -> None:
    """The core's POLICIES (policy.rs), exported by the binding, and protocol.POLICIES (the
    reference's and the docs' copy) list the same toggles, docs and defaults, in order."""
    native = pytest.importorskip("cowcore._cowcore")
    rust = native.Machine("6.15", 1024, 4).policies()
    assert rust == POLICIES
    assert all(type(spec) is PolicySpec for spec in rust)
    for spec in POLICIES:
        assert set(spec.defaults) == set(protocol.KERNEL_PROFILES), spec.name
    assert {
        k: {s.name: s.defaults[k] for s in POLICIES} for k in protocol.KERNEL_PROFILES
    } == protocol.POLICY_DEFAULTS


def test_policy_facade_reads_the_backend_table(backend: str, profile: str) -> None:
    m = cowcore.Machine(profile, backend=backend, memory="8M")
    assert m.policy.specs == POLICIES
    assert m.policy.as_dict() == {s.name: s.defaults[profile] for s in POLICIES}
    for spec in POLICIES:
        assert getattr(m.policy, spec.name) is spec.defaults[profile]
        setattr(m.policy, spec.name, not spec.defaults[profile])
        assert getattr(m.policy, spec.name) is not spec.defaults[profile]
        assert spec.name in dir(m.policy)
    names = ", ".join(s.name for s in POLICIES)
    with pytest.raises(InvalidArgumentError, match=f"policy must be one of {names}, not 'x'"):
        _ = m.policy.x


def test_records_have_none_for_absent_values(make_machine: MachineFactory) -> None:
    m = make_machine("6.15", memory="16M")
    p = m.init
    a = p.mmap(2 * MiB)
    p.write(a)
    p.read(a + 4096)  # the shared zero page
    mapped, zero, absent = p.observe(a, 3 * 4096)
    assert type(mapped) is PageObservation and mapped.frame_kind == "normal"
    assert (zero.frame_kind, zero.serial, zero.mapcount, zero.exclusive) == ("zero", 0, 0, False)
    assert absent == PageObservation(a + 2 * 4096, False, *[None] * 7)
    t = p.translate(a)
    assert type(t) is Translation and (t.addr, t.page_size) == (a, 4096)
    assert all(type(s) is WalkLevel for s in t.steps)
    assert t.steps[-1].flags[:3] == ("P", "RW", "US")
    hole = p.translate(a + 2 * 4096)
    assert (hole.pfn, hole.page_size) == (None, None) and hole.addr == a + 2 * 4096
    assert t.pfn is not None
    f = m.folio(t.pfn)
    assert type(f) is FolioSnapshot and all(type(s) is MmIdSlot for s in f.mm_ids)
    assert type(f.page_mapcounts) is tuple and type(f.anon_exclusive) is tuple
    (vma,) = p.vmas()
    assert type(vma) is VmaInfo
    start, end, prot, flags = vma  # still a tuple
    assert (vma.start, vma.end, vma.prot, vma.flags) == (start, end, prot, flags)
    assert tuple(vma) == (a, a + 2 * MiB, "rw", ())


def test_stats_is_a_record_and_a_mapping(make_machine: MachineFactory) -> None:
    m = make_machine("6.15", memory="16M")
    p = m.init
    a = p.mmap(2 * MiB)
    p.write(a)
    p.fork()
    p.write(a)
    s = m.stats()
    assert type(s) is Stats
    assert s.cow_copy == s["cow_copy"] == 1 and s.faults_wp == 1
    assert tuple(s) == STATS_KEYS == tuple(f.name for f in dataclasses.fields(Stats))
    as_dict = dict(s)
    assert s == as_dict and as_dict == s and len(s) == len(STATS_KEYS)
    assert s != {**as_dict, "cow_copy": 2}
    assert s["anon_fault_alloc"] == dict.fromkeys(m.thp.sizes, 0)
    with pytest.raises(KeyError):
        s["nope"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.pgreuse = 3  # type: ignore[misc]


def test_both_backends_build_the_same_records() -> None:
    native = pytest.importorskip("cowcore._cowcore")
    rust, ref = native.Machine("6.15", 4096, 4), ReferenceBackend("6.15", 4096, 4)
    for b in (rust, ref):
        b.set_thp_enabled("always")
        a = b.mmap(1, 4 * MiB)
        b.write(1, a, 2 * MiB, 7)
        b.fork(1)
        b.madvise(1, a + 2 * MiB, 2 * MiB, "nohugepage")
    a = rust.vmas(1)[0].start
    assert rust.vmas(1) == ref.vmas(1) and rust.vmas(2) == ref.vmas(2)
    assert rust.observe(1, a, 4 * MiB) == ref.observe(1, a, 4 * MiB)
    for addr in (a, a + 4096, a + 3 * MiB):
        assert rust.translate(1, addr) == ref.translate(1, addr)
    pfn = rust.translate(1, a).pfn
    assert pfn is not None and rust.folio(pfn) == ref.folio(pfn)
    assert rust.stats() == ref.stats()
    for b in (rust, ref):
        assert type(b.observe(1, a, 4096)[0]) is PageObservation
        assert type(b.stats()) is Stats


def test_record_fields_are_typed_once() -> None:
    """The records are frozen dataclasses (or a NamedTuple) of protocol.py: no sentinel ints
    remain in their types."""
    for cls in (PageObservation, Translation, WalkLevel, FolioSnapshot, MmIdSlot, PolicySpec):
        assert dataclasses.is_dataclass(cls) and vars(cls)["__dataclass_params__"].frozen
    hints = get_type_hints(Translation)
    assert hints["pfn"] == int | None and hints["page_size"] == int | None
    assert VmaInfo._fields == ("start", "end", "prot", "flags")


def test_shared_width_checks() -> None:
    assert protocol.check_pid(7) == 7
    for bad in (-1, 1 << 32, True, "1", 1.0):
        with pytest.raises(NoSuchProcessError):
            protocol.check_pid(bad)
    assert protocol.check_levels(5) == 5
    for bad_levels in (3, 6, 1 << 70):
        with pytest.raises(InvalidArgumentError, match="levels"):
            protocol.check_levels(bad_levels)


def test_rust_capabilities_equal_the_reference_capabilities() -> None:
    """``Profile::config`` (policy.rs) and protocol.KERNEL_CONFIGS (the reference's copy)
    agree for every profile, and each toggle defaults to the capability it overrides."""
    native = pytest.importorskip("cowcore._cowcore")
    for kernel in protocol.KERNEL_PROFILES:
        cfg = native.Machine(kernel, 1024, 4).config()
        assert cfg == protocol.KERNEL_CONFIGS[kernel] == ReferenceBackend(kernel, 1024, 4).config()
        assert type(cfg) is protocol.KernelConfig and cfg.profile == kernel
        # every size under a multi-size THP kernel; the PMD size alone before (6.1), where the
        # per-size counters are missing too
        pmd_only = kernel == "6.1"
        assert cfg.anon_thp_orders == ((9,) if pmd_only else tuple(protocol.THP_SIZES.values()))
        assert cfg.per_size_thp_stats is not pmd_only
        defaults = {s.name: s.defaults[kernel] for s in POLICIES}
        assert defaults == {
            "cow_reuse_pte_mapped_thp": cfg.reuses_pte_mapped_large_folios,
            "huge_zero_wp_alloc": cfg.allocates_on_huge_zero_write,
            # issue 15's policies override no capability: no kernel has them
            "cow_reuse_remember_exclusive": False,
            "cow_reuse_fault_around": False,
            "cow_reuse_fault_around_window": False,
            "mm_id_exact": False,
        }


def test_machine_config(backend: str, profile: str) -> None:
    m = cowcore.Machine(profile, backend=backend, memory="8M")
    assert m.config == protocol.KERNEL_CONFIGS[profile]
    assert m.config.pagemap_pmd_exclusive_from_first_page is (profile == "6.15")
