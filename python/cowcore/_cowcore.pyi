"""Stubs for the native extension ``cowcore._cowcore`` (rust/cowcore-py).

:class:`Machine` implements the :class:`cowcore.protocol.Backend` protocol over the Rust core;
use it through :class:`cowcore.Machine` (``backend="rust"``), which checks argument types.
Results are plain values or the records of :mod:`cowcore.protocol`, which the extension imports
and constructs; errors are the classes of :mod:`cowcore.errors`.
"""

from typing import Any, final

from cowcore.outcome import Access
from cowcore.protocol import (
    FolioSnapshot,
    KernelConfig,
    PageObservation,
    PolicySpec,
    Smaps,
    Stats,
    Translation,
    VmaInfo,
    Vmstat,
)

__all__ = ["Machine", "__version__", "backends"]

__version__: str
"""The version of the Rust crates, which is also the package version."""

def backends() -> list[str]:
    """Names of the simulation backends this extension provides (``["rust"]``)."""

@final
class Machine:
    """A simulated machine run by the Rust core (see ``cowcore.protocol.Backend``).

    Args:
        kernel: ``"6.1"``, ``"6.12"`` or ``"6.15"``.
        total_frames: physical memory in 4 KiB frames (a multiple of 512, 4M..1T).
        levels: 4 or 5 page-table levels.

    Raises:
        InvalidArgumentError: a bad profile, size or level count.
    """

    def __new__(cls, kernel: str, total_frames: int, levels: int) -> Machine: ...
    @property
    def kernel(self) -> str: ...
    @property
    def levels(self) -> int: ...
    @property
    def total_frames(self) -> int: ...
    def free_frames(self) -> int: ...
    def pid_max(self) -> int:
        """``kernel.pid_max``: a fork fails with ``ProcessLimitError`` while ``pid_max - 1``
        processes live."""
    def set_pid_max(self, pid_max: int) -> None: ...
    def config(self) -> KernelConfig:
        """The capabilities of the machine's profile (``Profile::config`` in policy.rs)."""
    def thp_enabled(self) -> str: ...
    def set_thp_enabled(self, mode: str) -> None: ...
    def thp_size(self, size: str) -> str: ...
    def set_thp_size(self, size: str, mode: str) -> None: ...
    def use_zero_page(self) -> bool: ...
    def set_use_zero_page(self, on: bool) -> None: ...
    def policies(self) -> tuple[PolicySpec, ...]:
        """The core's policy table (``POLICIES`` in policy.rs), each toggle with its default
        under every profile."""
    def policy(self, name: str) -> bool: ...
    def set_policy(self, name: str, value: bool) -> None: ...
    def init_pid(self) -> int: ...
    def pids(self) -> list[int]: ...
    def mm_id(self, pid: int) -> int: ...
    def mmap(self, pid: int, length: int) -> int: ...
    def mmap_fixed(self, pid: int, addr: int, length: int) -> int: ...
    def asid(self, pid: int) -> int: ...
    def munmap(self, pid: int, addr: int, length: int) -> None: ...
    def mremap(self, pid: int, addr: int, length: int, new_addr: int | None) -> int: ...
    def touch(self, pid: int, addr: int, length: int) -> None: ...
    def mprotect(self, pid: int, addr: int, length: int, prot: str) -> None: ...
    def madvise(self, pid: int, addr: int, length: int, advice: str) -> None: ...
    def write(self, pid: int, addr: int, length: int, value: int) -> None: ...
    def read(self, pid: int, addr: int, length: int) -> list[int]: ...
    def write_pages(self, pid: int, addrs: list[Any] | memoryview, value: int) -> None:
        """Store ``value`` at each page of ``addrs``: a ``list`` whose items are ints (or
        have ``__index__``; not ``bool``) in ``[0, 2^64)``, or an object exporting a
        one-dimensional buffer of 64-bit integers (format ``q``, ``Q``, ``l`` or ``L``,
        contiguous or strided), read in one copy; a negative signed item is refused as a
        negative int is.

        Raises:
            InvalidArgumentError: a bad item, naming its index, or an ``addrs`` of another
                type or buffer format.
        """
    def read_pages(self, pid: int, addrs: list[Any] | memoryview) -> list[int]:
        """Load the first 8 bytes of each page of ``addrs`` (as :meth:`write_pages` takes
        them)."""
    def access(self, pid: int, addr: int, write: bool, value: int) -> Access: ...
    def access_batch(
        self,
        pid: int,
        addrs: list[Any] | memoryview,
        writes: bool | memoryview,
        value: int,
    ) -> bytearray:
        """The records of the accesses, ``32`` bytes each (the layout of
        :data:`cowcore.outcome.ACCESS_FIELDS`)."""
    def record(self, on: bool) -> None: ...
    def take_events(self) -> bytes:
        """The kept events as ``EVENT_SIZE``-byte records (:data:`cowcore.outcome.EVENT_FIELDS`)."""
    def fork(self, pid: int) -> int: ...
    def exit(self, pid: int) -> None: ...
    def vmas(self, pid: int) -> list[VmaInfo]: ...
    def smaps(self, pid: int) -> list[Smaps]:
        """One record per VMA, lowest first: ``/proc/<pid>/smaps`` (docs/accounting.md)."""
    def rss_anon(self, pid: int) -> int:
        """The mm's ``MM_ANONPAGES`` counter, in pages."""
    def translate(self, pid: int, addr: int) -> Translation:
        """The page walk for ``addr`` (no fault is taken)."""
    def observe(self, pid: int, addr: int, length: int) -> list[PageObservation]:
        """One record per page of the range, built in full: the caller bounds ``length``
        (``cowcore.Process.observe`` allows at most ``MAX_RESULT_PAGES`` pages)."""
    def folio(self, pfn: int) -> FolioSnapshot: ...
    def stats(self) -> Stats: ...
    def vmstat(self) -> Vmstat: ...
    def check(self) -> None: ...
