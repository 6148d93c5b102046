"""mprotect: VMA splits, entry rewrites, write upgrades of exclusive pages only."""

from __future__ import annotations

import pytest

from cowcore import InvalidAddressError, SegmentationFault
from tests.conftest import KiB, MachineFactory, MiB


def test_readonly_segfaults_on_write_and_changes_nothing(make_machine: MachineFactory) -> None:
    m = make_machine()
    a = m.init.mmap(2 * MiB)
    m.init.write(a, 8 * KiB, value=1)
    m.init.mprotect(a + 4 * KiB, 4 * KiB, "r")
    with pytest.raises(SegmentationFault) as info:
        m.init.write(a, 8 * KiB, value=2)
    assert info.value.addr == a + 4 * KiB and info.value.reason == "protection"
    assert m.init.read(a, 8 * KiB) == [1, 1], "the failing write did not store page 0 either"
    assert len(m.init.vmas()) == 3


def test_prot_none_blocks_reads_but_stays_present(make_machine: MachineFactory) -> None:
    m = make_machine()
    a = m.init.mmap(2 * MiB)
    m.init.write(a, value=6)
    m.init.mprotect(a, 2 * MiB, "none")
    with pytest.raises(SegmentationFault):
        m.init.read(a)
    o = m.init.observe(a)[0]
    assert o.present and o.content == 6
    flags = m.init.translate(a).steps[-1].flags
    assert "PROTNONE" in flags and "P" not in flags
    m.init.mprotect(a, 2 * MiB, "rw")
    assert "RW" in m.init.translate(a).steps[-1].flags, "exclusive page: writable again"
    assert m.init.read(a) == [6]


def test_mprotect_over_unmapped_pages_is_enomem(make_machine: MachineFactory) -> None:
    m = make_machine()
    a = m.init.mmap(2 * MiB)
    with pytest.raises(InvalidAddressError, match="ENOMEM"):
        m.init.mprotect(a, 4 * MiB, "r")
    assert m.init.vmas()[0][2] == "rw"


def test_mprotect_cutting_a_thp_splits_it(make_machine: MachineFactory) -> None:
    m = make_machine()
    m.thp.sizes["2M"] = "always"
    a = m.init.mmap(2 * MiB)
    m.init.write(a)
    m.init.mprotect(a + 4 * KiB, 4 * KiB, "r")
    assert m.stats()["thp_split_pmd"] == 1
    assert m.init.translate(a).page_size == 4096
    m.init.mprotect(a + 4 * KiB, 4 * KiB, "rw")
    assert "RW" in m.init.translate(a + 4 * KiB).steps[-1].flags


def test_whole_thp_mprotect_keeps_the_pmd(make_machine: MachineFactory) -> None:
    m = make_machine()
    m.thp.sizes["2M"] = "always"
    a = m.init.mmap(2 * MiB)
    m.init.write(a)
    m.init.mprotect(a, 2 * MiB, "r")
    t = m.init.translate(a)
    assert t.page_size == 2 * MiB and "RW" not in t.steps[-1].flags
    m.init.mprotect(a, 2 * MiB, "rw")
    assert "RW" in m.init.translate(a).steps[-1].flags
    assert m.stats()["thp_split_pmd"] == 0
