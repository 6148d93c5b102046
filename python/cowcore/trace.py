"""``cowcore trace``: run a scenario and say, for every fault, what the kernel did and why.

The trace runs a scenario exactly as ``cowcore run`` does (the same runner, the same
observations, the same final state), except that each ``read``/``write`` statement does its
page accesses through ``Process.access_batch`` -- lowest address first, each page's first
byte, the statement's value -- and keeps the :class:`~cowcore.outcome.Access` record of each;
an ``unshare`` statement is one ``Process.unshare`` of its range (its short pins are held for
the whole batch, so a page's decision can depend on the pages before it: it cannot be cut into
calls), keeping each page's record (op ``unshare``) with the folio as it was before the
statement.
:class:`TraceEntry` holds one record with its context: the statement, the address as
``MAPPING+OFFSET``, the frame mapped before, and the folio as it was just before the access
(``Machine.folio``), from which :func:`cowcore.explain.explain` names the MM ids and counts the
kernel's decision looked at.

The folio snapshots are exact: a statement's accesses are cut into batches so that no batch
touches a folio that was mapped before the statement twice (an earlier access to the same
folio would change the counts the next one sees); a batch over pages that were not present,
the common case, is one call.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from cowcore.cost import CostModel, annotate
from cowcore.errors import OutOfMemoryError, ScenarioError
from cowcore.explain import explain
from cowcore.machine import DEFAULT_BACKEND, Process
from cowcore.outcome import (
    WHOLE_MM_END,
    Access,
    AccessFlags,
    EventCode,
    EventRecord,
    Outcome,
    ZapCause,
)
from cowcore.protocol import THP_SIZES, FolioSnapshot, PageObservation, ScanResult
from cowcore.recording import Recording
from cowcore.scenario import Observation, Read, Scenario, Statement, Unshare, Write, _Runner

PAGE = 4096


@dataclass(frozen=True, slots=True)
class TraceEntry:
    """One page access of a ``read``/``write`` statement, with what the trace knows of it."""

    line: int
    """The statement's line in the scenario."""
    proc: str
    write: bool
    mapping: str
    off: int
    """The page's offset in the mapping."""
    addr: int
    access: Access
    before: PageObservation
    """The page as ``observe`` saw it before the statement."""
    folio: FolioSnapshot | None
    """The folio of the page just before this access, if it had one (not the zero pages)."""
    est_ns: float | None = None
    """The access's estimated time under the cost model (``cowcore trace --cost``): the
    events it emitted priced by :func:`cowcore.cost.annotate`; an estimate."""
    op: str | None = None
    """``unshare`` for a page of an ``unshare`` statement; ``None`` for a read or write."""

    @property
    def faulted(self) -> bool:
        return self.access.faults > 0 or self.access.outcome is not Outcome.NO_FAULT

    def frame(self) -> str | None:
        """The frame the access landed in: ``zero``/``hzero`` for the zero pages (an access
        that took no fault stays where ``before`` was), else ``pfn 0x..``; ``None`` if none."""
        a = self.access
        if a.pfn is None:
            return None
        if a.outcome is Outcome.ZERO_PAGE:
            return "zero"
        if a.outcome is Outcome.HUGE_ZERO_PAGE:
            return "hzero"
        if a.outcome is Outcome.NO_FAULT and self.before.frame_kind in ("zero", "huge_zero"):
            return "zero" if self.before.frame_kind == "zero" else "hzero"
        return f"pfn {a.pfn:#x}"

    def explain(self) -> str:
        """The entry as one English line (:func:`cowcore.explain.explain`)."""
        text = f"line {self.line}: " + explain(
            self.access,
            write=self.write,
            who=self.proc,
            where=f"{self.mapping}+{self.off:#x}",
            folio=self.folio,
            frame=self.frame(),
            op=self.op,
        )
        if self.est_ns is not None:
            text += f" (~{self.est_ns / 1000:.2f} us est.)"
        return text

    def as_json(self) -> dict[str, object]:
        """The entry as a JSON object: the statement's context, then the fields of
        :class:`~cowcore.outcome.Access` (enum names as strings, flags ``A|B``, ``phys``
        ``null`` for an access that did not complete)."""
        a = self.access
        return {
            "line": self.line,
            "proc": self.proc,
            "op": self.op or ("write" if self.write else "read"),
            "map": self.mapping,
            "off": self.off,
            "addr": self.addr,
            "phys": a.phys,
            "outcome": a.outcome.name,
            "reason": a.reason.name,
            "split_reason": a.split_reason.name,
            "level": a.level.name,
            "order": a.order,
            "faults": a.faults,
            "flags": "|".join(f.name or "" for f in AccessFlags if f in a.flags),
            "error_code": a.error_code,
            "orders_allowed": a.orders_allowed,
            "orders_fit": a.orders_fit,
            "orders_empty": a.orders_empty,
            "orders_failed": a.orders_failed,
            **({} if self.est_ns is None else {"est_ns": round(self.est_ns, 1)}),
        }


