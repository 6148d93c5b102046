"""The public API: a simulated machine and its processes.

Example::

    import cowcore

    m = cowcore.Machine(kernel="6.15")
    m.thp.sizes["64K"] = "always"
    p = m.init
    a = p.mmap(2 << 20)
    p.write(a, 64 << 10)              # one write fault, one 64K folio
    c = p.fork()
    c.exit()
    p.write(a)                        # 6.15: reused in place; 6.12: copied
    print(m.folio(p.translate(a).pfn))

Both backends sit behind the same classes; this module checks argument *types*; the backends
check values and return the frozen records of :mod:`cowcore.protocol` themselves.

Wherever the API takes an int, it takes anything :func:`operator.index` accepts (numpy
integers such as ``np.uint64(4096)``, ``IntEnum`` members), but not a ``bool``. The batch
calls (:meth:`Process.write_pages`, :meth:`Process.read_pages`) also take a buffer of 64-bit
integers (a numpy ``int64``/``uint64`` array, ``array('q')``/``array('Q')``), which the
backend reads in one copy. A call whose result would be a list of more than
:data:`MAX_RESULT_PAGES` pages is refused; :meth:`Process.observe_iter` reads a larger range
in chunks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, MutableMapping
from typing import TYPE_CHECKING, Any, Literal, SupportsIndex, cast

from cowcore import outcome
from cowcore.errors import InvalidArgumentError
from cowcore.outcome import Access
from cowcore.protocol import (
    ADVICES,
    KERNEL_PROFILES,
    PROTS,
    THP_MODES,
    THP_SIZE_MODES,
    THP_SIZES,
    U64,
    Advice,
    Backend,
    FolioSnapshot,
    KernelConfig,
    KernelProfile,
    Meminfo,
    MthpStats,
    PageObservation,
    PolicySpec,
    Prot,
    ScanResult,
    Smaps,
    Stats,
    ThpMode,
    ThpSizeMode,
    Translation,
    VmaInfo,
    Vmstat,
    batch_view,
    check_levels,
    check_pid,
)
from cowcore.protocol import check_u64 as _int
from cowcore.recording import Recording

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
from cowcore.reference import ReferenceBackend
from cowcore.units import format_size, parse_memory

try:
    from cowcore import _cowcore
except ImportError:  # a source tree without the built extension: the reference still works
    _cowcore = None  # type: ignore[assignment]

BackendName = Literal["rust", "reference"]
BACKENDS: tuple[str, ...] = (
    (*_cowcore.backends(), "reference") if _cowcore is not None else ("reference",)
)
"""Backends that work in this build, the default first: the Rust core (``"rust"``) when the
native extension is built, and the pure-Python reference it is proven equal to."""

DEFAULT_BACKEND: str = BACKENDS[0]

PAGE_SIZE = 4096
MAX_MEMORY = 1 << 40
"""The largest simulated machine, 1 TiB. The host pays for the frames in use, not for the
size (DESIGN.md "Limits")."""

PID_MAX_LIMIT = 4 * 1024 * 1024
"""``PID_MAX_LIMIT`` on 64-bit (include/linux/threads.h): the largest :attr:`Machine.pid_max`
and its default. At most ``pid_max - 1`` processes live at once, which is also what keeps
every mapcount within the core's fields at any memory size."""

PID_MAX_MIN = 301
"""``PID_MAX_MIN`` (``RESERVED_PIDS + 1``): the smallest :attr:`Machine.pid_max`."""

USER_START = 0x1000
"""The lowest user address (DESIGN.md "Addresses"); user space ends at 2^47, or 2^56 with 5
levels."""

MAX_RESULT_PAGES = 1 << 20
"""The most pages one :meth:`Process.observe` or :meth:`Process.read` reports: 4 GiB of range.
A list of observations costs about 200 bytes of host memory per page (the observation and
its ints), so a call over a huge mapping (``observe(a, 1 << 40)``: 2^28 pages) would take the
host down rather than fail; a longer call raises :class:`InvalidArgumentError` naming this
limit. :meth:`Process.observe_iter` reads a range of any length in chunks."""

_SMAPS_SUMS = tuple(f.name for f in dataclasses.fields(Smaps))[4:]
"""The accumulators of :class:`Smaps` (everything but the range, protection and flags)."""


def smaps_rollup(records: list[Smaps]) -> Smaps:
    """``show_smaps_rollup``: one ``struct mem_size_stats`` gathered over every VMA
    (``smap_gather_stats`` adds into the same accumulators), so the raw sums, rounded once
    when printed; the range from the first VMA's start to the last VMA's end."""
    if not records:
        return Smaps(0, 0, "none", (), *(0 for _ in _SMAPS_SUMS))
    first, last = records[0], records[-1]
    sums = (sum(getattr(r, name) for r in records) for name in _SMAPS_SUMS)
    return Smaps(first.start, last.end, first.prot, first.flags, *sums)


OBSERVE_CHUNK = 1 << 16
"""Pages per backend call of :meth:`Process.observe_iter` unless told otherwise (256 MiB of
range, a few MB of host memory per chunk)."""


