"""The contract between the public API and a simulation backend, and the snapshot types.

A backend (the pure-Python reference in :mod:`cowcore.reference`, or the Rust core behind
:mod:`cowcore._cowcore`) implements :class:`Backend`. It addresses processes by pid and
exchanges only plain values (ints, strings, tuples), so that the Rust binding never hands out
live references into its state. :class:`cowcore.Machine` and :class:`cowcore.Process` wrap a
backend, check argument types and turn the tuples into the frozen dataclasses defined here.

Every method that changes state either completes or raises one of the exceptions of
:mod:`cowcore.errors` and leaves the machine exactly as it was before the call.
"""

from __future__ import annotations

import contextlib
import operator
from dataclasses import dataclass
from typing import Any, Literal, Protocol, get_args

from cowcore.errors import InvalidArgumentError

KernelProfile = Literal["6.12", "6.15"]
"""Which kernel behaviour to follow: ``"6.12"`` never reuses a PTE-mapped large folio after
fork; ``"6.15"`` tracks MM ids per large folio and reuses it when one mm owns every reference
(the behaviour of every later kernel seen so far, 7.2 included)."""

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
Order 1 is never used for anonymous THP (``THP_ORDERS_ALL_ANON``)."""

POLICY_DEFAULTS: dict[KernelProfile, dict[str, bool]] = {
    "6.12": {"cow_reuse_pte_mapped_thp": False, "huge_zero_wp_alloc": False},
    "6.15": {"cow_reuse_pte_mapped_thp": True, "huge_zero_wp_alloc": True},
}
"""Policy toggles that are not sysfs settings, with their default under each profile.

* ``cow_reuse_pte_mapped_thp``: a write fault may reuse a PTE-mapped large folio that one mm
  maps exclusively (``__wp_can_reuse_large_anon_folio``, 6.15).
* ``huge_zero_wp_alloc``: a write to the huge zero PMD allocates a fresh PMD-mapped THP
  (``do_huge_zero_wp_pmd``, 6.14+) instead of splitting it and copying one 4 KiB page.
"""

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


FRAME_NONE = 0
FRAME_NORMAL = 1
FRAME_ZERO = 2
FRAME_HUGE_ZERO = 3

# An observation row as a backend returns it:
# (present, frame_kind, pfn, serial, folio_pages, mapcount, exclusive, content)
# frame_kind is one of FRAME_*; serial is the allocation serial of the folio (DESIGN.md), 0
# for the zero pages; for a page that is not present every field after frame_kind is 0/False.
ObservationRow = tuple[bool, int, int, int, int, int, bool, int]

# A page-walk step: (level name, pfn of the table, index in it, the raw 64-bit entry).
WalkStep = tuple[str, int, int, int]

# translate(): (steps, leaf pfn or -1, page size in bytes or 0); no fault is taken.
TranslationRow = tuple[list[WalkStep], int, int]

# folio(pfn): see FolioSnapshot for the order of the fields.
FolioRow = tuple[
    int,  # head pfn
    int,  # order
    int,  # refcount
    tuple[int, ...],  # per-page mapcount (logical, PTE mappings of that page)
    int,  # large mapcount (logical); for order 0, the page's mapcount
    int,  # entire mapcount (logical)
    int,  # nr_pages_mapped (without the ENTIRELY_MAPPED bias)
    tuple[tuple[int, int], tuple[int, int]],  # MM-ID slots: (mm id, logical count)
    bool,  # maybe mapped shared bit
    tuple[bool, ...],  # PageAnonExclusive per page
    int,  # allocation serial
]


class Backend(Protocol):
    """What a simulation backend provides. See :class:`cowcore.Machine` for the semantics."""

    @property
    def kernel(self) -> str: ...

    @property
    def levels(self) -> int: ...

    @property
    def total_frames(self) -> int: ...

    def free_frames(self) -> int: ...

    # -- policy --------------------------------------------------------------------------
    def thp_enabled(self) -> str: ...
    def set_thp_enabled(self, mode: str) -> None: ...
    def thp_size(self, size: str) -> str: ...
    def set_thp_size(self, size: str, mode: str) -> None: ...
    def use_zero_page(self) -> bool: ...
    def set_use_zero_page(self, on: bool) -> None: ...
    def policy(self, name: str) -> bool: ...
    def set_policy(self, name: str, value: bool) -> None: ...

    # -- processes -----------------------------------------------------------------------
    def init_pid(self) -> int: ...
    def pids(self) -> list[int]: ...
    def mm_id(self, pid: int) -> int: ...
    def mmap(self, pid: int, length: int) -> int: ...
    def munmap(self, pid: int, addr: int, length: int) -> None: ...
    def mprotect(self, pid: int, addr: int, length: int, prot: str) -> None: ...
    def madvise(self, pid: int, addr: int, length: int, advice: str) -> None: ...
    def write(self, pid: int, addr: int, length: int, value: int) -> None: ...
    def read(self, pid: int, addr: int, length: int) -> list[int]: ...
    # The batch calls check their items themselves (check_batch: InvalidArgumentError for an
    # item that is not an int in [0, 2^64)): the facade passes the caller's list, or a view
    # of a buffer of 64-bit integers, through untouched.
    def write_pages(self, pid: int, addrs: list[Any] | memoryview, value: int) -> None: ...
    def read_pages(self, pid: int, addrs: list[Any] | memoryview) -> list[int]: ...
    def fork(self, pid: int) -> int: ...
    def exit(self, pid: int) -> None: ...

    # -- inspection ----------------------------------------------------------------------
    def vmas(self, pid: int) -> list[tuple[int, int, str, tuple[str, ...]]]: ...
    def translate(self, pid: int, addr: int) -> TranslationRow: ...
    def observe(self, pid: int, addr: int, length: int) -> list[ObservationRow]: ...
    def folio(self, pfn: int) -> FolioRow: ...
    def stats(self) -> dict[str, object]: ...
    def check(self) -> None: ...


@dataclass(frozen=True, slots=True)
class WalkLevel:
    """One step of a page walk: the table visited and the entry read from it."""

    level: str
    """``"pgd"``, ``"p4d"``, ``"pud"``, ``"pmd"`` or ``"pte"``."""
    table_pfn: int
    index: int
    entry: int
    """The raw 64-bit entry."""
    flags: tuple[str, ...]
    """The entry's set bits by name (``"P"``, ``"RW"``, ``"US"``, ``"A"``, ``"D"``, ``"PS"``...)."""


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
    frame_kind: Literal["normal", "zero", "huge_zero"] | None
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


@dataclass(frozen=True, slots=True)
class FolioSnapshot:
    """A copy of a folio's counters, as ``struct folio`` holds them (logical, unbiased)."""

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

    @property
    def nr_pages(self) -> int:
        """Pages in the folio (``folio_nr_pages``)."""
        return 1 << self.order
