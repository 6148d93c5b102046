"""Results too large to hold (issue 10): ``p.observe(b, 1 << 40)`` on a huge mapping built a
list of 2^28 observations and the host was killed for memory. A call returning one item per
page of a range (``observe``, ``read``) now refuses more than ``MAX_RESULT_PAGES`` pages with
an ``InvalidArgumentError`` naming the limit; ``observe_iter`` reads any range in chunks.
"""

from __future__ import annotations

import itertools
import re

import pytest

import cowcore
from cowcore import InvalidAddressError, InvalidArgumentError, NoSuchProcessError
from cowcore.machine import MAX_RESULT_PAGES, OBSERVE_CHUNK
from tests.conftest import MachineFactory, MiB

PAGE = 4096
LIMIT = MAX_RESULT_PAGES * PAGE  # 4 GiB of range
USER_END = 1 << 47


def test_the_limit_is_exported_and_documented() -> None:
    assert cowcore.MAX_RESULT_PAGES == MAX_RESULT_PAGES == 1 << 20
    assert "MAX_RESULT_PAGES" in (cowcore.Process.observe.__doc__ or "")
    assert "MAX_RESULT_PAGES" in (cowcore.Process.read.__doc__ or "")


@pytest.mark.parametrize("call", ["observe", "read"])
def test_a_range_past_the_limit_is_refused(make_machine: MachineFactory, call: str) -> None:
    """One page past the limit is refused before any work (before the change it built a
    list of a million observations; at 1 << 40 it took the host down)."""
    m = make_machine(memory="16M")
    p = m.init
    b = p.mmap(1 << 41)
    before = (m.free_frames(), m.stats())
    for length in (LIMIT + PAGE, 1 << 40, 1 << 41):
        with pytest.raises(InvalidArgumentError, match="MAX_RESULT_PAGES = 1048576") as info:
            getattr(p, call)(b, length)
        assert f"{length // PAGE} pages" in str(info.value)
        assert ("observe_iter" if call == "observe" else "in pieces") in str(info.value)
    assert (m.free_frames(), m.stats()) == before


@pytest.mark.parametrize("call", ["observe", "read"])
def test_the_limit_itself_is_allowed(
    make_machine: MachineFactory, call: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At a smaller limit (a million observations take seconds to build)."""
    monkeypatch.setattr(cowcore.machine, "MAX_RESULT_PAGES", 16)
    m = make_machine()
    p = m.init
    b = p.mmap(2 * MiB)
    assert len(getattr(p, call)(b, 16 * PAGE)) == 16
    limit = r"17 pages, .*\(MAX_RESULT_PAGES = 16, 64K of range\)"
    with pytest.raises(InvalidArgumentError, match=limit):
        getattr(p, call)(b, 17 * PAGE)
    assert len(list(p.observe_iter(b, 2 * MiB, chunk=16))) == 512


@pytest.mark.parametrize("call", ["observe", "read"])
def test_a_bad_long_range_gets_its_own_error(make_machine: MachineFactory, call: str) -> None:
    """The limit does not hide a range's real fault: each backend's range error comes first,
    then the process's."""
    m = make_machine()
    p = m.init
    b = p.mmap(1 << 41)
    with pytest.raises(InvalidArgumentError, match="not a multiple of the page size"):
        getattr(p, call)(b + 1, 1 << 40)
    with pytest.raises(InvalidArgumentError, match="length 1099511627777 is not a multiple"):
        getattr(p, call)(b, (1 << 40) + 1)
    with pytest.raises(InvalidAddressError, match="outside user space"):
        getattr(p, call)(b, USER_END)
    c = p.fork()
    c.exit()
    with pytest.raises(NoSuchProcessError, match="has exited"):
        getattr(c, call)(b, 1 << 40)


def test_observe_iter_equals_observe(make_machine: MachineFactory) -> None:
    m = make_machine()
    m.thp.sizes["64K"] = "always"
    p = m.init
    a = p.mmap(4 * MiB)
    p.write(a, 64 << 10, 3)
    p.read(a + MiB, 2 * PAGE)
    c = p.fork()
    c.write(a + PAGE, PAGE, 4)
    whole = p.observe(a, 4 * MiB)
    for chunk in (1, 7, 512, 1024, OBSERVE_CHUNK):
        assert list(p.observe_iter(a, 4 * MiB, chunk=chunk)) == whole
    assert list(p.observe_iter(a)) == p.observe(a)
    assert list(p.observe_iter(a + PAGE, 3 * PAGE, chunk=2)) == whole[1:4]


def test_observe_iter_reads_a_huge_range_lazily(make_machine: MachineFactory) -> None:
    """The issue's call, in pieces: the first observations of a 1 TiB range come at once."""
    m = make_machine()
    p = m.init
    b = p.mmap(1 << 40)
    p.write(b + PAGE, PAGE, 9)
    it = p.observe_iter(b, 1 << 40, chunk=16)
    first = list(itertools.islice(it, 40))
    assert [o.addr for o in first] == [b + i * PAGE for i in range(40)]
    assert [o.present for o in first[:3]] == [False, True, False] and first[1].content == 9
    # the tail of the range, through the same iterator's later chunks
    tail = p.observe_iter(b + (1 << 40) - 64 * PAGE, 64 * PAGE, chunk=16)
    assert len(list(tail)) == 64


def test_observe_iter_checks_its_arguments_before_the_first_item(
    make_machine: MachineFactory,
) -> None:
    """Errors come from the call, not from the first ``next()``, and are the errors
    ``observe`` raises for the same range."""
    m = make_machine()
    p = m.init
    a = p.mmap(2 * MiB)
    bad = [
        (a + 1, 8 * PAGE),  # misaligned address
        (a, 8 * PAGE + 1),  # misaligned length, past the first chunk
        (a, 0),
        (USER_END - 4 * PAGE, 8 * PAGE),  # the end past user space, the start inside
        (0, 8 * PAGE),
    ]
    for addr, length in bad:
        with pytest.raises(InvalidArgumentError) as expected:
            p.observe(addr, length)
        with pytest.raises(type(expected.value), match=re.escape(str(expected.value))):
            p.observe_iter(addr, length, chunk=2)
    with pytest.raises(InvalidAddressError, match="outside user space"):
        p.observe_iter(a, 1 << 47)  # past the limit and past user space
    for chunk in (0, -1, MAX_RESULT_PAGES + 1, True, 2.0):
        with pytest.raises(InvalidArgumentError, match="chunk"):
            p.observe_iter(a, chunk=chunk)  # type: ignore[arg-type]
    c = p.fork()
    c.exit()
    with pytest.raises(NoSuchProcessError):
        c.observe_iter(a, 1 << 40)


def test_observe_iter_sees_changes_made_while_iterating(make_machine: MachineFactory) -> None:
    m = make_machine()
    p = m.init
    a = p.mmap(2 * MiB)
    it = p.observe_iter(a, 4 * PAGE, chunk=2)
    assert next(it).present is False
    p.write(a + 3 * PAGE)  # in the second chunk, not read yet
    assert [o.present for o in it] == [False, False, True]


def test_read_pages_result_is_bounded_by_its_input(
    make_machine: MachineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch calls return one int per address given (or nothing): no limit applies."""
    monkeypatch.setattr(cowcore.machine, "MAX_RESULT_PAGES", 16)
    m = make_machine()
    p = m.init
    a = p.mmap(2 * MiB)
    assert len(p.read_pages([a] * 17)) == 17