def _allows(p: Process, start: int, end: int, write: bool) -> bool:
    """Whether VMAs cover ``[start, end)`` and allow the access (``access_error``)."""
    at = start
    for vma in sorted(p.vmas()):
        if vma.end <= at:
            continue
        if vma.start > at:
            return False
        if vma.prot == "none" or (write and vma.prot != "rw"):
            return False
        at = vma.end
        if at >= end:
            return True
    return at >= end


def _batches(before: Sequence[PageObservation]) -> list[tuple[int, int]]:
    """Cut a statement's pages into ``[i, j)`` runs in which no folio present before the
    statement appears twice (see the module docstring)."""
    runs: list[tuple[int, int]] = []
    start = 0
    seen: set[int] = set()
    for i, o in enumerate(before):
        if not o.present or o.frame_kind != "normal" or o.serial is None:
            continue
        if o.serial in seen:
            runs.append((start, i))
            start, seen = i, set()
        seen.add(o.serial)
    runs.append((start, len(before)))
    return runs


_SIZE_OF_ORDER = {order: name for name, order in THP_SIZES.items()}

_SHOWN_EVENTS = [
    int(EventCode.FORK),
    int(EventCode.ZAP),
    int(EventCode.MPROTECT),
    int(EventCode.SPLIT),
    int(EventCode.SPLIT_FAILED),
    int(EventCode.COLLAPSE),
]
"""The events ``on_event`` reports: what a statement other than a read or write did to the
address spaces (a ``collapse``: each 2 MiB block it tried, with the reason), and the folio
splits of ``drop_caches``."""

_COLLAPSE_WHY = {
    ScanResult.SUCCEED: "collapsed into a new PMD-mapped THP",
    ScanResult.PMD_NULL: "no page table: nothing was faulted there",
    ScanResult.PMD_MAPPED: "a PMD maps it already",
    ScanResult.PAGE_RO: "no PTE is writable (SCAN_PAGE_RO before 7.x)",
    ScanResult.PAGE_COUNT: "a folio has references beyond its mappings (a ref or pin)",
    ScanResult.PAGE_ANON: "the VMA has no anon_vma",
    ScanResult.VMA_CHECK: "the VMA refuses it (nohugepage, no anon_vma, or no whole 2M block)",
    ScanResult.ALLOC_HUGE_PAGE_FAIL: "no free 2M block",
}


def format_event(line: int, e: EventRecord) -> str:
    """A ``Fork``, ``Zap``, ``Mprotect``, ``Collapse``, ``Split`` or ``SplitFailed`` event as
    one line."""
    size = _SIZE_OF_ORDER.get(e.order, str(e.order))
    if e.kind is EventCode.SPLIT:
        return (
            f"line {line}: split: the {size} folio at frame {e.pfn} became "
            f"{1 << e.order} order-0 folios on the same frames (split_folio)"
        )
    if e.kind is EventCode.SPLIT_FAILED:
        return (
            f"line {line}: split refused: the {size} folio at frame {e.pfn} has references "
            "beyond its mappings (can_split_folio); it stays whole and queued"
        )
    span = "whole mm" if e.end == WHOLE_MM_END else f"[{e.start:#x}, {e.end:#x})"
    entries = f"{e.nr} PTEs, {e.pmds} huge PMDs"
    if e.kind is EventCode.COLLAPSE:
        result = ScanResult(e.cause)
        errno = f" ({result.errno})" if result.errno else ""
        why = _COLLAPSE_WHY.get(result, result.name)
        return f"line {line}: collapse asid {e.asid} {span}: {result.name}{errno}: {why}"
    if e.kind is EventCode.FORK:
        return f"line {line}: fork: asid {e.asid} -> asid {e.asid2}, copied {entries}"
    if e.kind is EventCode.ZAP:
        cause = ZapCause(e.cause).name.lower()
        return f"line {line}: zap ({cause}) asid {e.asid} {span}: cleared {entries}"
    return f"line {line}: mprotect asid {e.asid} {span}: rewrote {entries}"


