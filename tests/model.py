"""A hypothesis state machine that drives one or more backends in lockstep.

Every rule applies the same operation to a machine per backend and checks:

* **agreement**: every backend returns the same value or raises the same exception (class
  and message, and for a segmentation fault the address and reason; the message of an
  out-of-memory error may differ: the reference names the frames it needed);
* **isolation**: every read returns what an independent model says the process may see: what
  it wrote itself or inherited at fork, never another process's later write;
* **invariants**: ``check()`` on every machine after every step, and, across backends, equal
  observations of every mapped page (raw PFNs: the determinism contract of DESIGN.md makes
  frames equal, not only equal up to renaming), equal page-table entries, equal folio
  counters, equal statistics and equal free memory;
* **streams**: every backend records its events from the start; after every step the
  events emitted by the step are the same, in the same order, with the same payloads
  (docs/access-and-events.md), which is stronger than equal counters; and the records of
  ``access``/``access_batch`` are equal, field for field;
* **conservation**: when every process has exited, all memory is free again;
* **exhaustion** (``may_oom``, small machines): an access or fork that finds no memory fails
  the same way on every backend; a failed fork changes nothing, a failed ``write`` keeps the
  pages before the failing one (the model learns which from ``observe``) and nothing after.

With one backend it is a property test of that backend; with several it is the differential
test that keeps the Rust core equal to the pure-Python reference.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pytest
from hypothesis import event
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import cowcore
from cowcore import CowError, InvalidAddressError, OutOfMemoryError, SegmentationFault
from cowcore.protocol import PSS_SHIFT
from tests import strategies as gen

PAGE = 4096
MiB = 1 << 20


@dataclass
class PageModel:
    value: int = 0
    prot: str = "rw"
    dontfork: bool = False
    wipeonfork: bool = False


@dataclass
class ProcModel:
    procs: list[cowcore.Process]
    pages: dict[int, PageModel] = field(default_factory=dict)
    maps: list[tuple[int, int]] = field(default_factory=list)  # (start, npages)
    holds: list[tuple[str, int, int]] = field(default_factory=list)  # (ref|pin, addr, npages)

    @property
    def alive(self) -> bool:
        return self.procs[0].alive


def outcome(call: Callable[[], Any]) -> tuple[str, Any]:
    """A call's result, or a comparable description of the exception it raised: its class
    name first, then (but for an out-of-memory error) what it says."""
    try:
        return "ok", call()
    except SegmentationFault as exc:
        return "raise", (type(exc).__name__, exc.addr, exc.reason, str(exc))
    except OutOfMemoryError as exc:
        return "raise", (type(exc).__name__,)
    except CowError as exc:
        return "raise", (type(exc).__name__, str(exc))


class LockstepModel(RuleBasedStateMachine):
    """Subclasses set ``backends``; the first one's results are the ones checked."""

    backends: ClassVar[tuple[str, ...]] = ("reference",)
    memory: ClassVar[str] = "64M"
    may_oom: ClassVar[bool] = False
    """Small machines set it: then an ``OutOfMemoryError`` is an accepted outcome (the same
    on every backend); otherwise it fails the run."""

    @initialize(
        kernel=gen.kernels, levels=gen.levels, sizes=gen.large_sizes, policies=gen.new_policies
    )
    def start(self, kernel: str, levels: int, sizes: list[str], policies: list[str]) -> None:
        self.ms = [
            cowcore.Machine(kernel, backend=b, memory=self.memory, levels=levels)
            for b in self.backends
        ]
        for m in self.ms:  # most runs start with large folios on: they are what COW is about
            for size in sizes:
                if size in m.thp.sizes:  # 6.1 has the PMD size only: 2M or nothing
                    m.thp.sizes[size] = "always"
            # issue 15's policies (off under every profile) from the start, so that the
            # isolation model sees whole runs decided by them, not only the steps after a
            # `toggles` rule
            for name in policies:
                setattr(m.policy, name, True)
        self.free0 = self.ms[0].free_frames()
        self.procs: list[ProcModel] = [ProcModel([m.init for m in self.ms])]
        self.value = 0
        self.recordings = [m.record() for m in self.ms]
        for r in self.recordings:
            r.__enter__()

    # -- lockstep helpers ----------------------------------------------------------------

    def each(self, call: Callable[[int], Any]) -> tuple[str, Any]:
        """Run ``call(i)`` for every backend ``i``; all must agree; return the outcome."""
        results = [outcome(lambda i=i: call(i)) for i in range(len(self.ms))]  # type: ignore[misc]
        for name, res in zip(self.backends[1:], results[1:], strict=True):
            assert res == results[0], (
                f"{name} disagrees with {self.backends[0]}: {res!r} != {results[0]!r}"
            )
        return results[0]

    def on_each(self, p: ProcModel, method: str, *args: Any) -> tuple[str, Any]:
        """Call ``method`` on the process ``p`` of every backend (see :meth:`each`)."""
        return self.each(lambda i: getattr(p.procs[i], method)(*args))

    def live(self) -> list[ProcModel]:
        return [p for p in self.procs if p.alive]

    def mapped(self) -> list[ProcModel]:
        return [p for p in self.live() if p.maps]

    def pick_range(self, data: st.DataObject, p: ProcModel) -> tuple[int, int]:
        start, npages = data.draw(st.sampled_from(p.maps))
        first = data.draw(st.integers(0, npages - 1))
        count = data.draw(st.integers(1, min(npages - first, 600)))
        return start + first * PAGE, count

    def expect_ok(self, res: tuple[str, Any], what: str) -> Any:
        assert res[0] == "ok", f"{what} raised {res[1]}"
        return res[1]

    def is_oom(self, res: tuple[str, Any]) -> bool:
        """An accepted out-of-memory outcome (only on machines that may run out)."""
        oom = res == ("raise", (OutOfMemoryError.__name__,))
        if oom and self.may_oom:
            event("out of memory")
        return self.may_oom and oom

    def is_refused(self, res: tuple[str, Any]) -> bool:
        """The one swap-in the model refuses (``NotModelledError``): a large swap-in whose
        block of slots the model's allocator made consecutive one page at a time, where the
        kernel's answer depends on its cluster allocator (DESIGN.md "Swap"). Every backend
        must refuse alike (``each`` compares the messages); the refusal changes nothing of
        the faulting page, so the step is left as an out-of-memory step is."""
        refused = res[0] == "raise" and res[1][0] == "NotModelledError"
        if refused:
            event("swap-in refused (not modelled)")
        return refused

    def do_fork(self, p: ProcModel) -> list[cowcore.Process] | None:
        """Fork ``p`` on every backend; ``None`` when the fork found no memory (then it
        must have changed nothing: no child, the parent as it was)."""
        children: list[cowcore.Process] = []
        free = [m.free_frames() for m in self.ms]
        pids = [[q.pid for q in m.processes()] for m in self.ms]

        def fork(i: int) -> int:
            children.append(p.procs[i].fork())
            return children[-1].pid

        res = self.each(fork)
        if self.is_oom(res):
            assert [m.free_frames() for m in self.ms] == free, "a failed fork allocated"
            assert [[q.pid for q in m.processes()] for m in self.ms] == pids, (
                "a failed fork left a child"
            )
            return None
        self.expect_ok(res, "fork")
        return children

    # -- rules ---------------------------------------------------------------------------

    @precondition(lambda self: self.live())
    @rule(data=st.data(), npages=gen.mmap_pages)
    def mmap(self, data: st.DataObject, npages: int) -> None:
        p = data.draw(st.sampled_from(self.live()))
        addr = self.expect_ok(self.each(lambda i: p.procs[i].mmap(npages * PAGE)), "mmap")
        p.maps.append((addr, npages))
        for i in range(npages):
            p.pages[addr + i * PAGE] = PageModel()

    @precondition(lambda self: self.mapped())
    @rule(data=st.data())
    def write(self, data: st.DataObject) -> None:
        p = data.draw(st.sampled_from(self.mapped()))
        self.write_range(p, *self.pick_range(data, p))

    def write_range(self, p: ProcModel, addr: int, count: int) -> None:
        """Write a fresh value over the range on every backend and record it in the model
        (or expect the segmentation fault the model predicts; on a machine that may run out
        of memory, an OOM keeps the pages before the failing one)."""
        self.value += 1
        value = self.value
        pages = [p.pages.get(addr + i * PAGE) for i in range(count)]
        res = self.each(lambda i: p.procs[i].write(addr, count * PAGE, value))
        if any(pm is None or pm.prot != "rw" for pm in pages):
            assert res[0] == "raise" and res[1][0] == "SegmentationFault", res
            return
        if self.is_oom(res) or self.is_refused(res):
            # pages before the failing one hold the value, that one and the rest do not
            done = [o.content == value for o in p.procs[0].observe(addr, count * PAGE)]
            count = done.index(False)
            assert not any(done[count:]), "a write went on after running out of memory"
        else:
            self.expect_ok(res, "write")
        for pm in pages[:count]:
            assert pm is not None
            pm.value = value

    def pick_pages(self, data: st.DataObject, p: ProcModel) -> list[int]:
        """Scattered page addresses inside ``p``'s mappings (some may be unmapped since)."""
        picks = data.draw(
            st.lists(
                st.tuples(st.sampled_from(p.maps), st.integers(0, 1 << 20)), min_size=1, max_size=16
            )
        )
        return [start + (k % npages) * PAGE for (start, npages), k in picks]

    @precondition(lambda self: self.mapped())
    @rule(data=st.data())
    def write_pages(self, data: st.DataObject) -> None:
        p = data.draw(st.sampled_from(self.mapped()))
        addrs = self.pick_pages(data, p)
        self.value += 1
        value = self.value
        pages = [p.pages.get(a) for a in addrs]
        res = self.each(lambda i: p.procs[i].write_pages(addrs, value))
        if any(pm is None or pm.prot != "rw" for pm in pages):
            assert res[0] == "raise" and res[1][0] == "SegmentationFault", res
            return
        if self.is_oom(res) or self.is_refused(res):
            # the pages written before the failing one hold the value (values are unique)
            for a, pm in zip(addrs, pages, strict=True):
                if pm is not None and p.procs[0].observe(a)[0].content == value:
                    pm.value = value
            return
        self.expect_ok(res, "write_pages")
        for pm in pages:
            assert pm is not None
            pm.value = value

    @precondition(lambda self: self.mapped())
    @rule(data=st.data())
    def read_pages(self, data: st.DataObject) -> None:
        p = data.draw(st.sampled_from(self.mapped()))
        addrs = self.pick_pages(data, p)
        pages = [p.pages.get(a) for a in addrs]
        res = self.each(lambda i: p.procs[i].read_pages(addrs))
        if any(pm is None or pm.prot == "none" for pm in pages):
            assert res[0] == "raise" and res[1][0] == "SegmentationFault", res
            return
        if self.is_oom(res) or self.is_refused(res):
            return
        assert self.expect_ok(res, "read_pages") == [pm.value for pm in pages if pm]

    @precondition(lambda self: self.mapped())
    @rule(data=st.data())
    def read(self, data: st.DataObject) -> None:
        p = data.draw(st.sampled_from(self.mapped()))
        addr, count = self.pick_range(data, p)
        pages = [p.pages.get(addr + i * PAGE) for i in range(count)]
        res = self.each(lambda i: p.procs[i].read(addr, count * PAGE))
        if any(pm is None or pm.prot == "none" for pm in pages):
            assert res[0] == "raise" and res[1][0] == "SegmentationFault", res
            return
        if self.is_oom(res) or self.is_refused(res):
            return
        assert self.expect_ok(res, "read") == [pm.value for pm in pages if pm]

    @precondition(lambda self: self.mapped())
    @rule(data=st.data())
    def munmap(self, data: st.DataObject) -> None:
        p = data.draw(st.sampled_from(self.mapped()))
        addr, count = self.pick_range(data, p)
        self.expect_ok(self.each(lambda i: p.procs[i].munmap(addr, count * PAGE)), "munmap")
        for i in range(count):
            p.pages.pop(addr + i * PAGE, None)

    @precondition(lambda self: self.mapped())
    @rule(data=st.data(), prot=gen.prots)
    def mprotect(self, data: st.DataObject, prot: str) -> None:
        p = data.draw(st.sampled_from(self.mapped()))
        addr, count = self.pick_range(data, p)
        pages = [p.pages.get(addr + i * PAGE) for i in range(count)]
        res = self.each(lambda i: p.procs[i].mprotect(addr, count * PAGE, prot))  # type: ignore[arg-type]
        if any(pm is None for pm in pages):
            assert res[0] == "raise" and res[1][0] == InvalidAddressError.__name__, res
            return
        self.expect_ok(res, "mprotect")
        for pm in pages:
            assert pm is not None
            pm.prot = prot

    @precondition(lambda self: self.mapped())
    @rule(data=st.data(), advice=gen.advices)
    def madvise(self, data: st.DataObject, advice: str) -> None:
        p = data.draw(st.sampled_from(self.mapped()))
        addr, count = self.pick_range(data, p)
        pages = [p.pages.get(addr + i * PAGE) for i in range(count)]
        res = self.each(lambda i: p.procs[i].madvise(addr, count * PAGE, advice))  # type: ignore[arg-type]
        if any(pm is None for pm in pages):
            assert res[0] == "raise" and res[1][0] == InvalidAddressError.__name__, res
            return
        self.expect_ok(res, "madvise")
        for pm in pages:
            assert pm is not None
            if advice == "dontneed":
                pm.value = 0
            elif advice in ("dontfork", "dofork"):
                pm.dontfork = advice == "dontfork"
            elif advice in ("wipeonfork", "keeponfork"):
                pm.wipeonfork = advice == "wipeonfork"

    def pick_byte(self, data: st.DataObject, p: ProcModel) -> int:
        """A byte address in one of ``p``'s mappings, or just outside one (a segfault)."""
        start, npages = data.draw(st.sampled_from(p.maps))
        offset = data.draw(st.integers(-PAGE, npages * PAGE + PAGE - 1))
        return max(start + offset, 0)

    def learn_access(
        self, p: ProcModel, addr: int, write: bool, value: int, rec: cowcore.Access
    ) -> None:
        """Check one access record against the model, and learn what a store changed."""
        pm = p.pages.get(addr & ~(PAGE - 1))
        allowed = pm is not None and (pm.prot == "rw" if write else pm.prot != "none")
        outcome = rec.outcome
        if not allowed:
            assert outcome is cowcore.Outcome.SEGFAULT, (hex(addr), rec)
            return
        if outcome is cowcore.Outcome.OUT_OF_MEMORY:
            assert self.may_oom, f"out of memory at {addr:#x}"
            return
        assert outcome is not cowcore.Outcome.SEGFAULT, (hex(addr), rec)
        assert pm is not None
        if write:
            pm.value = value

    @precondition(lambda self: self.mapped())
    @rule(data=st.data(), write=st.booleans())
    def access(self, data: st.DataObject, write: bool) -> None:
        """One access of one byte: equal records on every backend, a segfault exactly
        where the model forbids the access."""
        p = data.draw(st.sampled_from(self.mapped()))
        addr = self.pick_byte(data, p)
        self.value += 1
        value = self.value
        res = self.each(lambda i: p.procs[i].access(addr, write, value=value))
        if self.is_refused(res):  # raised rather than recorded: the page is still swapped out
            assert p.procs[0].observe(addr & ~(PAGE - 1))[0].frame_kind == "swap"
            return
        rec = self.expect_ok(res, "access")
        self.learn_access(p, addr, write, value, rec)

    @precondition(lambda self: self.mapped())
    @rule(data=st.data())
    def access_batch(self, data: st.DataObject) -> None:
        """Scattered byte accesses with mixed loads and stores (one store value)."""
        p = data.draw(st.sampled_from(self.mapped()))
        n = data.draw(st.integers(1, 24))
        addrs = [self.pick_byte(data, p) for _ in range(n)]
        writes = data.draw(st.lists(st.booleans(), min_size=len(addrs), max_size=len(addrs)))
        self.value += 1
        value = self.value
        res = self.each(lambda i: p.procs[i].access_batch(addrs, writes, value=value).tobytes())
        if self.is_refused(res):
            # the stores before the refused fault hold the value (values are unique)
            for a, w in zip(addrs, writes, strict=True):
                page = a & ~(PAGE - 1)
                pm = p.pages.get(page)
                if w and pm is not None and p.procs[0].observe(page)[0].content == value:
                    pm.value = value
            return
        raw = self.expect_ok(res, "access_batch")
        recs = np.frombuffer(raw, dtype=cowcore.ACCESS_DTYPE)
        for a, w, r in zip(addrs, writes, recs.tolist(), strict=True):
            self.learn_access(p, a, w, value, cowcore.Access.from_raw(r))

    @precondition(lambda self: self.mapped())
    @rule(data=st.data())
    def touch(self, data: st.DataObject) -> None:
        """A FOLL_TOUCH read from outside (/proc/<pid>/mem): marks folios referenced, which
        the smaps comparison of every step then checks; changes nothing a process reads."""
        p = data.draw(st.sampled_from(self.mapped()))
        addr, npages = self.pick_range(data, p)
        self.expect_ok(self.each(lambda i: p.procs[i].touch(addr, npages * PAGE)), "touch")

    @precondition(lambda self: self.mapped())
    @rule(data=st.data(), kind=st.sampled_from(["ref", "pin"]))
    def gup_get(self, data: st.DataObject, kind: str) -> None:
        """``ref`` (vmsplice) or ``pin`` (io_uring) of a range (issue 16): held until the
        matching ``unref``/``unpin`` or exit; what the process reads does not change. The
        isolation reads of later steps check that a pinned page never leaks a write across a
        fork in either direction (fork copies it at once)."""
        p = data.draw(st.sampled_from(self.mapped()))
        addr, count = self.pick_range(data, p)
        count = min(count, 64)
        pages = [p.pages.get(addr + i * PAGE) for i in range(count)]
        res = self.on_each(p, kind, addr, count * PAGE)
        need = ("rw",) if kind == "pin" else ("r", "rw")
        if any(pm is None or pm.prot not in need for pm in pages):
            assert res[0] == "raise" and res[1][0] == "SegmentationFault", res
            return
        if self.is_oom(res) or self.is_refused(res):
            return  # nothing is held; the faults done changed no value
        self.expect_ok(res, kind)
        p.holds.append((kind, addr, count))

    @precondition(lambda self: self.mapped())
    @rule(data=st.data(), held=st.booleans())
    def gup_put(self, data: st.DataObject, held: bool) -> None:
        """``unref``/``unpin`` of a held range, or of any range (an error unless held)."""
        p = data.draw(st.sampled_from(self.mapped()))
        if held and p.holds:
            kind, addr, count = data.draw(st.sampled_from(p.holds))
        else:
            kind = data.draw(st.sampled_from(["ref", "pin"]))
            addr, count = self.pick_range(data, p)
        res = self.on_each(p, "un" + kind, addr, count * PAGE)
        if (kind, addr, count) in p.holds:
            self.expect_ok(res, "un" + kind)
            p.holds.remove((kind, addr, count))
        else:
            assert res[0] == "raise" and res[1][0] == "InvalidArgumentError", res

    @precondition(lambda self: self.mapped())
    @rule(data=st.data())
    def unshare(self, data: st.DataObject) -> None:
        """A short R/O pin by another process (process_vm_readv): unshare faults change no
        value a process reads; the records agree field for field."""
        p = data.draw(st.sampled_from(self.mapped()))
        addr, count = self.pick_range(data, p)
        pages = [p.pages.get(addr + i * PAGE) for i in range(count)]
        res = self.each(lambda i: p.procs[i].unshare(addr, count * PAGE).tolist())
        if any(pm is None or pm.prot == "none" for pm in pages):
            assert res[0] == "raise" and res[1][0] == "SegmentationFault", res
            return
        if self.is_oom(res) or self.is_refused(res):
            return
        recs = self.expect_ok(res, "unshare")
        assert len(recs) == count
        if any(r[1] == int(cowcore.Outcome.UNSHARE) for r in recs):
            event("unshare fault")

    @precondition(lambda self: self.mapped())
    @rule(data=st.data(), block=st.booleans())
    def collapse(self, data: st.DataObject, block: bool) -> None:
        """MADV_COLLAPSE of a range, or (``block``) of the 2M blocks around a mapped page:
        no value a process reads changes, both backends give the same result (a
        :class:`cowcore.ScanResult`, not an exception), and a range with an unmapped page
        is an InvalidAddressError."""
        p = data.draw(st.sampled_from(self.mapped()))
        addr, count = self.pick_range(data, p)
        if block:
            start = addr & ~(2 * MiB - 1)
            count = data.draw(st.sampled_from([512, 1024]))
            addr = start
        pages = [p.pages.get(addr + i * PAGE) for i in range(count)]
        res = self.each(lambda i: int(p.procs[i].collapse(addr, count * PAGE)))
        if any(pm is None for pm in pages):
            assert res[0] == "raise" and res[1][0] == InvalidAddressError.__name__, res
            return
        if self.is_refused(res):  # a swap entry in the block: no swap-in by collapse yet
            return
        result = cowcore.ScanResult(self.expect_ok(res, "collapse"))
        event(f"collapse {result.name}")

    @precondition(lambda self: self.mapped())
    @rule(data=st.data(), block=st.booleans())
    def pageout(self, data: st.DataObject, block: bool) -> None:
        """MADV_PAGEOUT of a range, or (``block``) of the 64K or 2M block around a mapped
        page (whole large folios go out whole): no value a process reads changes; the
        later reads, writes and the isolation checks swap the pages back in and must find
        every value where it was. A range with an unmapped page is an InvalidAddressError
        (madvise's ENOMEM)."""
        p = data.draw(st.sampled_from(self.mapped()))
        addr, count = self.pick_range(data, p)
        if block:
            size = data.draw(st.sampled_from([64 << 10, 2 * MiB]))
            addr &= ~(size - 1)
            count = size // PAGE
        pages = [p.pages.get(addr + i * PAGE) for i in range(count)]
        res = self.each(lambda i: p.procs[i].pageout(addr, count * PAGE))
        if any(pm is None for pm in pages):
            assert res[0] == "raise" and res[1][0] == InvalidAddressError.__name__, res
            return
        self.expect_ok(res, "pageout")
        swapped = sum(o.frame_kind == "swap" for o in p.procs[0].observe(addr, count * PAGE))
        event(f"pageout: {'some' if swapped else 'no'} page swapped")

    @precondition(lambda self: self.live())
    @rule(data=st.data(), npages=st.sampled_from([1, 16, 512]))
    def mmap_fixed(self, data: st.DataObject, npages: int) -> None:
        """A mapping at a chosen address: over an existing one (EEXIST), beside one (it
        merges), or in a fresh place."""
        p = data.draw(st.sampled_from(self.live()))
        bases = [start + k * PAGE for start, n in p.maps for k in (-npages, 0, n)]
        addr = data.draw(st.sampled_from([*bases, 0x5555_0000_0000, 0x10_0000_0000]))
        length = npages * PAGE
        clash = any(a < addr + length and a + PAGE > addr for a in p.pages) or addr < 0x1000
        res = self.each(lambda i: p.procs[i].mmap_fixed(addr, length))
        if clash:
            assert res[0] == "raise", res
            return
        assert self.expect_ok(res, "mmap_fixed") == addr
        p.maps.append((addr, npages))
        for i in range(npages):
            p.pages[addr + i * PAGE] = PageModel()

    @precondition(lambda self: self.mapped())
    @rule(data=st.data(), fixed=st.booleans())
    def mremap(self, data: st.DataObject, fixed: bool) -> None:
        """Move a range to a fresh address, or (``fixed``) onto another mapping or a free
        place. The pages move with their values and protections; a range that is not inside
        one VMA fails with EFAULT (the model does not track VMA boundaries: every backend
        must agree, and a range with an unmapped page must fail), a fixed destination that
        overlaps the range with EINVAL. A fixed destination is unmapped before the source is
        looked up, so it is gone even when the move fails."""
        p = data.draw(st.sampled_from(self.mapped()))
        addr, count = self.pick_range(data, p)
        length = count * PAGE
        new: int | None = None
        if fixed:
            bases = [start + k * PAGE for start, n in p.maps for k in (0, n // 2)]
            new = data.draw(st.sampled_from([*bases, 0x5555_0000_0000 + (addr % (2 << 20))]))
        pages = [p.pages.get(addr + i * PAGE) for i in range(count)]
        res = self.each(lambda i: p.procs[i].mremap(addr, length, new))
        if new is not None and new < addr + length and addr < new + length:
            assert res[0] == "raise" and res[1][0] == "InvalidArgumentError", res
            return
        if new is not None:
            for i in range(count):
                p.pages.pop(new + i * PAGE, None)
        if any(pm is None for pm in pages):
            assert res[0] == "raise" and res[1][0] == InvalidAddressError.__name__, res
            return
        if self.is_oom(res):
            return
        if res[0] == "raise":
            assert res[1][0] == InvalidAddressError.__name__ and "(EFAULT)" in res[1][1], res
            event("mremap across VMAs")
            return
        dest = res[1]
        if new is None:
            assert dest % (2 << 20) == addr % (2 << 20), "the offset in the 2M block is kept"
        else:
            assert dest == new
        for i, pm in enumerate(pages):
            del p.pages[addr + i * PAGE]
            assert pm is not None
            p.pages[dest + i * PAGE] = pm
        p.maps.append((dest, count))

    @precondition(lambda self: self.live() and len(self.procs) < 12)
    @rule(data=st.data())
    def fork(self, data: st.DataObject) -> None:
        self.fork_model(data.draw(st.sampled_from(self.live())))

    def fork_model(self, p: ProcModel) -> bool:
        """Fork ``p`` and give the child the isolation model's copy of ``p``'s pages;
        whether the fork happened."""
        children = self.do_fork(p)
        if children is None:
            return False
        child = ProcModel(children, maps=list(p.maps))
        for addr, pm in p.pages.items():
            if not pm.dontfork:
                child.pages[addr] = PageModel(
                    0 if pm.wipeonfork else pm.value, pm.prot, False, pm.wipeonfork
                )
        self.procs.append(child)
        return True

    @precondition(lambda self: self.mapped() and len(self.procs) < 12)
    @rule(data=st.data(), unmap=st.booleans(), refork=st.booleans())
    def fork_exit_rewrite(self, data: st.DataObject, unmap: bool, refork: bool) -> None:
        """The seed commit's pattern, which random single steps rarely assemble: fork, the
        child goes away (exit, or unmaps the range), the parent writes the range again. With
        ``refork``, the parent then forks once more and writes the range again: where the
        rewrite reused the folio, its ``cow_reuse_remember_exclusive`` memo (issue 15) must
        have been forgotten by the fork, or the new child would see the parent's writes."""
        p = data.draw(st.sampled_from(self.mapped()))
        addr, count = self.pick_range(data, p)
        children = self.do_fork(p)
        if children is None:
            return
        self.procs.append(ProcModel(children))
        if unmap:
            self.expect_ok(self.each(lambda i: children[i].munmap(addr, count * PAGE)), "munmap")
        self.expect_ok(self.each(lambda i: children[i].exit()), "exit")
        self.write_range(p, addr, count)
        if refork and len(self.procs) < 12 and self.fork_model(p):
            self.write_range(p, addr, count)

    @precondition(lambda self: len(self.live()) > 1)
    @rule(data=st.data())
    def exit(self, data: st.DataObject) -> None:
        p = data.draw(st.sampled_from(self.live()))
        self.expect_ok(self.each(lambda i: p.procs[i].exit()), "exit")

    @rule()
    def drop_caches(self) -> None:
        """The deferred-split shrinker (issue 16): splits change frames and folios but no
        content (a zero-filled page remapped to the zero page still reads 0), so the
        isolation model learns nothing; agreement, invariants (rmap, deferred-queue) and
        the event streams are checked as after every step."""
        self.expect_ok(self.each(lambda i: self.ms[i].drop_caches()), "drop_caches")

    @rule(size=gen.thp_sizes, mode=gen.size_modes)
    def thp_size(self, size: str, mode: str) -> None:
        result = self.each(lambda i: self.ms[i].thp.sizes.__setitem__(size, mode))
        # a size the profile lacks (6.1: every size but 2M) is refused, in the same words on
        # every backend (each() compares them), and changes nothing
        assert (result[0] == "ok") is (size in self.ms[0].thp.sizes), (size, result)

    @rule(mode=gen.thp_modes, zero=st.booleans())
    def thp_global(self, mode: str, zero: bool) -> None:
        for m in self.ms:
            m.thp.enabled = mode  # type: ignore[assignment]
            m.thp.use_zero_page = zero

    @rule(
        reuse=st.booleans(),
        huge_zero=st.booleans(),
        memo=st.booleans(),
        around=st.booleans(),
        window=st.booleans(),
        exact=st.booleans(),
    )
    def toggles(
        self, reuse: bool, huge_zero: bool, memo: bool, around: bool, window: bool, exact: bool
    ) -> None:
        """Every policy, issue 15's (off under every profile) among them: the isolation model
        must hold whatever they decide."""
        for m in self.ms:
            m.policy.cow_reuse_pte_mapped_thp = reuse
            m.policy.huge_zero_wp_alloc = huge_zero
            m.policy.cow_reuse_remember_exclusive = memo
            m.policy.cow_reuse_fault_around = around
            m.policy.cow_reuse_fault_around_window = window
            m.policy.mm_id_exact = exact

    # -- checks --------------------------------------------------------------------------

    @invariant()
    def invariants_hold(self) -> None:
        if not hasattr(self, "ms"):
            return
        for m in self.ms:
            m.check()
        for index, m in enumerate(self.ms):
            for p in self.live():
                check_smaps(p.procs[index])
            check_pss_total(m, [p.procs[index] for p in self.live()])
        streams = [r.drain() for r in self.recordings]
        for name, stream in zip(self.backends[1:], streams[1:], strict=True):
            assert stream.tobytes() == streams[0].tobytes(), (
                f"{name} emitted other events than {self.backends[0]}: "
                f"{stream.tolist()} != {streams[0].tolist()}"
            )
        if len(self.ms) > 1:
            self.compare_backends()

    def compare_backends(self) -> None:
        first, *others = self.ms
        snapshot = [self.snapshot(m, i) for i, m in enumerate(self.ms)]
        for name, snap in zip(self.backends[1:], snapshot[1:], strict=True):
            for key in snapshot[0]:
                assert snap[key] == snapshot[0][key], f"{name} differs in {key}"
        assert all(m.free_frames() == first.free_frames() for m in others)

    def snapshot(self, m: cowcore.Machine, index: int) -> dict[str, Any]:
        pages: list[Any] = []
        walks: list[Any] = []
        pfns: set[int] = set()
        for p in self.live():
            proc = p.procs[index]
            pages.append(proc.vmas())
            pages.append(proc.rss_anon())
            for start, npages in p.maps:
                obs = proc.observe(start, npages * PAGE)
                pages.append(obs)
                pfns.update(o.pfn for o in obs if o.frame_kind == "normal" and o.pfn is not None)
                walks.extend(proc.translate(start + k * PAGE) for k in (0, npages // 2, npages - 1))
        folios = sorted({m.folio(pfn) for pfn in pfns}, key=lambda f: f.pfn)
        smaps = [p.procs[index].smaps() for p in self.live()]
        return {
            "pages": pages,
            "walks": walks,
            "folios": folios,
            "stats": m.stats(),
            "vmstat": m.vmstat(),
            "smaps": smaps,
        }

    def teardown(self) -> None:
        if not hasattr(self, "ms"):
            return
        for p in self.live():
            for addr, pm in sorted(p.pages.items()):
                if pm.prot != "none":
                    res = self.on_each(p, "read", addr)
                    if self.is_refused(res):  # the swap-in the model refuses: unread
                        continue
                    if self.is_oom(res):  # no memory to fault it in: look without faulting
                        (o,) = p.procs[0].observe(addr)
                        if o.frame_kind == "swap":  # its value is in a swap slot: unread
                            continue
                        res = ("ok", [o.content if o.present else 0])
                    assert res == ("ok", [pm.value]), f"pid {p.procs[0].pid} at {addr:#x}"
            self.on_each(p, "exit")
        for m in self.ms:
            m.check()
            assert m.free_frames() == self.free0 + 1, "everything freed, the init PGD too"


def check_smaps(proc: cowcore.Process) -> None:
    """What smaps must agree with on any backend: the Rss of anonymous memory summed over
    the VMAs is ``MM_ANONPAGES`` in bytes (both count the pages mapped by a normal-page PTE
    or a THP's PMD and neither counts the zero pages: ``vm_normal_page`` is NULL for them
    and ``do_anonymous_page`` maps them without ``inc_mm_counter``); every resident byte is
    anonymous and either shared or private, clean or dirty; PSS is at most Rss."""
    records = proc.smaps()
    rss = sum(r.rss for r in records)
    assert rss == proc.rss_anon() * PAGE, f"pid {proc.pid}: smaps Rss {rss} != RssAnon"
    for r in records:
        split = r.shared_clean + r.shared_dirty + r.private_clean + r.private_dirty
        assert r.anonymous == r.rss == split, f"pid {proc.pid}: {r}"
        assert r.pss_dirty <= r.pss <= r.rss << PSS_SHIFT and r.referenced <= r.rss
        assert r.anon_huge_pages <= r.rss
        # SwapPss shares each swap entry's page among the entries naming its slot
        assert r.swap % PAGE == 0 and r.swap_pss <= r.swap << PSS_SHIFT, f"pid {proc.pid}: {r}"
    rollup = proc.smaps_rollup()
    assert rollup.rss == rss
    # every swap entry is one page of Swap (``smaps_pte_entry``), and nothing else is
    swapped = sum(
        o.frame_kind == "swap"
        for vma in proc.vmas()
        for o in proc.observe(vma.start, vma.end - vma.start)
    )
    assert rollup.swap == swapped * PAGE, f"pid {proc.pid}: Swap {rollup.swap} != {swapped} entries"


def check_pss_total(m: cowcore.Machine, procs: list[cowcore.Process]) -> None:
    """PSS shares each mapped page among the mms that map it, so the machine's PSS, summed
    over processes, is ``nr_anon_pages`` pages, short only by the truncation of each
    page's share (less than one fixed-point unit per mapping of a page); and the vmstat
    gauges agree with the per-size ones."""
    v = m.vmstat()
    rollups = [p.smaps_rollup() for p in procs]
    pss = sum(r.pss for r in rollups)
    mappings = sum(r.rss for r in rollups) // PAGE
    exact = v.nr_anon_pages * PAGE << PSS_SHIFT
    assert 0 <= exact - pss <= mappings, f"PSS {pss} vs nr_anon_pages {v.nr_anon_pages}"
    mthp = m.mthp_stats()
    if not m.config.per_size_thp_stats:  # 6.1: the kernel has no per-size counters to show
        assert mthp == {}
        return
    assert v.nr_anon_transparent_hugepages <= mthp["2M"].nr_anon
    assert v.thp_deferred_split_page == mthp["2M"].split_deferred
    assert v.thp_fault_fallback == mthp["2M"].anon_fault_fallback
    for size, s in mthp.items():
        assert 0 <= s.nr_anon_partially_mapped <= s.nr_anon, size
        assert s.nr_anon_partially_mapped <= s.split_deferred, size


def skip_unless_backends(*names: str) -> None:
    missing = [n for n in names if n not in cowcore.BACKENDS]
    if missing:
        pytest.skip(f"backend(s) {missing} not available in this build")
