"""Conservation: no frame is leaked or freed twice.

Every random run ends with every process exiting (in a random order); then all memory is
free again (the init PGD too: only the zero page and the huge zero folio stay allocated), no
frame belongs to a folio, and ``check()``, which recomputes refcounts and mapcounts from the
page tables (and runs after every step), passes.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import cowcore
from cowcore import InvalidArgumentError
from tests.programs import NPAGES, PAGE, Op, Runner, ops, setups

BOOT_USED = 1 + 512  # the zero page and the huge zero folio


def assert_at_rest(m: cowcore.Machine, free_at_boot: int) -> None:
    m.check()
    assert m.processes() == []
    assert m.free_frames() == free_at_boot + 1, "every frame is back, the init PGD too"
    assert m.free_frames() == m.total_frames - BOOT_USED
    for pfn in range(m.total_frames):  # no folio survives its last mapping
        with pytest.raises(InvalidArgumentError):
            m.folio(pfn)


@pytest.mark.parametrize("profile", ["6.1", "6.12", "6.15"])
@pytest.mark.parametrize("backend", cowcore.BACKENDS)
@given(
    setup=setups(),
    program=st.lists(ops(), min_size=1, max_size=30),
    order=st.lists(st.integers(0, 64), max_size=24),
)
def test_everything_is_freed_when_every_process_exits(
    backend: str, profile: str, setup: dict[str, object], program: list[Op], order: list[int]
) -> None:
    m = cowcore.Machine(profile, backend=backend, memory="8M")
    run = Runner(m, setup)
    for op in program:
        run.apply(op)
        m.check()
    run.exit_all(order)
    assert_at_rest(m, run.free_at_boot)


@pytest.mark.parametrize("profile", ["6.1", "6.12", "6.15"])
@pytest.mark.parametrize("backend", cowcore.BACKENDS)
@given(setup=setups(), program=st.lists(ops(), min_size=1, max_size=30))
def test_munmap_of_everything_frees_every_table_but_the_pgd(
    backend: str, profile: str, setup: dict[str, object], program: list[Op]
) -> None:
    """munmap frees tables whose span no longer overlaps a VMA (DESIGN.md): once every
    process has unmapped everything, only their PGDs are still allocated."""
    m = cowcore.Machine(profile, backend=backend, memory="8M")
    run = Runner(m, setup)
    for op in program:
        run.apply(op)
    live = run.live()
    for p in live:
        p.proc.munmap(run.base, NPAGES * PAGE)
        assert p.proc.vmas() == []
    m.check()
    # a reference or pin outlives the mapping (issue 16): the folios go with the holds
    run.drop_holds()
    m.check()
    assert m.free_frames() == run.free_at_boot + 1 - len(live)
    for p in live:
        p.proc.exit()
    assert_at_rest(m, run.free_at_boot)
