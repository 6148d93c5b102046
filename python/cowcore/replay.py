"""Replay memory traces through the simulator: the canonical table and Valgrind lackey.

The **canonical trace** is a table, one row per operation, with the columns

=========  ======================================================================
``pid``    the process, as the trace numbers it (any integer; the first pid of the
           trace is the init process, every other one is a ``fork``'s ``child``)
``op``     ``read``, ``write``, ``fork``, ``exit``, ``mmap``, ``munmap``
``address``  the virtual address (``read``/``write``: any byte; ``mmap``/``munmap``:
           page-aligned)
``length`` bytes (``read``/``write``: the access touches every page of
           ``[address, address + length)``, at least one byte; ``mmap``/``munmap``:
           the range)
``child``  ``fork`` only: the pid the trace gives the child (ignored otherwise)
=========  ======================================================================

read from CSV (a header line; numbers decimal or ``0x`` hex), Parquet (needs ``pyarrow``) or
a numpy ``.npy`` structured array with those field names (``op`` as strings, or as the
index into :data:`OPS`). ``mmap`` maps private anonymous read/write memory at exactly the
address (``Process.mmap_fixed``). With ``auto_map`` every 2 MiB region is mapped on its first
touch instead, for traces that do not record their mappings.

**Valgrind lackey** (``valgrind --tool=lackey --trace-mem=yes --log-file=F prog``): lines
``I  addr,size`` (instruction fetch), `` L addr,size`` (load), `` S addr,size`` (store),
`` M addr,size`` (modify: a load then a store); ``==pid==`` lines and anything else are
skipped. Instruction fetches are skipped unless asked for (they read file-backed text, which
the simulator does not model). Lackey's addresses are the real process's, so the replay maps
each 2 MiB region on its first touch (``auto_map``): the simulator models anonymous memory
only, and every touched region is treated as private anonymous memory -- which the
stack, the heap and the data segment are, but the text and read-only data a load may touch
are not (their first touch is a zero-page read here, a page-cache hit there).

Consecutive accesses of one process go to the simulator as one ``Process.access_batch``.
The result is a numpy structured array, one row per page access: :data:`RECORD_FIELDS` (the
trace row it came from, the pid, load or store, the address) followed by the
:class:`~cowcore.outcome.Access` fields.
"""

from __future__ import annotations

import csv
import importlib
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt

from cowcore.errors import CowError, InvalidArgumentError
from cowcore.machine import DEFAULT_BACKEND, Machine, Process
from cowcore.outcome import ACCESS_FIELDS, AccessFlags, MapLevel, Outcome, Reason

PAGE = 4096
REGION = 2 << 20
"""The unit of ``auto_map``: one 2 MiB-aligned region per first touch."""

OPS: tuple[str, ...] = ("read", "write", "fork", "exit", "mmap", "munmap")
"""The canonical ops; in a numpy trace an integer ``op`` is an index into this tuple."""
READ, WRITE, FORK, EXIT, MMAP, MUNMAP = range(len(OPS))

TRACE_FIELDS: tuple[tuple[str, str], ...] = (
    ("pid", "<i8"),
    ("op", "u1"),
    ("address", "<u8"),
    ("length", "<u8"),
    ("child", "<i8"),
)
"""The canonical trace as held in memory (``op`` an index into :data:`OPS`)."""
TRACE_DTYPE = np.dtype(list(TRACE_FIELDS))

RECORD_FIELDS: tuple[tuple[str, str], ...] = (
    ("row", "<u8"),
    ("pid", "<i8"),
    ("write", "u1"),
    ("addr", "<u8"),
    *ACCESS_FIELDS,
)
"""One replayed page access: the trace row, the trace's pid, store or load, the address
(the page's first byte touched), then the :data:`cowcore.outcome.ACCESS_FIELDS`."""
RECORD_DTYPE = np.dtype(list(RECORD_FIELDS))

ENUM_COLUMNS: Mapping[str, type[Outcome] | type[Reason] | type[MapLevel]] = {
    "outcome": Outcome,
    "reason": Reason,
    "split_reason": Reason,
    "level": MapLevel,
}
"""Record columns holding an enum code (written as the enum's name in CSV)."""


