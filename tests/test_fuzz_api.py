"""The public API fuzzed with hypothesis: random calls with random arguments (valid ones,
near misses, wrong types) on every backend in lockstep.

Every call either succeeds or raises a ``CowError`` subclass (never a ``TypeError``,
``OverflowError``, ``PanicException``...); every backend gives the same outcome (value, or
exception class and message and, for a segmentation fault, address and reason; an
out-of-memory error's message is the one thing that may differ); ``check()`` holds after
every call; and at the end every backend is in the same state.

Arguments are ints or numpy integers (which the API takes as ints), and the batch calls get
their addresses as lists, numpy arrays, ``array('Q')``/``array('q')`` and other iterables.
"""

from __future__ import annotations

import array
import itertools
from typing import Any

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import cowcore
from cowcore import CowError, OutOfMemoryError, SegmentationFault

PAGE = 4096
MiB = 1 << 20
RAW = st.sampled_from(
    [
        0,
        1,
        PAGE - 1,
        PAGE,
        1 << 47,
        (1 << 47) - PAGE,
        1 << 56,
        1 << 63,
        (1 << 64) - PAGE,
        (1 << 64) - 1,
        1 << 64,
        -1,
        -PAGE,
        None,
        "4096",
        4096.0,
        True,
        1 << 100,
    ]
)
LENGTHS = st.sampled_from(
    [
        PAGE,
        2 * PAGE,
        16 * PAGE,
        64 << 10,
        MiB,
        2 * MiB,
        4 * MiB,
        0,
        1,
        PAGE + 1,
        1 << 47,
        (1 << 64) - PAGE,
        1 << 63,
        -PAGE,
        None,
        "4K",
        4096.0,
        False,
    ]
)
MMAP_LENGTHS = st.sampled_from(
    [PAGE, 16 * PAGE, 64 << 10, 2 * MiB, 4 * MiB, 1 << 46, 1 << 47, 0, 100, -PAGE, 1 << 64, "2M"]
)
PROTS = st.sampled_from(["none", "r", "rw", "rwx", "", None, 1])
ADVICES = st.sampled_from(
    [
        "hugepage",
        "nohugepage",
        "dontneed",
        "dontfork",
        "dofork",
        "wipeonfork",
        "keeponfork",
        "free",
        None,
    ]
)
VALUES = st.sampled_from([0, 1, 7, (1 << 64) - 1, 1 << 64, -1, None, 2.5])
INT_TYPES = st.sampled_from(["int", "int", "int", "uint64", "int64", "uint32", "bool_"])
"""How an int argument is passed: as is, or as a numpy scalar of that type (when the value
fits it; ``bool_`` when it is 0 or 1, which must be refused as ``bool`` is)."""
CONTAINERS = st.sampled_from(
    [
        "list",
        "list",
        "uint64",
        "int64",
        "array-Q",
        "array-q",
        "strided",
        "big-endian",
        "uint32",
        "float64",
        "2d",
        "tuple",
        "generator",
        "scalars",
    ]
)
"""How a batch call's addresses are passed (a container that cannot hold them is a list)."""


@st.composite
def calls(draw: st.DrawFn) -> tuple[Any, ...]:
    """(method, process choice, args): addresses are offsets into a known mapping (pages
    and odd bytes) or raw values."""
    which = draw(st.integers(0, 1 << 16))
    addr: Any = (
        "map",
        draw(st.integers(0, 1 << 16)),
        draw(st.integers(-4, 600)),
        draw(st.sampled_from([0, 0, 0, 1, 2048])),
    )
    if draw(st.integers(0, 5)) == 0:
        addr = ("raw", draw(RAW))
    addr = ("as", draw(INT_TYPES), addr)
    method = draw(
        st.sampled_from(
            [
                "mmap",
                "munmap",
                "mprotect",
                "madvise",
                "write",
                "write",
                "write",
                "read",
                "fork",
                "fork",
                "exit",
                "translate",
                "observe",
                "observe_iter",
                "write_pages",
                "read_pages",
                "folio",
                "thp",
                "policy",
            ]
        )
    )
    if method == "mmap":
        return method, which, (draw(MMAP_LENGTHS),)
    if method in ("munmap", "read", "observe"):
        return method, which, (addr, draw(LENGTHS))
    if method == "mprotect":
        return method, which, (addr, draw(LENGTHS), draw(PROTS))
    if method == "madvise":
        return method, which, (addr, draw(LENGTHS), draw(ADVICES))
    if method == "write":
        return method, which, (addr, draw(LENGTHS), ("as", draw(INT_TYPES), draw(VALUES)))
    if method == "observe_iter":
        chunk = draw(st.sampled_from([1, 3, 64, 1 << 16, 0, -1, (1 << 20) + 1, None]))
        return method, which, (addr, draw(LENGTHS), chunk)
    if method in ("write_pages", "read_pages"):
        # pages of the known mappings, with now and then a raw value among them
        pages: list[Any] = draw(
            st.lists(
                st.tuples(
                    st.integers(0, 1 << 16),
                    st.integers(-4, 600),
                    st.sampled_from([0, 0, 0, 0, 0, 0, 1, 2048]),
                ).map(lambda t: ("map", *t)),
                max_size=12,
            )
        )
        if pages and draw(st.integers(0, 5)) == 0:
            pages[draw(st.integers(0, len(pages) - 1))] = ("raw", draw(RAW))
        value = draw(st.sampled_from([1, 7, (1 << 64) - 1]) | VALUES)
        return method, which, (("batch", draw(CONTAINERS), pages), ("as", draw(INT_TYPES), value))
    if method == "translate":
        return method, which, (addr,)
    if method == "folio":
        return method, which, (draw(st.one_of(st.integers(-2, 5000), RAW)),)
    if method == "thp":
        size = draw(st.sampled_from([*cowcore.protocol.THP_SIZES, "8K", None]))
        mode = draw(st.sampled_from(["always", "madvise", "inherit", "never", "bad", None]))
        return method, which, (size, mode)
    if method == "policy":
        name = draw(st.sampled_from(["cow_reuse_pte_mapped_thp", "huge_zero_wp_alloc", "x"]))
        return method, which, (name, draw(st.sampled_from([True, False, 1, None])))
    return method, which, ()


