"""The public API's argument checking and error classes: bad input never changes state."""

from __future__ import annotations

import enum
from typing import Any

import pytest

import cowcore
from cowcore import (
    InvalidAddressError,
    InvalidArgumentError,
    InvariantError,
    NoSuchProcessError,
    SegmentationFault,
)
from cowcore.machine import make_backend
from tests.conftest import MachineFactory, MiB


def test_machine_arguments(backend: str) -> None:
    with pytest.raises(InvalidArgumentError, match="profile"):
        cowcore.Machine("6.13", backend=backend)
    assert cowcore.Machine().backend_name == cowcore.BACKENDS[0]
    with pytest.raises(InvalidArgumentError, match="unknown backend"):
        cowcore.Machine(backend="qemu")
    with pytest.raises(InvalidArgumentError, match="multiple of 2M"):
        cowcore.Machine(memory="3M")
    with pytest.raises(InvalidArgumentError, match=r"in \[4M, 1T\], not 1099513724928$"):
        cowcore.Machine(memory=(1 << 40) + (2 << 20), backend=backend)
    with pytest.raises(InvalidArgumentError, match=r"in \[4M, 1T\], not 2199023255552$"):
        cowcore.Machine(memory="2T", backend=backend)
    with pytest.raises(InvalidArgumentError, match="bad size"):
        cowcore.Machine(memory="4 GB")
    with pytest.raises(InvalidArgumentError, match="levels"):
        cowcore.Machine(levels=3)
    m = cowcore.Machine(memory=64 << 20, backend=backend)
    assert m.total_frames == 16384 and m.kernel == "6.15" and m.levels == 4
    assert backend in repr(m)


def test_one_tib_machine_boots_and_runs(backend: str) -> None:
    """``MAX_MEMORY`` (1 TiB, 2^28 frames) boots on both backends without paying for its
    size, and faults, forks and copies at the bottom of physical memory (the top needs every
    frame in use: rust/cowcore-core/tests/scale.rs and ``benches/scale_1t.py top``)."""
    assert cowcore.MAX_MEMORY == 1 << 40
    m = cowcore.Machine(backend=backend, memory="1T")
    assert m.total_frames == 1 << 28
    assert m.free_frames() == (1 << 28) - 514  # the zero page, the huge zero folio, a PGD
    p = m.init
    a = p.mmap(64 << 30)
    p.write(a, 4 * 4096, 7)
    c = p.fork()
    c.write(a, 4096, 9)
    p.write(a + 4096, 4096, 8)
    assert (p.read(a, 2 * 4096), c.read(a, 2 * 4096)) == ([7, 8], [9, 7])
    assert m.stats().cow_copy == 2
    m.check()
    c.exit()
    assert m.free_frames() == (1 << 28) - 514 - 4 - 3  # init's 4 pages, PUD, PMD, PTE table
    m.check()


def test_backends_refuse_above_one_tib_themselves(backend: str) -> None:
    """Below the façade, each backend refuses the same sizes with the same message."""
    frames = ((1 << 40) >> 12) + 512
    with pytest.raises(InvalidArgumentError) as e:
        make_backend(backend, "6.15", frames, 4)
    assert str(e.value) == f"memory must be a multiple of 2M in [4M, 1T], not {frames << 12}"
    assert make_backend(backend, "6.15", frames - 512, 4).total_frames == frames - 512


def test_policy_defaults_follow_the_profile(backend: str) -> None:
    assert cowcore.Machine("6.12", backend=backend).policy.cow_reuse_pte_mapped_thp is False
    m = cowcore.Machine("6.15", backend=backend)
    assert m.policy.as_dict() == {
        "cow_reuse_pte_mapped_thp": True,
        "huge_zero_wp_alloc": True,
        # issue 15's policies: no kernel has them, so they are off under every profile
        "cow_reuse_remember_exclusive": False,
        "cow_reuse_fault_around": False,
        "cow_reuse_fault_around_window": False,
        "mm_id_exact": False,
    }
    with pytest.raises(InvalidArgumentError, match="policy must be one of cow_reuse"):
        m.policy.no_such_toggle = True
    with pytest.raises(InvalidArgumentError, match="bool"):
        m.policy.cow_reuse_pte_mapped_thp = 1  # type: ignore[assignment]


def test_thp_settings(backend: str) -> None:
    m = cowcore.Machine(backend=backend)
    # The kernel's boot defaults: only the PMD size inherits the top-level setting.
    boot = dict.fromkeys(cowcore.protocol.THP_SIZES, "never") | {"2M": "inherit"}
    assert dict(m.thp.sizes) == boot
    assert m.thp.enabled == "never" and m.thp.use_zero_page