class TraceFormatError(CowError, ValueError):
    """A trace that cannot be read: a bad column, row or value (``where`` says which)."""


# Reading traces.


def _int(text: str, where: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise TraceFormatError(f"{where}: {text!r} is not a number") from None


def _op_codes(values: Iterable[object], where: str) -> list[int]:
    codes: list[int] = []
    for i, item in enumerate(values):
        v = item.decode() if isinstance(item, bytes) else item
        if isinstance(v, str):
            name = v.strip().lower()
            if name not in OPS:
                raise TraceFormatError(f"{where} row {i}: unknown op {v!r} (one of {OPS})")
            codes.append(OPS.index(name))
        else:
            code = int(v)  # type: ignore[call-overload]
            if not 0 <= code < len(OPS):
                raise TraceFormatError(f"{where} row {i}: op {code} is not an index of {OPS}")
            codes.append(code)
    return codes


def trace_from_columns(columns: Mapping[str, Sequence[Any]], where: str = "trace") -> np.ndarray:
    """The canonical trace from columns (``pid``, ``op``, ``address``, ``length``, optional
    ``child``) as :data:`TRACE_DTYPE`.

    Raises:
        TraceFormatError: a column is missing or a value is bad.
    """
    missing = [name for name in ("pid", "op", "address") if name not in columns]
    if missing:
        raise TraceFormatError(f"{where}: no column {', '.join(missing)}")
    n = len(columns["op"])
    out = np.zeros(n, dtype=TRACE_DTYPE)
    out["op"] = _op_codes(columns["op"], where)
    try:
        out["pid"] = np.asarray(columns["pid"], dtype=np.int64)
        out["address"] = np.asarray(columns["address"], dtype=np.uint64)
        if "length" in columns:
            out["length"] = np.asarray(columns["length"], dtype=np.uint64)
        else:
            out["length"] = 1
        if "child" in columns:
            out["child"] = np.asarray(
                [0 if c is None else c for c in columns["child"]], dtype=np.int64
            )
    except (TypeError, ValueError, OverflowError) as exc:
        raise TraceFormatError(f"{where}: {exc}") from None
    forks = out["op"] == FORK
    if "child" not in columns and forks.any():
        raise TraceFormatError(f"{where}: fork rows need a child column")
    return out


def read_csv(path: str | Path) -> np.ndarray:
    """A canonical trace from CSV (header ``pid,op,address,length[,child]``)."""
    with open(path, newline="") as f:
        return _read_csv(f, str(path))


def _read_csv(f: IO[str], where: str) -> np.ndarray:
    reader = csv.DictReader(f)
    if reader.fieldnames is None:
        raise TraceFormatError(f"{where}: empty file, no header")
    cols: dict[str, list[Any]] = {name.strip(): [] for name in reader.fieldnames}
    for lineno, row in enumerate(reader, start=2):
        for raw_key, value in row.items():
            key = raw_key.strip()
            text = (value or "").strip()
            if key == "op":
                cols[key].append(text)
            elif key == "child" and not text:
                cols[key].append(0)
            else:
                cols[key].append(_int(text, f"{where} line {lineno} {key}"))
    return trace_from_columns(cols, where)


def _pyarrow(module: str, what: str, otherwise: str) -> Any:
    """``pyarrow`` (or its ``module``), an optional dependency: loaded by name, so that
    neither the import nor the type check needs it installed.

    Raises:
        TraceFormatError: it is not installed.
    """
    try:
        return importlib.import_module("pyarrow" + (f".{module}" if module else ""))
    except ImportError:
        raise TraceFormatError(
            f"{what} needs pyarrow, which is not installed (pip install pyarrow); {otherwise}"
        ) from None


def read_parquet(path: str | Path) -> np.ndarray:
    """A canonical trace from Parquet (needs ``pyarrow``).

    Raises:
        TraceFormatError: ``pyarrow`` is not installed, or a bad column.
    """
    pq = _pyarrow("parquet", f"{path}: reading Parquet", "CSV and .npy traces work without it")
    return trace_from_columns(pq.read_table(path).to_pydict(), str(path))


def read_npy(path: str | Path) -> np.ndarray:
    """A canonical trace from a numpy ``.npy`` structured array."""
    arr = np.load(path, allow_pickle=False)
    if arr.dtype.names is None:
        raise TraceFormatError(f"{path}: not a structured array (fields pid, op, address, ...)")
    cols = {name: arr[name].tolist() for name in arr.dtype.names}
    return trace_from_columns(cols, str(path))


def read_trace(path: str | Path) -> np.ndarray:
    """A canonical trace from a file, by its suffix: ``.csv``, ``.parquet``/``.pq``, ``.npy``."""
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return read_csv(path)
    if suffix in (".parquet", ".pq"):
        return read_parquet(path)
    if suffix == ".npy":
        return read_npy(path)
    raise TraceFormatError(f"{path}: unknown trace file type (.csv, .parquet or .npy)")


_LACKEY = re.compile(r"^\s*([ILSM])\s+([0-9A-Fa-f]+),\s*([0-9]+)\s*$")


def parse_lackey(lines: Iterable[str], *, instructions: bool = False, pid: int = 1) -> np.ndarray:
    """A canonical trace from ``valgrind --tool=lackey --trace-mem=yes`` output.

    Loads become reads, stores writes, a modify (``M``) a read then a write of the same
    bytes; instruction fetches (``I``) are skipped unless ``instructions`` (then reads).
    ``==pid==`` lines and any other line are skipped.
    """
    ops: list[int] = []
    addrs: list[int] = []
    sizes: list[int] = []
    for line in lines:
        m = _LACKEY.match(line)
        if m is None:
            continue
        kind, addr, size = m.group(1), int(m.group(2), 16), int(m.group(3))
        if kind == "I" and not instructions:
            continue
        if kind == "M":
            ops += (READ, WRITE)
            addrs += (addr, addr)
            sizes += (size, size)
        else:
            ops.append(WRITE if kind == "S" else READ)
            addrs.append(addr)
            sizes.append(size)
    out = np.zeros(len(ops), dtype=TRACE_DTYPE)
    out["pid"] = pid
    out["op"] = ops
    out["address"] = addrs
    out["length"] = sizes
    return out


# Replaying.


@dataclass(slots=True)
class Replay:
    """The result of :func:`replay`: the records, and the machine in its final state."""

    records: np.ndarray
    machine: Machine
    pids: dict[int, Process] = field(default_factory=dict)

    def summary(self) -> Counter[tuple[str, str]]:
        """Accesses per ``(outcome, reason)`` name pair."""
        pairs = zip(self.records["outcome"].tolist(), self.records["reason"].tolist(), strict=True)
        return Counter((Outcome(o).name, Reason(r).name) for o, r in pairs)


def _pages(trace: np.ndarray) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.int64]]:
    """Every page each access row touches, lowest first: the page addresses (the access's
    own byte for its first page, each later page's first byte) and, per page, the row index
    into ``trace``."""
    addr = trace["address"].astype(np.uint64)
    last = addr + np.maximum(trace["length"], 1).astype(np.uint64) - np.uint64(1)
    first_page = addr >> np.uint64(12)
    count = (last >> np.uint64(12)) - first_page + np.uint64(1)
    rows = np.repeat(np.arange(len(trace), dtype=np.int64), count.astype(np.int64))
    starts = np.cumsum(count) - count
    step = np.arange(len(rows), dtype=np.uint64) - np.repeat(starts, count.astype(np.int64))
    pages = ((first_page[rows] + step) << np.uint64(12)).astype(np.uint64)
    pages = np.where(step == 0, addr[rows], pages).astype(np.uint64)
    return pages, rows


