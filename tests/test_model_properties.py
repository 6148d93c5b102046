"""Random operation sequences against a plain model of what each process must read.

Isolation: a process reads only what it wrote itself or inherited at fork, never another
process's later write. Conservation: ``check()`` recomputes every counter from the page tables
after every step, and when every process has exited all memory is free again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import cowcore
from cowcore import InvalidAddressError, SegmentationFault
from cowcore.protocol import THP_SIZES

PAGE = 4096
SIZES = list(THP_SIZES)


@dataclass
class PageModel:
    value: int = 0
    prot: str = "rw"
    dontfork: bool = False
    wipeonfork: bool = False


@dataclass
class ProcModel:
    proc: cowcore.Process
    pages: dict[int, PageModel] = field(default_factory=dict)
    maps: list[tuple[int, int]] = field(default_factory=list)  # (start, npages)


class MemoryModel(RuleBasedStateMachine):
    """Drives one backend with random operations and checks it against the model."""

    backend = "reference"

    @initialize(kernel=st.sampled_from(["6.12", "6.15"]))
    def start(self, kernel: str) -> None:
        self.m = cowcore.Machine(kernel, backend=self.backend, memory="64M")
        self.free0 = self.m.free_frames()
        self.procs: list[ProcModel] = [ProcModel(self.m.init)]
        self.value = 0

    def live(self) -> list[ProcModel]:
        return [p for p in self.procs if p.proc.alive]

    def pick(self, data: st.DataObject) -> ProcModel:
        return data.draw(st.sampled_from(self.live()))

    def pick_range(self, data: st.DataObject, p: ProcModel) -> tuple[int, int]:
        start, npages = data.draw(st.sampled_from(p.maps))
        first = data.draw(st.integers(0, npages - 1))
        count = data.draw(st.integers(1, min(npages - first, 600)))
        return start + first * PAGE, count

    @precondition(lambda self: self.live())
    @rule(data=st.data(), npages=st.sampled_from([1, 3, 16, 128, 512, 700, 1024]))
    def mmap(self, data: st.DataObject, npages: int) -> None:
        p = self.pick(data)
        addr = p.proc.mmap(npages * PAGE)
        p.maps.append((addr, npages))
        for i in range(npages):
            p.pages[addr + i * PAGE] = PageModel()

    @precondition(lambda self: any(p.maps for p in self.live()))
    @rule(data=st.data())
    def write(self, data: st.DataObject) -> None:
        p = data.draw(st.sampled_from([p for p in self.live() if p.maps]))
        addr, count = self.pick_range(data, p)
        self.value += 1
        pages = [p.pages.get(addr + i * PAGE) for i in range(count)]
        if any(pm is None or pm.prot != "rw" for pm in pages):
            with pytest.raises(SegmentationFault):
                p.proc.write(addr, count * PAGE, self.value)
            return
        p.proc.write(addr, count * PAGE, self.value)
        for pm in pages:
            assert pm is not None
            pm.value = self.value

    @precondition(lambda self: any(p.maps for p in self.live()))
    @rule(data=st.data())
    def read(self, data: st.DataObject) -> None:
        p = data.draw(st.sampled_from([p for p in self.live() if p.maps]))
        addr, count = self.pick_range(data, p)
        pages = [p.pages.get(addr + i * PAGE) for i in range(count)]
        if any(pm is None or pm.prot == "none" for pm in pages):
            with pytest.raises(SegmentationFault):
                p.proc.read(addr, count * PAGE)
            return
        assert p.proc.read(addr, count * PAGE) == [pm.value for pm in pages if pm]

    @precondition(lambda self: any(p.maps for p in self.live()))
    @rule(data=st.data())
    def munmap(self, data: st.DataObject) -> None:
        p = data.draw(st.sampled_from([p for p in self.live() if p.maps]))
        addr, count = self.pick_range(data, p)
        p.proc.munmap(addr, count * PAGE)
        for i in range(count):
            p.pages.pop(addr + i * PAGE, None)

    @precondition(lambda self: any(p.maps for p in self.live()))
    @rule(data=st.data(), prot=st.sampled_from(["none", "r", "rw"]))
    def mprotect(self, data: st.DataObject, prot: str) -> None:
        p = data.draw(st.sampled_from([p for p in self.live() if p.maps]))
        addr, count = self.pick_range(data, p)
        pages = [p.pages.get(addr + i * PAGE) for i in range(count)]
        if any(pm is None for pm in pages):
            with pytest.raises(InvalidAddressError):
                p.proc.mprotect(addr, count * PAGE, prot)  # type: ignore[arg-type]
            return
        p.proc.mprotect(addr, count * PAGE, prot)  # type: ignore[arg-type]
        for pm in pages:
            assert pm is not None
            pm.prot = prot

    @precondition(lambda self: any(p.maps for p in self.live()))
    @rule(
        data=st.data(),
        advice=st.sampled_from(
            [
                "dontneed",
                "dontneed",
                "hugepage",
                "nohugepage",
                "dontfork",
                "dofork",
                "wipeonfork",
                "keeponfork",
            ]
        ),
    )
    def madvise(self, data: st.DataObject, advice: str) -> None:
        p = data.draw(st.sampled_from([p for p in self.live() if p.maps]))
        addr, count = self.pick_range(data, p)
        pages = [p.pages.get(addr + i * PAGE) for i in range(count)]
        if any(pm is None for pm in pages):
            with pytest.raises(InvalidAddressError):
                p.proc.madvise(addr, count * PAGE, advice)  # type: ignore[arg-type]
            return
        p.proc.madvise(addr, count * PAGE, advice)  # type: ignore[arg-type]
        for pm in pages:
            assert pm is not None
            if advice == "dontneed":
                pm.value = 0
            elif advice in ("dontfork", "dofork"):
                pm.dontfork = advice == "dontfork"
            elif advice in ("wipeonfork", "keeponfork"):
                pm.wipeonfork = advice == "wipeonfork"

    @precondition(lambda self: self.live() and len(self.procs) < 12)
    @rule(data=st.data())
    def fork(self, data: st.DataObject) -> None:
        p = self.pick(data)
        child = ProcModel(p.proc.fork(), maps=list(p.maps))
        for addr, pm in p.pages.items():
            if not pm.dontfork:
                child.pages[addr] = PageModel(
                    0 if pm.wipeonfork else pm.value, pm.prot, False, pm.wipeonfork
                )
        self.procs.append(child)

    @precondition(lambda self: len(self.live()) > 1)
    @rule(data=st.data())
    def exit(self, data: st.DataObject) -> None:
        self.pick(data).proc.exit()

    @rule(
        size=st.sampled_from(SIZES),
        mode=st.sampled_from(["always", "always", "madvise", "inherit", "never"]),
    )
    def thp_size(self, size: str, mode: str) -> None:
        self.m.thp.sizes[size] = mode

    @rule(mode=st.sampled_from(["always", "madvise", "never"]), zero=st.booleans())
    def thp_global(self, mode: str, zero: bool) -> None:
        self.m.thp.enabled = mode  # type: ignore[assignment]
        self.m.thp.use_zero_page = zero

    @rule(on=st.booleans())
    def toggle_reuse(self, on: bool) -> None:
        self.m.policy.cow_reuse_pte_mapped_thp = on

    @invariant()
    def invariants_hold(self) -> None:
        if hasattr(self, "m"):
            self.m.check()

    def teardown(self) -> None:
        if not hasattr(self, "m"):
            return
        for p in self.live():
            for addr, pm in sorted(p.pages.items()):
                if pm.prot != "none":
                    assert p.proc.read(addr) == [pm.value], f"pid {p.proc.pid} at {addr:#x}"
            p.proc.exit()
        self.m.check()
        assert self.m.free_frames() == self.free0 + 1, "everything freed, the init PGD too"


TestReferenceModel = MemoryModel.TestCase
