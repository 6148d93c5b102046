"""Estimated time: a cost model that turns the event stream into nanoseconds.

The simulator counts work, not time. A :class:`CostModel` prices that work: a number of
nanoseconds per event kind and per unit of work an event reports (pages zeroed, PTEs copied
at fork, ...), and :meth:`CostModel.estimate` adds them up over an event stream
(``docs/access-and-events.md``) into an :class:`Estimate` with a breakdown by term. It is an
**estimate**: a linear model of a kernel whose real cost depends on caches, TLB reach, NUMA,
virtualisation and contention, none of which the simulator models (``docs/cost-model.md``).

The built-in table (:data:`DEFAULT`) was measured by ``cowcore calibrate`` on one host (its
:attr:`CostModel.provenance` says which); ``cowcore calibrate`` measures the host it runs on
and writes ``$XDG_CONFIG_HOME/cowcore/costs.toml``, which :func:`load` prefers. A host
simulator plugs its own latencies in with ``dataclasses.replace(DEFAULT, fault_read=...)`` or
a TOML file of its own.

A numpy event array (``rec.events``) is summed with one ``bincount`` per field, a list of
:class:`~cowcore.outcome.EventRecord` in Python: the same quantities, the same estimate.
"""

from __future__ import annotations

import json
import math
import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

from cowcore.outcome import WHOLE_MM_END, Access, EventCode, EventRecord

if TYPE_CHECKING:
    import numpy.typing as npt

__all__ = [
    "DEFAULT",
    "TERMS",
    "CostModel",
    "Estimate",
    "FitRow",
    "Provenance",
    "annotate",
    "config_path",
    "estimate_recording",
    "load",
]

PAGE = 4096
FORMAT = 1
"""The version of the TOML layout :meth:`CostModel.save` writes."""

# One cost term: (name, the event kind it prices, what one unit is). The kind is what
# Estimate.by_kind folds the term into; the unit is what CostModel's docstring documents.
TERMS: tuple[tuple[str, EventCode, str], ...] = (
    ("fault_read", EventCode.FAULT_READ, "per read fault (trap, walk, handler, return)"),
    ("fault_write", EventCode.FAULT_WRITE, "per not-present write fault"),
    ("fault_wp", EventCode.FAULT_WP, "per write-protect fault"),
    ("folio_alloc", EventCode.FOLIO_ALLOC, "per folio allocated, any order"),
    ("folio_alloc_page", EventCode.FOLIO_ALLOC, "per 4 KiB page of a folio allocated"),
    ("folio_free", EventCode.FOLIO_FREE, "per folio freed, any order"),
    ("folio_free_page", EventCode.FOLIO_FREE, "per 4 KiB page of a folio freed"),
    ("page_zero", EventCode.PAGES_ZEROED, "per 4 KiB page zeroed"),
    ("page_copy", EventCode.PAGES_COPIED, "per 4 KiB page copied"),
    ("fork", EventCode.FORK, "per fork (process creation, VMAs: all but the tables)"),
    ("fork_pte", EventCode.FORK, "per present PTE copied at fork"),
    ("fork_pmd", EventCode.FORK, "per huge PMD copied at fork"),
    ("zap", EventCode.ZAP, "per munmap/MADV_DONTNEED/exit call that zaps"),
    ("zap_pte", EventCode.ZAP, "per present PTE zapped"),
    ("zap_pmd", EventCode.ZAP, "per huge PMD zapped"),
    ("mprotect", EventCode.MPROTECT, "per mprotect call"),
    ("mprotect_entry", EventCode.MPROTECT, "per present PTE or huge PMD rewritten"),
    ("tlb_flush", EventCode.TLB_FLUSH, "per TLB flush, whatever its range"),
    ("tlb_flush_page", EventCode.TLB_FLUSH, "per page flushed, up to tlb_flush_ceiling"),
    ("thp_split_pmd", EventCode.THP_SPLIT_PMD, "per huge PMD split into 512 PTEs"),
    ("fallback", EventCode.ANON_FAULT_FALLBACK, "per failed folio allocation attempt"),
)
TERM_NAMES: tuple[str, ...] = tuple(t[0] for t in TERMS)
TERM_KIND: dict[str, EventCode] = {t[0]: t[1] for t in TERMS}