def test_enabled_always_alone_gives_a_pmd_thp(backend: str) -> None:
    """As on a freshly booted kernel, ``enabled = "always"`` alone gives 2M THPs."""
    m = cowcore.Machine(backend=backend)
    m.thp.enabled = "always"
    p = m.init
    a = p.mmap(2 << 20)
    p.write(a)
    pfn = p.translate(a).pfn
    assert pfn is not None
    assert m.folio(pfn).order == 9
    assert m.stats()["thp_fault_alloc"] == 1
    m.thp.sizes["64K"] = "inherit"
    m.thp.set_size("2M", "madvise")
    assert m.thp.sizes["64K"] == "inherit" and m.thp.sizes["2M"] == "madvise"
    with pytest.raises(InvalidArgumentError, match="THP size must be one of 16K, 32K"):
        m.thp.sizes["8K"] = "always"
    with pytest.raises(InvalidArgumentError, match="mode"):
        m.thp.sizes["64K"] = "sometimes"
    with pytest.raises(InvalidArgumentError):
        m.thp.enabled = "inherit"  # type: ignore[assignment]


BAD_CALLS: list[tuple[str, tuple[Any, ...], type[Exception]]] = [
    ("mmap", (0,), InvalidArgumentError),
    ("mmap", (1000,), InvalidArgumentError),
    ("mmap", (-4096,), InvalidArgumentError),
    ("munmap", (-4096, 4096), InvalidArgumentError),
    ("munmap", (0, 4096), InvalidAddressError),
    ("write", (4096, 4096, 1 << 70), InvalidArgumentError),
    ("mmap", ("2M",), InvalidArgumentError),
    ("munmap", (1, 4096), InvalidArgumentError),
    ("munmap", (0, 4095), InvalidArgumentError),
    ("munmap", (1 << 47, 4096), InvalidAddressError),
    ("write", (0x1000, 4096), SegmentationFault),
    ("write", (0, 4096), InvalidAddressError),
    ("write", (None, 4096), InvalidArgumentError),
    ("write", (0, 4096, -1), InvalidArgumentError),
    ("write", (0, 4096, 1 << 64), InvalidArgumentError),
    ("write", (0, 4096, True), InvalidArgumentError),
    ("read", (4096, 0), InvalidArgumentError),
    ("mprotect", (0, 4096, "rwx"), InvalidArgumentError),
    ("mprotect", (0, 4096, "r"), InvalidAddressError),
    ("madvise", (0, 4096, "free"), InvalidArgumentError),
    ("madvise", (0, 4096, "dontneed"), InvalidAddressError),
    ("translate", (-1,), InvalidArgumentError),
    ("translate", (1 << 47,), InvalidAddressError),
]


@pytest.mark.parametrize(("method", "args", "exc"), BAD_CALLS)
def test_bad_calls_raise_and_change_nothing(
    make_machine: MachineFactory, method: str, args: tuple[Any, ...], exc: type[Exception]
) -> None:
    m = make_machine()
    a = m.init.mmap(2 * MiB)
    m.init.write(a)
    before = (m.free_frames(), m.stats(), m.init.vmas(), m.init.observe(a, 8192))
    with pytest.raises(exc):
        getattr(m.init, method)(*args)
    assert (m.free_frames(), m.stats(), m.init.vmas(), m.init.observe(a, 8192)) == before


RULES: list[tuple[str, tuple[Any, ...], type[Exception], str]] = [
    # regression (issue 10): the core said "bad length 107374182"
    (
        "mmap",
        (107374182,),
        InvalidArgumentError,
        "length 107374182 is not a multiple of the page size (4096)",
    ),
    ("mmap", (0,), InvalidArgumentError, "length must be positive"),
    ("read", (0x7F0000001000, 0), InvalidArgumentError, "length must be positive"),
    (
        "munmap",
        (0x7F0000001000, 100),
        InvalidArgumentError,
        "length 100 is not a multiple of the page size (4096)",
    ),
    (
        "munmap",
        (0x7F0000000001, 4096),
        InvalidArgumentError,
        "address 0x7f0000000001 is not a multiple of the page size (4096)",
    ),
    (
        "observe",
        (0, 4096),
        InvalidAddressError,
        "range [0x0, 0x1000) is outside user space [0x1000, 0x800000000000)",
    ),
    (
        "translate",
        (1 << 47,),
        InvalidAddressError,
        "address 0x800000000000 is outside user space, which ends at 0x800000000000",
    ),
    (
        "mprotect",
        (0x1000, 4096, "r"),
        InvalidAddressError,
        "mprotect [0x1000, 0x2000) includes unmapped pages (ENOMEM)",
    ),
    (
        "mmap",
        (1 << 47,),
        InvalidAddressError,
        "no room for a mapping of 140737488355328 bytes below 0x7effffc00000 (ENOMEM)",
    ),
    (
        "write",
        (4096, 4096, 1 << 64),
        InvalidArgumentError,
        "value must be in [0, 2^64), not 18446744073709551616",
    ),
]


