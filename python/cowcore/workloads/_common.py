"""Pieces the workloads share: checked parameters, a machine sized for the run, batched
accesses, and counter deltas.

Every workload drives the simulator the same way: page addresses as numpy ``uint64``
arrays, one :meth:`~cowcore.Process.access_batch` call per :data:`CHUNK` pages, counts from
:meth:`~cowcore.Machine.stats` deltas and the access records, memory from smaps. Nothing
here loops in Python over pages, so a run costs the simulator's time, not the interpreter's.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from cowcore.errors import InvalidArgumentError
from cowcore.machine import MAX_MEMORY, Machine, Process
from cowcore.outcome import Outcome
from cowcore.units import parse_size
from cowcore.workloads.base import Scalar, machine_from_params

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

PAGE = 4096
CHUNK = 1 << 18
"""Pages per :meth:`~cowcore.Process.access_batch` call: 1 GiB of range, 8 MiB of records."""

_SLACK = 16 << 20


def size(params: Mapping[str, Scalar], key: str, *, at_least: int = PAGE) -> int:
    """The size parameter ``key`` (``"64M"``, ``"4096"``) in bytes, a whole number of pages.

    Raises:
        InvalidArgumentError: not a size, smaller than ``at_least``, or not page-aligned.
    """
    value = params[key]
    if not isinstance(value, str):
        raise InvalidArgumentError(f"{key} must be a size such as '64M', not {value!r}")
    nbytes = parse_size(value)
    if nbytes < at_least or nbytes % PAGE:
        raise InvalidArgumentError(
            f"{key} must be a multiple of 4K and at least {at_least} bytes, not {value!r}"
        )
    return nbytes


def fraction(params: Mapping[str, Scalar], key: str) -> float:
    """The parameter ``key`` as a float in ``[0, 1]``.

    Raises:
        InvalidArgumentError: outside ``[0, 1]``.
    """
    value = float(params[key])
    if not 0.0 <= value <= 1.0:
        raise InvalidArgumentError(f"{key} must be in [0, 1], not {params[key]!r}")
    return value


def positive(params: Mapping[str, Scalar], key: str, *, zero: bool = False) -> float:
    """The numeric parameter ``key``, checked positive (or non-negative with ``zero``).

    Raises:
        InvalidArgumentError: negative, or zero where ``zero`` is not allowed.
    """
    value = params[key]
    assert isinstance(value, int | float) and not isinstance(value, bool)
    if value < 0 or (value == 0 and not zero):
        bound = ">= 0" if zero else "> 0"
        raise InvalidArgumentError(f"{key} must be {bound}, not {value!r}")
    return value


def choice(params: Mapping[str, Scalar], key: str, choices: tuple[str, ...]) -> str:
    """The parameter ``key``, one of ``choices``.

    Raises:
        InvalidArgumentError: not one of ``choices``.
    """
    value = params[key]
    if value not in choices:
        raise InvalidArgumentError(f"{key} must be one of {', '.join(choices)}, not {value!r}")
    return str(value)


def machine(params: Mapping[str, Scalar], need: int) -> Machine:
    """The run's machine: :func:`~cowcore.workloads.base.machine_from_params`, with
    ``memory = "auto"`` meaning ``need`` bytes of simulated memory plus room for the page
    tables and the zero pages (a 4 MiB multiple, at least 64 MiB).

    Raises:
        InvalidArgumentError: the machine parameters are bad, or ``auto`` would exceed the
            largest machine (give ``memory`` explicitly, or a smaller workload).
    """
    if params.get("memory") != "auto":
        return machine_from_params(params)
    nbytes = need + need // 256 + _SLACK
    nbytes = max(64 << 20, -(-nbytes // (4 << 20)) * (4 << 20))
    if nbytes > MAX_MEMORY:
        raise InvalidArgumentError(
            f"this run needs about {nbytes >> 20} MiB of simulated memory, more than the "
            f"largest machine ({MAX_MEMORY >> 30} GiB): make it smaller"
        )
    return machine_from_params({**params, "memory": str(nbytes)})


def page_addrs(base: int, pages: npt.NDArray[np.int64]) -> npt.NDArray[np.uint64]:
    """The addresses of page indices ``pages`` of a mapping at ``base``."""
    import numpy as np  # noqa: PLC0415 (numpy loads on first use, as in cowcore.outcome)

    return (pages.astype(np.uint64) << np.uint64(12)) + np.uint64(base)


def access_chunks(
    proc: Process, addrs: npt.NDArray[np.uint64], write: bool
) -> Iterator[npt.NDArray[np.void]]:
    """:meth:`~cowcore.Process.access_batch` over ``addrs`` in order, :data:`CHUNK` at a
    time; yields each chunk's records (so that host memory holds one chunk of them)."""
    for at in range(0, len(addrs), CHUNK):
        yield proc.access_batch(addrs[at : at + CHUNK], write)


