"""The contract between the public API and a simulation backend, and the snapshot types.

A backend (the pure-Python reference in :mod:`cowcore.reference`, or the Rust core behind
:mod:`cowcore._cowcore`) implements :class:`Backend`, the union of the concern-sized protocols
:class:`SysfsBackend`, :class:`AddressSpaceBackend`, :class:`AccessBackend`,
:class:`InspectionBackend` and :class:`EventsBackend`. It addresses processes by pid and
returns plain values (ints, strings, lists) or the frozen snapshot records declared here
(:class:`PageObservation`, :class:`Translation`, :class:`FolioSnapshot`, :class:`VmaInfo`,
:class:`Stats`, :class:`PolicySpec`), which both backends construct: the fields of each
record are declared once, in this module, with ``None`` for an absent value (the Rust binding
imports the classes, as it imports the exceptions of :mod:`cowcore.errors`). No live
reference into a backend's state ever crosses. :class:`cowcore.Machine` and
:class:`cowcore.Process` wrap a backend and check argument types.

Every method that changes state either completes or raises one of the exceptions of
:mod:`cowcore.errors` and leaves the machine exactly as it was before the call.
"""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from enum import IntEnum
from typing import Any, Literal, NamedTuple, Protocol, get_args

from cowcore.errors import InvalidArgumentError, NoSuchProcessError
from cowcore.outcome import Access
from cowcore.x86 import flag_names

KernelProfile = Literal["6.1", "6.12", "6.15"]
"""Which kernel behaviour to follow: ``"6.1"`` has PMD-size (2M) THP only, no per-size
counters, and otherwise the COW rules of 6.12; ``"6.12"`` never reuses a PTE-mapped large
folio after fork; ``"6.15"`` tracks MM ids per large folio and reuses it when one mm owns every
reference (the behaviour of every later kernel seen so far, 7.2 included)."""

ThpMode = Literal["always", "madvise", "never"]
"""Values of ``/sys/kernel/mm/transparent_hugepage/enabled``."""

ThpSizeMode = Literal["always", "madvise", "inherit", "never"]
"""Values of ``/sys/kernel/mm/transparent_hugepage/hugepages-<N>kB/enabled``."""

Prot = Literal["none", "r", "rw"]
"""Protections that ``mprotect`` accepts (PROT_NONE, PROT_READ, PROT_READ|PROT_WRITE)."""

Advice = Literal[
    "hugepage", "nohugepage", "dontneed", "dontfork", "dofork", "wipeonfork", "keeponfork"
]
"""The ``madvise`` advices that cowcore models."""

KERNEL_PROFILES: tuple[str, ...] = get_args(KernelProfile)
THP_MODES: tuple[str, ...] = get_args(ThpMode)
THP_SIZE_MODES: tuple[str, ...] = get_args(ThpSizeMode)
PROTS: tuple[str, ...] = get_args(Prot)
ADVICES: tuple[str, ...] = get_args(Advice)
"""The values of the types above as tuples, for the checks that every layer makes."""

FAULT_AROUND_PAGES = 16
"""The ``cow_reuse_fault_around_window`` policy's window, in pages: 64 KiB, the default
``fault_around_bytes`` (mm/memory.c) that bounds ``do_fault_around`` for file read faults.
The Rust core's ``FAULT_AROUND_PAGES`` (fault.rs) is the same number."""

THP_SIZES: dict[str, int] = {
    "16K": 2,
    "32K": 3,
    "64K": 4,
    "128K": 5,
    "256K": 6,
    "512K": 7,
    "1M": 8,
    "2M": 9,
}
"""The anonymous THP sizes of x86-64 with 4 KiB pages, by sysfs name, with their folio order.
Order 1 is never used for anonymous THP (``THP_ORDERS_ALL_ANON``). A profile may have fewer
(:attr:`KernelConfig.anon_thp_orders`: only 2M under 6.1)."""

NO_MTHP_SIZES = (
    "this kernel has PMD-size (2M) THP only, no /sys/kernel/mm/transparent_hugepage/hugepages-*kB"
)
"""Why a THP size other than 2M cannot be read or set under a profile with PMD-size THP only
(6.1): the words of the kernel runner's probe, so that a scenario's error line reads the same
on the simulator as on the kernel. Backends raise ``InvalidArgumentError("THP size SIZE: "
+ NO_MTHP_SIZES)``; the Rust core has its own copy (``NO_MTHP_SIZES`` in policy.rs)."""