class _Replayer:
    """Runs the ops of a trace one by one, accesses in batches per run of one pid."""

    def __init__(self, machine: Machine, trace: np.ndarray, auto_map: bool) -> None:
        self.m = machine
        self.trace = trace
        self.auto_map = auto_map
        self.procs: dict[int, Process] = {}
        self.regions: dict[int, set[int]] = {}
        self.chunks: list[np.ndarray] = []
        self.started = False

    def proc(self, pid: int, row: int) -> Process:
        if not self.started:  # the trace's first pid is the machine's first process
            self.started = True
            self.procs[pid] = self.m.init
            self.regions[pid] = set()
        p = self.procs.get(pid)
        if p is None:
            raise InvalidArgumentError(
                f"trace row {row}: pid {pid} is neither the trace's first pid nor a fork's child"
            )
        return p

    def run(self) -> None:
        ops = self.trace["op"]
        pids = self.trace["pid"]
        n = len(self.trace)
        i = 0
        while i < n:
            op = int(ops[i])
            if op in (READ, WRITE):
                j = i + 1
                while j < n and ops[j] <= WRITE and pids[j] == pids[i]:
                    j += 1
                self.accesses(i, j)
                i = j
                continue
            self.other(i, op)
            i += 1

    def other(self, i: int, op: int) -> None:
        row = self.trace[i]
        pid, addr, length = int(row["pid"]), int(row["address"]), int(row["length"])
        p = self.proc(pid, i)
        if op == FORK:
            child = int(row["child"])
            if child in self.procs:
                raise InvalidArgumentError(f"trace row {i}: fork child pid {child} is in use")
            self.procs[child] = p.fork()
            self.regions[child] = set(self.regions[pid])
        elif op == EXIT:
            p.exit()
            del self.procs[pid]
        elif op == MMAP:
            p.mmap_fixed(addr, length)
        elif op == MUNMAP:
            p.munmap(addr, length)
            lo, hi = addr // REGION, (addr + length - 1) // REGION
            self.regions[pid] -= set(range(lo, hi + 1))

    def map_regions(self, pid: int, p: Process, pages: npt.NDArray[np.uint64]) -> None:
        """Map, with ``mmap_fixed``, the unmapped parts of every 2 MiB region the pages touch
        that this process has not touched before (``auto_map``)."""
        seen = self.regions[pid]
        for region in np.unique(pages >> np.uint64(21)).tolist():
            if region in seen:
                continue
            seen.add(region)
            lo, hi = region * REGION, (region + 1) * REGION
            at = max(lo, PAGE)
            for vma in sorted(p.vmas()):
                if vma.end <= at or vma.start >= hi:
                    continue
                if vma.start > at:
                    p.mmap_fixed(at, vma.start - at)
                at = max(at, vma.end)
            if at < hi:
                p.mmap_fixed(at, hi - at)

    def accesses(self, i: int, j: int) -> None:
        part = self.trace[i:j]
        pid = int(part["pid"][0])
        p = self.proc(pid, i)
        pages, rows = _pages(part)
        writes = part["op"][rows] == WRITE
        if self.auto_map:
            self.map_regions(pid, p, pages)
        out = np.zeros(len(pages), dtype=RECORD_DTYPE)
        out["row"] = rows + i
        out["pid"] = pid
        out["write"] = writes
        out["addr"] = pages
        got = p.access_batch(pages, writes)
        for name, _ in ACCESS_FIELDS:
            out[name] = got[name]
        self.chunks.append(out)