@dataclass(frozen=True, slots=True)
class Provenance:
    """Where a cost table came from: the host and the command that measured it."""

    source: str
    """``calibrated`` (``cowcore calibrate``), ``default`` (the built-in table) or free text
    (a custom model)."""
    host: str = ""
    kernel: str = ""
    """The host's kernel release (``uname -r``)."""
    cpu: str = ""
    date: str = ""
    """ISO 8601, UTC."""
    cowcore_version: str = ""
    command: str = ""
    method: str = ""
    """How the per-unit costs were derived from the measurements."""
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FitRow:
    """One calibration pattern: the native time and what the fitted model estimates for the
    simulator's events of the same pattern."""

    pattern: str
    measured_ns: float
    estimated_ns: float
    used: bool = True
    """False for a pattern the fit left out as an outlier (the simulator's events do not
    explain the host's time: a kernel that does different work, or noise)."""

    @property
    def ratio(self) -> float:
        """``estimated / measured`` (1 is a perfect fit)."""
        return self.estimated_ns / self.measured_ns


@dataclass(frozen=True)
class Estimate:
    """The estimated time of an event stream: the total and the part each term contributes.

    ``terms`` maps every cost term (:data:`TERMS`) to nanoseconds, ``quantities`` to the
    units it counted (faults, pages, PTEs, ...).
    """

    total_ns: float
    terms: Mapping[str, float]
    quantities: Mapping[str, float]
    events: int

    @property
    def seconds(self) -> float:
        return self.total_ns / 1e9

    def by_kind(self) -> dict[EventCode, float]:
        """Nanoseconds per event kind (the terms of one kind added; kinds that cost 0
        left out)."""
        out: dict[EventCode, float] = {}
        for name, ns in self.terms.items():
            if ns:
                kind = TERM_KIND[name]
                out[kind] = out.get(kind, 0.0) + ns
        return out

    def table(self) -> str:
        """A plain-text breakdown, largest term first."""
        rows = sorted(((ns, n) for n, ns in self.terms.items() if ns), reverse=True)
        lines = [f"{'term':<16} {'units':>12} {'ns':>14} {'share':>6}"]
        for ns, name in rows:
            share = ns / self.total_ns if self.total_ns else 0.0
            lines.append(f"{name:<16} {self.quantities[name]:>12.0f} {ns:>14.0f} {share:>6.1%}")
        lines.append(f"{'total':<16} {'':>12} {self.total_ns:>14.0f}")
        return "\n".join(lines)


def _quantities_of_records(records: Iterable[EventRecord], ceiling: int) -> dict[str, float]:
    """The units of every term in a list of records (pure Python)."""
    count = [0] * 32
    nr = [0] * 32
    pmds = [0] * 32
    folio_pages = [0] * 32
    tlb_pages = 0
    for r in records:
        k = int(r.kind)
        count[k] += 1
        nr[k] += r.nr
        pmds[k] += r.pmds
        folio_pages[k] += 1 << r.order
        if k == EventCode.TLB_FLUSH:
            tlb_pages += min(_pages(r.start, r.end), ceiling)
    return _quantities(count, nr, pmds, folio_pages, tlb_pages)


def _pages(start: int, end: int) -> int:
    """Pages of a flush range (a whole-mm flush: every page)."""
    if end == WHOLE_MM_END:
        return 1 << 52
    return (end - start + PAGE - 1) // PAGE


