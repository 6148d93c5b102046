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

Both backends sit behind the same classes; this module checks argument *types* and turns the
backend's plain tuples into frozen dataclasses. Values are checked by the backend itself.

Wherever the API takes an int, it takes anything :func:`operator.index` accepts (numpy
integers such as ``np.uint64(4096)``, ``IntEnum`` members), but not a ``bool``. The batch
calls (:meth:`Process.write_pages`, :meth:`Process.read_pages`) also take a buffer of 64-bit
integers (a numpy ``int64``/``uint64`` array, ``array('q')``/``array('Q')``), which the
backend reads in one copy.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Iterator, MutableMapping
from typing import Any, Literal, SupportsIndex, cast

from cowcore.errors import InvalidArgumentError, NoSuchProcessError
from cowcore.protocol import (
    ADVICES,
    FRAME_HUGE_ZERO,
    FRAME_NORMAL,
    FRAME_ZERO,
    KERNEL_PROFILES,
    POLICY_DEFAULTS,
    PROTS,
    THP_MODES,
    THP_SIZE_MODES,
    THP_SIZES,
    U64,
    Advice,
    Backend,
    FolioSnapshot,
    KernelProfile,
    MmIdSlot,
    PageObservation,
    Prot,
    ThpMode,
    ThpSizeMode,
    Translation,
    WalkLevel,
    batch_view,
)
from cowcore.protocol import check_u64 as _int
from cowcore.reference import ReferenceBackend
from cowcore.units import parse_size
from cowcore.x86 import flag_names

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
MAX_MEMORY = 256 << 30
"""The largest simulated machine (keeps every per-page counter within the core's fields)."""


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


_THP_SIZE_NAMES = tuple(THP_SIZES)
_POLICY_NAMES = tuple(POLICY_DEFAULTS["6.15"])


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
    (``hugepages-<N>kB/enabled``), keyed by ``16K`` .. ``2M``."""

    def __init__(self, backend: Backend) -> None:
        self._b = backend

    def __getitem__(self, size: str) -> str:
        return self._b.thp_size(_str("THP size", size, _THP_SIZE_NAMES))

    def __setitem__(self, size: str, mode: str) -> None:
        self._b.set_thp_size(
            _str("THP size", size, _THP_SIZE_NAMES), _str("THP size mode", mode, THP_SIZE_MODES)
        )

    def __delitem__(self, size: str) -> None:
        raise TypeError("THP sizes cannot be removed; set them to 'never'")

    def __iter__(self) -> Iterator[str]:
        return iter(THP_SIZES)

    def __len__(self) -> int:
        return len(THP_SIZES)

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
    of PTE-mapped large folios; see :data:`cowcore.protocol.POLICY_DEFAULTS` for the list.
    """

    __slots__ = ("_backend",)
    _backend: Backend

    def __init__(self, backend: Backend) -> None:
        object.__setattr__(self, "_backend", backend)

    def __getattr__(self, name: str) -> bool:
        if name.startswith("_"):
            raise AttributeError(name)
        return self._backend.policy(_str("policy", name, _POLICY_NAMES))

    def __setattr__(self, name: str, value: bool) -> None:
        _str("policy", name, _POLICY_NAMES)
        if not isinstance(value, bool):
            raise InvalidArgumentError(f"policy {name} takes a bool")
        self._backend.set_policy(name, value)

    def as_dict(self) -> dict[str, bool]:
        """Every toggle with its current value."""
        names = POLICY_DEFAULTS["6.15"]
        return {name: self._backend.policy(name) for name in names}

    def __repr__(self) -> str:
        return f"Policy({self.as_dict()!r})"


