"""The snapshot workload against the host's kernel: ``snapshotnative.c`` runs the steps the
workload draws, and the child's ``Private_Dirty`` after each is compared with the
simulator's (issue 14, "Checked"; docs/workloads.md "Checked against the host's kernel").

:func:`cowcore.workloads.snapshot.steps` draws the run's steps from its parameters (what
the child reads and which pages the parent writes in each); the program (package data,
built with the host's gcc by :func:`cowcore.kernel.build.build_c` into the user cache)
takes them on its standard input, maps a ``MADV_NOHUGEPAGE`` heap (4 KiB pages whatever the
host's THP knobs are), writes it, forks, and in each step lets the child read its pages,
the parent write its pages, and the child read its ``/proc/self/smaps``, the two taking
turns through pipes. The simulator's side is the workload itself
(:func:`cowcore.workloads.snapshot.run`) with the host's profile (:func:`host_profile`) and
``thp.enabled = never``, which gives 4 KiB pages as ``MADV_NOHUGEPAGE`` does
(``thp_vma_allowable_orders`` allows no order in either); its timeline's
``current_cow_size_kb`` is the child's ``Private_Dirty``.

What is compared is the child's ``Private_Dirty`` of the heap's VMA after each step, for
equality. Redis sums the line over every VMA of the child; the program's libc, stack and
stdio buffers would add a few host-specific kB, so the native side reads the heap's VMA
only, which in the simulator is the child's only VMA.

The host's background work cannot move this number. DAMON's sampler takes short folio
references, which can turn a write-protect fault's reuse into a copy
(``wp_can_reuse_anon_folio`` sees the extra reference); in this pattern the parent reuses
only pages it has already copied, which the child no longer maps, so a copy there instead
changes the parent's memory and not the child's. The parent's first write to a page the
child still maps is a copy on any kernel (the folio is mapped twice). DAMON's ``pageout``
scheme cannot reclaim anonymous memory without swap, and splits only large folios, of
which a ``MADV_NOHUGEPAGE`` heap has none; with swap it could page a cold heap page out,
which shows as a child ``Rss`` below the heap's size: :func:`explain` names that (with
the growth of ``pswpout`` as evidence) rather than letting it pass.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field

from cowcore.native_smaps import (
    HostNotComparableError,
    check_host,
    host_activity,
    host_profile,
    run_program,
)
from cowcore.protocol import KernelProfile
from cowcore.workloads import get
from cowcore.workloads.base import Scalar
from cowcore.workloads.snapshot import Step, steps

__all__ = [
    "Reading",
    "SnapshotComparison",
    "compare",
    "explain",
    "plan_text",
    "run_native",
    "simulate",
]

PAGE = 4096
VMSTAT_EVIDENCE = ("pswpout",)
"""The ``/proc/vmstat`` counters :func:`explain` wants as evidence of a page-out."""


@dataclass(frozen=True)
class Reading:
    """The child's smaps reading after one step: the heap's VMA ``kB`` lines."""

    step: int
    vma: dict[str, int]


@dataclass
class SnapshotComparison:
    """One run on both sides.

    Attributes:
        params: the workload's resolved parameters (the simulator's run).
        release: the host's kernel release (``uname -r``).
        host: the native child's readings, one per step the child is alive.
        simulated: the simulator's ``current_cow_size_kb`` for the same steps.
        activity: :func:`cowcore.native_smaps.host_activity` at the run.
        host_vmstat: the growth of :data:`VMSTAT_EVIDENCE` over the program's run.
    """

    params: dict[str, Scalar]
    release: str
    host: list[Reading]
    simulated: list[int]
    activity: list[str] = field(default_factory=list)
    host_vmstat: dict[str, int] = field(default_factory=dict)

    @property
    def heap_kb(self) -> int:
        """The heap's size in kB."""
        return self.host[0].vma["Size"] if self.host else 0

    def diffs(self) -> list[str]:
        """``step N: host X kB != simulator Y kB`` for every reading that differs."""
        return [
            f"step {h.step}: host {h.vma.get('Private_Dirty')} kB != simulator {s} kB"
            for h, s in zip(self.host, self.simulated, strict=True)
            if h.vma.get("Private_Dirty") != s
        ]

    def agreement(self) -> str:
        """One line for a report: how many readings agree and the largest one."""
        same = sum(
            h.vma.get("Private_Dirty") == s for h, s in zip(self.host, self.simulated, strict=True)
        )
        return (
            f"{same}/{len(self.host)} readings equal; largest host "
            f"{max((h.vma.get('Private_Dirty', 0) for h in self.host), default=0)} kB, "
            f"simulator {max(self.simulated, default=0)} kB"
        )


def _resolve(params: Mapping[str, Scalar], profile: KernelProfile) -> dict[str, Scalar]:
    """The workload's parameters for a 4 KiB comparison on ``profile``.

    Raises:
        InvalidArgumentError: ``params`` sets a THP knob or the kernel (the comparison
            sets them), or holds a bad parameter.
    """
    from cowcore.errors import InvalidArgumentError  # noqa: PLC0415

    fixed = [k for k in params if k.startswith("thp.") or k == "kernel"]
    if fixed:
        raise InvalidArgumentError(
            f"the native comparison sets {', '.join(fixed)} itself (4 KiB pages, the "
            "host's profile)"
        )
    return get("snapshot").resolve({**params, "kernel": profile, "thp.enabled": "never"})


def plan_text(plan: list[Step], npages: int) -> str:
    """The program's standard input for the child's steps of ``plan``
    (``snapshotnative.c`` describes the format)."""
    lines = [f"{npages} {len(plan)}"]
    for st in plan:
        pages = " ".join(map(str, st.pages.tolist()))
        lines.append(f"{st.scan[0]} {st.scan[1]} {len(st.pages)} {pages}".rstrip())
    return "\n".join(lines) + "\n"