def _addrs(name: str, values: Iterable[SupportsIndex]) -> list[Any] | memoryview:
    """The addresses of a batch call as the backend takes them: the list itself when given
    one; a view of a one-dimensional buffer of 64-bit integers (a numpy ``int64``/``uint64``
    array, ``array('q')``/``array('Q')``, such a memoryview; strided ones too), which the
    backend reads in one copy; otherwise a list of the items (any other iterable, including a
    buffer of other items, e.g. ``bytes``, ``array('I')`` or a big-endian numpy array, is
    iterated). The items are checked by the backend, as :func:`_int` would check each, so
    that a batch crosses into the Rust core without a Python loop.

    Raises:
        InvalidArgumentError: not iterable, or a buffer of more than one dimension.
    """
    if type(values) is list:
        return values
    view = batch_view(name, values)
    if view is not None:
        return view
    try:
        return list(values)
    except (TypeError, NotImplementedError):  # memoryview raises the latter for some formats
        raise InvalidArgumentError(
            f"{name} must be an iterable of ints, not {type(values).__name__}"
        ) from None


def _writes(values: object, n: int) -> bool | memoryview:
    """The write flags of :meth:`Process.access_batch` as the backends take them: one bool
    for all, or a view of ``n`` bytes, each 0 or 1.

    Raises:
        InvalidArgumentError: not a bool nor a one-dimensional sequence of ``n`` bools (or
            integers 0/1).
    """
    import numpy as np  # noqa: PLC0415 (numpy loads on first use: outcome._dtypes)

    if isinstance(values, bool | np.bool_):
        return bool(values)
    try:
        flags = np.asarray(values)
    except (TypeError, ValueError):
        flags = np.asarray(None)
    if flags.ndim != 1 or not (flags.dtype == np.bool_ or flags.dtype.kind in "iu"):
        raise InvalidArgumentError(
            "writes must be a bool or a one-dimensional sequence of bools, "
            f"not {type(values).__name__}"
        )
    if len(flags) != n:
        raise InvalidArgumentError(
            f"{len(flags)} write flags for {n} addresses: the lengths must be equal"
        )
    if flags.dtype != np.bool_:
        bad = np.flatnonzero((flags != 0) & (flags != 1))
        if len(bad):
            raise InvalidArgumentError(f"writes[{bad[0]}] must be 0 or 1, not {flags[bad[0]]}")
    return np.ascontiguousarray(flags, dtype=np.uint8).data


_THP_SIZE_NAMES = tuple(THP_SIZES)


def _str(name: str, value: object, choices: tuple[str, ...] | None = None) -> str:
    """A name argument: a ``str``, one of ``choices`` when given (the facade checks every
    name, so that both backends report a bad one in the same words)."""
    if not isinstance(value, str):
        raise InvalidArgumentError(f"{name} must be a str, not {type(value).__name__}")
    if choices is not None and value not in choices:
        raise InvalidArgumentError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
    return value


def make_backend(backend: str, kernel: str, total_frames: int, levels: int) -> Backend:
    """Instantiate a backend by name."""
    if backend == "reference":
        return ReferenceBackend(kernel, total_frames, levels)
    if backend == "rust" and "rust" in BACKENDS:
        native: Backend = _cowcore.Machine(kernel, total_frames, levels)
        return native
    if backend == "rust":
        raise InvalidArgumentError(
            "the 'rust' backend needs the native extension, which this installation lacks "
            "(build it with `pip install .`); use backend='reference'"
        )
    raise InvalidArgumentError(f"unknown backend {backend!r}: one of {', '.join(BACKENDS)}")


class ThpSizes(MutableMapping[str, str]):
    """``machine.thp.sizes["64K"] = "always"``: the per-size sysfs knobs
    (``hugepages-<N>kB/enabled``), keyed by ``16K`` .. ``2M``: the sizes the profile's kernel
    has, which under ``"6.1"`` is ``2M`` alone (there the knob is what the single ``enabled``
    file gets: 2M's own mode, or ``enabled`` while 2M is at ``inherit``).

    Raises:
        InvalidArgumentError: an unknown size name or mode, or (reading or setting) a size the
            profile does not have (``"THP size 64K: this kernel has PMD-size (2M) THP only,
            ..."``, the kernel runner's words).
    """

    def __init__(self, backend: Backend) -> None:
        self._b = backend
        orders = backend.config().anon_thp_orders
        self._sizes = tuple(name for name, order in THP_SIZES.items() if order in orders)

    def __getitem__(self, size: str) -> str:
        return self._b.thp_size(_str("THP size", size, _THP_SIZE_NAMES))

    def __setitem__(self, size: str, mode: str) -> None:
        self._b.set_thp_size(
            _str("THP size", size, _THP_SIZE_NAMES), _str("THP size mode", mode, THP_SIZE_MODES)
        )

    def __delitem__(self, size: str) -> None:
        raise TypeError("THP sizes cannot be removed; set them to 'never'")

    def __contains__(self, size: object) -> bool:
        """Whether the profile has ``size`` (the mixin's version would call
        ``__getitem__``, which raises ``InvalidArgumentError``, not ``KeyError``)."""
        return size in self._sizes

    def __iter__(self) -> Iterator[str]:
        return iter(self._sizes)

    def __len__(self) -> int:
        return len(self._sizes)

    def __repr__(self) -> str:
        return f"ThpSizes({dict(self)!r})"


