"""One real program against the simulator: ``smapsnative.c`` on the host's kernel, and the same
pattern in :class:`cowcore.Machine`, compared by their smaps lines (issue 13, "Checked against
real kernels"; docs/accounting.md "Checked against a real kernel on the host").

The program (package data, built with the host's gcc by :func:`cowcore.kernel.build.build_c`
into the user cache) maps a 2 MiB aligned private anonymous region, optionally
``madvise``\\ s it, writes every page, forks; the child writes some pages (COW copies), then
the parent writes some (copies where the child still maps the page, reuses where it does
not); the child exits. After each step each live process prints its ``/proc/self/smaps``
lines for the region's VMA and its ``/proc/self/smaps_rollup``. :func:`simulate` runs the same
steps on a machine whose profile follows the host's kernel version and whose THP knobs are
the host's (:func:`host_thp`).

What is compared is the region's VMA, every kB line of ``SMAPS_KB_FIELDS`` (and ``Size``) but
:data:`NATIVE_NOT_COMPARED` (``Referenced``: it depends on how the host's kernel was built and
what runs on it, not only on its version: whether MGLRU is on decides whether a faulted folio
gets ``PG_referenced`` (docs/accounting.md, "Referenced"; a kernel built without it, as this
kind of host is, has no ``/sys/kernel/mm/lru_gen``), and DAMON's sampler clears accessed bits.
The recorded kernels, whose configuration is known, are compared on it). The host's rollup
also counts the program's libc, stack and heap, so it is returned for reading, not compared;
the simulator's
rollup is over the same VMA set as the compared lines (the region), computed as
``show_smaps_rollup`` does.

The host can differ from the simulator in ways that are not the accounting under test. Those
known before the run raise :class:`HostNotComparableError` with the reason (not Linux, no gcc,
smaps unreadable, a THP knob the simulator cannot mirror); those seen in the result are the
mismatch patterns :func:`explain` names (a PMD THP the host did not allocate, or a PMD mapping
split or collapsed behind the program's back).
"""

from __future__ import annotations

import json
import platform
import re
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import cowcore
from cowcore.kernel.build import BuildError, build_c, package_source
from cowcore.machine import smaps_rollup
from cowcore.protocol import (
    SMAPS_KB_FIELDS,
    THP_MODES,
    THP_SIZE_MODES,
    THP_SIZES,
    KernelProfile,
    ThpMode,
    ThpSizeMode,
)

__all__ = [
    "COMPARED",
    "STEPS",
    "Comparison",
    "HostNotComparableError",
    "HostThp",
    "Pattern",
    "Snapshot",
    "compare",
    "explain",
    "host_activity",
    "host_profile",
    "host_thp",
    "run_native",
    "simulate",
]

CFLAGS = ["-O2", "-Wall", "-Wextra"]
PAGE = 4096
THP_SYSFS = Path("/sys/kernel/mm/transparent_hugepage")
STEPS = ("written", "child_wrote", "parent_wrote", "child_exited")
"""The program's steps, in order (``smapsnative.c`` says what each does)."""
VMSTAT_EVIDENCE = ("thp_fault_fallback", "thp_split_pmd", "thp_collapse_alloc")
"""The ``/proc/vmstat`` counters :func:`explain` wants as evidence of a host-side cause."""
NATIVE_NOT_COMPARED = frozenset({"Referenced"})
"""The smaps lines the host comparison skips (see the module docstring)."""
COMPARED = ("Size", *(f for f in SMAPS_KB_FIELDS if f not in NATIVE_NOT_COMPARED))
"""The per-VMA kB lines compared."""

Advice = Literal["none", "hugepage", "nohugepage"]


class HostNotComparableError(Exception):
    """The host cannot be compared with the simulator; the message says precisely why."""


@dataclass(frozen=True)
class Pattern:
    """What the program does: a ``kib`` KiB region with ``advice``; the child writes pages
    ``[child_first, child_first + child_pages)``, then the parent
    ``[parent_first, parent_first + parent_pages)`` (4 KiB page indices)."""

    kib: int
    advice: Advice
    child_first: int
    child_pages: int
    parent_first: int
    parent_pages: int

    def args(self) -> list[str]:
        """The program's command line after its name."""
        return [
            str(self.kib),
            self.advice,
            str(self.child_first),
            str(self.child_pages),
            str(self.parent_first),
            str(self.parent_pages),
        ]


@dataclass(frozen=True)
class Snapshot:
    """One process's smaps after one step: the region's VMA lines and the rollup, in kB."""

    step: str
    who: Literal["parent", "child"]
    vma: dict[str, int]
    rollup: dict[str, int]