def _quantities_of_array(events: npt.NDArray[Any], ceiling: int) -> dict[str, float]:
    """The same, vectorised: one bincount per field, no Python work per event."""
    import numpy as np  # noqa: PLC0415  (numpy is optional: only array input needs it)

    kind = events["kind"].astype(np.intp)
    count = np.bincount(kind, minlength=32)
    nr = np.bincount(kind, weights=events["nr"].astype(np.float64), minlength=32)
    pmds = np.bincount(kind, weights=events["pmds"].astype(np.float64), minlength=32)
    orders = events["order"].astype(np.float64)
    folio_pages = np.bincount(kind, weights=np.exp2(orders), minlength=32)
    flush = events[kind == EventCode.TLB_FLUSH]
    start = flush["start"].astype(np.uint64)
    end = flush["end"].astype(np.uint64)
    span = end - start  # no overflow: end >= start
    pages = span // np.uint64(PAGE) + (span % np.uint64(PAGE) > 0)
    tlb_pages = float(np.minimum(pages, np.uint64(ceiling)).sum())
    return _quantities(
        [int(x) for x in count],
        [float(x) for x in nr],
        [float(x) for x in pmds],
        [float(x) for x in folio_pages],
        tlb_pages,
    )


def _is_array(events: object) -> TypeGuard[npt.NDArray[Any]]:
    """A numpy array (duck-typed, so that numpy is imported only when one is passed)."""
    return hasattr(events, "dtype") and hasattr(events, "shape")


def _quantities(
    count: list[int],
    nr: list[int] | list[float],
    pmds: list[int] | list[float],
    folio_pages: list[int] | list[float],
    tlb_pages: float,
) -> dict[str, float]:
    """Term units from per-kind event counts, ``nr`` sums, ``pmds`` sums, ``1 << order``
    sums and capped flush pages: the one place the model's meaning is written down."""
    e = EventCode
    q = {
        "fault_read": count[e.FAULT_READ],
        "fault_write": count[e.FAULT_WRITE],
        "fault_wp": count[e.FAULT_WP],
        "folio_alloc": count[e.FOLIO_ALLOC],
        "folio_alloc_page": folio_pages[e.FOLIO_ALLOC],
        "folio_free": count[e.FOLIO_FREE],
        "folio_free_page": folio_pages[e.FOLIO_FREE],
        "page_zero": nr[e.PAGES_ZEROED],
        "page_copy": nr[e.PAGES_COPIED],
        "fork": count[e.FORK],
        "fork_pte": nr[e.FORK],
        "fork_pmd": pmds[e.FORK],
        "zap": count[e.ZAP],
        "zap_pte": nr[e.ZAP],
        "zap_pmd": pmds[e.ZAP],
        "mprotect": count[e.MPROTECT],
        "mprotect_entry": nr[e.MPROTECT] + pmds[e.MPROTECT],
        "tlb_flush": count[e.TLB_FLUSH],
        "tlb_flush_page": tlb_pages,
        "thp_split_pmd": count[e.THP_SPLIT_PMD],
        "fallback": count[e.ANON_FAULT_FALLBACK],
    }
    return {k: float(v) for k, v in q.items()}