@dataclass(frozen=True, slots=True)
class KernelConfig:
    """What one kernel profile does (DESIGN.md "Profiles"): the profile resolved once into
    capabilities, so that code asks ``cfg.reuses_pte_mapped_large_folios`` rather than
    comparing versions. Where a policy toggle can override a capability, the toggle takes
    its default from it and the code asks the toggle."""

    profile: str
    per_page_mapcounts: bool
    """Each page of a large folio keeps its own mapcount (``CONFIG_PAGE_MAPCOUNT``)."""
    mm_ids: bool
    """Large folios keep two MM-owner slots and the shared bit (``CONFIG_MM_ID``); the
    simulator maintains them under every profile, as bookkeeping."""
    anon_thp_orders: tuple[int, ...]
    """The anonymous large-folio orders that exist: ``THP_ORDERS_ALL_ANON`` (2..9) since 6.8's
    multi-size THP, only the PMD order 9 before (6.1: no ``hugepages-<N>kB`` directories)."""
    per_size_thp_stats: bool
    """The kernel keeps per-size THP counters (``hugepages-<N>kB/stats/``,
    ``count_mthp_stat()``, added from 6.10 to 6.12); without them (6.1) only the
    ``/proc/vmstat`` events exist, so :meth:`cowcore.Machine.mthp_stats` is empty and the
    scenario ``stats`` observation prints no per-size keys. The simulator counts the same
    events under every profile (:class:`Stats` keeps its per-size maps)."""
    reuses_pte_mapped_large_folios: bool
    """``do_wp_page`` may reuse a PTE-mapped large folio (``__wp_can_reuse_large_anon_folio``,
    6.15); the default of ``cow_reuse_pte_mapped_thp``."""
    allocates_on_huge_zero_write: bool
    """A write to the huge zero PMD allocates a THP (``do_huge_zero_wp_pmd``); the default of
    ``huge_zero_wp_alloc``."""
    pagemap_pmd_exclusive_from_first_page: bool
    """pagemap reports a PMD mapping's exclusive bit once, from its first page, for all 512
    entries (``pagemap_pmd_range()``: measured on 7.2, and on 6.1, whose version reads
    ``page_mapcount(pmd_page(pmd))``); 6.12 tests every 4 KiB page."""
    faulted_folios_referenced: bool
    """A folio a fault maps gets ``PG_referenced`` as it is added to the LRU
    (``folio_add_lru()`` in fault context calls ``folio_mark_accessed()`` under MGLRU;
    measured on 7.2 and 7.3); without it (6.12) entering the LRU clears the flag
    (``lru_gen_add_folio``), so a mark made while a small folio waits in the per-CPU LRU-add
    batch is lost when the batch drains."""
    collapse_needs_writable_pte: bool = False
    """``MADV_COLLAPSE`` refuses a 2 MiB block none of whose PTEs is writable
    (``SCAN_PAGE_RO`` in ``hpage_collapse_scan_pmd()``/``__collapse_huge_page_isolate()``,
    EINVAL: a block fork left read-only in both processes; measured on 6.1 and 6.12, gone in
    7.2 and 7.3, where such a block collapses)."""
    collapse_batches_ptes: bool = False
    """``__collapse_huge_page_copy_succeeded()`` removes the rmap of a large folio's
    consecutive PTEs as one ``folio_pte_batch`` (7.x), so a folio that the collapse unmaps
    whole is never seen partially mapped; before (6.1, 6.12) it goes page by page and the
    first page removed queues the folio for deferred split (``split_deferred`` counts it,
    as the 6.12 recordings show)."""
    mremap_realigns: bool = True
    """``move_page_tables`` aligns a move that starts its VMA down to the PMD boundary when
    both sides are equally misaligned, the range reaches the next boundary and nothing else
    is mapped below either start (``try_realign_addr``, 6.7), so the first PTE table moves
    whole (``move_normal_pmd``); 6.1 moves those PTEs one by one."""
    reuses_sole_ref_large_pages: bool = False
    """``do_wp_page`` decides a page of a large folio as a small page, by the folio's reference
    count: reuse when it is 1, that is when no other page of the folio is mapped (6.1's
    ``do_wp_page()`` checks ``page_count(page)`` for every anonymous page; measured by the
    ``cowc-*-ro-pin-on-ro-previously-shared-2M`` scenarios on 6.1.176). Later kernels refuse
    every large folio before 6.15 (``wp_can_reuse_anon_folio()``)."""
    swap_zeromap: bool = False
    """A zero-filled folio paged out is not written: its slots are marked in the swap
    zeromap (``swap_writepage`` -> ``swap_zeromap_folio_set``) and read back as zeros without
    a read (6.12+). On 6.1 a zero page is written and read like any other."""
    swapin_large: bool = False
    """``alloc_swap_folio`` may swap in a large folio (an mTHP order below the PMD order)
    when the faulting block's entries name consecutive slots (6.12+)."""
    swapin_large_shared: bool = False
    """Large swap-in also for a slot whose swap count is above 1, through the swap cache
    (7.x); 6.12 only in the ``SWP_SYNCHRONOUS_IO`` bypass, for a count of 1."""


KERNEL_CONFIGS: dict[str, KernelConfig] = {
    "6.1": KernelConfig(
        profile="6.1",
        per_page_mapcounts=True,
        mm_ids=True,
        anon_thp_orders=(9,),
        per_size_thp_stats=False,
        reuses_pte_mapped_large_folios=False,
        allocates_on_huge_zero_write=False,
        pagemap_pmd_exclusive_from_first_page=True,
        faulted_folios_referenced=False,
        collapse_needs_writable_pte=True,
        mremap_realigns=False,
        reuses_sole_ref_large_pages=True,
        swap_zeromap=False,
        swapin_large=False,
        swapin_large_shared=False,
    ),
    "6.12": KernelConfig(
        profile="6.12",
        per_page_mapcounts=True,
        mm_ids=True,
        anon_thp_orders=(2, 3, 4, 5, 6, 7, 8, 9),
        per_size_thp_stats=True,
        reuses_pte_mapped_large_folios=False,
        allocates_on_huge_zero_write=False,
        pagemap_pmd_exclusive_from_first_page=False,
        faulted_folios_referenced=False,
        collapse_needs_writable_pte=True,
        swap_zeromap=True,
        swapin_large=True,
        swapin_large_shared=False,
    ),
    "6.15": KernelConfig(
        profile="6.15",
        per_page_mapcounts=True,
        mm_ids=True,
        anon_thp_orders=(2, 3, 4, 5, 6, 7, 8, 9),
        per_size_thp_stats=True,
        reuses_pte_mapped_large_folios=True,
        allocates_on_huge_zero_write=True,
        pagemap_pmd_exclusive_from_first_page=True,
        faulted_folios_referenced=True,
        collapse_batches_ptes=True,
        swap_zeromap=True,
        swapin_large=True,
        swapin_large_shared=True,
    ),
}
"""Each profile's capabilities, declared for Python (the reference's copy; the Rust core's is
``Profile::config`` in policy.rs, exported as ``cowcore._cowcore.Machine.config()``;
``tests/test_records.py`` checks that the two agree)."""