def run_native(params: Mapping[str, Scalar]) -> tuple[list[Reading], dict[str, int]]:
    """Build and run ``snapshotnative`` on the steps of the resolved snapshot ``params``
    while the child is alive: the child's readings, in order, and the growth of
    :data:`VMSTAT_EVIDENCE` over the run.

    Raises:
        HostNotComparableError: not Linux, smaps unreadable, pages not 4 KiB, no gcc or the
            build failed.
        RuntimeError: the program failed or printed something else than expected.
    """
    check_host()
    if os.sysconf("SC_PAGE_SIZE") != PAGE:
        raise HostNotComparableError(
            f"the host's base page is {os.sysconf('SC_PAGE_SIZE')} bytes; the simulator's is {PAGE}"
        )
    plan = [st for st in steps(params) if st.alive]
    lines, grown = run_program(
        "snapshotnative", stdin=plan_text(plan, _heap_pages(params)), evidence=VMSTAT_EVIDENCE
    )
    readings: list[Reading] = []
    for obj in lines:
        if obj["end"] == 0:
            raise RuntimeError(f"the child's smaps has no heap VMA in step {obj['step']}")
        readings.append(Reading(obj["step"], obj["vma"]))
    if [r.step for r in readings] != [st.step for st in plan]:
        raise RuntimeError(f"the program printed steps {[r.step for r in readings]}")
    return readings, grown


def _heap_pages(params: Mapping[str, Scalar]) -> int:
    from cowcore.workloads import _common  # noqa: PLC0415

    return _common.size(params, "heap") // PAGE


def simulate(params: Mapping[str, Scalar]) -> list[int]:
    """The workload's ``current_cow_size_kb`` for each step the child is alive, on the
    simulator (``params`` resolved)."""
    result = get("snapshot").run(params)
    return [int(row["current_cow_size_kb"]) for row in result.timeline if row["child_alive"]]


def compare(params: Mapping[str, Scalar], backend: str = "rust") -> SnapshotComparison:
    """Run the snapshot workload's steps natively and on the simulator (the host's profile,
    4 KiB pages) and pair the child's readings.

    ``params`` are the workload's own (``heap``, ``pattern``, ``seed``, ...); the kernel
    and the THP knobs are set here.

    Raises:
        HostNotComparableError: see :func:`run_native`.
        InvalidArgumentError: see :func:`_resolve`.
    """
    check_host()
    full = _resolve({**params, "backend": backend}, host_profile())
    activity = host_activity()
    host, grew = run_native(full)
    return SnapshotComparison(full, platform.release(), host, simulate(full), activity, grew)


def explain(cmp: SnapshotComparison) -> str | None:
    """The host-side cause of ``cmp``'s differences, when it is one the comparison is not
    about; None when there are none or they are unexplained.

    Recognised: a child reading whose ``Rss`` is below the heap's size (pages of the heap
    were not resident: paged out), with ``pswpout`` grown over the run as evidence. Every
    other difference is the simulator's to answer for.
    """
    if not cmp.diffs():
        return None
    short = [h.step for h in cmp.host if h.vma.get("Rss", 0) < h.vma.get("Size", 0)]
    swapped = cmp.host_vmstat.get("pswpout", 0)
    if short and swapped > 0:
        return (
            f"the child's heap was not all resident in steps {short} (pswpout +{swapped}: "
            f"the host paged heap pages out; {'; '.join(cmp.activity) or 'no DAMON context on'})"
        )
    return None


def main(argv: list[str] | None = None) -> int:
    """``python -m cowcore.native_snapshot [-p KEY=VALUE ...]``: run one comparison and
    print the child's ``Private_Dirty`` per step, host beside simulator (exit status 1 if
    they differ, 2 if the host cannot be compared or a parameter is bad)."""
    import argparse  # noqa: PLC0415

    from cowcore.errors import CowError  # noqa: PLC0415
    from cowcore.sweep import parse_assignments, typed_params  # noqa: PLC0415

    parser = argparse.ArgumentParser(
        prog="python -m cowcore.native_snapshot",
        description="The snapshot workload on this host's kernel (4 KiB pages) against the "
        "simulator: the child's Private_Dirty after each step.",
    )
    parser.add_argument(
        "-p",
        dest="params",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a snapshot parameter (heap, pattern, seed, ...; repeatable)",
    )
    parser.add_argument("--backend", default="rust", choices=("rust", "reference"))
    args = parser.parse_args(argv)
    try:
        cmp = compare(typed_params("snapshot", parse_assignments(args.params)), args.backend)
    except (HostNotComparableError, CowError) as err:
        print(f"cowcore: native_snapshot: {err}", file=sys.stderr)
        return 2
    shown = {k: v for k, v in cmp.params.items() if k in get("snapshot").defaults}
    print(f"kernel {cmp.release} (profile {cmp.params['kernel']}), 4 KiB pages; {shown}")
    print(f"host: {'; '.join(cmp.activity) or 'no DAMON context on'}")
    print("step  host Private_Dirty (kB)  simulator (kB)")
    for h, s in zip(cmp.host, cmp.simulated, strict=True):
        mark = "" if h.vma.get("Private_Dirty") == s else "  differs"
        print(f"{h.step:4d}  {h.vma.get('Private_Dirty', 0):23d}  {s:14d}{mark}")
    print(cmp.agreement())
    cause = explain(cmp)
    if cause:
        print(f"host-side cause: {cause}")
    return 1 if cmp.diffs() else 0


if __name__ == "__main__":
    sys.exit(main())
