"""The reference's range walker (mm/pagewalk.c): order, holes, huge PMDs, batches."""

from __future__ import annotations

import pytest

from cowcore.reference import paging as pg
from cowcore.reference.backend import ReferenceBackend
from cowcore.reference.pagewalk import (
    WalkAction,
    WalkOps,
    address_space_end,
    walk_page_range,
    walk_pgd_range,
)

MB = 1 << 20


class Recorder(WalkOps):
    """Records every callback; with ``split_huge``, a huge PMD is split by ``pmd_entry``
    (as zap does for a partial one) and ``SUBTREE`` walks its new PTEs."""

    def __init__(self, batch: int = 1, split_huge: ReferenceBackend | None = None) -> None:
        self.calls: list[tuple[str, int, int]] = []
        self.batch = batch
        self.split_huge = split_huge

    def table_entry(self, level: int, table: int, idx: int, addr: int, end: int) -> None:
        self.calls.append((f"table{level}", addr, end))

    def pmd_entry(self, table: int, idx: int, addr: int, end: int) -> WalkAction:
        huge = pg.is_huge(self.split_huge._k.entry(table, idx)) if self.split_huge else False
        self.calls.append(("huge" if huge else "pmd", addr, end))
        if huge:
            assert self.split_huge is not None
            k = self.split_huge._k
            mm = k.procs[k.init_pid].mm
            assert mm is not None
            k.split_huge_pmd(mm, addr, table, idx)
        return WalkAction.SUBTREE

    def pte_entry(self, ptes: list[int], i: int, end: int, addr: int) -> int:
        self.calls.append(("pte", addr, min(self.batch, end - i)))
        return min(self.batch, end - i)

    def pte_hole(self, addr: int, end: int, level: int) -> None:
        self.calls.append((f"hole{level}", addr, end))


def machine(levels: int = 4) -> tuple[ReferenceBackend, int]:
    ref = ReferenceBackend("6.15", 4096, levels)
    return ref, ref.init_pid()


@pytest.mark.parametrize("levels", [4, 5])
def test_walk_visits_mapped_ptes_in_order_and_reports_holes(levels: int) -> None:
    ref, pid = machine(levels)
    addr = ref.mmap(pid, 8 * MB)
    pages = [addr + 5 * 4096, addr + 3 * MB, addr + 3 * MB + 4096, addr + 7 * MB]
    for p in reversed(pages):
        ref.write(pid, p, 4096, 1)
    k = ref._k
    mm = k.procs[pid].mm
    assert mm is not None
    ops = Recorder()
    walk_page_range(k, mm, addr, addr + 8 * MB, ops)
    assert [c[1] for c in ops.calls if c[0] == "pte"] == pages
    # PMD entries covering [addr, addr + 8M): four PMDs, the ones with a PTE table reported
    pmds = [c[1] for c in ops.calls if c[0] == "pmd"]
    assert pmds == [addr, addr + 2 * MB, addr + 6 * MB]
    holes = [(c[1], c[2]) for c in ops.calls if c[0] == f"hole{levels - 2}"]
    assert holes == [(addr + 4 * MB, addr + 6 * MB)]
    assert ops.vma is mm.vmas[0]
    # Upper levels: one present entry per level on the way down, before the PMDs.
    uppers = [c[0] for c in ops.calls if c[0].startswith("table")]
    assert uppers == [f"table{lvl}" for lvl in range(levels - 2)]


def test_holes_tile_the_unmapped_address_space() -> None:
    """Over the whole address space, holes and the visited entries tile it exactly."""
    ref, pid = machine()
    addr = ref.mmap(pid, 4 * MB)
    ref.write(pid, addr, 4096, 7)
    k = ref._k
    ops = Recorder()
    mm = k.procs[pid].mm
    assert mm is not None
    walk_pgd_range(k, mm.pgd, 0, address_space_end(k), ops)
    covered = sorted((a, e) for kind, a, e in ops.calls if kind.startswith("hole") or kind == "pmd")
    pos = 0
    for a, e in covered:
        assert a == pos
        pos = e
    assert pos == 1 << 48


def test_huge_pmd_split_by_the_callback_has_its_ptes_walked() -> None:
    ref, pid = machine()
    ref.set_thp_enabled("always")
    addr = ref.mmap(pid, 2 * MB)
    ref.write(pid, addr, 4096, 1)
    k = ref._k
    mm = k.procs[pid].mm
    assert mm is not None
    ops = Recorder(batch=16, split_huge=ref)
    walk_page_range(k, mm, addr, addr + 2 * MB, ops)
    assert ops.calls[-33][0] == "huge"
    ptes = [c for c in ops.calls if c[0] == "pte"]
    assert [c[1] for c in ptes] == [addr + i * 16 * 4096 for i in range(32)]
    assert all(c[2] == 16 for c in ptes)
    ref.check()


def test_continue_skips_the_ptes_and_a_batch_ends_at_the_range() -> None:
    ref, pid = machine()
    addr = ref.mmap(pid, 2 * MB)
    ref.write(pid, addr, 10 * 4096, 1)
    k = ref._k
    mm = k.procs[pid].mm
    assert mm is not None

    class Skip(Recorder):
        def pmd_entry(self, table: int, idx: int, addr: int, end: int) -> WalkAction:
            super().pmd_entry(table, idx, addr, end)
            return WalkAction.CONTINUE

    skip = Skip()
    walk_page_range(k, mm, addr, addr + 2 * MB, skip)
    assert not [c for c in skip.calls if c[0] == "pte"]
    batched = Recorder(batch=4)
    walk_page_range(k, mm, addr + 4096, addr + 8 * 4096, batched)
    assert [(c[1], c[2]) for c in batched.calls if c[0] == "pte"] == [
        (addr + 4096, 4),
        (addr + 5 * 4096, 3),
    ]