class ScanResult(IntEnum):
    """The result of ``madvise(MADV_COLLAPSE)`` (:meth:`cowcore.Process.collapse`): the
    kernel's ``enum scan_result`` member (mm/khugepaged.c, ``SCAN_*``; only those the model
    can produce) that decided the call, and through :attr:`errno` what the system call
    returned (``madvise_collapse_errno``). Its value is the ``cause`` of ``COLLAPSE``
    events, one per 2 MiB block, and the number crossing the backend boundary."""

    FAIL = 0
    SUCCEED = 1
    """Every 2 MiB block of the range is now PMD-mapped (also: no whole block in the
    range)."""
    PMD_NULL = 2
    """No page table maps the block (``SCAN_PMD_NULL``; ``SCAN_NO_PTE_TABLE`` in 7.x):
    nothing was ever faulted there."""
    PMD_MAPPED = 3
    """A huge PMD maps the block already (a THP, or the huge zero page): counts as done."""
    PAGE_RO = 4
    """No PTE of the block is writable (6.1, 6.12: ``collapse_needs_writable_pte``)."""
    PAGE_COUNT = 5
    """A folio of the block has references beyond its mappings (a GUP ``ref`` or ``pin``)."""
    PAGE_ANON = 6
    """The VMA has no ``anon_vma``, found again after the allocation
    (``hugepage_vma_revalidate``); the VMA check refuses such a VMA first."""
    VMA_CHECK = 7
    """The VMA refuses MADV_COLLAPSE (``thp_vma_allowable_order``): ``VM_NOHUGEPAGE``, no
    ``anon_vma`` (only zero pages ever mapped), or no whole aligned 2 MiB block in it (a 1M
    mapping, a block that mprotect cut into VMAs). Nothing is tried."""
    ALLOC_HUGE_PAGE_FAIL = 8
    """No free PMD-size block (``THP_COLLAPSE_ALLOC_FAILED``)."""

    @property
    def errno(self) -> str | None:
        """``madvise_collapse_errno``: ``None`` for success (the call returned 0), else the
        errno's name: ``ENOMEM`` (no THP), ``EAGAIN`` (a reference, try again), ``EINVAL``
        (everything else: the range itself cannot be collapsed)."""
        if self in (ScanResult.SUCCEED, ScanResult.PMD_MAPPED):
            return None
        if self is ScanResult.ALLOC_HUGE_PAGE_FAIL:
            return "ENOMEM"
        if self is ScanResult.PAGE_COUNT:
            return "EAGAIN"
        return "EINVAL"


CONTINUE_SCAN_RESULTS = frozenset({ScanResult.PMD_NULL, ScanResult.PAGE_RO, ScanResult.PAGE_COUNT})
"""The failures after which ``madvise_collapse`` goes on with the next block (its
whitelist); any other failure ends the call."""


@dataclass(frozen=True, slots=True)
class PolicySpec:
    """One policy toggle: a behaviour that is not a sysfs setting, with a default per kernel
    profile (``machine.policy.<name>``, the scenario ``policy`` statement)."""

    name: str
    doc: str
    """What it changes, naming the kernel function."""
    defaults: Mapping[str, bool]
    """Its default under each kernel profile (the profile's capability it overrides)."""


POLICIES: tuple[PolicySpec, ...] = (
    PolicySpec(
        "cow_reuse_pte_mapped_thp",
        "a write fault may reuse a PTE-mapped large folio that one mm maps exclusively "
        "(__wp_can_reuse_large_anon_folio, 6.15)",
        {"6.1": False, "6.12": False, "6.15": True},
    ),
    PolicySpec(
        "huge_zero_wp_alloc",
        "a write to the huge zero PMD allocates a fresh PMD-mapped THP "
        "(do_huge_zero_wp_pmd, 6.14+) instead of splitting it and copying one 4 KiB page",
        {"6.1": False, "6.12": False, "6.15": True},
    ),
    PolicySpec(
        "cow_reuse_remember_exclusive",
        "when __wp_can_reuse_large_anon_folio finds a large folio exclusive to this mm, "
        "remember it on the folio; later write faults on its pages reuse without the "
        "mapcount/refcount checks until its mapcount changes (not in any kernel)",
        {"6.1": False, "6.12": False, "6.15": False},
    ),
    PolicySpec(
        "cow_reuse_fault_around",
        "when a write fault reuses a PTE-mapped large folio, also make writable (and "
        "anon-exclusive) this mm's other PTEs of the folio in the same VMA and page table "
        "(wp_page_reuse; not in any kernel)",
        {"6.1": False, "6.12": False, "6.15": False},
    ),
    PolicySpec(
        "cow_reuse_fault_around_window",
        "with cow_reuse_fault_around, upgrade only the PTEs in the naturally aligned "
        "16-page (64 KiB) window around the faulting page, the default fault_around_bytes "
        "of do_fault_around for file read faults (not in any kernel)",
        {"6.1": False, "6.12": False, "6.15": False},
    ),
    PolicySpec(
        "mm_id_exact",
        "an idealised MM-id tracker that knows every mm mapping a large folio: "
        "__wp_can_reuse_large_anon_folio's 'maybe mapped shared' answer is exact instead of "
        "the two-slot approximation (not in any kernel)",
        {"6.1": False, "6.12": False, "6.15": False},
    ),
)
"""The policy toggles, declared once for Python: the reference backend's table and the one
the docs print. The Rust core declares its own (``POLICIES`` in ``rust/cowcore-core/src/
policy.rs``, exported as ``cowcore._cowcore.Machine.policies()``), so that the reference stays
independent of it; ``tests/test_api.py`` checks that the two are equal. The facade validates
names against the table of the backend it runs (:meth:`SysfsBackend.policies`)."""