@dataclass(frozen=True)
class CostModel:
    """Nanoseconds per event and per unit of work (``docs/cost-model.md``).

    Each field is one term of :data:`TERMS`. A fault's own field is the trap and the
    handler's bookkeeping only: the allocation, zeroing, copying and flushing it does are
    separate events, priced by their own fields, so that a fault that copies costs
    ``fault_wp + folio_alloc + folio_alloc_page + page_copy + tlb_flush + tlb_flush_page``
    and a reuse
    ``fault_wp`` alone. Counting events (``PGREUSE``, ``COW_COPY``, ``THP_FAULT_ALLOC``,
    ``ANON_FAULT_ALLOC``, ``HUGE_ZERO_WRITE``, ``SPLIT``) cost nothing: their work is in the
    events they count.

    A TLB flush costs ``tlb_flush + tlb_flush_page * min(pages, tlb_flush_ceiling)``: x86's
    ``flush_tlb_mm_range`` flushes page by page up to ``tlb_single_page_flush_ceiling`` (33)
    pages and the whole TLB above it (and a whole-mm flush, fork's and exit's, always).
    Refills after a flush and shootdown IPIs to other CPUs are not modelled (the simulator
    has no CPUs).
    """

    fault_read: float
    """Read fault: exception entry and exit, page walk, ``handle_mm_fault`` (mapping the
    zero page included)."""
    fault_write: float
    """Not-present write fault, the same without the allocation and zeroing."""
    fault_wp: float
    """Write-protect fault (``do_wp_page``): a reuse is this alone."""
    folio_alloc: float
    """``vma_alloc_folio`` + memcg charge + rmap, per folio (its zeroing apart)."""
    folio_alloc_page: float
    """The part of an allocation that grows with the folio: per 4 KiB page
    (``prep_compound_page`` and the checks of each ``struct page``)."""
    folio_free: float
    """Freeing a folio to the buddy allocator (uncharge included), per folio."""
    folio_free_page: float
    """The part of a free that grows with the folio: per 4 KiB page
    (``free_pages_prepare`` checks each ``struct page``)."""
    page_zero: float
    """``clear_page`` of one 4 KiB page."""
    page_copy: float
    """``copy_mc_user_highpage`` of one 4 KiB page (source cold or not: not modelled)."""
    fork: float
    """The fixed part of ``fork``: task, mm and VMA copies, the whole-mm flush, the child's
    start; everything but the page tables."""
    fork_pte: float
    """``copy_pte_range``: one present PTE copied, write-protected, folio refcount and
    mapcount raised."""
    fork_pmd: float
    """``copy_huge_pmd``: one huge PMD."""
    zap: float
    """The fixed part of a munmap, MADV_DONTNEED or exit (the syscall, VMA work)."""
    zap_pte: float
    """``zap_pte_range``: one present PTE cleared (the folio's free is ``folio_free``)."""
    zap_pmd: float
    """``zap_huge_pmd``: one huge PMD cleared."""
    mprotect: float
    """The fixed part of an mprotect call."""
    mprotect_entry: float
    """``change_pte_range``/``change_huge_pmd``: one present entry rewritten."""
    tlb_flush: float
    """One TLB flush, whatever its range."""
    tlb_flush_page: float
    """One page of a ranged flush (``invlpg``), up to :attr:`tlb_flush_ceiling` pages."""
    thp_split_pmd: float
    """``__split_huge_pmd``: a huge PMD remapped by 512 PTEs (its flush apart)."""
    fallback: float
    """One failed attempt to allocate a large folio before a smaller order."""
    tlb_flush_ceiling: int = 33
    """Pages above which a ranged flush costs as a full one (x86
    ``tlb_single_page_flush_ceiling``)."""
    provenance: Provenance = field(default=Provenance("custom"), compare=False)
    fit: tuple[FitRow, ...] = field(default=(), compare=False)
    """The calibration patterns and how well the table reproduces them (empty if not
    calibrated)."""

    def __post_init__(self) -> None:
        for name in TERM_NAMES:
            v = getattr(self, name)
            if not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
                raise ValueError(f"cost {name} must be a finite number >= 0, not {v!r}")
        if self.tlb_flush_ceiling < 0:
            raise ValueError("tlb_flush_ceiling must be >= 0")

    def with_costs(self, costs: Mapping[str, float]) -> CostModel:
        """A copy with some per-unit costs replaced (term name -> ns), e.g. a host
        simulator's own fault latency: ``DEFAULT.with_costs({"fault_wp": 1200.0})``.

        Raises:
            ValueError: an unknown term or a negative cost.
        """
        unknown = set(costs) - set(TERM_NAMES)
        if unknown:
            raise ValueError(f"unknown cost terms: {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {k: float(v) for k, v in costs.items()}
        return replace(self, **values)

    # -- estimating -----------------------------------------------------------------------

    def costs(self) -> dict[str, float]:
        """The per-unit costs by term name, in :data:`TERMS` order."""
        return {n: float(getattr(self, n)) for n in TERM_NAMES}

    def quantities(self, events: npt.NDArray[Any] | Iterable[EventRecord]) -> dict[str, float]:
        """The units of every term in ``events`` (a numpy array of ``EVENT_DTYPE`` or
        :class:`~cowcore.outcome.EventRecord` s): what the costs multiply."""
        if _is_array(events):
            return _quantities_of_array(events, self.tlb_flush_ceiling)
        return _quantities_of_records(events, self.tlb_flush_ceiling)

    def estimate(self, events: npt.NDArray[Any] | Iterable[EventRecord]) -> Estimate:
        """The estimated time of ``events``: a numpy array of ``EVENT_DTYPE`` records
        (``rec.events``, summed with numpy, no Python work per event) or an iterable of
        :class:`~cowcore.outcome.EventRecord`."""
        if _is_array(events):
            n = len(events)
            q = self.quantities(events)
        else:
            records = list(events)
            n = len(records)
            q = self.quantities(records)
        costs = self.costs()
        terms = {name: costs[name] * q[name] for name in TERM_NAMES}
        return Estimate(sum(terms.values()), terms, q, n)

    def access_cost(
        self, access: Access, events: npt.NDArray[Any] | Iterable[EventRecord]
    ) -> float:
        """Nanoseconds of one access, given the events it emitted (the slice of the stream
        between this access and the next): 0 for an access that took no fault (a hit's
        cost is the host simulator's, not the kernel's); a refused access (segfault) emits
        nothing and costs its fault only."""
        if access.faults == 0:
            return 0.0
        return self.estimate(events).total_ns

    # -- TOML -----------------------------------------------------------------------------

    def to_toml(self) -> str:
        """The table as TOML (what :meth:`save` writes, :meth:`from_toml` reads)."""
        p = self.provenance
        s = json.dumps  # a JSON string literal is a valid TOML basic string
        lines = [
            "# cowcore cost model: nanoseconds per event and per unit (docs/cost-model.md).",
            "# An estimate, not a measurement of any one run.",
            f"format = {FORMAT}",
            "",
            "[provenance]",
            f"source = {s(p.source)}",
            f"host = {s(p.host)}",
            f"kernel = {s(p.kernel)}",
            f"cpu = {s(p.cpu)}",
            f"date = {s(p.date)}",
            f"cowcore_version = {s(p.cowcore_version)}",
            f"command = {s(p.command)}",
            f"method = {s(p.method)}",
            "notes = [" + ", ".join(s(n) for n in p.notes) + "]",
            "",
            "[costs_ns]",
        ]
        for name, _kind, unit in TERMS:
            lines.append(f"{name} = {float(getattr(self, name))!r}  # {unit}")
        lines.append(f"tlb_flush_ceiling = {self.tlb_flush_ceiling}")
        for row in self.fit:
            lines += [
                "",
                "[[fit]]",
                f"pattern = {s(row.pattern)}",
                f"measured_ns = {row.measured_ns!r}",
                f"estimated_ns = {row.estimated_ns!r}",
                f"used = {'true' if row.used else 'false'}",
            ]
        return "\n".join(lines) + "\n"

    @classmethod
    def from_toml(cls, text: str, *, base: CostModel | None = None) -> CostModel:
        """Read a table written by :meth:`to_toml` (or by hand). A term missing from
        ``[costs_ns]`` keeps ``base``'s value (default :data:`DEFAULT`), so a custom file may
        override a few costs only; an unknown key is an error (a typo must not pass).

        Raises:
            ValueError: not TOML, an unknown format or key, or a negative cost.
        """
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"not a cost table: {err}") from None
        if data.get("format", FORMAT) != FORMAT:
            raise ValueError(f"unknown cost table format {data['format']!r} (expected {FORMAT})")
        unknown = set(data) - {"format", "provenance", "costs_ns", "fit"}
        costs = dict(data.get("costs_ns", {}))
        unknown |= set(costs) - {*TERM_NAMES, "tlb_flush_ceiling"}
        if unknown:
            raise ValueError(f"unknown keys in the cost table: {', '.join(sorted(unknown))}")
        prov = dict(data.get("provenance", {}))
        prov_fields = {f.name for f in fields(Provenance)}
        if set(prov) - prov_fields:
            bad = ", ".join(sorted(set(prov) - prov_fields))
            raise ValueError(f"unknown keys in [provenance]: {bad}")
        prov.setdefault("source", "custom")
        prov["notes"] = tuple(prov.get("notes", ()))
        fit = tuple(
            FitRow(
                str(r["pattern"]),
                float(r["measured_ns"]),
                float(r["estimated_ns"]),
                bool(r.get("used", True)),
            )
            for r in data.get("fit", ())
        )
        values: dict[str, Any] = {
            k: (int(v) if k == "tlb_flush_ceiling" else float(v)) for k, v in costs.items()
        }
        model = replace(base or DEFAULT, **values)
        return replace(model, provenance=Provenance(**prov), fit=fit)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CostModel:
        """Read a TOML table from ``path`` (see :meth:`from_toml`).

        Raises:
            OSError: the file cannot be read.
            ValueError: the file is not a cost table.
        """
        text = Path(path).read_text(encoding="utf-8")
        try:
            return cls.from_toml(text)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the table as TOML to ``path`` (parents created); returns the path."""
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.{os.getpid()}")
        tmp.write_text(self.to_toml(), encoding="utf-8")
        tmp.replace(out)
        return out


def config_path() -> Path:
    """Where ``cowcore calibrate`` writes by default and :func:`load` looks:
    ``$XDG_CONFIG_HOME/cowcore/costs.toml`` (``~/.config`` if unset)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "cowcore" / "costs.toml"