@dataclass(frozen=True)
class HostThp:
    """The host's ``/sys/kernel/mm/transparent_hugepage`` knobs that the simulator mirrors."""

    enabled: ThpMode
    sizes: dict[str, ThpSizeMode]
    use_zero_page: bool

    def effective(self, advice: Advice) -> list[str]:
        """The sizes a fault may allocate in a VMA with ``advice``
        (``thp_vma_allowable_orders``: ``always``, ``madvise`` under ``MADV_HUGEPAGE``, or
        ``inherit`` following ``enabled`` the same way; none under ``MADV_NOHUGEPAGE``)."""
        if advice == "nohugepage":
            return []
        allowed = {"always"} | ({"madvise"} if advice == "hugepage" else set())
        return [
            size
            for size, mode in self.sizes.items()
            if mode in allowed or (mode == "inherit" and self.enabled in allowed)
        ]


@dataclass
class Comparison:
    """Both sides of one run: the host's and the simulator's snapshots (in the program's
    order), the simulator's rollup over the compared VMA set, and the differences."""

    pattern: Pattern
    profile: KernelProfile
    thp: HostThp
    host: list[Snapshot]
    simulated: list[Snapshot]
    activity: list[str] = field(default_factory=list)
    host_vmstat: dict[str, int] = field(default_factory=dict)
    """The growth of :data:`VMSTAT_EVIDENCE` in ``/proc/vmstat`` over the program's run
    (machine-wide: other processes add to it too)."""
    simulated_vmstat: dict[str, int] = field(default_factory=dict)
    """The same counters on the simulated machine."""

    def diffs(self) -> list[str]:
        """``step who field: host != simulator`` for every compared line that differs."""
        out: list[str] = []
        for h, s in zip(self.host, self.simulated, strict=True):
            out.extend(
                f"{h.step} {h.who} {key}: host {h.vma.get(key)} != simulator {s.vma[key]}"
                for key in COMPARED
                if h.vma.get(key) != s.vma[key]
            )
        return out


def host_profile(release: str | None = None) -> KernelProfile:
    """The simulator profile of a kernel release (``uname -r``): ``6.12`` before 6.15, else
    ``6.15`` (the profile of every later kernel seen so far)."""
    release = release or platform.release()
    m = re.match(r"(\d+)\.(\d+)", release)
    if m is None:
        raise HostNotComparableError(f"kernel release {release!r} has no version number")
    return "6.12" if (int(m[1]), int(m[2])) < (6, 15) else "6.15"


def _selected(path: Path) -> str:
    """The bracketed choice of a sysfs knob (``always [madvise] never`` -> ``madvise``)."""
    text = path.read_text()
    m = re.search(r"\[(\S+)\]", text)
    return m[1] if m else text.strip()


def host_thp(root: Path = THP_SYSFS) -> HostThp:
    """The host's THP knobs as simulator settings; a kernel without THP is ``never``.

    Raises:
        HostNotComparableError: a knob holds a value, or enables a size, that the simulator
            does not have.
    """
    if not root.is_dir():
        return HostThp("never", dict.fromkeys(THP_SIZES, "never"), False)
    enabled = _selected(root / "enabled")
    if enabled not in THP_MODES:
        raise HostNotComparableError(
            f"{root}/enabled is {enabled!r}; the simulator has {THP_MODES}"
        )
    sizes: dict[str, ThpSizeMode] = {}
    for knob in sorted(root.glob("hugepages-*kB/enabled")):
        kb = int(knob.parent.name.removeprefix("hugepages-").removesuffix("kB"))
        name = f"{kb // 1024}M" if kb >= 1024 else f"{kb}K"
        mode = _selected(knob)
        if mode not in THP_SIZE_MODES:
            raise HostNotComparableError(f"{knob} is {mode!r}; the simulator has {THP_SIZE_MODES}")
        if name not in THP_SIZES:
            if mode != "never":
                raise HostNotComparableError(
                    f"{knob} is {mode!r}: the simulator has no {name} THP size"
                )
            continue
        sizes[name] = cast(ThpSizeMode, mode)
    if not sizes:  # before 6.8 (no per-size knobs): PMD THPs follow `enabled`
        sizes = dict.fromkeys(THP_SIZES, "never")
        sizes["2M"] = "inherit"
    zero = root / "use_zero_page"
    use_zero_page = zero.read_text().strip() == "1" if zero.exists() else True
    return HostThp(cast(ThpMode, enabled), sizes, use_zero_page)