POLICY_DEFAULTS: dict[str, dict[str, bool]] = {
    kernel: {spec.name: spec.defaults[kernel] for spec in POLICIES} for kernel in KERNEL_PROFILES
}
""":data:`POLICIES` as ``{profile: {toggle: default}}`` (derived, not declared)."""

U64 = 1 << 64


def check_u64(name: str, value: object) -> int:
    """An unsigned 64-bit integer argument (addresses, lengths, values, frame numbers), as an
    ``int``: anything :func:`operator.index` accepts (``int``, numpy integers such as
    ``np.uint64``, ``IntEnum``), but not a ``bool``, in ``[0, 2^64)``; otherwise
    :class:`InvalidArgumentError`. The facade checks its arguments with it, and the reference
    the items of a batch call (the Rust binding's ``list_addrs`` applies the same rules)."""
    if type(value) is int and 0 <= value < U64:  # the common case, checked first: it is cheap
        return value
    if isinstance(value, bool):  # an int, but True is not an address
        raise InvalidArgumentError(f"{name} must be an int, not bool")
    try:
        n = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise InvalidArgumentError(f"{name} must be an int, not {type(value).__name__}") from None
    if not 0 <= n < U64:
        raise InvalidArgumentError(f"{name} must be in [0, 2^64), not {n}")
    return n


PID_LIMIT = 1 << 32
"""pids are below 2^32 (``pid_t`` is 32 bits; the Rust core keeps them as ``u32``)."""

LEVELS: tuple[int, ...] = (4, 5)
"""Page-table levels a machine may have (4, or 5 with LA57)."""


def check_pid(value: object) -> int:
    """A pid argument as an ``int``: anything :func:`operator.index` accepts but a ``bool``;
    one that cannot name a process (negative, ``>= 2^32``, not an integer) raises
    :class:`NoSuchProcessError`, as an unused pid does, from either backend."""
    try:
        n = -1 if isinstance(value, bool) else operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        n = -1
    if not 0 <= n < PID_LIMIT:
        raise NoSuchProcessError(f"no process with pid {value!r}")
    return n


def check_levels(value: object) -> int:
    """A page-table level count: an int in :data:`LEVELS`, else
    :class:`InvalidArgumentError`."""
    n = check_u64("levels", value)
    if n not in LEVELS:
        raise InvalidArgumentError(f"levels must be 4 or 5, not {n}")
    return n


BATCH_FORMATS = frozenset({"q", "Q", "l", "L", "@q", "@Q", "@l", "@L"})
"""Buffer formats a batch call reads directly (with 8-byte items): 64-bit integers in native
byte order, as numpy ``int64``/``uint64`` arrays (``l``/``L`` on Linux), ``array('q')`` and
``array('Q')`` export them."""

BATCH_TYPES = (
    "must be a list of ints or a one-dimensional buffer of 64-bit integers (format q, Q, l or L)"
)


def batch_view(name: str, values: object) -> memoryview | None:
    """``values`` as a view of 64-bit integers, when it exports one: a one-dimensional buffer
    (contiguous or strided) of a format in :data:`BATCH_FORMATS` with 8-byte items. ``None``
    for an object that exports no buffer, or a buffer of other items (``bytes``,
    ``array('I')``, a big-endian numpy array), which a caller may still iterate.

    Raises:
        InvalidArgumentError: a buffer of more than one dimension (iterating it would give
            rows, not addresses).
    """
    try:
        view = memoryview(values)  # type: ignore[arg-type]
    except TypeError:
        return None
    if view.ndim > 1:
        raise InvalidArgumentError(
            f"{name} must be one-dimensional, not a {view.ndim}-dimensional buffer"
        )
    if view.ndim == 1 and view.itemsize == 8 and view.format in BATCH_FORMATS:
        return view
    return None


def check_batch(name: str, values: object) -> list[int]:
    """The addresses of a batch call as a backend takes them (the reference's rules; the Rust
    binding's ``page_addrs`` applies the same, with the same messages): a ``list`` whose items
    each pass :func:`check_u64`, or a buffer that :func:`batch_view` accepts, whose signed
    items must not be negative.

    Raises:
        InvalidArgumentError: naming the first bad item (``addrs[3] must be ...``), or the
            type or format of an argument that is neither.
    """
    if isinstance(values, list):
        return [check_u64(f"{name}[{i}]", v) for i, v in enumerate(values)]
    view = batch_view(name, values)
    if view is None:
        what = type(values).__name__
        with contextlib.suppress(TypeError):  # a buffer: say what its items are
            what += f" of format '{memoryview(values).format}'"  # type: ignore[arg-type]
        raise InvalidArgumentError(f"{name} {BATCH_TYPES}, not {what}")
    items: list[int] = view.tolist()
    if view.format[-1] in "ql":
        for i, v in enumerate(items):
            if v < 0:
                raise InvalidArgumentError(f"{name}[{i}] must be in [0, 2^64), not {v}")
    return items