class ThpSettings:
    """The ``/sys/kernel/mm/transparent_hugepage`` knobs of a machine.

    A new machine starts as a freshly booted kernel and a scenario do: ``enabled`` at ``never``,
    the ``2M`` size at ``inherit`` (so ``enabled = "always"`` alone gives PMD THPs), every other
    size at ``never``, and ``use_zero_page`` on.
    """

    def __init__(self, backend: Backend) -> None:
        self._b = backend
        self.sizes = ThpSizes(backend)

    @property
    def enabled(self) -> ThpMode:
        """``transparent_hugepage/enabled``: what ``inherit`` sizes follow."""
        return cast(ThpMode, self._b.thp_enabled())

    @enabled.setter
    def enabled(self, mode: ThpMode) -> None:
        self._b.set_thp_enabled(_str("THP enabled", mode, THP_MODES))

    @property
    def use_zero_page(self) -> bool:
        """``transparent_hugepage/use_zero_page``: read faults may map the huge zero page."""
        return self._b.use_zero_page()

    @use_zero_page.setter
    def use_zero_page(self, on: bool) -> None:
        if not isinstance(on, bool):
            raise InvalidArgumentError("use_zero_page must be a bool")
        self._b.set_use_zero_page(on)

    def set_size(self, size: str, mode: ThpSizeMode) -> None:
        """Same as ``sizes[size] = mode``."""
        self.sizes[size] = mode


class Policy:
    """Behaviour toggles that are not sysfs knobs; defaults come from the kernel profile.

    ``machine.policy.cow_reuse_pte_mapped_thp = False`` gives 6.15 everything but the reuse
    of PTE-mapped large folios. :attr:`specs` lists the toggles with their docs and defaults
    (the backend's table: :data:`cowcore.protocol.POLICIES` for the reference, the Rust
    core's ``POLICIES`` for the native backend; the two are equal).
    """

    __slots__ = ("_backend", "_names", "specs")
    _backend: Backend
    _names: tuple[str, ...]
    specs: tuple[PolicySpec, ...]

    def __init__(self, backend: Backend) -> None:
        specs = backend.policies()
        object.__setattr__(self, "_backend", backend)
        object.__setattr__(self, "specs", specs)
        object.__setattr__(self, "_names", tuple(spec.name for spec in specs))

    def __getattr__(self, name: str) -> bool:
        if name.startswith("_"):
            raise AttributeError(name)
        return self._backend.policy(_str("policy", name, self._names))

    def __setattr__(self, name: str, value: bool) -> None:
        _str("policy", name, self._names)
        if not isinstance(value, bool):
            raise InvalidArgumentError(f"policy {name} takes a bool")
        self._backend.set_policy(name, value)

    def __dir__(self) -> list[str]:
        return [*super().__dir__(), *self._names]

    def as_dict(self) -> dict[str, bool]:
        """Every toggle with its current value."""
        return {name: self._backend.policy(name) for name in self._names}

    def __repr__(self) -> str:
        return f"Policy({self.as_dict()!r})"