class Machine:
    """A simulated x86-64 machine running one kernel profile.

    Args:
        kernel: ``"6.12"`` (PTE-mapped large folios are never reused after fork) or
            ``"6.15"`` (MM-ID tracking and their reuse; also every later kernel seen so far).
        backend: which implementation simulates it: ``"rust"`` (the default when the native
            extension is built) or ``"reference"``; see :data:`BACKENDS`.
        memory: physical memory, bytes or a size such as ``"4G"`` (a multiple of 2M, >= 4M).
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
        nbytes = parse_size(memory) if isinstance(memory, str) else _int("memory", memory)
        if nbytes % (2 << 20) or not (4 << 20) <= nbytes <= MAX_MEMORY:
            raise InvalidArgumentError(
                f"memory must be a multiple of 2M in [4M, 256G], not {nbytes}"
            )
        nlevels = _int("levels", levels)
        if nlevels not in (4, 5):
            # checked here: the Rust binding takes a u8 and would raise OverflowError
            raise InvalidArgumentError(f"levels must be 4 or 5, not {nlevels}")
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
    def levels(self) -> int:
        return self._b.levels

    @property
    def total_frames(self) -> int:
        """Physical frames of 4 KiB."""
        return self._b.total_frames

    def free_frames(self) -> int:
        """Frames currently free in the buddy allocator."""
        return self._b.free_frames()

    def processes(self) -> list[Process]:
        """Live processes, in pid order."""
        return [self._process(pid) for pid in sorted(self._b.pids())]

    def folio(self, pfn: SupportsIndex) -> FolioSnapshot:
        """A snapshot of the folio that holds frame ``pfn``.

        Raises:
            InvalidArgumentError: the frame belongs to no allocated folio.
        """
        row = self._b.folio(_int("pfn", pfn))
        head, order, ref, pages, large, entire, nr_mapped, slots, shared, ae, serial = row
        return FolioSnapshot(
            pfn=head,
            order=order,
            refcount=ref,
            page_mapcounts=tuple(pages),
            large_mapcount=large,
            entire_mapcount=entire,
            nr_pages_mapped=nr_mapped,
            mm_ids=(MmIdSlot(*slots[0]), MmIdSlot(*slots[1])),
            maybe_mapped_shared=shared,
            anon_exclusive=tuple(ae),
            serial=serial,
        )

    def stats(self) -> dict[str, object]:
        """Event counters since the machine started (see DESIGN.md, Stats)."""
        return self._b.stats()

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
        try:
            n = -1 if isinstance(pid, bool) else operator.index(pid)
        except TypeError:
            n = -1
        if not 0 <= n < 1 << 32:
            # pids are u32 in the Rust core: without this, a bogus pid raised OverflowError
            # there and NoSuchProcessError in the reference
            raise NoSuchProcessError(f"no process with pid {pid!r}")
        self.machine = machine
        self.pid = n
        self._b: Backend = machine._b  # an attribute, not a property: read on every call

    @property
    def alive(self) -> bool:
        return self.pid in self._b.pids()

    @property
    def mm_id(self) -> int:
        """The MM id of this process's address space (as kept in folio owner slots)."""
        return self._b.mm_id(self.pid)

    def mmap(self, length: SupportsIndex) -> int:
        """Map ``length`` bytes of private anonymous read/write memory; returns its address
        (2 MiB aligned, placed top-down with a 2 MiB gap to the previous mapping)."""
        return self._b.mmap(self.pid, _int("length", length))

    def munmap(self, addr: SupportsIndex, length: SupportsIndex) -> None:
        """Unmap ``[addr, addr + length)``; unmapped pages in the range are fine."""
        self._b.munmap(self.pid, _int("addr", addr), _int("length", length))

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
        """Load the first 8 bytes of every page of the range."""
        return self._b.read(self.pid, _int("addr", addr), _int("length", length))

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
        """Fork; the child inherits every mapping but the ``dontfork`` ones."""
        return self.machine._process(self._b.fork(self.pid))

    def exit(self) -> None:
        """Exit: tear down every mapping and the page tables, free the MM id."""
        self._b.exit(self.pid)

    def vmas(self) -> list[tuple[int, int, str, tuple[str, ...]]]:
        """The VMAs as ``(start, end, prot, extra flags)``."""
        return [(s, e, p, tuple(f)) for s, e, p, f in self._b.vmas(self.pid)]

    def translate(self, addr: SupportsIndex) -> Translation:
        """Walk the page tables for ``addr`` without faulting."""
        va = _int("addr", addr)
        steps, pfn, size = self._b.translate(self.pid, va)
        return Translation(
            addr=va,
            steps=tuple(WalkLevel(lvl, t, i, e, flag_names(e)) for lvl, t, i, e in steps),
            pfn=pfn if pfn >= 0 else None,
            page_size=size or None,
        )

    def observe(
        self, addr: SupportsIndex, length: SupportsIndex = PAGE_SIZE
    ) -> list[PageObservation]:
        """What ``/proc/<pid>/pagemap`` and ``/proc/kpage*`` would say of each page."""
        start = _int("addr", addr)
        rows = self._b.observe(self.pid, start, _int("length", length))
        out = []
        for i, (present, kind, pfn, serial, pages, mapcount, excl, content) in enumerate(rows):
            page_addr = start + i * PAGE_SIZE
            if not present:
                out.append(
                    PageObservation(page_addr, False, None, None, None, None, None, None, None)
                )
                continue
            kind_name: Literal["normal", "zero", "huge_zero"] = (
                "zero"
                if kind == FRAME_ZERO
                else "huge_zero"
                if kind == FRAME_HUGE_ZERO
                else "normal"
            )
            assert kind in (FRAME_NORMAL, FRAME_ZERO, FRAME_HUGE_ZERO)
            out.append(
                PageObservation(
                    page_addr, True, pfn, kind_name, serial, pages, mapcount, excl, content
                )
            )
        return out

    def __repr__(self) -> str:
        return f"Process(pid={self.pid}, alive={self.alive})"
