"""mremap: page tables move with their pages (mm/mremap.c), hand-derived cases on both
backends, and the two backends compared after each move."""

from __future__ import annotations

import pytest

import cowcore
from cowcore.errors import InvalidAddressError, InvalidArgumentError, OutOfMemoryError
from cowcore.kernel.compile import ScenarioSyntaxError, compile_scenario
from tests.conftest import KiB, MachineFactory, MiB


def test_small_pages_move_and_leave_a_hole(make_machine: MachineFactory) -> None:
    m = make_machine()
    p = m.init
    a = p.mmap(8 * 4 * KiB)
    p.write(a, 8 * 4 * KiB, value=5)
    before = [p.translate(a + (2 + i) * 4 * KiB).pfn for i in range(4)]
    free = m.free_frames()
    b = p.mremap(a + 8 * KiB, 16 * KiB)
    # A fresh 2M block below the mapping (mmap's rule), the offset in the block kept.
    assert b % (2 * MiB) == 8 * KiB and b < a
    assert [p.translate(b + i * 4 * KiB).pfn for i in range(4)] == before
    assert all(not o.present for o in p.observe(a + 8 * KiB, 16 * KiB))
    assert free - m.free_frames() == 1  # the destination's PTE table
    assert p.read(b, 16 * KiB) == [5] * 4
    with pytest.raises(cowcore.SegmentationFault):
        p.read(a + 8 * KiB)
    # Moved PTEs are soft-dirty (move_soft_dirty_pte) and keep RW, A and D.
    flags = p.translate(b).steps[-1].flags
    assert {"RW", "A", "D", "SOFT_DIRTY"} <= set(flags)
    assert len(p.vmas()) == 3
    m.check()


def test_aligned_pmd_thp_moves_whole(make_machine: MachineFactory) -> None:
    m = make_machine("6.12")
    m.thp.sizes["2M"] = "always"
    p = m.init
    a = p.mmap(2 * MiB)
    p.write(a, value=1)
    head = p.translate(a).pfn
    b = p.mremap(a, 2 * MiB)
    assert b % (2 * MiB) == 0
    o = p.observe(b)[0]
    assert (o.pfn, o.folio_pages, o.mapcount) == (head, 512, 1)
    assert m.stats()["thp_split_pmd"] == 0
    f = m.folio(head or 0)
    assert (f.refcount, f.entire_mapcount) == (1, 1)
    m.check()


def test_cut_pmd_thp_is_split_first(make_machine: MachineFactory) -> None:
    m = make_machine()
    m.thp.sizes["2M"] = "always"
    p = m.init
    a = p.mmap(2 * MiB)
    p.write(a, value=1)
    head = p.translate(a).pfn or 0
    b = p.mremap(a + 64 * KiB, 64 * KiB)
    assert m.stats()["thp_split_pmd"] == 1
    o = p.observe(b)[0]
    assert (o.pfn, o.folio_pages, o.mapcount, o.exclusive) == (head + 16, 512, 1, True)
    f = m.folio(head)
    assert (f.refcount, f.large_mapcount, f.entire_mapcount) == (512, 512, 0)
    assert all(f.anon_exclusive), "exclusivity is kept"
    m.check()


def test_partially_mremapped_mthp_then_fork(make_machine: MachineFactory, profile: str) -> None:
    """cow.c's "partially mremap()ed" setup: half of a 64K folio moved, then fork, then a
    write in each process: the folio is mapped at two places of each mm."""
    m = make_machine(profile)
    m.thp.sizes["64K"] = "always"
    p = m.init
    a = p.mmap(2 * MiB)
    p.write(a, 64 * KiB, value=1)
    head = p.translate(a).pfn or 0
    assert m.folio(head).nr_pages == 16
    b = p.mremap(a + 32 * KiB, 32 * KiB)
    c = p.fork()
    assert m.folio(head).large_mapcount == 32
    p.write(b, value=2)
    c.write(a, value=3)
    assert p.read(a) == [1] and c.read(b) == [1]
    assert p.read(b) == [2] and c.read(a) == [3]
    m.check()


def test_fixed_destination_is_replaced(make_machine: MachineFactory) -> None:
    m = make_machine()
    p = m.init
    a = p.mmap(16 * KiB)
    d = p.mmap(16 * KiB)
    p.write(a, 16 * KiB, value=3)
    p.write(d, 16 * KiB, value=9)
    assert p.mremap(a, 8 * KiB, d) == d
    assert p.read(d, 16 * KiB) == [3, 3, 9, 9]
    m.check()