class SysfsBackend(Protocol):
    """The machine's fixed shape, its sysfs THP settings and its policy toggles."""

    @property
    def kernel(self) -> str: ...

    @property
    def levels(self) -> int: ...

    @property
    def total_frames(self) -> int: ...

    def config(self) -> KernelConfig:
        """The capabilities of the machine's kernel profile."""
        ...

    def thp_enabled(self) -> str: ...
    def set_thp_enabled(self, mode: str) -> None: ...
    # kernel.pid_max: fork raises ProcessLimitError (EAGAIN) while pid_max - 1 processes
    # live; set_pid_max raises InvalidArgumentError outside [301, 4194304].
    def pid_max(self) -> int: ...
    def set_pid_max(self, pid_max: int) -> None: ...
    def thp_size(self, size: str) -> str: ...
    def set_thp_size(self, size: str, mode: str) -> None: ...
    def use_zero_page(self) -> bool: ...
    def set_use_zero_page(self, on: bool) -> None: ...
    def policies(self) -> tuple[PolicySpec, ...]:
        """The backend's table of policy toggles (the same under every profile)."""
        ...

    def policy(self, name: str) -> bool: ...
    def set_policy(self, name: str, value: bool) -> None: ...


class AddressSpaceBackend(Protocol):
    """Processes and their mappings."""

    def init_pid(self) -> int: ...
    def pids(self) -> list[int]: ...
    def mm_id(self, pid: int) -> int: ...
    def mmap(self, pid: int, length: int) -> int: ...
    # MAP_FIXED | MAP_FIXED_NOREPLACE: InvalidAddressError ("... (EEXIST)") if the range
    # meets a VMA; merges with equal-flag neighbours like any VMA change.
    def mmap_fixed(self, pid: int, addr: int, length: int) -> int: ...
    # The address-space id: 1 for init, the next number for each new mm, never reused.
    def asid(self, pid: int) -> int: ...
    def munmap(self, pid: int, addr: int, length: int) -> None: ...
    # mremap(MREMAP_MAYMOVE | MREMAP_FIXED) of a range inside one mapping, to new_addr or
    # (None) to a fresh address keeping the range's offset in its 2M block; the new address.
    def mremap(self, pid: int, addr: int, length: int, new_addr: int | None) -> int: ...
    # A FOLL_TOUCH read from outside (/proc/<pid>/mem): marks the folio of every present PTE
    # of the range accessed (PG_referenced); no fault, no content change.
    def touch(self, pid: int, addr: int, length: int) -> None: ...
    # GUP references and pins held by the process until unref/unpin of the same range or
    # exit (issue 16): ref = FOLL_GET read (vmsplice), pin = FOLL_PIN|FOLL_LONGTERM|FOLL_WRITE
    # (io_uring); unref/unpin of a range not held: InvalidArgumentError.
    def ref(self, pid: int, addr: int, length: int) -> None: ...
    def unref(self, pid: int, addr: int, length: int) -> None: ...
    def pin(self, pid: int, addr: int, length: int) -> None: ...
    def unpin(self, pid: int, addr: int, length: int) -> None: ...
    # madvise(MADV_COLLAPSE) of a range every page of which is mapped (the caller checks):
    # the ScanResult code of the call (SUCCEED, or the last failure; ScanResult.errno).
    def collapse(self, pid: int, addr: int, length: int) -> int: ...
    # A short R/O FOLL_PIN by another process (process_vm_readv): read faults, then the
    # unshare fault of every anonymous page that is not anon-exclusive; one access record a
    # page (ACCESS_SIZE bytes each, outcome UNSHARE where the unshare fault ran).
    def unshare(self, pid: int, addr: int, length: int) -> bytearray: ...
    def mprotect(self, pid: int, addr: int, length: int, prot: str) -> None: ...
    def madvise(self, pid: int, addr: int, length: int, advice: str) -> None: ...
    # madvise(MADV_PAGEOUT): reclaim the range's exclusive folios to the swap device; raises
    # as madvise does.
    def pageout(self, pid: int, addr: int, length: int) -> None: ...
    def fork(self, pid: int) -> int: ...
    def exit(self, pid: int) -> None: ...


class AccessBackend(Protocol):
    """Loads and stores, which fault pages in."""

    def write(self, pid: int, addr: int, length: int, value: int) -> None: ...
    def read(self, pid: int, addr: int, length: int) -> list[int]: ...
    # The batch calls check their items themselves (check_batch: InvalidArgumentError for an
    # item that is not an int in [0, 2^64)): the facade passes the caller's list, or a view
    # of a buffer of 64-bit integers, through untouched.
    def write_pages(self, pid: int, addrs: list[Any] | memoryview, value: int) -> None: ...
    def read_pages(self, pid: int, addrs: list[Any] | memoryview) -> list[int]: ...
    # One access of one byte (docs/access-and-events.md): a segfault or an out-of-memory
    # fault is an outcome, not an exception; NoSuchProcessError is raised.
    def access(self, pid: int, addr: int, write: bool, value: int) -> Access: ...
    # The batch form: `addrs` as for write_pages; `writes` one bool for all, or a view of n
    # bytes, each 0 or 1. Returns the n records in the Rust layout (outcome.ACCESS_FIELDS,
    # ACCESS_SIZE bytes each), which the facade wraps as a numpy array without a copy.
    # Items are checked before any access is made (InvalidArgumentError, nothing done).
    def access_batch(
        self,
        pid: int,
        addrs: list[Any] | memoryview,
        writes: bool | memoryview,
        value: int,
    ) -> bytearray: ...