class Machine:
    """A simulated x86-64 machine running one kernel profile.

    Args:
        kernel: ``"6.12"`` (PTE-mapped large folios are never reused after fork),
            ``"6.15"`` (MM-ID tracking and their reuse; also every later kernel seen so far) or
            ``"6.1"`` (Debian bookworm's kernel: 6.12's COW rules, PMD-size THP only, no
            per-size counters; DESIGN.md "Profiles").
        backend: which implementation simulates it: ``"rust"`` (the default when the native
            extension is built) or ``"reference"``; see :data:`BACKENDS`.
        memory: physical memory, bytes or a size such as ``"4G"`` (a multiple of 2M in
            [4M, 1T]; the host pays about 20 bytes per 4 KiB frame in use, plus the page
            tables).
        levels: page-table levels, 4 (default) or 5 (LA57).

    Raises:
        InvalidArgumentError: a bad profile, backend, memory size or level count.
    """

    def __init__(
        self,
        kernel: KernelProfile | str = "6.15",
        *,
        backend: BackendName | str = DEFAULT_BACKEND,
        memory: SupportsIndex | str = "4G",
        levels: SupportsIndex = 4,
    ) -> None:
        nbytes = parse_memory(memory) if isinstance(memory, str) else _int("memory", memory)
        if nbytes % (2 << 20) or not (4 << 20) <= nbytes <= MAX_MEMORY:
            raise InvalidArgumentError(f"memory must be a multiple of 2M in [4M, 1T], not {nbytes}")
        nlevels = check_levels(levels)
        self.backend_name = _str("backend", backend)
        self._b: Backend = make_backend(
            self.backend_name,
            _str("kernel profile", kernel, KERNEL_PROFILES),
            nbytes // PAGE_SIZE,
            nlevels,
        )
        self.thp = ThpSettings(self._b)
        self.policy = Policy(self._b)
        self._procs: dict[int, Process] = {}
        self._recording: Recording | None = None
        self.init = self._process(self._b.init_pid())

    def _process(self, pid: int) -> Process:
        proc = self._procs.get(pid)
        if proc is None:
            proc = self._procs[pid] = Process(self, pid)
        return proc

    @property
    def kernel(self) -> KernelProfile:
        """The behaviour profile."""
        return cast(KernelProfile, self._b.kernel)

    @property
    def config(self) -> KernelConfig:
        """What the profile's kernel does (its capabilities; DESIGN.md "Profiles")."""
        return self._b.config()

    @property
    def levels(self) -> int:
        return self._b.levels

    @property
    def total_frames(self) -> int:
        """Physical frames of 4 KiB."""
        return self._b.total_frames

    def free_frames(self) -> int:
        """Frames currently free in the buddy allocator."""
        return self._b.free_frames()

    @property
    def pid_max(self) -> int:
        """``kernel.pid_max`` (``/proc/sys/kernel/pid_max``), :data:`PID_MAX_LIMIT` unless set:
        a fork raises :class:`ProcessLimitError` (EAGAIN) while ``pid_max - 1`` processes
        live. pids are not reused, so they may pass ``pid_max``; only the count is bounded.

        Raises:
            InvalidArgumentError: (when set) a value outside ``[301, 4194304]``.
        """
        return self._b.pid_max()

    @pid_max.setter
    def pid_max(self, value: SupportsIndex) -> None:
        n = _int("pid_max", value)
        if not PID_MAX_MIN <= n <= PID_MAX_LIMIT:
            raise InvalidArgumentError(
                f"pid_max must be in [{PID_MAX_MIN}, {PID_MAX_LIMIT}], not {n}"
            )
        self._b.set_pid_max(n)

    def processes(self) -> list[Process]:
        """Live processes, in pid order."""
        return [self._process(pid) for pid in sorted(self._b.pids())]

    def folio(self, pfn: SupportsIndex) -> FolioSnapshot:
        """A snapshot of the folio that holds frame ``pfn``.

        Raises:
            InvalidArgumentError: the frame belongs to no allocated folio.
        """
        return self._b.folio(_int("pfn", pfn))

    def record(self) -> Recording:
        """A recording of the event stream: ``with m.record() as rec: ...``, then
        ``rec.events`` (a numpy structured array), ``rec.records()``, ``rec.to_arrow()``.

        Only one recording is open at a time.

        Raises:
            InvalidArgumentError: a recording of this machine is already open.
        """
        if self._recording is not None and self._recording._open:
            raise InvalidArgumentError("a recording of this machine is already open")
        self._recording = Recording(self._b)
        return self._recording

    def stats(self) -> Stats:
        """Event counters since the machine started (see DESIGN.md, Stats): a record that is
        also a mapping (``m.stats().pgreuse``, ``m.stats()["pgreuse"]``)."""
        return self._b.stats()

    def vmstat(self) -> Vmstat:
        """The ``/proc/vmstat`` lines the simulator keeps (``nr_anon_pages``,
        ``nr_anon_transparent_hugepages``, ``nr_page_table_pages``, ``thp_*``, ...), as the
        kernel maintains them (docs/accounting.md)."""
        return self._b.vmstat()

    def mthp_stats(self) -> dict[str, MthpStats]:
        """Per mTHP size (``"16K"`` .. ``"2M"``), the files of
        ``/sys/kernel/mm/transparent_hugepage/hugepages-<size>kB/stats/`` that the model
        keeps: fault allocations and fallbacks, splits, deferred splits, and the gauges
        ``nr_anon`` and ``nr_anon_partially_mapped``.

        Empty under a profile whose kernel has no per-size counters (``"6.1"``: no
        ``hugepages-<size>kB`` directory at all), as listing that directory would be; the
        same events are in :meth:`vmstat` (``thp_fault_alloc``, ``thp_split_pmd``, ...) and
        in :meth:`stats`, which keeps its per-size maps under every profile."""
        if not self.config.per_size_thp_stats:
            return {}
        s = self._b.stats()
        return {
            size: MthpStats(
                anon_fault_alloc=s.anon_fault_alloc[size],
                anon_fault_fallback=s.anon_fault_fallback[size],
                split=s.split[size],
                split_deferred=s.split_deferred[size],
                nr_anon=s.nr_anon[size],
                nr_anon_partially_mapped=s.nr_anon_partially_mapped[size],
                split_failed=s.split_failed[size],
            )
            for size in THP_SIZES
        }

    def meminfo(self) -> Meminfo:
        """The anonymous-memory lines of ``/proc/meminfo``, in kB."""
        v = self._b.vmstat()
        kb = PAGE_SIZE >> 10
        return Meminfo(
            mem_total=self.total_frames * kb,
            mem_free=v.nr_free_pages * kb,
            anon_pages=v.nr_anon_pages * kb,
            anon_huge_pages=v.nr_anon_transparent_hugepages * 512 * kb,
            page_tables=v.nr_page_table_pages * kb,
        )

    def drop_caches(self) -> None:
        """Write 2 to ``/proc/sys/vm/drop_caches``: the shrinkers run once, among them the
        deferred-split queue's (``deferred_split_scan``). Every partially mapped large folio
        waiting there is split into order-0 folios on the same frames (PMD mappings split
        first, unmapped pages freed; on 6.12+ zero-filled pages mapped to the shared zero
        page); one with references beyond its mappings (``ref``, ``pin``) cannot be split
        (``split_failed``) and stays queued. On 6.12+ a PMD THP with a zero-filled page is
        split as underused (``thp_underused`` with the kernel runner's ``max_ptes_none`` 0).
        DESIGN.md "Splits"."""
        self._b.drop_caches()

    def check(self) -> None:
        """Recompute every counter from the page tables and verify the invariants.

        Raises:
            InvariantError: naming the first broken invariant.
        """
        self._b.check()

    def __repr__(self) -> str:
        return (
            f"Machine(kernel={self.kernel!r}, backend={self.backend_name!r}, "
            f"frames={self.total_frames}, processes={len(self._b.pids())})"
        )


