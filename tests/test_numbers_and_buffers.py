"""Python's numbers and arrays as arguments (issue 10, "What a new user hit"): wherever the
API takes an int it takes anything ``operator.index`` accepts (numpy integers, ``IntEnum``),
never a ``bool``; the batch calls take a buffer of 64-bit integers (numpy ``int64``/``uint64``
arrays, ``array('q')``/``array('Q')``, memoryviews) and read it without a Python loop.

Every test runs on every backend; the bad-input cases (negative ``int64`` items, 2-D arrays,
numpy ``bool``/``float``) are in test_bad_input.py, which also compares the messages.
"""

from __future__ import annotations

import array
import enum
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import cowcore
from cowcore import InvalidArgumentError, NoSuchProcessError, SegmentationFault
from cowcore.protocol import BATCH_FORMATS, batch_view
from tests.conftest import MachineFactory, MiB

PAGE = 4096


def test_numpy_scalars_in_single_calls(make_machine: MachineFactory) -> None:
    """Regression: ``p.write(np.uint64(a))`` raised "addr must be an int, not uint64"."""
    m = make_machine(memory=np.int64(64 * MiB), levels=np.uint8(4))
    assert m.total_frames == 64 * MiB // PAGE and m.levels == 4
    p = m.init
    a = p.mmap(np.int64(2 * MiB))
    assert type(a) is int
    p.write(np.uint64(a), np.int64(2 * PAGE), np.uint64((1 << 64) - 1))
    assert p.read(np.int64(a), np.uint32(2 * PAGE)) == [(1 << 64) - 1] * 2
    t = p.translate(np.uint64(a))
    assert t.addr == a and type(t.addr) is int and t.pfn is not None
    obs = p.observe(np.uint64(a), np.int64(PAGE))
    assert type(obs[0].addr) is int and obs == p.observe(a, PAGE)
    assert m.folio(np.uint64(t.pfn)) == m.folio(t.pfn)
    p.mprotect(np.uint64(a + PAGE), np.int16(PAGE), "r")
    p.madvise(np.uint64(a), np.int64(PAGE), "dontneed")
    p.munmap(np.uint64(a + PAGE), np.int64(PAGE))
    assert p.read(a) == [0]
    same = cowcore.Process(m, np.int64(p.pid))
    assert same.pid == p.pid and type(same.pid) is int and same.mm_id == p.mm_id
    with pytest.raises(NoSuchProcessError):
        cowcore.Process(m, np.True_)  # type: ignore[arg-type]


def test_int_enum_and_index_objects(make_machine: MachineFactory) -> None:
    m = make_machine()
    p = m.init
    a = p.mmap(2 * MiB)

    class Page(enum.IntEnum):
        A = a + PAGE

    class Index:
        """Not an int, but has ``__index__``."""

        def __index__(self) -> int:
            return a + 2 * PAGE

    p.write(Page.A, value=Index())
    p.write_pages([Index()], value=Page.A)
    assert p.read_pages([Page.A, Index()]) == [a + 2 * PAGE, Page.A]


BUFFERS: dict[str, Callable[[list[int]], Any]] = {
    "numpy uint64": lambda xs: np.array(xs, dtype=np.uint64),
    "numpy int64": lambda xs: np.array(xs, dtype=np.int64),
    "numpy ulonglong": lambda xs: np.array(xs, dtype=np.ulonglong),
    "numpy strided": lambda xs: np.repeat(np.array(xs, dtype=np.uint64), 2)[::2],
    "array Q": lambda xs: array.array("Q", xs),
    "array q": lambda xs: array.array("q", xs),
    "memoryview Q": lambda xs: memoryview(array.array("Q", xs)),
    "memoryview L": lambda xs: memoryview(array.array("Q", xs)).cast("B").cast("L"),
    "memoryview l": lambda xs: memoryview(array.array("q", xs)).cast("B").cast("l"),
    "memoryview @Q": lambda xs: memoryview(array.array("Q", xs)).cast("B").cast("@Q"),
    # items off their 8-byte alignment: PyBuffer<u64> refuses it, the binding reads it
    # through memoryview.tolist(), as the reference reads every buffer
    "memoryview misaligned": lambda xs: memoryview(
        bytearray(b"\0" + array.array("Q", xs).tobytes())
    )[1:].cast("Q"),
    # numpy exports a misaligned array as format '=Q', which is iterated
    "numpy misaligned": lambda xs: np.frombuffer(
        b"\0" + np.array(xs, dtype=np.uint64).tobytes(), dtype=np.uint64, offset=1
    ),
    # not read directly (other item types or byte order): iterated, item by item
    "numpy big-endian": lambda xs: np.array(xs, dtype=">u8"),
    "numpy object": lambda xs: np.array(xs, dtype=object),
    "list of numpy scalars": lambda xs: [np.uint64(x) for x in xs],
    "tuple": tuple,
}