def load(path: str | os.PathLike[str] | None = None) -> CostModel:
    """The cost model to use: the file at ``path`` if given, else at ``$COWCORE_COSTS`` if
    set, else the calibrated table at :func:`config_path` if it exists, else :data:`DEFAULT`.

    Raises:
        OSError: a file named by ``path`` or ``COWCORE_COSTS`` cannot be read.
        ValueError: a file is not a cost table.
    """
    if path is not None:
        return CostModel.load(path)
    env = os.environ.get("COWCORE_COSTS")
    if env:
        return CostModel.load(env)
    cfg = config_path()
    if cfg.is_file():
        return CostModel.load(cfg)
    return DEFAULT


def estimate_recording(
    events: npt.NDArray[Any] | Iterable[EventRecord], model: CostModel | None = None
) -> Estimate:
    """The estimate of a recording's events (``rec.estimate(model)``); ``model`` None means
    :func:`load` ``()``."""
    return (model or load()).estimate(events)


def annotate(
    access: Access,
    events: npt.NDArray[Any] | Iterable[EventRecord],
    model: CostModel | None = None,
) -> float:
    """Nanoseconds of one access from the events it emitted (``cowcore trace --cost``);
    see :meth:`CostModel.access_cost`."""
    return (model or load()).access_cost(access, events)