def as_int_type(kind: str, value: Any) -> Any:
    """``value`` as a numpy scalar of ``kind`` when it is an int that fits; else as is."""
    if kind == "int" or type(value) is not int:
        return value
    if kind == "bool_":
        return np.bool_(value) if value in (0, 1) else value
    info = np.iinfo(kind)
    return getattr(np, kind)(value) if info.min <= value <= info.max else value


def container(kind: str, values: list[Any]) -> Any:
    """The addresses of a batch call in a container of ``kind`` (a list when they do not
    fit it: numpy would raise before the call)."""
    makers: dict[str, Any] = {
        "uint64": lambda: np.array(values, dtype=np.uint64),
        "int64": lambda: np.array(values, dtype=np.int64),
        "array-Q": lambda: array.array("Q", values),
        "array-q": lambda: array.array("q", values),
        "strided": lambda: np.repeat(np.array(values, dtype=np.uint64), 2)[::2],
        "big-endian": lambda: np.array(values, dtype=">u8"),
        "uint32": lambda: np.array(values, dtype=np.uint32),
        "float64": lambda: np.array(values, dtype=np.float64),
        "2d": lambda: np.array([values], dtype=np.uint64),
        "tuple": lambda: tuple(values),
        "generator": lambda: (v for v in values),
        "scalars": lambda: [as_int_type("uint64", v) for v in values],
    }
    if kind not in makers:
        return values
    try:
        return makers[kind]()
    except (OverflowError, TypeError, ValueError):
        return values


class Side:
    """One backend's machine and the mappings it made."""

    def __init__(self, backend: str, profile: str) -> None:
        self.m = cowcore.Machine(profile, backend=backend, memory="8M")
        self.maps: list[int] = []
        self.procs = [self.m.init]

    def resolve(self, a: Any) -> Any:
        if isinstance(a, tuple) and a and a[0] == "as":
            return as_int_type(a[1], self.resolve(a[2]))
        if isinstance(a, tuple) and a and a[0] == "batch":
            return container(a[1], [self.resolve(x) for x in a[2]])
        if isinstance(a, tuple) and a and a[0] == "raw":
            return a[1]
        if isinstance(a, tuple) and a and a[0] == "map":
            if not self.maps:
                return 0x1000
            _, which, page, byte = a
            return max(0, self.maps[which % len(self.maps)] + page * PAGE + byte)
        return a

    def call(self, method: str, which: int, args: tuple[Any, ...]) -> Any:
        p = self.procs[which % len(self.procs)]  # exited processes stay in the list
        args = tuple(self.resolve(a) for a in args)
        if method == "mmap":
            addr = p.mmap(*args)
            if args[0] <= 4 * MiB:  # keep the huge ones out of the ranges drawn later
                self.maps.append(addr)
            return addr
        if method == "fork":
            child = p.fork()
            self.procs.append(child)
            return child.pid
        if method == "folio":
            return self.m.folio(*args)
        if method == "thp":
            self.m.thp.sizes[args[0]] = args[1]
            return None
        if method == "policy":
            setattr(self.m.policy, args[0], args[1])
            return None
        if method == "exit" and len(self.m.processes()) == 1 and p.alive:
            return None  # keep one process, so the run goes on
        if method == "observe_iter":
            return list(itertools.islice(p.observe_iter(args[0], args[1], chunk=args[2]), 80))
        if method == "write_pages":
            return p.write_pages(*args)
        if method == "read_pages":
            return p.read_pages(args[0])
        return getattr(p, method)(*args)

    def state(self) -> Any:
        out: list[Any] = [self.m.free_frames(), self.m.stats()]
        for p in self.m.processes():
            vmas = p.vmas()
            out.append((p.pid, vmas, [p.observe(s, min(e - s, 4 * MiB)) for s, e, _, _ in vmas]))
        return out


def outcome(side: Side, call: tuple[Any, ...]) -> tuple[str, Any]:
    try:
        return "ok", side.call(*call)
    except SegmentationFault as exc:
        return "raise", (type(exc).__name__, exc.addr, exc.reason, str(exc))
    except OutOfMemoryError as exc:  # the reference names the frames it needed
        return "raise", (type(exc).__name__,)
    except CowError as exc:
        return "raise", (type(exc).__name__, str(exc))
    except TypeError as exc:  # only `del thp.sizes[...]` may raise it; never called here
        raise AssertionError(f"{call} raised {exc!r}") from exc


@given(
    profile=st.sampled_from(["6.12", "6.15"]),
    program=st.lists(calls(), min_size=1, max_size=40),
)
def test_random_calls_agree_and_keep_invariants(profile: str, program: list[Any]) -> None:
    sides = [Side(b, profile) for b in cowcore.BACKENDS]
    for call in program:
        results = [outcome(s, call) for s in sides]
        assert all(r == results[0] for r in results), (call, results)
        for s in sides:
            s.m.check()
    states = [s.state() for s in sides]
    assert all(st_ == states[0] for st_ in states)
    for s in sides:
        for p in s.m.processes():
            p.exit()
        s.m.check()
        assert s.m.free_frames() == s.m.total_frames - 513