def host_activity() -> list[str]:
    """Background memory work on the host that can act on the program's pages: DAMON
    contexts that are on (with their operations and scheme actions) and khugepaged's
    settings. Informational; :func:`explain` uses it to name a mismatch's cause."""
    notes: list[str] = []
    for state in sorted(Path("/sys/kernel/mm/damon/admin/kdamonds").glob("*/state")):
        if state.read_text().strip() != "on":
            continue
        for ctx in sorted(state.parent.glob("contexts/[0-9]*")):
            ops = (ctx / "operations").read_text().strip()
            actions = sorted(
                a.read_text().strip() for a in ctx.glob("schemes/[0-9]*/action") if a.exists()
            )
            notes.append(
                f"DAMON {state.parent.name}/{ctx.name} on ({ops}; schemes: "
                f"{', '.join(actions) or 'none'})"
            )
    damon_stat = Path("/sys/module/damon_stat/parameters/enabled")
    if damon_stat.exists() and damon_stat.read_text().strip() == "Y":
        notes.append("DAMON_STAT on")
    khp = THP_SYSFS / "khugepaged"
    if (khp / "pages_to_scan").exists():
        notes.append(
            f"khugepaged scans {(khp / 'pages_to_scan').read_text().strip()} pages every "
            f"{(khp / 'scan_sleep_millisecs').read_text().strip()} ms"
        )
    return notes


def check_host() -> None:
    """That this host can be compared at all: Linux, with readable ``/proc/self/smaps``.

    Raises:
        HostNotComparableError: saying which of the two is missing.
    """
    if sys.platform != "linux":
        raise HostNotComparableError(f"not Linux ({sys.platform}): there is no /proc/<pid>/smaps")
    for name in ("smaps", "smaps_rollup"):
        try:
            Path(f"/proc/self/{name}").read_bytes()
        except OSError as err:
            raise HostNotComparableError(f"/proc/self/{name} is unreadable: {err}") from None


def read_vmstat(names: Iterable[str] = VMSTAT_EVIDENCE) -> dict[str, int]:
    """The ``/proc/vmstat`` counters ``names`` (0 for one the kernel lacks, or everywhere if
    the file is unreadable): the evidence a run's mismatch is checked against."""
    counters = dict.fromkeys(names, 0)
    try:
        text = Path("/proc/vmstat").read_text()
    except OSError:
        return counters
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in counters:
            counters[name] = int(value)
    return counters