# The built-in table: `cowcore calibrate --mib 64 --rounds 5` on the development host (a
# virtual machine: first-touch faults there include the hypervisor's work), rounded to three
# digits; its fit is in docs/cost-model.md. A generic estimate for hosts that have not run
# `cowcore calibrate`, not a property of the simulator.
DEFAULT = CostModel(
    fault_read=594.0,
    fault_write=270.0,
    fault_wp=807.0,
    folio_alloc=855.0,
    folio_alloc_page=7.18,
    folio_free=75.3,
    folio_free_page=5.76,
    page_zero=455.0,
    page_copy=694.0,
    fork=83200.0,
    fork_pte=76.2,
    fork_pmd=938.0,
    zap=7000.0,
    zap_pte=13.5,
    zap_pmd=141.0,
    mprotect=7410.0,
    mprotect_entry=44.7,
    tlb_flush=335.0,
    tlb_flush_page=99.5,
    thp_split_pmd=3950.0,
    fallback=284.0,
    provenance=Provenance(
        source="default",
        host="cowcore development host (virtual machine, 2 vCPUs)",
        kernel="6.18.44-fc-v1147",
        cpu="Intel(R) Xeon(R) Processor (virtualised)",
        date="2026-12-03",
        cowcore_version="0.1.0",
        command="cowcore calibrate --mib 64 --rounds 5",
        method="the calibration's (see cowcore.calibrate), rounded to three digits",
        notes=(
            "thp:reuse left out of that fit: the host's PMD reuse pattern took 50x the "
            "estimate (see docs/cost-model.md)",
        ),
    ),
)
