"""The reference backend: argument checks and the :class:`~cowcore.protocol.Backend` surface
over :class:`~cowcore.reference.kernel.Kernel`."""

from __future__ import annotations

import struct
from typing import Any, cast

from cowcore.errors import (
    InvalidAddressError,
    InvalidArgumentError,
    NoSuchProcessError,
    SegmentationFault,
)
from cowcore.outcome import ACCESS_SIZE, EVENT_SIZE, Access
from cowcore.protocol import (
    ADVICES,
    KERNEL_CONFIGS,
    KERNEL_PROFILES,
    NO_MTHP_SIZES,
    POLICIES,
    PROTS,
    THP_MODES,
    THP_SIZE_MODES,
    THP_SIZES,
    U64,
    FolioSnapshot,
    KernelConfig,
    KernelProfile,
    MmIdSlot,
    PageObservation,
    PolicySpec,
    Smaps,
    Stats,
    Translation,
    VmaInfo,
    Vmstat,
    WalkLevel,
    check_batch,
    check_u64,
)
from cowcore.reference import check as check_mod
from cowcore.reference import fault, fork, gup, khugepaged, mremap, split, swap, vma_ops, vmscan
from cowcore.reference import paging as pg
from cowcore.reference import smaps as smaps_mod
from cowcore.reference.kernel import PID_MAX_LIMIT, PID_MAX_MIN, Kernel
from cowcore.reference.mm import Mm, Process

USER_START = 0x1000
"""Page 0 is never user memory (``mmap_min_addr`` is at least one page)."""


MAX_FRAMES = (1 << 40) // pg.PAGE_SIZE
"""The largest machine, 1 TiB (the core's ``MAX_MEMORY``). Nothing in the reference is
bounded by it (Python ints do not overflow, and frames are kept in dicts only once used);
it refuses what the core refuses."""


ACCESS_STRUCT = struct.Struct("<QBBBBBBBBIHHHHI")
"""One :class:`Access` in the Rust ``#[repr(C)]`` layout (``outcome.ACCESS_FIELDS``)."""

EVENT_STRUCT = struct.Struct("<BBBBI8Q")
"""One event record in the Rust ``#[repr(C)]`` layout (``outcome.EVENT_FIELDS``)."""

assert ACCESS_STRUCT.size == ACCESS_SIZE and EVENT_STRUCT.size == EVENT_SIZE


def _user_limit(levels: int) -> int:
    return 1 << (56 if levels == 5 else 47)


def _length(length: int) -> None:
    """A range's length: positive and a whole number of pages. The messages say the rule
    broken, in the words of the core's ``check_length`` (both backends raise the same message
    for the same mistake; tests/test_bad_input.py compares them)."""
    if length <= 0:
        raise InvalidArgumentError("length must be positive")
    if length % pg.PAGE_SIZE:
        raise InvalidArgumentError(
            f"length {length} is not a multiple of the page size ({pg.PAGE_SIZE})"
        )