@pytest.mark.parametrize("kind", BUFFERS)
def test_batch_calls_take_arrays(make_machine: MachineFactory, kind: str) -> None:
    """The same pages, in the same order, whatever holds the addresses."""
    m = make_machine()
    p = m.init
    a = p.mmap(2 * MiB)
    pages = [a + 8 * PAGE, a, a + 8 * PAGE, a + 511 * PAGE]
    p.write_pages(BUFFERS[kind](pages), np.uint64(5))
    assert p.read(a, 2 * MiB) == [5 if i in (0, 8, 511) else 0 for i in range(512)]
    assert p.read_pages(BUFFERS[kind]([a + 8 * PAGE, a + PAGE, a])) == [5, 0, 5]
    assert p.read_pages(BUFFERS[kind]([])) == []


def test_which_buffers_are_read_directly() -> None:
    """The facade passes these to the backend as a view (one copy in Rust); the others are
    iterated as any iterable is."""
    direct = [k for k, make in BUFFERS.items() if batch_view("addrs", make([PAGE])) is not None]
    assert direct == [
        "numpy uint64",
        "numpy int64",
        "numpy ulonglong",
        "numpy strided",
        "array Q",
        "array q",
        "memoryview Q",
        "memoryview L",
        "memoryview l",
        "memoryview @Q",
        "memoryview misaligned",
    ]
    assert {"q", "Q", "l", "L"} <= BATCH_FORMATS
    # a 32-bit array is an iterable of ints: iterated, not refused
    assert batch_view("addrs", np.array([PAGE], np.uint32)) is None
    with pytest.raises(InvalidArgumentError, match="one-dimensional, not a 2-dimensional"):
        batch_view("addrs", np.zeros((2, 2), np.uint64))


def test_buffers_of_other_items_are_iterated(make_machine: MachineFactory) -> None:
    m = make_machine()
    p = m.init
    a = p.mmap(2 * MiB)
    p.write(a, PAGE, 3)
    # a numpy uint32 array is an iterable of ints; so are bytes (whose items are not pages)
    if a < 1 << 32:  # pragma: no cover (mappings sit near 2^47)
        assert p.read_pages(np.array([a], np.uint32)) == [3]
    with pytest.raises(InvalidArgumentError, match="page size"):
        p.read_pages(b"\x10")
    with pytest.raises(InvalidArgumentError, match=r"addrs\[0\] must be an int, not float64"):
        p.read_pages(np.array([float(a)]))


def test_negative_int64_items_fail_as_negative_ints(make_machine: MachineFactory) -> None:
    m = make_machine()
    p = m.init
    a = p.mmap(2 * MiB)
    with pytest.raises(InvalidArgumentError) as from_list:
        p.write_pages([a, -PAGE])
    for addrs in (np.array([a, -PAGE]), array.array("q", [a, -PAGE])):
        with pytest.raises(InvalidArgumentError) as from_buffer:
            p.write_pages(addrs)
        assert (
            str(from_buffer.value)
            == str(from_list.value)
            == "addrs[1] must be in [0, 2^64), not -4096"
        )
    assert p.read(a) == [0], "nothing was written"


def test_a_failing_buffer_batch_changes_nothing(make_machine: MachineFactory) -> None:
    m = make_machine()
    p = m.init
    a = p.mmap(2 * MiB)
    before = (m.free_frames(), m.stats(), p.observe(a, 2 * MiB))
    with pytest.raises(SegmentationFault) as info:
        p.write_pages(np.array([a, a + 2 * MiB], np.uint64))
    assert info.value.addr == a + 2 * MiB
    assert (m.free_frames(), m.stats(), p.observe(a, 2 * MiB)) == before


@pytest.mark.parametrize(
    ("addrs", "message"),
    [
        (
            memoryview(b"abcdefgh"),
            "addrs must be a list of ints or a one-dimensional buffer of 64-bit integers "
            "(format q, Q, l or L), not memoryview of format 'B'",
        ),
        ((4096,), "not tuple"),
        (np.uint64(4096), "not uint64 of format 'L'"),
        (np.array([4096], np.uint32), "not ndarray of format 'I'"),
        (np.array([4096], ">u8"), "not ndarray of format '>Q'"),
        (np.zeros((1, 1), np.uint64), "addrs must be one-dimensional, not a 2-dimensional buffer"),
        (np.array([4096, -1]), "addrs[1] must be in [0, 2^64), not -1"),
        ([4096, True], "addrs[1] must be an int, not bool"),
    ],
)
def test_backends_check_batch_arguments_alike(
    make_machine: MachineFactory, addrs: object, message: str
) -> None:
    """What the backends themselves accept (the facade only ever passes a list or a view of
    64-bit integers): a list, or a one-dimensional buffer of 64-bit integers; the rest is
    refused with the same message by both (``page_addrs`` in the binding, ``check_batch``
    in the reference)."""
    m = make_machine()
    for call in (
        lambda: m._b.read_pages(m.init.pid, addrs),  # type: ignore[arg-type]
        lambda: m._b.write_pages(m.init.pid, addrs, 1),  # type: ignore[arg-type]
    ):
        with pytest.raises(InvalidArgumentError, match=re.escape(message)):
            call()
