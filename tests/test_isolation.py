"""Isolation: a process reads only what it wrote itself or inherited at fork, never another
process's later write, after any sequence of writes, forks (deep trees), exits,
MADV_DONTNEED, mprotect and munmap, on both backends and every profile (6.1, 6.12, 6.15).

``tests/model.py`` checks reads against a model too, but with random single steps; here many
processes write machine-wide distinct values into one shared-by-fork 2 MiB mapping, and every
page of every live process is compared with the model after every step (through
``observe``, which faults nothing), so a write that leaks across a COW boundary is caught at
the step that leaks it, whether or not anyone reads that page later.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import cowcore
from tests.programs import Op, Runner, ops, setups
from tests.strategies import NEW_POLICIES


@pytest.mark.parametrize("profile", ["6.1", "6.12", "6.15"])
@pytest.mark.parametrize("backend", cowcore.BACKENDS)
@given(setup=setups(), program=st.lists(ops(), min_size=1, max_size=40))
def test_no_write_crosses_between_processes(
    backend: str, profile: str, setup: dict[str, object], program: list[Op]
) -> None:
    m = cowcore.Machine(profile, backend=backend, memory="64M")
    run = Runner(m, setup)
    for op in program:
        run.apply(op)
        run.check_isolation()
    run.read_back()  # every swapped-out page comes back with its value
    m.check()


@pytest.mark.parametrize("backend", cowcore.BACKENDS)
@given(
    size=st.sampled_from(["16K", "64K", "512K"]),
    program=st.lists(ops(), min_size=1, max_size=60),
    policies=st.lists(st.sampled_from(NEW_POLICIES), min_size=1, unique=True),
)
def test_issue_15_policies_leak_no_write(
    backend: str, size: str, program: list[Op], policies: list[str]
) -> None:
    """The same isolation check with issue 15's policies on, under 6.15 (where PTE-mapped
    large folios are reused) and one mTHP size (the policies act on PTE-mapped large folios
    only): neither a remembered exclusive folio, nor PTEs made writable around a reuse, nor
    the exact MM-id tracker's reuse ever lets a process see another's write."""
    m = cowcore.Machine("6.15", backend=backend, memory="64M")
    for name in policies:
        setattr(m.policy, name, True)
    run = Runner(m, {"sizes": [size], "zero_page": False})
    for op in program:
        run.apply(op)
        run.check_isolation()
    run.read_back()  # every swapped-out page comes back with its value
    m.check()


@pytest.mark.parametrize("backend", cowcore.BACKENDS)
@pytest.mark.parametrize("profile", ["6.12", "6.15"])  # a 64K folio: not on 6.1
def test_fork_chain_each_generation_keeps_its_own_values(backend: str, profile: str) -> None:
    """A chain of 16 generations over a 64K folio: each generation writes, forks the next
    and writes again; each sees only its own last write, and the last generation what it
    inherited at its fork."""
    m = cowcore.Machine(profile, backend=backend, memory="64M")
    m.thp.sizes["64K"] = "always"
    a = m.init.mmap(2 << 20)
    m.init.write(a, 64 << 10, 1)
    chain = [m.init]
    for gen in range(2, 18):
        p = chain[-1]
        p.write(a, 32 << 10, gen * 100)
        chain.append(p.fork())
        p.write(a, 32 << 10, gen * 100 + 1)  # after the fork: the child must not see it
    for gen, p in enumerate(chain[:-1], start=2):
        assert p.read(a, 64 << 10) == [gen * 100 + 1] * 8 + [1] * 8
    assert chain[-1].read(a, 64 << 10) == [1700] * 8 + [1] * 8
    for p in chain[1:]:
        p.exit()
    m.check()