class ReferenceBackend:
    """Pure-Python simulation of one machine, written from kernel-semantics.md."""

    def __init__(self, kernel: str, total_frames: int, levels: int) -> None:
        if kernel not in KERNEL_PROFILES:
            raise InvalidArgumentError(
                f"unknown kernel profile {kernel!r}: one of {', '.join(KERNEL_PROFILES)}"
            )
        if levels not in (4, 5):
            raise InvalidArgumentError(f"levels must be 4 or 5, not {levels!r}")
        if total_frames < 1024 or total_frames % 512 or total_frames > MAX_FRAMES:
            raise InvalidArgumentError(
                f"memory must be a multiple of 2M in [4M, 1T], not {total_frames * pg.PAGE_SIZE}"
            )
        profile = cast(KernelProfile, kernel)
        self._k = Kernel(profile, total_frames, levels)
        self._cfg = KERNEL_CONFIGS[profile]

    # -- machine -------------------------------------------------------------------------

    @property
    def kernel(self) -> str:
        return self._k.profile

    @property
    def levels(self) -> int:
        return self._k.levels

    @property
    def total_frames(self) -> int:
        return self._k.phys.total_frames

    def free_frames(self) -> int:
        return self._k.phys.buddy.free_count

    def pid_max(self) -> int:
        return self._k.pid_max

    def set_pid_max(self, pid_max: int) -> None:
        if not PID_MAX_MIN <= pid_max <= PID_MAX_LIMIT:
            raise InvalidArgumentError(
                f"pid_max must be in [{PID_MAX_MIN}, {PID_MAX_LIMIT}], not {pid_max}"
            )
        self._k.pid_max = pid_max

    def config(self) -> KernelConfig:
        return self._cfg

    def thp_enabled(self) -> str:
        return self._k.thp.enabled

    def set_thp_enabled(self, mode: str) -> None:
        if mode not in THP_MODES:
            raise InvalidArgumentError(f"THP enabled must be one of {THP_MODES}, not {mode!r}")
        self._k.thp.enabled = mode

    def thp_size(self, size: str) -> str:
        self._size(size)
        return self._k.thp.sizes[size]

    def set_thp_size(self, size: str, mode: str) -> None:
        """``hugepages-<size>/enabled``. Under 6.1 only ``2M`` exists: its mode is what the
        single ``enabled`` knob gets there (2M's own, or ``enabled`` while 2M is at
        ``inherit``), so :meth:`ThpPolicy.allowable_orders` needs no case of its own."""
        self._size(size)
        if mode not in THP_SIZE_MODES:
            raise InvalidArgumentError(
                f"THP size mode must be one of {THP_SIZE_MODES}, not {mode!r}"
            )
        self._k.thp.sizes[size] = mode

    def _size(self, size: str) -> None:
        """A THP size with a ``hugepages-<N>kB`` directory under this profile (a kernel before
        6.8, such as 6.1, has none: only the PMD size, governed by ``enabled``)."""
        if size not in THP_SIZES:
            raise InvalidArgumentError(f"unknown THP size {size!r}: one of {', '.join(THP_SIZES)}")
        if THP_SIZES[size] not in self._cfg.anon_thp_orders:
            raise InvalidArgumentError(f"THP size {size}: {NO_MTHP_SIZES}")

    def use_zero_page(self) -> bool:
        return self._k.thp.use_zero_page

    def set_use_zero_page(self, on: bool) -> None:
        self._k.thp.use_zero_page = bool(on)

    def policies(self) -> tuple[PolicySpec, ...]:
        return POLICIES

    def policy(self, name: str) -> bool:
        self._policy_name(name)
        return self._k.toggles[name]

    def set_policy(self, name: str, value: bool) -> None:
        self._policy_name(name)
        self._k.toggles[name] = bool(value)

    def _policy_name(self, name: str) -> None:
        if name not in self._k.toggles:
            raise InvalidArgumentError(
                f"unknown policy {name!r}: one of {', '.join(sorted(self._k.toggles))}"
            )

    # -- processes -----------------------------------------------------------------------

    def init_pid(self) -> int:
        return self._k.init_pid

    def pids(self) -> list[int]:
        return [pid for pid, p in self._k.procs.items() if p.mm is not None]

    def _proc(self, pid: int) -> tuple[Process, Mm]:
        proc = self._k.procs.get(pid)
        if proc is None:
            raise NoSuchProcessError(f"no process with pid {pid}")
        if proc.mm is None:
            raise NoSuchProcessError(f"process {pid} has exited")
        return proc, proc.mm

    def _range(self, addr: int, length: int) -> tuple[int, int]:
        """``[addr, addr + length)``: page-aligned, non-empty, inside user space (the core's
        ``check_range``, with its messages)."""
        _length(length)
        if addr % pg.PAGE_SIZE:
            raise InvalidArgumentError(
                f"address {addr:#x} is not a multiple of the page size ({pg.PAGE_SIZE})"
            )
        end = addr + length
        limit = _user_limit(self._k.levels)
        if addr < USER_START or end > limit:
            raise InvalidAddressError(
                f"range [{addr:#x}, {end:#x}) is outside user space [{USER_START:#x}, {limit:#x})"
            )
        return addr, end

    def mm_id(self, pid: int) -> int:
        return self._proc(pid)[1].mm_id

    def asid(self, pid: int) -> int:
        return self._proc(pid)[1].asid

    def mmap(self, pid: int, length: int) -> int:
        _, mm = self._proc(pid)
        _length(length)
        return vma_ops.mmap(mm, length)

    def mmap_fixed(self, pid: int, addr: int, length: int) -> int:
        _, mm = self._proc(pid)
        start, end = self._range(addr, length)
        vma_ops.mmap_fixed(mm, start, end)
        return start

    def touch(self, pid: int, addr: int, length: int) -> None:
        _, mm = self._proc(pid)
        start, end = self._range(addr, length)
        gup.touch(self._k, mm, start, end)

    def ref(self, pid: int, addr: int, length: int) -> None:
        _, mm = self._proc(pid)
        start, end = self._range(addr, length)
        self._check_access(mm, start, end, write=False)
        gup.gup_get(self._k, mm, start, end, pin=False)

    def unref(self, pid: int, addr: int, length: int) -> None:
        _, mm = self._proc(pid)
        start, end = self._range(addr, length)
        gup.gup_put(self._k, pid, mm, start, end, pin=False)

    def pin(self, pid: int, addr: int, length: int) -> None:
        _, mm = self._proc(pid)
        start, end = self._range(addr, length)
        self._check_access(mm, start, end, write=True)
        gup.gup_get(self._k, mm, start, end, pin=True)

    def unpin(self, pid: int, addr: int, length: int) -> None:
        _, mm = self._proc(pid)
        start, end = self._range(addr, length)
        gup.gup_put(self._k, pid, mm, start, end, pin=True)

    def unshare(self, pid: int, addr: int, length: int) -> bytearray:
        _, mm = self._proc(pid)
        start, end = self._range(addr, length)
        self._check_access(mm, start, end, write=False)
        recs = gup.unshare(self._k, mm, start, end)
        raw = bytearray(ACCESS_SIZE * len(recs))
        for i, rec in enumerate(recs):
            ACCESS_STRUCT.pack_into(raw, i * ACCESS_SIZE, *rec.raw())
        return raw

    def collapse(self, pid: int, addr: int, length: int) -> int:
        """``madvise(MADV_COLLAPSE)``: every page of the range must be mapped (an
        :class:`InvalidAddressError` otherwise, as for ``madvise``)."""
        _, mm = self._proc(pid)
        start, end = self._range(addr, length)
        vma_ops.require_mapped(mm, start, end, "MADV_COLLAPSE")
        return int(khugepaged.madvise(self._k, mm, start, end))

    def pageout(self, pid: int, addr: int, length: int) -> None:
        """``madvise(MADV_PAGEOUT)``: every page of the range must be mapped (an
        :class:`InvalidAddressError` otherwise, as for ``madvise``)."""
        _, mm = self._proc(pid)
        start, end = self._range(addr, length)
        vma_ops.require_mapped(mm, start, end, "MADV_PAGEOUT")
        vmscan.pageout(self._k, mm, start, end)

    def munmap(self, pid: int, addr: int, length: int) -> None:
        _, mm = self._proc(pid)
        start, end = self._range(addr, length)
        vma_ops.munmap(self._k, mm, start, end)

    def mremap(self, pid: int, addr: int, length: int, new_addr: int | None) -> int:
        """The core's ``mremap`` with its checks in its order: the ranges, the overlap
        (EINVAL), the destination's unmap, the source VMA (EFAULT), the room (ENOMEM)."""
        _, mm = self._proc(pid)
        start, end = self._range(addr, length)
        if new_addr is not None:
            new_start, new_end = self._range(new_addr, length)
            if new_start < end and new_end > start:
                raise InvalidArgumentError(
                    f"mremap: [{new_start:#x}, {new_end:#x}) overlaps the range moved, "
                    f"[{start:#x}, {end:#x}) (EINVAL)"
                )
            vma_ops.munmap(self._k, mm, new_start, new_end)  # mremap_to: do_munmap first
        else:
            mremap.source_vma(mm, start, end)
            off = start % pg.PMD_SIZE
            new_start = vma_ops.get_unmapped_area(mm, off + length) + off
        mremap.move_vma(self._k, mm, start, end, new_start, fresh=new_addr is None)
        return new_start

    def mprotect(self, pid: int, addr: int, length: int, prot: str) -> None:
        _, mm = self._proc(pid)
        start, end = self._range(addr, length)
        if prot not in PROTS:
            raise InvalidArgumentError(f"prot must be one of {PROTS}, not {prot!r}")
        vma_ops.mprotect(self._k, mm, start, end, prot)

    def madvise(self, pid: int, addr: int, length: int, advice: str) -> None:
        _, mm = self._proc(pid)
        start, end = self._range(addr, length)
        if advice not in ADVICES:
            raise InvalidArgumentError(f"advice must be one of {ADVICES}, not {advice!r}")
        vma_ops.madvise(self._k, mm, start, end, advice)

    def _check_access(self, mm: Mm, start: int, end: int, write: bool) -> None:
        """``access_error`` for every page first, so that a failing call changes nothing."""
        addr = start
        while addr < end:
            vma = mm.find_vma(addr)
            if vma is None:
                raise SegmentationFault(addr, "unmapped")
            if (write and not vma.write) or not vma.read:
                raise SegmentationFault(addr, "protection")
            addr = vma.end

    def write(self, pid: int, addr: int, length: int, value: int) -> None:
        _, mm = self._proc(pid)
        start, end = self._range(addr, length)
        if not 0 <= value < U64:
            raise InvalidArgumentError(f"value must fit in 64 bits unsigned, not {value}")
        self._check_access(mm, start, end, write=True)
        for page in range(start, end, pg.PAGE_SIZE):
            vma = mm.find_vma(page)
            assert vma is not None
            pfn = fault.access(self._k, mm, vma, page, write=True)
            self._k.set_content(pfn, value)

    def read(self, pid: int, addr: int, length: int) -> list[int]:
        _, mm = self._proc(pid)
        start, end = self._range(addr, length)
        self._check_access(mm, start, end, write=False)
        values = []
        for page in range(start, end, pg.PAGE_SIZE):
            vma = mm.find_vma(page)
            assert vma is not None
            pfn = fault.access(self._k, mm, vma, page, write=False)
            values.append(self._k.content(pfn))
        return values

    def _pages(self, pid: int, addrs: list[Any] | memoryview, write: bool) -> tuple[Mm, list[int]]:
        """The process and the pages of a batch, every page checked before any is touched
        (as ``write``/``read`` do): first the items, as arguments (``check_batch``: a list of
        ints or a buffer of 64-bit integers; the binding extracts them before it calls the
        core), then the process, then each page."""
        pages = check_batch("addrs", addrs)
        _, mm = self._proc(pid)
        for addr in pages:
            start, end = self._range(addr, pg.PAGE_SIZE)
            self._check_access(mm, start, end, write=write)
        return mm, pages

    def write_pages(self, pid: int, addrs: list[Any] | memoryview, value: int) -> None:
        if not 0 <= value < U64:
            raise InvalidArgumentError(f"value must fit in 64 bits unsigned, not {value}")
        mm, pages = self._pages(pid, addrs, write=True)
        for addr in pages:
            vma = mm.find_vma(addr)
            assert vma is not None
            self._k.set_content(fault.access(self._k, mm, vma, addr, write=True), value)

    def read_pages(self, pid: int, addrs: list[Any] | memoryview) -> list[int]:
        mm, pages = self._pages(pid, addrs, write=False)
        values = []
        for addr in pages:
            vma = mm.find_vma(addr)
            assert vma is not None
            values.append(self._k.content(fault.access(self._k, mm, vma, addr, write=False)))
        return values

    def access(self, pid: int, addr: int, write: bool, value: int) -> Access:
        addr = check_u64("addr", addr)
        value = check_u64("value", value)
        _, mm = self._proc(pid)
        return self._access(mm, addr, bool(write), value)

    def _access(self, mm: Mm, addr: int, write: bool, value: int) -> Access:
        """One access and, for a completed write, the store of ``value`` in the page's
        first 8 bytes (the content model)."""
        rec = fault.user_access(self._k, mm, addr, write, _user_limit(self._k.levels))
        if write and rec.phys is not None:
            self._k.set_content(rec.phys >> pg.PAGE_SHIFT, value)
        return rec

    def access_batch(
        self,
        pid: int,
        addrs: list[Any] | memoryview,
        writes: bool | memoryview,
        value: int,
    ) -> bytearray:
        """The accesses of ``addrs`` in order, their records packed one after the other
        (``ACCESS_SIZE`` bytes each, the Rust layout); every argument is checked before the
        first access (``InvalidArgumentError``, nothing done), then the process."""
        items = check_batch("addrs", addrs)
        n = len(items)
        kinds = self._writes(writes, n)
        value = check_u64("value", value)
        _, mm = self._proc(pid)
        raw = bytearray(ACCESS_SIZE * n)
        for i, addr in enumerate(items):
            rec = self._access(mm, addr, kinds[i], value)
            ACCESS_STRUCT.pack_into(raw, i * ACCESS_SIZE, *rec.raw())
        return raw

    @staticmethod
    def _writes(writes: bool | memoryview, n: int) -> list[bool]:
        """The kind of each of ``n`` accesses: one ``bool`` for all, or a buffer of ``n``
        bytes, each 0 (read) or 1 (write)."""
        if isinstance(writes, bool):
            return [writes] * n
        try:
            view = memoryview(writes).cast("B")
        except TypeError:
            raise InvalidArgumentError(
                "writes must be a bool or a buffer of one byte (0 or 1) per address, not "
                f"{type(writes).__name__}"
            ) from None
        if len(view) != n:
            raise InvalidArgumentError(
                f"writes must have one byte per address ({n}), not {len(view)}"
            )
        kinds = view.tolist()
        for i, w in enumerate(kinds):
            if w not in (0, 1):
                raise InvalidArgumentError(f"writes[{i}] must be 0 or 1, not {w}")
        return [bool(w) for w in kinds]

    def fork(self, pid: int) -> int:
        proc, _ = self._proc(pid)
        return fork.fork(self._k, proc).pid

    def exit(self, pid: int) -> None:
        proc, _ = self._proc(pid)
        vma_ops.exit_mm(self._k, proc)

    # -- inspection ----------------------------------------------------------------------

    def rss_anon(self, pid: int) -> int:
        return self._proc(pid)[1].rss_anon

    def vmas(self, pid: int) -> list[VmaInfo]:
        _, mm = self._proc(pid)
        out = []
        for v in mm.vmas:
            prot = "rw" if v.write else ("r" if v.read else "none")
            extra = tuple(f for f in v.flags() if f not in ("read", "write"))
            out.append(VmaInfo(v.start, v.end, prot, extra))
        return out

    def smaps(self, pid: int) -> list[Smaps]:
        _, mm = self._proc(pid)
        return smaps_mod.smaps(self._k, mm)

    def translate(self, pid: int, addr: int) -> Translation:
        _, mm = self._proc(pid)
        limit = _user_limit(self._k.levels)
        if not 0 <= addr < limit:
            raise InvalidAddressError(
                f"address {addr:#x} is outside user space, which ends at {limit:#x}"
            )
        res = pg.walk(self._k.phys.tables, mm.pgd, self._k.levels, addr)
        steps = tuple(WalkLevel(*step) for step in res.steps)
        if not pg.is_present(res.entry) or (
            res.level < self._k.levels - 1 and res.level != self._k.pmd_level()
        ):
            return Translation(addr, steps, None, None)
        pfn = pg.entry_pfn(res.entry)
        if res.level == self._k.pmd_level():
            return Translation(addr, steps, pfn + ((addr >> pg.PAGE_SHIFT) & 0x1FF), pg.PMD_SIZE)
        return Translation(addr, steps, pfn, pg.PAGE_SIZE)

    def observe(self, pid: int, addr: int, length: int) -> list[PageObservation]:
        _, mm = self._proc(pid)
        start, end = self._range(addr, length)
        k = self._k
        rows: list[PageObservation] = []
        for page in range(start, end, pg.PAGE_SIZE):
            res = pg.walk(k.phys.tables, mm.pgd, k.levels, page)
            huge = res.level == k.pmd_level() and pg.is_huge(res.entry)
            if res.level == k.levels - 1 and swap.is_swap_pte(res.entry):
                # a swap entry: pagemap's PM_SWAP, nothing read (never swapped in here)
                rows.append(
                    PageObservation(page, False, None, "swap", None, None, None, None, None)
                )
                continue
            if not pg.is_present(res.entry) or not (huge or res.level == k.levels - 1):
                rows.append(PageObservation(page, False, None, None, None, None, None, None, None))
                continue
            pfn = pg.entry_pfn(res.entry)
            if huge:
                pfn += (page >> pg.PAGE_SHIFT) & 0x1FF
            if k.is_zero_pfn(pfn):
                rows.append(PageObservation(page, True, pfn, "zero", 0, 1, 0, False, 0))
                continue
            if k.is_huge_zero_pfn(pfn):
                rows.append(
                    PageObservation(page, True, pfn, "huge_zero", 0, pg.HPAGE_PMD_NR, 0, False, 0)
                )
                continue
            folio = k.page_folio[pfn]
            mapcount = folio.precise_page_mapcount(pfn - folio.pfn)
            exclusive_source = mapcount
            if huge and self._cfg.pagemap_pmd_exclusive_from_first_page:
                # pagemap_pmd_range() on newer kernels computes the exclusive bit once, from
                # the PMD's first page, and reports it for all 512 entries (measured on 7.2).
                exclusive_source = folio.precise_page_mapcount(0)
            rows.append(
                PageObservation(
                    page,
                    True,
                    pfn,
                    "normal",
                    folio.serial,
                    folio.nr_pages,
                    mapcount,
                    exclusive_source == 1,
                    k.content(pfn),
                )
            )
        return rows

    def folio(self, pfn: int) -> FolioSnapshot:
        f = self._k.page_folio.get(pfn)
        if f is None:
            raise InvalidArgumentError(f"frame {pfn} is not part of an allocated folio")
        mapcount = f.large_mapcount if f.is_large else f.page_mapcount[0]
        return FolioSnapshot(
            pfn=f.pfn,
            order=f.order,
            refcount=f.refcount,
            page_mapcounts=tuple(f.page_mapcount),
            large_mapcount=mapcount,
            entire_mapcount=f.entire_mapcount,
            nr_pages_mapped=f.nr_pages_mapped,
            mm_ids=(
                MmIdSlot(f.mm_ids[0], f.mm_id_mapcount[0]),
                MmIdSlot(f.mm_ids[1], f.mm_id_mapcount[1]),
            ),
            maybe_mapped_shared=f.shared,
            anon_exclusive=tuple(f.anon_exclusive),
            serial=f.serial,
            pincount=f.pincount,
            swap_slot=f.swapcache,
        )

    def stats(self) -> Stats:
        s = self._k.stats
        return Stats(
            anon_fault_alloc=dict(s.anon_fault_alloc),
            anon_fault_fallback=dict(s.anon_fault_fallback),
            split=dict(s.split),
            thp_fault_alloc=s.thp_fault_alloc,
            thp_split_pmd=s.thp_split_pmd,
            pgreuse=s.pgreuse,
            cow_copy=s.cow_copy,
            faults_read=s.faults_read,
            faults_write=s.faults_write,
            faults_wp=s.faults_wp,
            huge_zero_write=s.huge_zero_write,
            split_deferred=dict(s.split_deferred),
            nr_anon=dict(s.nr_anon),
            nr_anon_partially_mapped=dict(s.nr_anon_partially_mapped),
            thp_fault_fallback=s.thp_fault_fallback,
            thp_split_page=s.thp_split_page,
            thp_deferred_split_page=s.thp_deferred_split_page,
            split_failed=dict(s.split_failed),
            thp_split_page_failed=s.thp_split_page_failed,
            thp_collapse_alloc=s.thp_collapse_alloc,
            thp_collapse_alloc_failed=s.thp_collapse_alloc_failed,
            pswpin=s.pswpin,
            pswpout=s.pswpout,
            thp_swpout=s.thp_swpout,
            thp_swpout_fallback=s.thp_swpout_fallback,
            swpout=dict(s.swpout),
            swpout_fallback=dict(s.swpout_fallback),
            swpin=dict(s.swpin),
            swpin_fallback=dict(s.swpin_fallback),
        )

    def vmstat(self) -> Vmstat:
        """The gauges by their definitions, recomputed from every folio (the core keeps them
        where the kernel's rmap code updates them; the two must agree)."""
        k, s = self._k, self._k.stats
        anon_pages = thp_pages = 0
        for folio in {f.pfn: f for f in k.page_folio.values()}.values():
            if folio.entire_mapcount:  # PMD-mapped: every page counts, once
                anon_pages += folio.nr_pages
                thp_pages += folio.nr_pages
            else:
                anon_pages += sum(1 for c in folio.page_mapcount if c)
        return Vmstat(
            nr_free_pages=k.phys.buddy.free_count,
            nr_anon_pages=anon_pages,
            nr_anon_transparent_hugepages=thp_pages // pg.HPAGE_PMD_NR,
            nr_page_table_pages=len(k.phys.tables),
            thp_fault_alloc=s.thp_fault_alloc,
            thp_fault_fallback=s.thp_fault_fallback,
            thp_split_pmd=s.thp_split_pmd,
            thp_split_page=s.thp_split_page,
            thp_deferred_split_page=s.thp_deferred_split_page,
            thp_split_page_failed=s.thp_split_page_failed,
            pgreuse=s.pgreuse,
        )

    def record(self, on: bool) -> None:
        self._k.record(bool(on))

    def take_events(self) -> bytes:
        events = self._k.take_events()
        buf = bytearray(EVENT_SIZE * len(events))
        for i, event in enumerate(events):
            EVENT_STRUCT.pack_into(buf, i * EVENT_SIZE, *event.raw())
        return bytes(buf)

    def check(self) -> None:
        check_mod.check(self._k)

    def drop_caches(self) -> None:
        split.drop_caches(self._k)