class InspectionBackend(Protocol):
    """Snapshots of the state, which change nothing (no fault is taken)."""

    def free_frames(self) -> int: ...
    def vmas(self, pid: int) -> list[VmaInfo]: ...
    def rss_anon(self, pid: int) -> int: ...
    def translate(self, pid: int, addr: int) -> Translation: ...
    def observe(self, pid: int, addr: int, length: int) -> list[PageObservation]: ...
    def folio(self, pfn: int) -> FolioSnapshot: ...
    # /proc/<pid>/smaps: one record per VMA, lowest first (docs/accounting.md).
    def smaps(self, pid: int) -> list[Smaps]: ...
    def check(self) -> None: ...
    # drop_caches (2): the deferred-split shrinker splits the queued folios (split.rs).
    def drop_caches(self) -> None: ...


class EventsBackend(Protocol):
    """What happened since the machine started."""

    def stats(self) -> Stats: ...
    def vmstat(self) -> Vmstat: ...
    # Start (True) or stop (False, dropping what was kept) keeping the events.
    def record(self, on: bool) -> None: ...
    # The events kept since the last call, as EVENT_SIZE-byte records (outcome.EVENT_FIELDS).
    def take_events(self) -> bytes: ...


class Backend(
    SysfsBackend, AddressSpaceBackend, AccessBackend, InspectionBackend, EventsBackend, Protocol
):
    """What a simulation backend provides. See :class:`cowcore.Machine` for the semantics."""


class VmaInfo(NamedTuple):
    """One VMA of a process (a tuple, as ``Process.vmas()`` has always returned)."""

    start: int
    end: int
    prot: str
    """``"none"``, ``"r"`` or ``"rw"``."""
    flags: tuple[str, ...]
    """The VMA flags beyond the protection (``"hugepage"``, ``"dontfork"``, ...)."""


@dataclass(frozen=True, slots=True)
class WalkLevel:
    """One step of a page walk: the table visited and the entry read from it."""

    level: str
    """``"pgd"``, ``"p4d"``, ``"pud"``, ``"pmd"`` or ``"pte"``."""
    table_pfn: int
    index: int
    entry: int
    """The raw 64-bit entry."""

    @property
    def flags(self) -> tuple[str, ...]:
        """The entry's set bits by name (``"P"``, ``"RW"``, ``"US"``, ``"A"``, ``"D"``,
        ``"PS"``...)."""
        return flag_names(self.entry)


@dataclass(frozen=True, slots=True)
class Translation:
    """The result of walking the page tables for one virtual address (no fault is taken)."""

    addr: int
    steps: tuple[WalkLevel, ...]
    pfn: int | None
    """The frame that maps the 4 KiB page holding ``addr``, or ``None`` if nothing maps it."""
    page_size: int | None
    """4096 or 2097152 for a PMD leaf; ``None`` when not mapped."""


@dataclass(frozen=True, slots=True)
class PageObservation:
    """What ``observe`` reports of one page (the scenario format's page observation)."""

    addr: int
    present: bool
    pfn: int | None
    frame_kind: Literal["normal", "zero", "huge_zero", "swap"] | None
    """``"swap"`` for a swap entry (``present`` False, every other field ``None``)."""
    serial: int | None
    """Allocation serial of the folio holding the frame (frames are named by (pfn, serial))."""
    folio_pages: int | None
    mapcount: int | None
    """What ``/proc/kpagecount`` reports for the frame."""
    exclusive: bool | None
    """The pagemap ``PM_MMAP_EXCLUSIVE`` bit (not PageAnonExclusive)."""
    content: int | None
    """The 64-bit value at the first byte of the page."""


@dataclass(frozen=True, slots=True)
class MmIdSlot:
    """One of a large folio's two MM-owner slots (``_mm_id[i]`` and ``_mm_id_mapcount[i]``)."""

    mm_id: int
    """0 (``MM_ID_DUMMY``) when the slot is free."""
    mapcount: int
    """Logical count of this mm's page-table entries that map the folio."""


GUP_PIN_COUNTING_BIAS = 1024
"""The references one ``FOLL_PIN`` adds to an order-0 folio (include/linux/mm.h); a large
folio counts its pins in ``_pincount`` instead."""


@dataclass(frozen=True, slots=True)
class FolioSnapshot:
    """A copy of a folio's counters, as ``struct folio`` holds them (logical, unbiased).

    ``refcount`` counts every reference: one per mapping, the GUP references and pins
    (``ref``/``pin``), the swap cache's one per page. What is not a mapping is named by
    :attr:`pincount`, :attr:`maybe_dma_pinned` and :attr:`swap_slot`.
    """

    pfn: int
    order: int
    refcount: int
    page_mapcounts: tuple[int, ...]
    large_mapcount: int
    entire_mapcount: int
    nr_pages_mapped: int
    mm_ids: tuple[MmIdSlot, MmIdSlot]
    maybe_mapped_shared: bool
    anon_exclusive: tuple[bool, ...]
    serial: int
    pincount: int = 0
    """``_pincount``: the ``FOLL_PIN`` pins of a large folio's pages. 0 on an order-0 folio,
    whose pins are in :attr:`refcount` (:data:`GUP_PIN_COUNTING_BIAS` each)."""
    swap_slot: int | None = None
    """``folio->swap`` while the folio is in the swap cache (``folio_test_swapcache``): the
    first of its ``nr_pages`` consecutive slots; ``None`` outside the cache."""

    @property
    def nr_pages(self) -> int:
        """Pages in the folio (``folio_nr_pages``)."""
        return 1 << self.order

    @property
    def maybe_dma_pinned(self) -> bool:
        """``folio_maybe_dma_pinned``: ``_pincount > 0`` on a large folio, at least
        :data:`GUP_PIN_COUNTING_BIAS` references on an order-0 one (which many plain
        references would also reach: hence "maybe"). Fork copies such a folio's
        anon-exclusive pages at once (``folio_needs_cow_for_dma``)."""
        if self.order:
            return self.pincount > 0
        return self.refcount >= GUP_PIN_COUNTING_BIAS