def replay(
    trace: np.ndarray,
    *,
    kernel: str = "6.15",
    backend: str = DEFAULT_BACKEND,
    thp: Mapping[str, str] | None = None,
    auto_map: bool = False,
    machine: Machine | None = None,
) -> Replay:
    """Replay a canonical trace (:data:`TRACE_DTYPE`, e.g. from :func:`read_trace` or
    :func:`parse_lackey`) on a fresh machine, or on ``machine``.

    Args:
        trace: the operations.
        kernel: the profile of the fresh machine.
        backend: its backend.
        thp: THP settings before the first op: ``{"enabled": "always", "64K": "always",
            "zero_page": "off"}`` (``enabled``, a size, ``zero_page``).
        auto_map: map each 2 MiB region on its first touch (``Process.mmap_fixed``).
        machine: replay on this machine instead (its first process is the trace's first).

    Raises:
        InvalidArgumentError: a pid the trace never created, a reused fork child.
        CowError: what the simulator raised for an op (an ``mmap`` over a mapping, ...).
    """
    m = machine if machine is not None else Machine(kernel, backend=backend)
    for key, value in (thp or {}).items():
        if key == "enabled":
            m.thp.enabled = value  # type: ignore[assignment]
        elif key == "zero_page":
            m.thp.use_zero_page = value == "on"
        else:
            m.thp.sizes[key] = value
    r = _Replayer(m, trace, auto_map)
    r.run()
    records = np.concatenate(r.chunks) if r.chunks else np.zeros(0, dtype=RECORD_DTYPE)
    return Replay(records, m, dict(r.procs))