@pytest.mark.parametrize(("method", "args", "exc", "message"), RULES)
def test_errors_say_the_rule(
    make_machine: MachineFactory,
    method: str,
    args: tuple[Any, ...],
    exc: type[Exception],
    message: str,
) -> None:
    """The message names the rule broken, in the same words on every backend."""
    m = make_machine()
    m.init.mmap(2 * MiB)  # below the cursor: the next mapping goes below 0x7effffc00000
    with pytest.raises(exc) as info:
        getattr(m.init, method)(*args)
    assert str(info.value) == message


def test_exited_process_is_gone(make_machine: MachineFactory) -> None:
    m = make_machine()
    c = m.init.fork()
    c.exit()
    assert not c.alive
    for call in (lambda: c.read(0), c.fork, c.exit, lambda: c.mmap(4096), lambda: c.mm_id):
        with pytest.raises(NoSuchProcessError, match="exited"):
            call()


def test_segfault_reports_address_and_reason(make_machine: MachineFactory) -> None:
    m = make_machine()
    a = m.init.mmap(2 * MiB)
    with pytest.raises(SegmentationFault, match="unmapped") as info:
        m.init.read(a + 2 * MiB)
    assert info.value.addr == a + 2 * MiB


def test_folio_of_a_free_frame(make_machine: MachineFactory) -> None:
    m = make_machine()
    with pytest.raises(InvalidArgumentError, match="not part of an allocated folio"):
        m.folio(m.total_frames - 1)


def test_errors_share_one_hierarchy() -> None:
    assert issubclass(InvalidAddressError, ValueError)
    assert issubclass(cowcore.OutOfMemoryError, MemoryError)
    assert issubclass(InvariantError, cowcore.CowError)
    err = InvariantError("refcount", "folio 3")
    assert err.invariant == "refcount" and "refcount: folio 3" in str(err)


def test_check_detects_a_corrupted_counter() -> None:
    """check() recomputes from the page tables: a tampered refcount is caught."""
    m = cowcore.Machine(backend="reference")
    a = m.init.mmap(2 * MiB)
    m.init.write(a)
    m.check()
    kernel = m._b._k  # type: ignore[attr-defined]
    folio = kernel.page_folio[m.init.translate(a).pfn]
    folio.refcount += 1
    with pytest.raises(InvariantError, match="refcount"):
        m.check()
    folio.refcount -= 1
    folio.page_mapcount[0] += 1
    with pytest.raises(InvariantError, match="page-mapcount"):
        m.check()


def test_batch_page_calls(make_machine: MachineFactory) -> None:
    """write_pages/read_pages: scattered pages in the given order, checked before touching."""
    m = make_machine()
    p = m.init
    a = p.mmap(2 * MiB)
    p.write_pages([a + 8192, a, a + 8192], value=5)
    assert p.read_pages([a, a + 4096, a + 8192]) == [5, 0, 5]
    assert p.read_pages([]) == []
    # any iterable of ints, int subclasses included (bool excepted: see test_bad_input)
    p.write_pages((x for x in [a + 4096]), value=6)
    assert p.read_pages((a + 4096, a)) == [6, 5]

    class Page(enum.IntEnum):
        A = a + 4096

    assert p.read_pages([Page.A]) == [6]
    p.write_pages([], value=1)
    p.mprotect(a + 4096, 4096, "r")
    before = (m.free_frames(), m.stats(), p.observe(a, 3 * 4096))
    with pytest.raises(SegmentationFault) as info:
        p.write_pages([a + 8192, a + 4096], value=7)
    assert info.value.addr == a + 4096 and info.value.reason == "protection"
    assert (m.free_frames(), m.stats(), p.observe(a, 3 * 4096)) == before
    with pytest.raises(InvalidArgumentError):
        p.write_pages([a + 1])
    with pytest.raises(InvalidArgumentError):
        p.read_pages([a, "0"])  # type: ignore[list-item]
    with pytest.raises(InvalidAddressError):
        p.read_pages([0])


def test_rss_anon_is_mm_anonpages(backend: str) -> None:
    """``rss_anon``: anonymous pages mapped (MM_ANONPAGES); zero pages do not count, a
    PMD-mapped THP counts 512, a shared page counts in every process that maps it."""
    m = cowcore.Machine(backend=backend)
    m.thp.sizes["64K"] = "always"
    p = m.init
    a = p.mmap(4 << 20)
    p.read(a + (1 << 20), 8 << 12)  # zero pages only
    assert p.rss_anon() == 0
    p.write(a)  # one 64K folio
    assert p.rss_anon() == 16
    c = p.fork()
    assert (p.rss_anon(), c.rss_anon()) == (16, 16)
    c.write(a)  # COW: the child's PTE now maps its own copy, still one page
    assert (p.rss_anon(), c.rss_anon()) == (16, 16)
    p.munmap(a, 64 << 10)
    assert (p.rss_anon(), c.rss_anon()) == (0, 16)
    m.thp.enabled = "always"
    b = p.mmap(2 << 20)
    p.write(b)
    assert p.rss_anon() == 512
    c.exit()
    with pytest.raises(cowcore.NoSuchProcessError):
        c.rss_anon()