class Process:
    """A process of a :class:`Machine`. Get one from ``machine.init`` or :meth:`fork`."""

    def __init__(self, machine: Machine, pid: SupportsIndex) -> None:
        self.machine = machine
        self.pid = check_pid(pid)
        self._b: Backend = machine._b  # an attribute, not a property: read on every call

    @property
    def alive(self) -> bool:
        return self.pid in self._b.pids()

    @property
    def mm_id(self) -> int:
        """The MM id of this process's address space (as kept in folio owner slots)."""
        return self._b.mm_id(self.pid)

    @property
    def asid(self) -> int:
        """The address-space id: 1 for init, the next number for each new address space,
        never reused (MM ids are): what a TLB model tags its entries with."""
        return self._b.asid(self.pid)

    def mmap_fixed(self, addr: SupportsIndex, length: SupportsIndex) -> int:
        """Map ``length`` bytes of private anonymous read/write memory exactly at ``addr``
        (``MAP_FIXED_NOREPLACE``), so that a trace with real addresses replays; merges with
        equal neighbours.

        Raises:
            InvalidArgumentError: a misaligned address or a bad length.
            InvalidAddressError: outside user space, or (``EEXIST``) the range meets a
                mapping.
        """
        return self._b.mmap_fixed(self.pid, _int("addr", addr), _int("length", length))

    def access(
        self, addr: SupportsIndex, write: bool = False, *, value: SupportsIndex = 0
    ) -> Access:
        """One load (or store, with ``write=True``, of ``value`` at the page's first byte) of
        the byte at ``addr``, and what the kernel did and why.

        A segfault or an out-of-memory fault is an outcome (``SEGFAULT``, ``OUT_OF_MEMORY``)
        with nothing changed, not an exception. See docs/access-and-events.md.
        """
        if type(write) is not bool:
            raise InvalidArgumentError(f"write must be a bool, not {type(write).__name__}")
        return self._b.access(self.pid, _int("addr", addr), write, _int("value", value))

    def access_batch(
        self,
        addrs: Iterable[SupportsIndex],
        writes: bool | Iterable[bool | int] = False,
        *,
        value: SupportsIndex = 0,
    ) -> npt.NDArray[np.void]:
        """:meth:`access` for each address in order; the records as a numpy structured
        array of :data:`~cowcore.outcome.ACCESS_DTYPE`, with no Python object per access.

        ``addrs`` as :meth:`write_pages` takes them (a numpy ``uint64`` array is read in one
        copy), any byte address; ``writes`` one bool for all, or one per address (a numpy
        bool array). Convert a row with :meth:`cowcore.outcome.Access.from_raw`.

        Raises:
            InvalidArgumentError: a bad address item, or bad write flags (nothing done).
        """
        import numpy as np  # noqa: PLC0415 (numpy loads on first use: outcome._dtypes)

        a = _addrs("addrs", addrs)
        w = _writes(writes, len(a))
        raw = self._b.access_batch(self.pid, a, w, _int("value", value))
        return np.frombuffer(raw, dtype=outcome.ACCESS_DTYPE)  # writable, no copy

    def mmap(self, length: SupportsIndex) -> int:
        """Map ``length`` bytes of private anonymous read/write memory; returns its address
        (2 MiB aligned, placed top-down with a 2 MiB gap to the previous mapping)."""
        return self._b.mmap(self.pid, _int("length", length))

    def munmap(self, addr: SupportsIndex, length: SupportsIndex) -> None:
        """Unmap ``[addr, addr + length)``; unmapped pages in the range are fine."""
        self._b.munmap(self.pid, _int("addr", addr), _int("length", length))

    def mremap(
        self, addr: SupportsIndex, length: SupportsIndex, new_addr: SupportsIndex | None = None
    ) -> int:
        """Move ``[addr, addr + length)``, which must lie inside one mapping, to a new address
        and return it: ``mremap(addr, length, length, MREMAP_MAYMOVE | MREMAP_FIXED,
        new_addr)``. Without ``new_addr`` the address is fresh: where :meth:`mmap` would
        place ``addr % 2M + length`` bytes, plus ``addr % 2M``, so the range keeps its offset
        in its 2 MiB block (docs/scenario-format.md, ``mremap``). With it, whatever is mapped
        there is unmapped first. Pages move with their frames, counts and exclusivity (a
        huge PMD that the range cuts is split first; a whole aligned one moves whole); the
        old range becomes a hole.

        Raises:
            InvalidArgumentError: a misaligned address, a bad length, or a destination that
                overlaps the range (``EINVAL``).
            InvalidAddressError: a range outside user space, a range not inside one mapping
                (``EFAULT``), or no room for a fresh address (``ENOMEM``).
            OutOfMemoryError: no frame for a page table (nothing moves).
        """
        new = None if new_addr is None else _int("new_addr", new_addr)
        return self._b.mremap(self.pid, _int("addr", addr), _int("length", length), new)

    def touch(self, addr: SupportsIndex, length: SupportsIndex = PAGE_SIZE) -> None:
        """Read ``[addr, addr + length)`` from outside the process, as a debugger or
        ``/proc/<pid>/mem`` does (GUP with ``FOLL_TOUCH``): the folio of every present PTE
        of the range is marked accessed (``PG_referenced``, which smaps counts as
        ``Referenced``). PMD-mapped THPs and holes are left alone and nothing is faulted in
        (docs/accounting.md, "Referenced"). The kernel runner's ``observe`` reads pages
        this way, so the scenario runner's ``observe`` touches what it observes."""
        self._b.touch(self.pid, _int("addr", addr), _int("length", length))

    def ref(self, addr: SupportsIndex, length: SupportsIndex = PAGE_SIZE) -> None:
        """Take one extra reference on the page behind every address of the range, as
        ``vmsplice()`` into a pipe does (GUP without ``FOLL_WRITE``: a read fault first
        where nothing is mapped, no unshare), held until :meth:`unref` of the same range or
        this process's exit. The pages stay mapped and shared as before; only refcounts
        change (a COW fault can no longer reuse them). A reference outlives the mapping: a
        folio unmapped meanwhile is freed when the reference goes. Raises
        :class:`~cowcore.errors.SegmentationFault` where the range is not readable (the
        kernel's ``EFAULT``; nothing is taken)."""
        self._b.ref(self.pid, _int("addr", addr), _int("length", length))

    def unref(self, addr: SupportsIndex, length: SupportsIndex = PAGE_SIZE) -> None:
        """Drop the references of the latest :meth:`ref` of exactly this range
        (:class:`~cowcore.errors.InvalidArgumentError` if there is none)."""
        self._b.unref(self.pid, _int("addr", addr), _int("length", length))

    def pin(self, addr: SupportsIndex, length: SupportsIndex = PAGE_SIZE) -> None:
        """A long-term writable pin of every page of the range (``FOLL_PIN |
        FOLL_LONGTERM | FOLL_WRITE``, as io_uring's buffer registration takes it): a write
        fault first where the page is not writable (COW copy or reuse, as the profile
        decides), then ``GUP_PIN_COUNTING_BIAS`` (1024) references on a small folio, one
        reference and ``_pincount`` + 1 on a large one, per page; the mm gets
        ``MMF_HAS_PINNED``. While pinned, a fork copies the pinned folio's anon-exclusive
        pages into the child at once (``copy_present_page``). Held until :meth:`unpin` or
        exit. Raises :class:`~cowcore.errors.SegmentationFault` where the range is not
        writable."""
        self._b.pin(self.pid, _int("addr", addr), _int("length", length))

    def unpin(self, addr: SupportsIndex, length: SupportsIndex = PAGE_SIZE) -> None:
        """Release the pins of the latest :meth:`pin` of exactly this range
        (:class:`~cowcore.errors.InvalidArgumentError` if there is none)."""
        self._b.unpin(self.pid, _int("addr", addr), _int("length", length))

    def unshare(
        self, addr: SupportsIndex, length: SupportsIndex = PAGE_SIZE
    ) -> npt.NDArray[np.void]:
        """A short read-only pin of the range taken and dropped by another process, as
        ``process_vm_readv()`` does (``FOLL_PIN`` without ``FOLL_LONGTERM``): a read fault
        first where nothing is mapped, then every anonymous page that is not anon-exclusive
        (shared with another process, or not yet known to be P's alone) goes through the
        unshare fault (``FAULT_FLAG_UNSHARE``) and ends exclusive to this process, reused or
        copied as the profile decides (a copy is mapped read-only); nothing is written. The
        zero pages are left as they are. Returns one access record per page (the layout of
        :meth:`access_batch`; outcome ``UNSHARE`` where the unshare fault ran;
        docs/access-and-events.md)."""
        import numpy as np  # noqa: PLC0415 (numpy loads on first use: outcome._dtypes)

        raw = self._b.unshare(self.pid, _int("addr", addr), _int("length", length))
        return np.frombuffer(raw, dtype=outcome.ACCESS_DTYPE)

    def collapse(self, addr: SupportsIndex, length: SupportsIndex) -> ScanResult:
        """``madvise(addr, length, MADV_COLLAPSE)``: collapse every whole, aligned 2 MiB block
        of a fully mapped range into a new PMD-mapped THP, synchronously, whatever the THP
        modes say (mm/khugepaged.c ``madvise_collapse``; DESIGN.md "MADV_COLLAPSE"). Each
        block's pages are copied into a fresh PMD-size folio (none and zero-page entries
        zero-filled), their PTEs cleared and their folios freed with their last mapping. A
        block stays as it is when a folio in it has an extra reference (a ``ref`` or
        ``pin``), when nothing was ever faulted there, or, before 7.x, when none of its
        PTEs is writable.

        Returns the :class:`ScanResult` that decided the call: ``SUCCEED`` when every block
        is PMD-mapped now, else the last failure; ``result.errno`` is what the system call
        returned (``None`` for 0, or ``"EINVAL"``, ``"EAGAIN"``, ``"ENOMEM"``). These are
        results, not exceptions, as for the kernel's caller.

        Raises:
            InvalidArgumentError: a misaligned address or a bad length.
            InvalidAddressError: a range outside user space, or with unmapped pages.
        """
        code = self._b.collapse(self.pid, _int("addr", addr), _int("length", length))
        return ScanResult(code)

    def pageout(self, addr: SupportsIndex, length: SupportsIndex) -> None:
        """``madvise(addr, length, MADV_PAGEOUT)``: reclaim the range's anonymous folios to
        the swap device now (mm/madvise.c ``madvise_cold_or_pageout_pte_range``, mm/vmscan.c
        ``shrink_folio_list``). A folio that only this mapping maps is written to swap slots
        and its PTEs become swap entries (``observe`` shows ``frame_kind == "swap"``); a
        later access swaps it back in (``do_swap_page``). Folios mapped by another process
        stay, a large folio the range covers only in part is split first, a pinned one stays
        mapped, and one with a ``ref`` is unmapped into the swap cache without being
        written. Zero-filled folios are only marked in the swap zeromap (6.12+).

        Raises:
            InvalidArgumentError: a misaligned address or a bad length.
            InvalidAddressError: a range outside user space, or with unmapped pages.
        """
        self._b.pageout(self.pid, _int("addr", addr), _int("length", length))

    def mprotect(self, addr: SupportsIndex, length: SupportsIndex, prot: Prot) -> None:
        """Set the protection of a fully mapped range to ``"none"``, ``"r"`` or ``"rw"``."""
        self._b.mprotect(
            self.pid, _int("addr", addr), _int("length", length), _str("prot", prot, PROTS)
        )

    def madvise(self, addr: SupportsIndex, length: SupportsIndex, advice: Advice) -> None:
        """Apply ``MADV_<ADVICE>`` to a fully mapped range."""
        self._b.madvise(
            self.pid, _int("addr", addr), _int("length", length), _str("advice", advice, ADVICES)
        )

    def write(
        self, addr: SupportsIndex, length: SupportsIndex = PAGE_SIZE, value: SupportsIndex = 1
    ) -> None:
        """Store the 64-bit ``value`` at the first byte of every page of the range.

        Raises:
            SegmentationFault: a page is unmapped or not writable (nothing is written).
            OutOfMemoryError: a fault found no memory (pages before it stay written).
        """
        if (
            type(addr) is int
            and type(length) is int
            and type(value) is int
            and 0 <= addr < U64
            and 0 <= length < U64
            and 0 <= value < U64
        ):  # the checks of _int inlined: this call is the hot one in per-page loops
            self._b.write(self.pid, addr, length, value)
            return
        self._b.write(self.pid, _int("addr", addr), _int("length", length), _int("value", value))

    def read(self, addr: SupportsIndex, length: SupportsIndex = PAGE_SIZE) -> list[int]:
        """Load the first 8 bytes of every page of the range.

        At most :data:`MAX_RESULT_PAGES` pages (4 GiB) per call: read a longer range in
        pieces (each piece is checked for faults before its first page is touched).

        Raises:
            InvalidArgumentError: a bad range, or one longer than :data:`MAX_RESULT_PAGES`
                pages.
            SegmentationFault: a page is unmapped or not readable (nothing is read).
            OutOfMemoryError: a fault found no memory (pages before it stay faulted in).
        """
        start, nbytes = _int("addr", addr), _int("length", length)
        self._check_result_size("read", start, nbytes)
        return self._b.read(self.pid, start, nbytes)

    def write_pages(self, addrs: Iterable[SupportsIndex], value: SupportsIndex = 1) -> None:
        """Store ``value`` at the first byte of each page in ``addrs``, in the order given.

        The batch form of :meth:`write` for scattered pages: one call into the backend
        instead of one per page. ``addrs`` is any iterable of ints (items as :meth:`write`
        takes an address: numpy integers too); a one-dimensional buffer of 64-bit integers
        (a numpy ``int64``/``uint64`` array, ``array('q')``/``array('Q')``, a memoryview of
        format ``q``/``Q``/``l``/``L``) is read in one copy, with no Python object per page.
        Every address must be 4096-aligned; every page is checked before any is touched.

        Raises:
            InvalidArgumentError: an item that is not an int in ``[0, 2^64)`` (a negative
                ``int64`` too), or a misaligned address.
            SegmentationFault: a page is unmapped or not writable (nothing is written).
            OutOfMemoryError: a fault found no memory (earlier pages stay written).
        """
        self._b.write_pages(self.pid, _addrs("addrs", addrs), _int("value", value))

    def read_pages(self, addrs: Iterable[SupportsIndex]) -> list[int]:
        """Load the first 8 bytes of each page in ``addrs``, in the order given (the batch
        form of :meth:`read`; ``addrs`` as :meth:`write_pages` takes them). The result has
        one int per address given, so it is never larger than the caller's own batch."""
        return self._b.read_pages(self.pid, _addrs("addrs", addrs))

    def fork(self) -> Process:
        """Fork; the child inherits every mapping but the ``dontfork`` ones.

        Raises:
            OutOfMemoryError: no frames for the child's page tables (nothing changes).
            ProcessLimitError: ``pid_max - 1`` processes live (EAGAIN; nothing changes).
        """
        return self.machine._process(self._b.fork(self.pid))

    def exit(self) -> None:
        """Exit: tear down every mapping and the page tables, free the MM id."""
        self._b.exit(self.pid)

    def vmas(self) -> list[VmaInfo]:
        """The VMAs as ``(start, end, prot, extra flags)`` named tuples."""
        return self._b.vmas(self.pid)

    def smaps(self) -> list[Smaps]:
        """``/proc/<pid>/smaps``: one record per VMA, lowest first, with the accumulators of
        ``struct mem_size_stats`` as ``fs/proc/task_mmu.c`` computes them (bytes; the PSS
        sums in fixed point). ``record.kb()`` gives the lines in kB as the kernel prints
        them (docs/accounting.md)."""
        return self._b.smaps(self.pid)

    def smaps_rollup(self) -> Smaps:
        """``/proc/<pid>/smaps_rollup`` (``show_smaps_rollup``): one record whose
        accumulators are the sums over every VMA, so that its kB lines round once (the sum
        of the per-VMA kB lines of :meth:`smaps` can be smaller). Its range runs from the
        first VMA's start to the last VMA's end, its protection and flags are the first
        VMA's; a process with no VMA gets an empty range and zeros."""
        return smaps_rollup(self._b.smaps(self.pid))

    def rss_anon(self) -> int:
        """Anonymous pages this process maps: the kernel's ``MM_ANONPAGES`` counter
        (``get_mm_counter(mm, MM_ANONPAGES)``; ``/proc/PID/status`` prints it as ``RssAnon``
        in kB, four times this). A PMD-mapped THP counts 512, a page of a large folio mapped
        by a PTE 1, the zero pages 0; a page shared with another process counts in each."""
        return self._b.rss_anon(self.pid)

    def translate(self, addr: SupportsIndex) -> Translation:
        """Walk the page tables for ``addr`` without faulting."""
        return self._b.translate(self.pid, _int("addr", addr))

    def observe(
        self, addr: SupportsIndex, length: SupportsIndex = PAGE_SIZE
    ) -> list[PageObservation]:
        """What ``/proc/<pid>/pagemap`` and ``/proc/kpage*`` would say of each page.

        At most :data:`MAX_RESULT_PAGES` pages (4 GiB) per call; :meth:`observe_iter` takes
        a range of any length.

        Raises:
            InvalidArgumentError: a bad range, or one longer than :data:`MAX_RESULT_PAGES`
                pages.
        """
        start, nbytes = _int("addr", addr), _int("length", length)
        self._check_result_size("observe", start, nbytes)
        return self._b.observe(self.pid, start, nbytes)

    def observe_iter(
        self,
        addr: SupportsIndex,
        length: SupportsIndex = PAGE_SIZE,
        *,
        chunk: SupportsIndex = OBSERVE_CHUNK,
    ) -> Iterator[PageObservation]:
        """:meth:`observe` for a range of any length: the observations one by one, read
        ``chunk`` pages per backend call (at most :data:`MAX_RESULT_PAGES`), so that host
        memory holds one chunk at a time.

        The arguments and the range are checked now, before the first observation, with the
        errors :meth:`observe` raises; each chunk is read when the iteration reaches it, so a
        change made to the machine meanwhile shows in the chunks read after it (and one that
        ends the process ends the iteration with :class:`NoSuchProcessError`).

        Raises:
            InvalidArgumentError: a bad range, or ``chunk`` outside ``[1, MAX_RESULT_PAGES]``.
        """
        start, nbytes = _int("addr", addr), _int("length", length)
        pages = _int("chunk", chunk)
        if not 1 <= pages <= MAX_RESULT_PAGES:
            raise InvalidArgumentError(
                f"chunk must be in [1, {MAX_RESULT_PAGES}] pages, not {pages}"
            )
        step = pages * PAGE_SIZE
        if nbytes <= step or not self._range_ok(start, nbytes):
            # one call: a short range, or a bad one, which the backend rejects before
            # looking at a page (with the message observe() gives)
            first = self._b.observe(self.pid, start, nbytes)
        else:
            first = self._b.observe(self.pid, start, step)  # also checks the process
        return self._observe_chunks(start, start + nbytes, step, first)

    def _observe_chunks(
        self, start: int, end: int, step: int, first: list[PageObservation]
    ) -> Iterator[PageObservation]:
        """The generator behind :meth:`observe_iter`, given its first chunk."""
        yield from first
        for at in range(start + len(first) * PAGE_SIZE, end, step):
            yield from self._b.observe(self.pid, at, min(step, end - at))

    def _range_ok(self, addr: int, length: int) -> bool:
        """Whether the backends accept ``[addr, addr + length)`` as a range: a positive whole
        number of pages, page-aligned, inside user space (DESIGN.md "Errors", "Addresses";
        ``check_range`` in the core, ``_range`` in the reference)."""
        user_end = 1 << (56 if self.machine.levels == 5 else 47)
        return (
            length > 0
            and length % PAGE_SIZE == 0
            and addr % PAGE_SIZE == 0
            and addr >= USER_START
            and addr + length <= user_end
        )

    def _check_result_size(self, call: str, addr: int, length: int) -> None:
        """Refuse a range of more than :data:`MAX_RESULT_PAGES` pages, whose per-page result
        the host might not hold. A bad range gets the backend's own error first (it is
        rejected before any page is looked at)."""
        if length <= MAX_RESULT_PAGES * PAGE_SIZE:
            return
        if not self._range_ok(addr, length):
            self._b.observe(self.pid, addr, length)  # raises the range's error
        self._b.mm_id(self.pid)  # a bad process gets its error too
        raise InvalidArgumentError(
            f"{call} of {length} bytes is {length // PAGE_SIZE} pages, more than one call "
            f"returns (MAX_RESULT_PAGES = {MAX_RESULT_PAGES}, "
            f"{format_size(MAX_RESULT_PAGES * PAGE_SIZE)} of range): "
            + ("use observe_iter()" if call == "observe" else "read it in pieces")
        )

    def __repr__(self) -> str:
        return f"Process(pid={self.pid}, alive={self.alive})"