PSS_SHIFT = 12
"""The fixed point of the PSS accumulators (``fs/proc/task_mmu.c``)."""

SMAPS_KB_FIELDS = (
    "Rss",
    "Pss",
    "Pss_Dirty",
    "Shared_Clean",
    "Shared_Dirty",
    "Private_Clean",
    "Private_Dirty",
    "Referenced",
    "Anonymous",
    "AnonHugePages",
    "Swap",
    "SwapPss",
)
"""The smaps lines the model computes, in the kernel's order and spelling."""


@dataclass(frozen=True, slots=True)
class Smaps:
    """The accumulators of ``struct mem_size_stats`` for one VMA (``show_smap``) or a whole
    process (``show_smaps_rollup``), as the kernel keeps them: bytes, and the three PSS
    sums in fixed point (bytes << ``PSS_SHIFT``). :meth:`kb` prints them as the kernel
    does (``>> 10``; PSS ``>> (10 + PSS_SHIFT)``), so a rollup rounds once over the sum
    while adding per-VMA lines rounds each (docs/accounting.md)."""

    start: int
    end: int
    prot: str
    """``"none"``, ``"r"`` or ``"rw"`` (the VMA's; a rollup: its first VMA's)."""
    flags: tuple[str, ...]
    rss: int
    pss: int
    pss_dirty: int
    shared_clean: int
    shared_dirty: int
    private_clean: int
    private_dirty: int
    referenced: int
    anonymous: int
    anon_huge_pages: int
    swap: int
    swap_pss: int

    def kb(self) -> dict[str, int]:
        """The ``SMAPS_KB_FIELDS`` lines as the kernel prints them, in kB."""
        k, f = 10, 10 + PSS_SHIFT
        return {
            "Rss": self.rss >> k,
            "Pss": self.pss >> f,
            "Pss_Dirty": self.pss_dirty >> f,
            "Shared_Clean": self.shared_clean >> k,
            "Shared_Dirty": self.shared_dirty >> k,
            "Private_Clean": self.private_clean >> k,
            "Private_Dirty": self.private_dirty >> k,
            "Referenced": self.referenced >> k,
            "Anonymous": self.anonymous >> k,
            "AnonHugePages": self.anon_huge_pages >> k,
            "Swap": self.swap >> k,
            "SwapPss": self.swap_pss >> f,
        }

    @property
    def size(self) -> int:
        """``Size``: the range's length in bytes."""
        return self.end - self.start


@dataclass(frozen=True, slots=True, eq=False)
class Stats(Mapping[str, object]):
    """Event counters since the machine started (DESIGN.md "Stats").

    A record with a field per counter (``stats.pgreuse``) that is also a read-only mapping
    (``stats["pgreuse"]``, ``dict(stats)``, ``stats.items()``; equal to any mapping with the
    same items), as ``stats()`` returned a ``dict`` before.
    """

    anon_fault_alloc: Mapping[str, int]
    """``MTHP_STAT_ANON_FAULT_ALLOC`` by size name (every size, zero included)."""
    anon_fault_fallback: Mapping[str, int]
    """``MTHP_STAT_ANON_FAULT_FALLBACK`` by size name."""
    split: Mapping[str, int]
    """``MTHP_STAT_SPLIT`` by size name (folio splits)."""
    thp_fault_alloc: int
    """``THP_FAULT_ALLOC``."""
    thp_split_pmd: int
    """``THP_SPLIT_PMD``."""
    pgreuse: int
    """``PGREUSE``: reuse in ``do_wp_page`` (a PMD reuse does not count it)."""
    cow_copy: int
    """Copies made by ``wp_page_copy``."""
    faults_read: int
    """Faults taken on read accesses."""
    faults_write: int
    """Faults taken on write accesses to a not-present entry."""
    faults_wp: int
    """Write-protect faults (a write to a present read-only entry)."""
    huge_zero_write: int
    """``do_huge_zero_wp_pmd`` allocations."""
    split_deferred: Mapping[str, int]
    """``MTHP_STAT_SPLIT_DEFERRED`` by size name: folios queued for deferred split as
    partially mapped (``deferred_split_folio``)."""
    nr_anon: Mapping[str, int]
    """``MTHP_STAT_NR_ANON`` by size name: anonymous folios of that size that exist now (a
    gauge, not a count of events)."""
    nr_anon_partially_mapped: Mapping[str, int]
    """``MTHP_STAT_NR_ANON_PARTIALLY_MAPPED`` by size name: those waiting on the deferred-split
    queue as partially mapped now (a gauge)."""
    thp_fault_fallback: int
    """``THP_FAULT_FALLBACK``: a fault found no PMD-size folio (``anon_fault_fallback`` of 2M)."""
    thp_split_page: int
    """``THP_SPLIT_PAGE``: PMD-size folios split (``split`` of 2M)."""
    thp_deferred_split_page: int
    """``THP_DEFERRED_SPLIT_PAGE``: PMD-size folios queued as partially mapped."""
    split_failed: Mapping[str, int]
    """``MTHP_STAT_SPLIT_FAILED`` by size name: splits ``can_split_folio`` refused (the
    deferred-split shrinker of ``drop_caches`` on a folio with a ``ref`` or a pin)."""
    thp_split_page_failed: int
    """``THP_SPLIT_PAGE_FAILED``: PMD-size folios that could not be split."""
    thp_collapse_alloc: int
    """``THP_COLLAPSE_ALLOC``: THPs allocated by a collapse (``MADV_COLLAPSE``)."""
    thp_collapse_alloc_failed: int
    """``THP_COLLAPSE_ALLOC_FAILED``: collapses that found no free PMD-size block."""
    pswpin: int = 0
    """``PSWPIN``: pages read from swap (zero-map slots are not read)."""
    pswpout: int = 0
    """``PSWPOUT``: pages written to swap (zero-filled pages only marked are not)."""
    thp_swpout: int = 0
    """``THP_SWPOUT``: PMD-size folios written to swap whole."""
    thp_swpout_fallback: int = 0
    """``THP_SWPOUT_FALLBACK``: PMD-size folios split for want of swap slots."""
    swpout: Mapping[str, int] = field(default_factory=lambda: dict.fromkeys(THP_SIZES, 0))
    """``MTHP_STAT_SWPOUT`` by size name: large folios written whole."""
    swpout_fallback: Mapping[str, int] = field(default_factory=lambda: dict.fromkeys(THP_SIZES, 0))
    """``MTHP_STAT_SWPOUT_FALLBACK`` by size name: large folios split for want of slots."""
    swpin: Mapping[str, int] = field(default_factory=lambda: dict.fromkeys(THP_SIZES, 0))
    """``MTHP_STAT_SWPIN`` by size name: large folios read whole."""
    swpin_fallback: Mapping[str, int] = field(default_factory=lambda: dict.fromkeys(THP_SIZES, 0))
    """``MTHP_STAT_SWPIN_FALLBACK`` by size name: large swap-ins that found no memory."""

    def __getitem__(self, key: str) -> object:
        if key not in STATS_KEYS:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(STATS_KEYS)

    def __len__(self) -> int:
        return len(STATS_KEYS)

    def __repr__(self) -> str:
        return f"Stats({', '.join(f'{k}={v!r}' for k, v in self.items())})"