def run_program(
    name: str,
    args: Sequence[str] = (),
    stdin: str | None = None,
    evidence: Iterable[str] = VMSTAT_EVIDENCE,
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Build the package's ``NAME.c`` with the host's gcc (into the user cache), run it with
    ``args`` and ``stdin``: the JSON object of each line it prints, and the growth of the
    ``/proc/vmstat`` counters ``evidence`` over the run.

    Raises:
        HostNotComparableError: no gcc, or the build failed.
        RuntimeError: the program exited with an error.
    """
    try:
        exe = build_c(package_source("cowcore", f"{name}.c"), name, CFLAGS)
    except BuildError as err:
        raise HostNotComparableError(str(err)) from None
    names = tuple(evidence)
    before = read_vmstat(names)
    cmd = [str(exe), *args]
    proc = subprocess.run(cmd, input=stdin, check=False, capture_output=True, text=True)
    after = read_vmstat(names)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr}")
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    return lines, {k: after[k] - before[k] for k in names}


def run_native(pattern: Pattern) -> tuple[list[Snapshot], dict[str, int]]:
    """Build and run ``smapsnative`` with ``pattern``: its snapshots, in order, and the
    growth of the :data:`VMSTAT_EVIDENCE` counters over the run.

    Raises:
        HostNotComparableError: not Linux, smaps unreadable, no gcc or the build failed.
        RuntimeError: the program failed or printed something else than expected.
    """
    check_host()
    lines, grown = run_program("smapsnative", pattern.args())
    snaps: list[Snapshot] = []
    for obj in lines:
        if obj["end"] == 0:
            raise RuntimeError(f"smaps has no VMA at {obj['start']:#x} in step {obj['step']}")
        snaps.append(Snapshot(obj["step"], obj["who"], obj["vma"], obj["rollup"]))
    return snaps, grown


def _snapshot(
    step: str, who: Literal["parent", "child"], proc: cowcore.Process, addr: int, length: int
) -> Snapshot:
    records = [r for r in proc.smaps() if addr <= r.start and r.end <= addr + length]
    vma = {"Size": sum(r.size for r in records) >> 10}
    for r in records:
        for key, kb in r.kb().items():
            vma[key] = vma.get(key, 0) + kb
    return Snapshot(step, who, vma, {"Size": vma["Size"], **smaps_rollup(records).kb()})


def simulate(
    pattern: Pattern, profile: KernelProfile, thp: HostThp, backend: str = "rust"
) -> tuple[list[Snapshot], dict[str, int]]:
    """The program's steps on a simulated machine with ``profile`` and the host's THP knobs:
    the same snapshots, in the program's order (``smapsnative.c``), and the machine's
    :data:`VMSTAT_EVIDENCE` counters (no fallback and no khugepaged in the simulator)."""
    m = cowcore.Machine(profile, backend=backend)
    m.thp.enabled = thp.enabled
    for size, mode in thp.sizes.items():
        m.thp.sizes[size] = mode
    m.thp.use_zero_page = thp.use_zero_page
    length = pattern.kib * 1024
    p = m.init
    a = p.mmap(length)
    if pattern.advice != "none":
        p.madvise(a, length, pattern.advice)
    p.write(a, length)
    snaps = [_snapshot("written", "parent", p, a, length)]
    c = p.fork()
    if pattern.child_pages:
        c.write(a + pattern.child_first * PAGE, pattern.child_pages * PAGE)
    snaps += [
        _snapshot("child_wrote", "parent", p, a, length),
        _snapshot("child_wrote", "child", c, a, length),
    ]
    if pattern.parent_pages:
        p.write(a + pattern.parent_first * PAGE, pattern.parent_pages * PAGE)
    snaps += [
        _snapshot("parent_wrote", "parent", p, a, length),
        _snapshot("parent_wrote", "child", c, a, length),
    ]
    c.exit()
    snaps.append(_snapshot("child_exited", "parent", p, a, length))
    stats = dict.fromkeys(VMSTAT_EVIDENCE, 0)
    stats["thp_split_pmd"] = m.stats().thp_split_pmd
    return snaps, stats


def compare(pattern: Pattern, backend: str = "rust") -> Comparison:
    """Run ``pattern`` natively and in the simulator (profile from the host's kernel
    version, THP knobs from the host's sysfs).

    Raises:
        HostNotComparableError: see :func:`run_native` and :func:`host_thp`.
    """
    check_host()
    thp = host_thp()
    profile = host_profile()
    activity = host_activity()
    host, host_vmstat = run_native(pattern)
    simulated, sim_vmstat = simulate(pattern, profile, thp, backend)
    if [(s.step, s.who) for s in host] != [(s.step, s.who) for s in simulated]:
        raise RuntimeError(f"the program printed steps {[(s.step, s.who) for s in host]}")
    return Comparison(pattern, profile, thp, host, simulated, activity, host_vmstat, sim_vmstat)


def explain(cmp: Comparison) -> str | None:
    """The host-side cause of ``cmp``'s differences, when they form a pattern that is not
    the accounting under test; None when there are none or they are unexplained.

    Recognised: differences in ``AnonHugePages`` only (the same pages are present, private
    and shared alike, but a different share is PMD-mapped), each only with its evidence in
    ``/proc/vmstat`` (:attr:`Comparison.host_vmstat`), so that a simulator that maps the
    wrong share by PMD still fails:

    - fewer PMD mappings in the ``written`` step, ``thp_fault_fallback`` grew: the fault
      fell back (no free 2 MiB block, see ``defrag``);
    - fewer later, the host split more PMDs (``thp_split_pmd``) than the simulator: a split
      behind the program's back (DAMON's ``pageout`` scheme splits a large anon folio it
      cannot swap out, as does reclaim under memory pressure);
    - more, ``thp_collapse_alloc`` grew: khugepaged collapsed a range.

    DAMON's other effects do not show in the compared lines: its sampler's short folio
    references can only turn a COW reuse into a copy, which leaves the same pages present
    and private, and the accessed bits it clears are ``Referenced``.
    """
    fields = set()
    fewer_written = fewer_later = more = False
    for h, s in zip(cmp.host, cmp.simulated, strict=True):
        for key in COMPARED:
            if h.vma.get(key) == s.vma[key]:
                continue
            fields.add(key)
            if key == "AnonHugePages":
                if h.vma[key] > s.vma[key]:
                    more = True
                elif h.step == "written":
                    fewer_written = True
                else:
                    fewer_later = True
    if fields != {"AnonHugePages"}:
        return None
    grew = {name: cmp.host_vmstat.get(name, 0) for name in VMSTAT_EVIDENCE}
    active = "; ".join(cmp.activity) or "no DAMON context on"
    if more and grew["thp_collapse_alloc"] > 0:
        return (
            "the host has more PMD-mapped THPs than the simulator: khugepaged collapsed "
            f"a range (thp_collapse_alloc +{grew['thp_collapse_alloc']}; {active})"
        )
    if more:
        return None
    if fewer_written and grew["thp_fault_fallback"] > 0:
        defrag = THP_SYSFS / "defrag"
        mode = _selected(defrag) if defrag.exists() else "?"
        return (
            "the host fell back from a PMD THP at fault (thp_fault_fallback "
            f"+{grew['thp_fault_fallback']}: no free 2 MiB block; defrag {mode})"
        )
    splits = grew["thp_split_pmd"] - cmp.simulated_vmstat.get("thp_split_pmd", 0)
    if fewer_later and not fewer_written and splits > 0:
        return (
            "a PMD mapping was split behind the program's back (thp_split_pmd "
            f"{splits} more than the simulator's; {active})"
        )
    return None