def test_errors(make_machine: MachineFactory) -> None:
    m = make_machine()
    p = m.init
    a = p.mmap(16 * KiB)
    with pytest.raises(InvalidArgumentError, match=r"\(EINVAL\)$"):
        p.mremap(a, 16 * KiB, a + 4 * KiB)
    with pytest.raises(InvalidAddressError, match=r"\(EFAULT\)$"):
        p.mremap(a, 32 * KiB)
    with pytest.raises(InvalidAddressError, match=r"\(EFAULT\)$"):
        p.mremap(a + 2 * MiB, 4 * KiB)
    with pytest.raises(InvalidArgumentError, match="page size"):
        p.mremap(a + 1, 4 * KiB)


def test_out_of_memory_moves_nothing(make_machine: MachineFactory) -> None:
    m = make_machine(memory=4 * MiB)
    p = m.init
    a = p.mmap(16 * KiB)
    p.write(a, 16 * KiB, value=3)
    h = p.mmap(1 << 30)
    off = 0
    while m.free_frames():
        p.write(h + off)
        off += 4 * KiB
    vmas = p.vmas()
    with pytest.raises(OutOfMemoryError):
        p.mremap(a, 16 * KiB)
    assert p.vmas() == vmas and m.free_frames() == 0
    assert p.read(a, 16 * KiB) == [3] * 4
    m.check()


@pytest.mark.parametrize("kernel", ["6.1", "6.12", "6.15"])
@pytest.mark.parametrize(
    ("off", "length", "size"),
    [(0, 2 * MiB, "2M"), (4 * KiB, 60 * KiB, "64K"), (1 * MiB, 2 * MiB, "2M"), (0, 8 * KiB, "")],
)
def test_backends_agree(kernel: str, off: int, length: int, size: str) -> None:
    """Both backends after a move, a fork and COW writes: the same frames, tables, counters
    and folios (the reference is the oracle)."""
    states = []
    for backend in cowcore.BACKENDS:
        m = cowcore.Machine(memory=64 * MiB, kernel=kernel, backend=backend)
        if size and (size == "2M" or kernel != "6.1"):
            m.thp.sizes[size] = "always"
        p = m.init
        a = p.mmap(4 * MiB)
        p.write(a, 4 * MiB, value=1)
        b = p.mremap(a + off, length)
        c = p.fork()
        rest = a + off + length  # not moved
        p.write(b, length, value=2)
        c.write(b, min(length, 64 * KiB), value=3)
        c.write(rest, 64 * KiB, value=4)
        m.check()
        states.append(
            (
                b,
                m.free_frames(),
                dict(m.stats()),
                [(o.pfn, o.mapcount, o.exclusive, o.content) for o in p.observe(b, length)],
                [(o.pfn, o.mapcount, o.exclusive, o.content) for o in c.observe(b, length)],
                [(o.pfn, o.mapcount, o.exclusive, o.content) for o in p.observe(rest, 64 * KiB)],
                [(v.start, v.end) for v in p.vmas()],
            )
        )
    assert all(s == states[0] for s in states[1:])


SCENARIO = """\
kernel 6.15
thp size 64K always
P mmap A 2M
P write A 0 64K 1
P mremap A 32K 32K B
P fork C
P observe B 0 4K
C observe B 0 4K
P observe A 32K 4K
"""


def test_scenario_statement(backend: str) -> None:
    """``P mremap NAME OFF LEN NEW``: the range becomes mapping NEW (inherited by C), the
    old range a hole; its pages keep their frames (f8 is page 8 of the 64K folio)."""
    out = cowcore.run_scenario(SCENARIO, backend=backend, check=True)
    assert [(o["proc"], o["map"], o["frame"], o["mapcount"]) for o in out] == [
        ("P", "B", "f0", 2),
        ("C", "B", "f0", 2),
        ("P", "A", None, None),
    ]
    assert out[0]["folio_pages"] == 16


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("P mremap A 0 4K A", "already has a mapping A"),
        ("P mremap A 4K 2M B", "page at offset 2097152 is not mapped"),
        ("P mremap Z 0 4K B", "has no mapping Z"),
    ],
)
def test_scenario_statement_errors(backend: str, line: str, message: str) -> None:
    out = cowcore.run_scenario(f"kernel 6.15\nP mmap A 2M\n{line}\n", backend=backend)
    error = str(out[0]["error"])
    assert len(out) == 1 and error.startswith("line 3: ")
    assert message in error


def test_scenario_crossing_vmas_is_efault(backend: str) -> None:
    text = "kernel 6.15\nP mmap A 2M\nP mprotect A 0 4K r\nP mremap A 0 8K B\n"
    out = cowcore.run_scenario(text, backend=backend)
    assert out == [{"error": "line 4: mremap A: the range is not inside one mapping (EFAULT)"}]


def test_probe_compiles_the_statement() -> None:
    lines = compile_scenario("t", SCENARIO).lines
    assert "C 5 0 mremap 0 32768 32768 1" in lines
    with pytest.raises(ScenarioSyntaxError, match="mremap needs NAME OFF LEN NEW"):
        compile_scenario("t", "P mmap A 2M\nP mremap A 0 4K\n")