STATS_KEYS: tuple[str, ...] = tuple(f.name for f in fields(Stats))
"""The keys of :class:`Stats`, in order (its field names)."""

PER_SIZE_STATS: tuple[str, ...] = (
    "anon_fault_alloc",
    "anon_fault_fallback",
    "split",
    "split_deferred",
    "nr_anon",
    "nr_anon_partially_mapped",
    "swpout",
    "swpout_fallback",
    "swpin",
    "swpin_fallback",
)
"""The :class:`Stats` fields that are maps by size name: the files of
``/sys/kernel/mm/transparent_hugepage/hugepages-<size>kB/stats/`` the model keeps."""


@dataclass(frozen=True, slots=True)
class Vmstat:
    """The ``/proc/vmstat`` lines the simulator keeps, named as the kernel prints them: the
    gauges of physical memory, then the THP events (the same values as in :class:`Stats`)."""

    nr_free_pages: int
    """Free frames."""
    nr_anon_pages: int
    """``NR_ANON_MAPPED``: anonymous pages mapped by at least one entry (a PMD-mapped THP
    counts all its pages), maintained where ``__folio_add_rmap``/``__folio_remove_rmap``
    maintain it."""
    nr_anon_transparent_hugepages: int
    """``NR_ANON_THPS`` in THPs: PMD-mapped anonymous folios."""
    nr_page_table_pages: int
    """``NR_PAGETABLE``: page-table frames, every level (PGDs and the tables deposited for
    huge PMDs included)."""
    thp_fault_alloc: int
    thp_fault_fallback: int
    thp_split_pmd: int
    thp_split_page: int
    thp_deferred_split_page: int
    thp_split_page_failed: int
    pgreuse: int


@dataclass(frozen=True, slots=True)
class MthpStats:
    """One size's ``/sys/kernel/mm/transparent_hugepage/hugepages-<size>kB/stats/`` files
    that the model keeps (``Machine.mthp_stats()``): four event counts since the machine
    started and two gauges (``nr_anon*``: how many such folios exist now), then
    ``split_failed`` (issue 16: splits ``can_split_folio`` refused)."""

    anon_fault_alloc: int
    anon_fault_fallback: int
    split: int
    split_deferred: int
    nr_anon: int
    nr_anon_partially_mapped: int
    split_failed: int


@dataclass(frozen=True, slots=True)
class Meminfo:
    """The anonymous-memory lines of ``/proc/meminfo`` (``Machine.meminfo()``), in kB as
    the kernel prints them (``meminfo_proc_show``): ``MemTotal`` (the machine's frames),
    ``MemFree``, ``AnonPages`` (``NR_ANON_MAPPED``), ``AnonHugePages`` (``NR_ANON_THPS``)
    and ``PageTables`` (``NR_PAGETABLE``)."""

    mem_total: int
    mem_free: int
    anon_pages: int
    anon_huge_pages: int
    page_tables: int

    def lines(self) -> dict[str, int]:
        """The values under the kernel's names (``{"MemTotal": ..., "AnonPages": ...}``)."""
        return {
            "MemTotal": self.mem_total,
            "MemFree": self.mem_free,
            "AnonPages": self.anon_pages,
            "AnonHugePages": self.anon_huge_pages,
            "PageTables": self.page_tables,
        }
