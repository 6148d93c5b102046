"""The swap model of the reference backend, rule by rule (issue 16, /work/swap-design.md).

Each case is derived by hand from the rules (``madvise_cold_or_pageout_pte_range``,
``shrink_folio_list``, ``do_swap_page``, ``copy_nonpresent_pte``, ``zap_nonpresent_ptes``,
``smaps_pte_entry``); every machine is checked (``check()``) at the end.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import cowcore
from cowcore.errors import InvalidAddressError, NotModelledError
from cowcore.outcome import AccessFlags, Outcome, Reason
from cowcore.protocol import PSS_SHIFT

KiB = 1 << 10
MiB = 1 << 20
PAGE = 4 * KiB


@pytest.fixture
def machines() -> Iterator[list[cowcore.Machine]]:
    made: list[cowcore.Machine] = []
    yield made
    for m in made:
        m.check()


def machine(made: list[cowcore.Machine], kernel: str = "6.15") -> cowcore.Machine:
    m = cowcore.Machine(kernel, backend="reference")
    made.append(m)
    return m


def kinds(p: cowcore.Process, addr: int, length: int) -> list[str | None]:
    return [o.frame_kind for o in p.observe(addr, length)]


@pytest.mark.parametrize("kernel", ["6.1", "6.12", "6.15"])
def test_private_page_out_and_back(machines: list[cowcore.Machine], kernel: str) -> None:
    m = machine(machines, kernel)
    p = m.init
    a = p.mmap(4 * PAGE)
    p.write(a, 4 * PAGE, 7)
    p.pageout(a, 2 * PAGE)
    assert kinds(p, a, 4 * PAGE) == ["swap", "swap", "normal", "normal"]
    assert m.stats().pswpout == 2
    acc = p.access(a, write=False)
    # 6.1/6.12 read a slot of count 1 outside the swap cache (certainly exclusive); 7.x reads
    # it into the cache, and the entry's exclusive marker decides
    fresh = Reason.SWAP_EXCLUSIVE if m.config.swapin_large_shared else Reason.SWAP_FRESH
    assert acc.outcome is Outcome.SWAP_IN and acc.reason is fresh
    assert AccessFlags.SWAP_IN in acc.flags
    assert p.read(a, PAGE) == [7]
    # mapped writable at once: the write keeps the frame
    before = p.observe(a, PAGE)[0].pfn
    p.write(a, PAGE, 3)
    assert p.observe(a, PAGE)[0].pfn == before
    wr = p.access(a + PAGE, write=True, value=9)
    assert wr.outcome is Outcome.SWAP_IN
    assert p.read(a + PAGE, PAGE) == [9]
    assert m.stats().pswpin == 2


def test_shared_small_page_stays(machines: list[cowcore.Machine]) -> None:
    m = machine(machines)
    p = m.init
    a = p.mmap(4 * PAGE)
    p.write(a, 4 * PAGE, 7)
    c = p.fork()
    c.write(a + 2 * PAGE, 2 * PAGE, 1)
    p.pageout(a, 4 * PAGE)
    assert kinds(p, a, 4 * PAGE) == ["normal", "normal", "swap", "swap"]


def test_fork_after_pageout_shares_the_slot(machines: list[cowcore.Machine]) -> None:
    m = machine(machines)
    p = m.init
    a = p.mmap(4 * PAGE)
    p.write(a, 4 * PAGE, 7)
    p.pageout(a, 4 * PAGE)
    c = p.fork()
    for proc in (p, c):
        s = proc.smaps()[0]
        assert (s.swap, s.swap_pss >> PSS_SHIFT) == (16 * KiB, 8 * KiB)
    # a read maps a swap-cache folio read-only (the exclusive bit was cleared by fork)
    acc = p.access(a, write=False)
    assert acc.reason is Reason.SWAP_MAYBE_SHARED
    # the other side's read finds it in the swap cache: no read
    pswpin = m.stats().pswpin
    c.read(a, PAGE)
    assert m.stats().pswpin == pswpin
    assert p.observe(a, PAGE)[0].pfn == c.observe(a, PAGE)[0].pfn
    # a write copies (the folio is mapped by both)
    w = p.access(a, write=True, value=5)
    assert w.outcome is Outcome.COW_COPY
    assert c.read(a, PAGE) == [7]


def test_write_swapin_of_a_shared_slot_copies(machines: list[cowcore.Machine]) -> None:
    m = machine(machines)
    p = m.init
    a = p.mmap(PAGE)
    p.write(a, PAGE, 7)
    p.pageout(a, PAGE)
    c = p.fork()
    w = p.access(a, write=True, value=2)
    # read into the swap cache, folio_free_swap fails (the child's entry), so COW
    assert w.outcome is Outcome.COW_COPY
    assert AccessFlags.SWAP_IN in w.flags
    assert m.stats().pswpin == 1
    c.read(a, PAGE)  # the swap-cache folio itself
    assert m.stats().pswpin == 1
    assert c.read(a, PAGE) == [7]


def test_refd_page_stays_in_swap_cache_unwritten(machines: list[cowcore.Machine]) -> None:
    m = machine(machines)
    p = m.init
    a = p.mmap(2 * PAGE)
    p.write(a, 2 * PAGE, 7)
    p.ref(a, PAGE)
    p.pin(a + PAGE, PAGE)
    p.pageout(a, 2 * PAGE)
    assert kinds(p, a, 2 * PAGE) == ["swap", "normal"]  # the pinned page stays mapped
    assert m.stats().pswpout == 0
    m.check()
    p.read(a, PAGE)  # the same folio, from the swap cache
    assert m.stats().pswpin == 0
    p.unref(a, PAGE)
    p.unpin(a + PAGE, PAGE)


def test_large_folio_whole_and_partial(machines: list[cowcore.Machine]) -> None:
    m = machine(machines)
    m.thp.sizes["64K"] = "always"
    p = m.init
    a = p.mmap(128 * KiB)
    p.write(a, 128 * KiB, 7)
    p.pageout(a, 64 * KiB)
    s = m.stats()
    assert s.swpout["64K"] == 1 and s.pswpout == 16 and s.split["64K"] == 0
    p.pageout(a + 80 * KiB, 8 * KiB)
    s = m.stats()
    assert s.split["64K"] == 1 and s.split_deferred["64K"] == 1 and s.pswpout == 18
    assert kinds(p, a + 64 * KiB, 8 * PAGE) == ["normal"] * 4 + ["swap"] * 2 + ["normal"] * 2


@pytest.mark.parametrize(("kernel", "large"), [("6.12", True), ("6.15", True)])
def test_large_swapin(machines: list[cowcore.Machine], kernel: str, large: bool) -> None:
    m = machine(machines, kernel)
    m.thp.sizes["64K"] = "always"
    p = m.init
    a = p.mmap(128 * KiB)
    p.write(a, 64 * KiB, 7)
    p.pageout(a, 64 * KiB)
    p.read(a + PAGE, PAGE)
    obs = p.observe(a, 64 * KiB)
    assert all(o.folio_pages == 16 for o in obs)
    assert m.stats().swpin["64K"] == 1 and m.stats().pswpin == 16


def test_large_swapin_after_fork_per_profile(machines: list[cowcore.Machine]) -> None:
    for kernel, pages in (("6.12", 1), ("6.15", 16)):
        m = machine(machines, kernel)
        m.thp.sizes["64K"] = "always"
        p = m.init
        a = p.mmap(128 * KiB)
        p.write(a, 64 * KiB, 7)
        p.pageout(a, 64 * KiB)
        p.fork()
        p.read(a, PAGE)
        assert p.observe(a, PAGE)[0].folio_pages == pages


def test_pmd_thp_out_whole_and_back_in_small(machines: list[cowcore.Machine]) -> None:
    m = machine(machines)
    m.thp.sizes["2M"] = "always"
    p = m.init
    a = p.mmap(2 * MiB)
    p.write(a, 2 * MiB, 7)
    p.pageout(a, 2 * MiB)
    s = m.stats()
    assert (s.thp_swpout, s.pswpout, s.thp_split_pmd, s.swpout["2M"]) == (1, 512, 1, 1)
    p.read(a, PAGE)
    assert p.observe(a, PAGE)[0].folio_pages == 1  # never a PMD swap-in


@pytest.mark.parametrize(("kernel", "written"), [("6.1", 1), ("6.12", 0), ("6.15", 0)])
def test_zero_page_zeromap(machines: list[cowcore.Machine], kernel: str, written: int) -> None:
    m = machine(machines, kernel)
    p = m.init
    a = p.mmap(PAGE)
    p.write(a, PAGE, 0)
    p.pageout(a, PAGE)
    p.read(a, PAGE)
    assert (m.stats().pswpout, m.stats().pswpin) == (written, written)
    assert p.read(a, PAGE) == [0]


def test_shared_zero_page_not_paged_out(machines: list[cowcore.Machine]) -> None:
    m = machine(machines)
    p = m.init
    a = p.mmap(PAGE)
    p.read(a, PAGE)
    p.pageout(a, PAGE)
    assert kinds(p, a, PAGE) == ["zero"]


def test_refusal_of_a_block_not_swapped_out_together(machines: list[cowcore.Machine]) -> None:
    # A block whose slots are consecutive and aligned but were allocated page by page:
    r = machine(machines)
    rp = r.init
    c = rp.mmap(128 * KiB)
    rp.write(c, 128 * KiB, 7)
    rp.pageout(c, 15 * PAGE)  # slots 1..15
    rp.pageout(c + 16 * PAGE, 16 * PAGE)  # slots 16..31 for pages 16..31, one at a time
    r.thp.sizes["64K"] = "always"
    with pytest.raises(NotModelledError):
        rp.read(c + 16 * PAGE, PAGE)


def test_dontneed_and_munmap_of_swap_entries(machines: list[cowcore.Machine]) -> None:
    m = machine(machines)
    p = m.init
    a = p.mmap(3 * PAGE)
    p.write(a, 3 * PAGE, 7)
    p.pageout(a, 3 * PAGE)
    c = p.fork()
    assert p.smaps()[0].swap_pss >> PSS_SHIFT == 6 * KiB
    c.munmap(a + PAGE, PAGE)
    assert p.smaps()[0].swap_pss >> PSS_SHIFT == 8 * KiB
    p.madvise(a, PAGE, "dontneed")
    assert kinds(p, a, PAGE) == [None]
    p.read(a, PAGE)
    assert kinds(p, a, PAGE) == ["zero"]
    c.exit()
    p.munmap(a, 3 * PAGE)


def test_mprotect_keeps_and_collapse_refuses_swap_entries(machines: list[cowcore.Machine]) -> None:
    m = machine(machines)
    p = m.init
    a = p.mmap(2 * MiB)
    p.write(a, 2 * PAGE, 7)
    p.pageout(a, PAGE)
    with pytest.raises(NotModelledError):
        p.collapse(a, 2 * MiB)
    p.mprotect(a, PAGE, "r")
    assert kinds(p, a, PAGE) == ["swap"]
    p.mprotect(a, PAGE, "rw")
    p.write(a, PAGE, 1)


def test_pageout_of_unmapped_pages_is_enomem(machines: list[cowcore.Machine]) -> None:
    m = machine(machines)
    p = m.init
    a = p.mmap(PAGE)
    with pytest.raises(InvalidAddressError):
        p.pageout(a, 2 * PAGE)


def test_gup_faults_a_swap_entry_in(machines: list[cowcore.Machine]) -> None:
    m = machine(machines)
    p = m.init
    a = p.mmap(PAGE)
    p.write(a, PAGE, 7)
    p.pageout(a, PAGE)
    p.pin(a, PAGE)
    assert kinds(p, a, PAGE) == ["normal"]
    p.unpin(a, PAGE)


def test_events_fold_into_stats(machines: list[cowcore.Machine]) -> None:
    m = machine(machines)
    m.thp.sizes["64K"] = "always"
    p = m.init
    a = p.mmap(64 * KiB)
    p.write(a, 64 * KiB, 7)
    with m.record() as rec:
        p.pageout(a, 64 * KiB)
        p.read(a, PAGE)
    codes = [int(e) for e in rec.events["kind"]]
    assert 26 in codes and 27 in codes
