"""Small real workloads for the sweep, comparison and plot tests.

They are registered under names starting with ``test_`` when this module is imported; a
sweep spec lists the module in ``imports`` so that the worker processes register them too.
Each builds a real machine with :func:`cowcore.workloads.machine_from_params`, so that a
sweep over kernel profiles and THP sizes measures what the simulator does, not constants.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping

from cowcore import Machine
from cowcore.errors import InvalidArgumentError
from cowcore.outcome import Reason
from cowcore.workloads import Scalar, Workload, WorkloadResult, machine_from_params, register

PAGE = 4096

REASONS = tuple(r for r in Reason if r is not Reason.NONE)
"""The fault reasons the workload counts (``faults.<reason>`` metrics, lower case)."""


def _used_kb(m: Machine) -> int:
    return (m.total_frames - m.free_frames()) * PAGE // 1024


def fork_write(params: Mapping[str, Scalar]) -> WorkloadResult:
    """The parent writes ``pages`` pages and forks; then the ``writer`` writes a
    ``fraction`` of them chosen at random (``seed``) in ``steps`` equal chunks: the
    ``child`` while both live (every write a copy), or the ``parent`` after the child has
    exited (a reuse where the kernel reuses, a copy where it does not: 6.12 with large
    folios). The machine's used memory after each chunk is the timeline; the copies,
    reuses, the writer's ``smaps_rollup`` and its write faults by reason are the metrics."""
    m = machine_from_params(params)
    pages = int(params["pages"])
    steps = int(params["steps"])
    parent = m.init
    base = parent.mmap(pages * PAGE)
    parent.write(base, pages * PAGE)
    child = parent.fork()
    writer = child
    if params["writer"] == "parent":
        child.exit()
        writer = parent
    elif params["writer"] != "child":
        raise InvalidArgumentError(f"writer must be child or parent, not {params['writer']!r}")
    chosen = random.Random(int(params["seed"])).sample(
        range(pages), round(float(params["fraction"]) * pages)
    )
    before = m.stats()
    reasons = dict.fromkeys((f"faults.{r.name.lower()}" for r in REASONS), 0)
    timeline: list[dict[str, Scalar]] = [{"step": 0, "written_pages": 0, "used_kb": _used_kb(m)}]
    for step in range(1, steps + 1):
        chunk = chosen[(step - 1) * len(chosen) // steps : step * len(chosen) // steps]
        records = writer.access_batch([base + i * PAGE for i in chunk], True)
        for code in records["reason"]:
            if code:
                reasons[f"faults.{Reason(int(code)).name.lower()}"] += 1
        timeline.append(
            {"step": step, "written_pages": step * len(chosen) // steps, "used_kb": _used_kb(m)}
        )
    after = m.stats()
    rollup = writer.smaps_rollup().kb()
    m.check()
    metrics: dict[str, Scalar] = {
        "copies": after.cow_copy - before.cow_copy,
        "reuses": after.pgreuse - before.pgreuse,
        "private_dirty_kb": rollup["Private_Dirty"],
        "rss_kb": rollup["Rss"],
        "used_kb": _used_kb(m),
        **reasons,
    }
    return WorkloadResult("test_fork_write", dict(params), metrics, tuple(timeline))


FORK_WRITE = register(
    Workload(
        name="test_fork_write",
        defaults={"pages": 64, "fraction": 0.5, "seed": 0, "steps": 4, "writer": "child"},
        run=fork_write,
        doc="Fault pages, fork, write a fraction of them in the child or, after it exits, "
        "in the parent (a test workload).",
    )
)


def host_process(params: Mapping[str, Scalar]) -> WorkloadResult:
    """Faults ``pages`` pages and reports the host process it ran in (the engines' test:
    one process per point); with ``die`` the host process exits abruptly instead, as one
    killed by the OOM killer would."""
    if params["die"]:
        os._exit(3)
    m = machine_from_params(params)
    p = m.init
    p.write(p.mmap(int(params["pages"]) * PAGE), int(params["pages"]) * PAGE)
    metrics: dict[str, Scalar] = {"host_pid": os.getpid(), "rss_kb": p.smaps_rollup().kb()["Rss"]}
    return WorkloadResult("test_host_process", dict(params), metrics)


HOST_PROCESS = register(
    Workload(
        name="test_host_process",
        defaults={"pages": 4, "die": False, "seed": 0},
        run=host_process,
        doc="Fault a few pages and report the host pid (a test workload).",
    )
)