@dataclass(slots=True)
class _TraceRunner(_Runner):
    """The scenario runner with ``read``/``write`` done as recorded accesses."""

    on_entry: Callable[[TraceEntry], None] | None = None
    on_event: Callable[[int, EventRecord], None] | None = None
    entries: list[TraceEntry] = field(default_factory=list)
    recording: Recording | None = None
    cost: CostModel | None = None
    """With a model, every access is made alone and priced by the events it emitted."""

    def step(self, st: Statement) -> None:
        if isinstance(st, Write):
            self.trace_range(st, True, st.value)
        elif isinstance(st, Read):
            self.trace_range(st, False, 0)
        elif isinstance(st, Unshare):
            self.trace_unshare(st)
        elif self.on_event is None:
            _Runner.step(self, st)
        else:
            if self.recording is None:
                self.recording = self.m.record().__enter__()
            seen = len(self.recording.events)
            try:
                _Runner.step(self, st)
            finally:
                events = self.recording.events[seen:]
                for row in events[np.isin(events["kind"], _SHOWN_EVENTS)].tolist():
                    self.on_event(st.line, EventRecord.from_raw(tuple(int(x) for x in row)))

    def priced(self, p: Process, addr: int, write: bool, value: int) -> tuple[Access, float]:
        """One access alone, with the estimated time of the events it emitted."""
        assert self.cost is not None
        if self.recording is None:
            self.recording = self.m.record().__enter__()
        self.recording.drain()
        access = p.access(addr, write, value=value)
        return access, annotate(access, self.recording.drain(), self.cost)

    def close(self) -> None:
        if self.recording is not None:
            self.recording.__exit__(None, None, None)

    def trace_unshare(self, st: Unshare) -> None:
        """An ``unshare`` in one call (as ``run`` does it: the batch's pins are part of the
        decisions), each page's record with its folio as it was before the statement."""
        p, start = self.mapped(st, "unshare")
        first = start + st.off
        if not _allows(p, first, first + st.length, False):
            with self.sigsegv(st, start):
                p.unshare(first, st.length)
            return
        before = p.observe(first, st.length)
        folios = [
            self.m.folio(o.pfn)
            if o.present and o.frame_kind == "normal" and o.pfn is not None
            else None
            for o in before
        ]
        rows = p.unshare(first, st.length).tolist()
        for k, (o, folio, row) in enumerate(zip(before, folios, rows, strict=True)):
            addr = first + k * PAGE
            entry = TraceEntry(
                st.line, st.proc, False, st.name, addr - start, addr,
                Access.from_raw(row), o, folio, None, "unshare",
            )  # fmt: skip
            self.entries.append(entry)
            if self.on_entry is not None:
                self.on_entry(entry)

    def trace_range(self, st: Read | Write, write: bool, value: int) -> None:
        verb = "write" if write else "read"
        p, start = self.mapped(st, verb)
        first = start + st.off
        if not _allows(p, first, first + st.length, write):
            # The facade's own call raises the error `cowcore run` reports (and changes
            # nothing): SIGSEGV at the first page refused.
            with self.sigsegv(st, start):
                if write:
                    p.write(first, st.length, value)
                else:
                    p.read(first, st.length)
            return
        before = p.observe(first, st.length)
        for i, j in _batches(before):
            folios: dict[int, FolioSnapshot] = {}
            for o in before[i:j]:
                if o.present and o.frame_kind == "normal" and o.pfn is not None:
                    folios[o.addr] = self.m.folio(o.pfn)
            addrs = [first + k * PAGE for k in range(i, j)]
            priced: list[tuple[Access, float | None]]
            if self.cost is None:
                got = p.access_batch(addrs, write, value=value)
                priced = [(Access.from_raw(row), None) for row in got.tolist()]
            else:
                priced = [self.priced(p, a, write, value) for a in addrs]
            for k, (access, est) in enumerate(priced):
                addr = addrs[k]
                entry = TraceEntry(
                    st.line, st.proc, write, st.name, addr - start, addr, access,
                    before[i + k], folios.get(addr), est,
                )  # fmt: skip
                self.entries.append(entry)
                if self.on_entry is not None:
                    self.on_entry(entry)
                if access.outcome is Outcome.OUT_OF_MEMORY:
                    # `write`/`read` stop at the first fault without memory: so does the trace.
                    raise OutOfMemoryError(f"out of memory at {addr:#x}")


@dataclass(slots=True)
class Trace:
    """What :func:`trace_scenario` returns."""

    entries: list[TraceEntry]
    observations: list[Observation]
    error: ScenarioError | None = None


def trace_scenario(
    scenario: Scenario,
    *,
    backend: str = DEFAULT_BACKEND,
    kernel: str | None = None,
    check: bool = False,
    on_entry: Callable[[TraceEntry], None] | None = None,
    on_observation: Callable[[Observation], None] | None = None,
    on_event: Callable[[int, EventRecord], None] | None = None,
    cost: CostModel | None = None,
) -> Trace:
    """Run ``scenario`` as ``Scenario.run`` does, recording every page access.

    A run-time error ends the trace as it ends the run: :attr:`Trace.error` holds it, and
    the observations end with the error observation. ``on_event`` (if given) is called with
    the line and each ``Fork``, ``Zap``, ``Mprotect``, ``Collapse``, ``Split`` and
    ``SplitFailed`` event of the other statements.
    """
    runner = _TraceRunner(
        kernel or scenario.kernel or "6.15",
        backend,
        check,
        on_observation,
        on_entry=on_entry,
        on_event=on_event,
        cost=cost,
    )
    try:
        runner.run(scenario.statements)
    except ScenarioError as exc:
        return Trace(runner.entries, runner.observations, exc)
    finally:
        runner.close()
    return Trace(runner.entries, runner.observations)


def format_entry(entry: TraceEntry, as_json: bool) -> str:
    """One output line of ``cowcore trace``."""
    if as_json:
        return json.dumps(entry.as_json(), separators=(",", ":"))
    return entry.explain()
