"""Random multi-process programs and an isolation model, for the isolation and conservation
property tests (``tests/test_isolation.py``, ``tests/test_conservation.py``).

A program is a list of operations on one 2 MiB mapping of the first process, inherited by
every process forked from it: writes of values that are distinct machine-wide, reads,
forks (biased towards the newest process, so trees grow deep), exits, MADV_DONTNEED,
mprotect and munmap. :class:`Runner` applies it to a machine and keeps, for every process,
what each page must hold: what that process wrote itself or inherited at fork, never a
write of another process made later.

The model is checked without faulting, through ``observe`` (a page that is not present
must read as 0, a present one must hold the model's value), so the checks themselves
allocate nothing and change nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

import cowcore
from cowcore import OutOfMemoryError, SegmentationFault

PAGE = 4096
NPAGES = 512  # one 2 MiB mapping: PMD THPs possible

Op = tuple[Any, ...]


@st.composite
def ranges(draw: st.DrawFn) -> tuple[int, int]:
    """A page range of the mapping, mostly small, sometimes the whole 2 MiB."""
    if draw(st.integers(0, 9)) == 0:
        return 0, NPAGES
    first = draw(st.integers(0, NPAGES - 1))
    count = draw(st.integers(1, min(NPAGES - first, 64)))
    return first, count


def ops() -> st.SearchStrategy[Op]:
    who = st.integers(0, 1 << 16)  # taken modulo the live processes when applied
    return st.one_of(
        st.tuples(st.just("write"), who, ranges()),
        st.tuples(st.just("write"), who, ranges()),
        st.tuples(st.just("write"), who, ranges()),
        st.tuples(st.just("read"), who, ranges()),
        st.tuples(st.just("fork"), who, st.booleans()),
        st.tuples(st.just("fork"), who, st.booleans()),
        st.tuples(st.just("exit"), who),
        st.tuples(st.just("dontneed"), who, ranges()),
        st.tuples(st.just("mprotect"), who, ranges(), st.sampled_from(["none", "r", "rw"])),
        st.tuples(st.just("munmap"), who, ranges()),
    )


@st.composite
def setups(draw: st.DrawFn) -> dict[str, Any]:
    """THP sizes to turn on (most programs use large folios: they are what COW is about)."""
    sizes = draw(
        st.lists(st.sampled_from(list(cowcore.protocol.THP_SIZES)), max_size=3, unique=True)
    )
    return {"sizes": sizes, "zero_page": draw(st.booleans())}


@dataclass
class Proc:
    proc: cowcore.Process
    pages: dict[int, int | None]  # page index -> value; None once unmapped
    prot: dict[int, str] = field(default_factory=dict)


class Runner:
    """Applies programs to one machine and checks every live process against the model."""

    def __init__(self, m: cowcore.Machine, setup: dict[str, Any], max_procs: int = 24) -> None:
        self.m = m
        for size in setup["sizes"]:
            m.thp.sizes[size] = "always"
        m.thp.use_zero_page = setup["zero_page"]
        self.max_procs = max_procs
        self.free_at_boot = m.free_frames()
        self.base = m.init.mmap(NPAGES * PAGE)
        self.procs = [
            Proc(m.init, dict.fromkeys(range(NPAGES), 0), dict.fromkeys(range(NPAGES), "rw"))
        ]
        self.value = 0
        self.oom = 0

    def live(self) -> list[Proc]:
        return [p for p in self.procs if p.proc.alive]

    def pick(self, who: int, newest_bias: bool = False) -> Proc:
        live = self.live()
        if newest_bias and who % 2:
            return live[-1]
        return live[who % len(live)]

    def apply(self, op: Op) -> None:
        kind, who = op[0], op[1]
        if not self.live():
            return
        p = self.pick(who, newest_bias=kind == "fork")
        if kind == "fork":
            if len(self.procs) >= self.max_procs:
                return
            try:
                child = p.proc.fork()
            except OutOfMemoryError:
                self.oom += 1
                return
            self.procs.append(Proc(child, dict(p.pages), dict(p.prot)))
            return
        if kind == "exit":
            if len(self.live()) > 1:
                p.proc.exit()
            return
        first, count = op[2]
        addr, length = self.base + first * PAGE, count * PAGE
        idx = range(first, first + count)
        mapped = all(p.pages[i] is not None for i in idx)
        if kind == "write":
            self.value += 1
            ok = mapped and all(p.prot[i] == "rw" for i in idx)
            try:
                p.proc.write(addr, length, self.value)
            except SegmentationFault:
                assert not ok, "a write that the model allows segfaulted"
                return
            except OutOfMemoryError:
                self.oom += 1
                # pages before the failing one are written, the rest untouched
                done = [o.content == self.value for o in p.proc.observe(addr, length)]
                k = done.index(False)
                assert not any(done[k:]), "a page after the OOM was written"
                for i in idx[:k]:
                    p.pages[i] = self.value
                return
            assert ok, "a write that must segfault succeeded"
            for i in idx:
                p.pages[i] = self.value
        elif kind == "read":
            ok = mapped and all(p.prot[i] != "none" for i in idx)
            try:
                got = p.proc.read(addr, length)
            except SegmentationFault:
                assert not ok, "a read that the model allows segfaulted"
                return
            except OutOfMemoryError:
                self.oom += 1
                return
            assert ok and got == [p.pages[i] for i in idx], f"pid {p.proc.pid} read {got}"
        elif kind == "dontneed":
            if not mapped:
                return
            p.proc.madvise(addr, length, "dontneed")
            for i in idx:
                p.pages[i] = 0
        elif kind == "mprotect":
            if not mapped:
                return
            p.proc.mprotect(addr, length, op[3])
            for i in idx:
                p.prot[i] = op[3]
        elif kind == "munmap":
            p.proc.munmap(addr, length)
            for i in idx:
                p.pages[i] = None

    def check_isolation(self) -> None:
        """Every live process sees exactly its model, page by page (without faulting)."""
        for p in self.live():
            for i, o in enumerate(p.proc.observe(self.base, NPAGES * PAGE)):
                want = p.pages[i]
                got = o.content if o.present else (None if want is None else 0)
                if want is None:
                    assert not o.present, f"pid {p.proc.pid} page {i} unmapped but present"
                    continue
                assert got == want, f"pid {p.proc.pid} page {i} holds {got}, the model says {want}"

    def exit_all(self, order: list[int]) -> None:
        live = self.live()
        for k in order:
            if live:
                live.pop(k % len(live)).proc.exit()
        for p in live:
            p.proc.exit()