def parse_thp(specs: Iterable[str]) -> dict[str, str]:
    """``--thp`` arguments (``enabled=always``, ``64K=always``, ``zero_page=off``) as a dict.

    Raises:
        InvalidArgumentError: an argument without ``=``.
    """
    out: dict[str, str] = {}
    for spec in specs:
        key, eq, value = spec.partition("=")
        if not eq:
            raise InvalidArgumentError(
                f"bad --thp {spec!r}: KEY=VALUE (enabled=always, 64K=always, zero_page=off)"
            )
        out[key.strip()] = value.strip()
    return out


# Writing records.


def _flag_names(value: int) -> str:
    return "|".join(f.name or "" for f in AccessFlags if value & f)


def record_rows(records: np.ndarray) -> Iterator[dict[str, object]]:
    """Each record as a dict: enum columns as names, flags as ``A|B``, ``phys`` ``None`` when
    the access did not complete, no padding columns."""
    names = [n for n in records.dtype.names or () if not n.startswith("reserved")]
    for rec in records.tolist():
        row = dict(zip(records.dtype.names or (), rec, strict=True))
        out: dict[str, object] = {}
        for name in names:
            value = row[name]
            if name in ENUM_COLUMNS:
                value = ENUM_COLUMNS[name](value).name
            elif name == "flags":
                value = _flag_names(value)
            elif name == "phys" and value == (1 << 64) - 1:
                value = None
            elif name == "write":
                value = bool(value)
            out[name] = value
        yield out


def write_records(records: np.ndarray, path: str | Path) -> None:
    """Write the records by the file's suffix: ``.npy`` (the structured array as is),
    ``.csv`` (enum names, see :func:`record_rows`), ``.parquet``/``.pq`` (needs pyarrow;
    the raw integer columns).

    Raises:
        TraceFormatError: an unknown suffix, or Parquet without pyarrow.
    """
    suffix = Path(path).suffix.lower()
    if suffix == ".npy":
        np.save(path, records, allow_pickle=False)
    elif suffix == ".csv":
        names = [n for n in records.dtype.names or () if not n.startswith("reserved")]
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=names)
            writer.writeheader()
            for row in record_rows(records):
                writer.writerow({k: "" if v is None else v for k, v in row.items()})
    elif suffix in (".parquet", ".pq"):
        pa = _pyarrow("", f"{path}: writing Parquet", "use .npy or .csv")
        pq = _pyarrow("parquet", f"{path}: writing Parquet", "use .npy or .csv")
        names = [n for n in records.dtype.names or () if not n.startswith("reserved")]
        pq.write_table(pa.table({n: records[n] for n in names}), path)
    else:
        raise TraceFormatError(f"{path}: unknown output type (.npy, .csv or .parquet)")


# Summaries.


def summary_by_outcome(summary: Mapping[tuple[str, str], int]) -> dict[str, int]:
    """Accesses per outcome name, from a per ``(outcome, reason)`` summary."""
    out: Counter[str] = Counter()
    for (outcome, _), n in summary.items():
        out[outcome] += n
    return dict(sorted(out.items()))


def format_summary(summary: Mapping[tuple[str, str], int], total: int) -> str:
    """The summary as text: the total, then a line per outcome and per reason under it."""
    lines = [f"{total} accesses"]
    by_outcome = summary_by_outcome(summary)
    for outcome in sorted(by_outcome, key=lambda name: Outcome[name]):
        lines.append(f"  {outcome:<24} {by_outcome[outcome]:>10}")
        for (o, reason), n in sorted(summary.items()):
            if o == outcome:
                lines.append(f"    {reason:<22} {n:>10}")
    return "\n".join(lines)