def outcome_counts(proc: Process, addrs: npt.NDArray[np.uint64], write: bool) -> list[int]:
    """Accesses ``addrs`` and returns how many ended in each :class:`~cowcore.Outcome`
    (indexed by its value)."""
    import numpy as np  # noqa: PLC0415 (numpy loads on first use, as in cowcore.outcome)

    counts = np.zeros(len(Outcome), dtype=np.int64)
    for rec in access_chunks(proc, addrs, write):
        counts += np.bincount(rec["outcome"], minlength=len(Outcome))[: len(Outcome)]
    return [int(c) for c in counts]


def counters(m: Machine) -> dict[str, int]:
    """The machine's event counters that the workloads report, as plain ints (the
    per-size mTHP counters summed)."""
    s = m.stats()
    return {
        "faults": s.faults_read + s.faults_write + s.faults_wp,
        "wp_faults": s.faults_wp,
        "copies": s.cow_copy,
        "reuses": s.pgreuse,
        "pmd_splits": s.thp_split_pmd,
        "thp_fault_alloc": s.thp_fault_alloc,
        "mthp_fault_alloc": sum(s.anon_fault_alloc.values()),
        "fallbacks": sum(s.anon_fault_fallback.values()),
    }


def delta(after: Mapping[str, int], before: Mapping[str, int]) -> dict[str, int]:
    """``after - before`` key by key."""
    return {k: after[k] - before[k] for k in after}


def used_kb(m: Machine) -> int:
    """Simulated memory in use (every allocated frame: data, page tables, zero pages), kB."""
    return (m.total_frames - m.free_frames()) * (PAGE >> 10)


def private_dirty_kb(proc: Process) -> int:
    """The sum of the ``Private_Dirty:`` lines of ``/proc/PID/smaps``, in kB: what Redis's
    ``zmalloc_get_private_dirty()`` (``zmalloc_get_smap_bytes_by_field("Private_Dirty:")``
    in src/zmalloc.c) adds up, one rounded line per VMA."""
    return sum(s.kb()["Private_Dirty"] for s in proc.smaps())


def uss_pss_rss_kb(proc: Process) -> tuple[int, int, int]:
    """``(USS, PSS, RSS)`` of ``/proc/PID/smaps_rollup`` in kB: USS is
    ``Private_Clean + Private_Dirty`` (what smem and psutil's ``memory_full_info().uss``
    report)."""
    kb = proc.smaps_rollup().kb()
    return kb["Private_Clean"] + kb["Private_Dirty"], kb["Pss"], kb["Rss"]


class EventTally:
    """Sums over a recording's events, drained as they come (:meth:`add`), so that a run
    of millions of faults keeps one chunk of events in host memory at a time."""

    def __init__(self) -> None:
        self.kinds: dict[str, int] = {}
        self.fork_ptes = self.fork_pmds = self.zap_ptes = self.zap_pmds = 0
        self.pages_copied = self.pages_zeroed = 0
        self.frames_allocated = self.frames_freed = 0

    def add(self, events: npt.NDArray[np.void]) -> None:
        """Folds ``events`` (:data:`~cowcore.outcome.EVENT_DTYPE`) into the sums."""
        import numpy as np  # noqa: PLC0415

        from cowcore.outcome import EventCode  # noqa: PLC0415

        kind = events["kind"]
        for code, n in zip(*np.unique(kind, return_counts=True), strict=True):
            name = EventCode(int(code)).name.lower()
            self.kinds[name] = self.kinds.get(name, 0) + int(n)

        def total(code: EventCode, field: str) -> int:
            return int(events[field][kind == code].sum())

        def frames(code: EventCode) -> int:
            orders = events["order"][kind == code].astype(np.int64)
            return int((np.int64(1) << orders).sum())

        self.fork_ptes += total(EventCode.FORK, "nr")
        self.fork_pmds += total(EventCode.FORK, "pmds")
        self.zap_ptes += total(EventCode.ZAP, "nr")
        self.zap_pmds += total(EventCode.ZAP, "pmds")
        self.pages_copied += total(EventCode.PAGES_COPIED, "nr")
        self.pages_zeroed += total(EventCode.PAGES_ZEROED, "nr")
        self.frames_allocated += frames(EventCode.FOLIO_ALLOC)
        self.frames_freed += frames(EventCode.FOLIO_FREE)

    def count(self, code: str) -> int:
        """How many events of kind ``code`` (an :class:`~cowcore.outcome.EventCode` name,
        lower case)."""
        return self.kinds.get(code, 0)
