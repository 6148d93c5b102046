"""``snapshot``: a Redis/Valkey ``BGSAVE`` or AOF rewrite (docs/workloads.md).

The server's heap of ``heap`` bytes is written; the server forks; the child reads the heap
in address order (serialising it) and exits, while the parent keeps serving writes, each of
``value_size`` bytes at a key drawn from a uniform, Gaussian or sequential pattern. Every
``1 / samples`` of the scan the child's ``Private_Dirty`` is read from its smaps, as Redis's
child does (``sendChildInfoGeneric`` in src/childinfo.c calls ``zmalloc_get_private_dirty``
and ``INFO`` reports it as ``current_cow_size``; ``current_cow_peak`` is the largest such
reading, ``updateChildInfo``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cowcore.errors import InvalidArgumentError
from cowcore.outcome import Outcome
from cowcore.workloads import _common as c
from cowcore.workloads.base import Scalar, Workload, WorkloadResult, register

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

PATTERNS = ("uniform", "gaussian", "sequential")

DEFAULTS: Mapping[str, Scalar] = {
    "heap": "1G",
    "value_size": 512,
    "pattern": "uniform",
    "sigma": 0.1,
    "writes_per_s": 10000.0,
    "scan_mb_s": 256.0,
    "after_s": 0.0,
    "samples": 50,
    "seed": 0,
    "memory": "auto",
}

METRICS = (
    "duration_s",
    "parent_writes",
    "pages_written",
    "current_cow_size_kb",
    "current_cow_peak_kb",
    "copies",
    "reuses",
    "pmd_reuses",
    "pmd_splits",
    "faults",
    "parent_rss_kb",
    "memory_peak_kb",
    "memory_end_kb",
    "machine_memory_kb",
)


def keys_to_pages(keys: npt.NDArray[np.int64], value_size: int) -> npt.NDArray[np.int64]:
    """The heap pages a write of each key's value covers, in write order: key ``k``'s value
    is bytes ``[k * value_size, (k + 1) * value_size)`` of the heap."""
    import numpy as np  # noqa: PLC0415

    first = keys * value_size // c.PAGE
    last = (keys * value_size + value_size - 1) // c.PAGE
    span = last - first + 1
    if len(span) == 0 or int(span.max()) == 1:
        return first
    starts = np.repeat(first - np.cumsum(span) + span, span)
    return starts + np.arange(int(span.sum()), dtype=np.int64)


def draw_keys(
    rng: np.random.Generator,
    pattern: str,
    n: int,
    nkeys: int,
    sigma: float,
    next_seq: int,
) -> npt.NDArray[np.int64]:
    """``n`` keys in ``[0, nkeys)``: uniform; Gaussian around the middle key with a
    standard deviation of ``sigma * nkeys`` (clipped to the key space); or sequential from
    ``next_seq`` on, wrapping."""
    import numpy as np  # noqa: PLC0415

    if pattern == "uniform":
        return rng.integers(0, nkeys, n, dtype=np.int64)
    if pattern == "gaussian":
        x = rng.normal(nkeys / 2, sigma * nkeys, n)
        return np.clip(np.floor(x), 0, nkeys - 1).astype(np.int64)
    return (next_seq + np.arange(n, dtype=np.int64)) % nkeys


@dataclass(frozen=True)
class Step:
    """One reading interval of the run, as :func:`steps` plans it (no machine needed).

    Attributes:
        step: its index (``0 .. samples - 1`` while the child scans, then the steps after).
        alive: the child is scanning (its reading ends the step; it exits after the last).
        scan: the heap pages ``[lo, hi)`` the child reads in this step (empty once it is
            gone).
        writes: how many writes the parent serves in the step.
        pages: the heap page indices those writes touch, in order (a value that straddles
            a page boundary touches two).
        time_s: the time of the step's reading, from the fork.
    """

    step: int
    alive: bool
    scan: tuple[int, int]
    writes: int
    pages: npt.NDArray[np.int64]
    time_s: float


def steps(params: Mapping[str, Scalar]) -> Iterator[Step]:
    """The run's steps, drawn from ``seed`` exactly as :func:`run` takes them: what the
    child reads and which pages the parent writes in each. :func:`run` replays them on
    the simulator; :mod:`cowcore.native_snapshot` hands them to a real program.

    ``params`` is the complete (resolved) mapping; it is checked here, before the first
    step is drawn.

    Raises:
        InvalidArgumentError: a bad parameter.
    """
    import numpy as np  # noqa: PLC0415

    heap = c.size(params, "heap")
    value_size = int(c.positive(params, "value_size"))
    if value_size > heap:
        raise InvalidArgumentError(f"value_size {value_size} is larger than the heap ({heap})")
    pattern = c.choice(params, "pattern", PATTERNS)
    sigma = c.positive(params, "sigma")
    writes_per_s = c.positive(params, "writes_per_s", zero=True)
    scan = c.positive(params, "scan_mb_s") * (1 << 20)
    after_s = c.positive(params, "after_s", zero=True)
    samples = int(c.positive(params, "samples"))
    seed = int(c.positive(params, "seed", zero=True))

    def draw() -> Iterator[Step]:
        rng = np.random.Generator(np.random.PCG64(seed))
        npages = heap // c.PAGE
        nkeys = heap // value_size
        duration = heap / scan
        total_writes = round(writes_per_s * duration)
        # the same sampling interval after the child exits, at most `samples` more readings
        steps_after = min(samples, max(1, round(samples * after_s / duration))) if after_s else 0
        writes_after = round(writes_per_s * after_s)
        next_seq = int(rng.integers(0, nkeys)) if pattern == "sequential" else 0
        for step in range(samples + steps_after):
            alive = step < samples
            if alive:
                lo, hi = npages * step // samples, npages * (step + 1) // samples
                n = total_writes * (step + 1) // samples - total_writes * step // samples
                at = duration * (step + 1) / samples
            else:
                k = step - samples
                lo = hi = npages
                n = writes_after * (k + 1) // steps_after - writes_after * k // steps_after
                at = duration + after_s * (k + 1) / steps_after
            keys = draw_keys(rng, pattern, n, nkeys, sigma, next_seq)
            next_seq = (next_seq + n) % nkeys
            yield Step(step, alive, (lo, hi), n, keys_to_pages(keys, value_size), at)

    return draw()


def run(params: Mapping[str, Scalar]) -> WorkloadResult:
    """Runs the snapshot workload (see the module docstring)."""
    import numpy as np  # noqa: PLC0415

    plan = steps(params)
    heap = c.size(params, "heap")
    m = c.machine(params, 2 * heap)
    parent = m.init
    base = parent.mmap(heap)
    parent.write(base, heap)
    child = parent.fork()
    start = c.counters(m)

    timeline: list[dict[str, Scalar]] = []
    peak = cow = mem_peak = writes = pages_written = pmd_reuses = 0
    samples = int(params["samples"])
    for st in plan:
        if st.alive:
            scanned = c.page_addrs(base, np.arange(*st.scan))
            for _ in c.access_chunks(child, scanned, False):
                pass
        counts = c.outcome_counts(parent, c.page_addrs(base, st.pages), True)
        pmd_reuses += counts[Outcome.PMD_REUSE]
        writes += st.writes
        pages_written += len(st.pages)
        if st.alive:
            # the child's reading, as sendChildInfoGeneric takes it while it runs
            cow = c.private_dirty_kb(child) * 1024
            peak = max(peak, cow)
            if st.step == samples - 1:
                child.exit()
        used = c.used_kb(m)
        mem_peak = max(mem_peak, used)
        now = c.delta(c.counters(m), start)
        timeline.append(
            {
                "step": st.step,
                "time_s": st.time_s,
                "child_alive": st.alive,
                "parent_writes": writes,
                "current_cow_size_kb": (cow >> 10) if st.alive else 0,
                "current_cow_peak_kb": peak >> 10,
                "copies": now["copies"],
                "reuses": now["reuses"],
                "memory_used_kb": used,
            }
        )
    end = c.delta(c.counters(m), start)
    metrics: dict[str, Scalar] = {
        "duration_s": heap / (float(params["scan_mb_s"]) * (1 << 20)),
        "parent_writes": writes,
        "pages_written": pages_written,
        "current_cow_size_kb": cow >> 10,
        "current_cow_peak_kb": peak >> 10,
        "copies": end["copies"],
        "reuses": end["reuses"],
        "pmd_reuses": pmd_reuses,
        "pmd_splits": end["pmd_splits"],
        "faults": end["faults"],
        "parent_rss_kb": parent.rss_anon() * (c.PAGE >> 10),
        "memory_peak_kb": mem_peak,
        "memory_end_kb": c.used_kb(m),
        "machine_memory_kb": m.total_frames * (c.PAGE >> 10),
    }
    return WorkloadResult("snapshot", dict(params), metrics, tuple(timeline))


SNAPSHOT = register(
    Workload(
        name="snapshot",
        defaults=DEFAULTS,
        run=run,
        doc=(
            "Redis/Valkey BGSAVE or AOF rewrite: a written heap, a fork, the child scans the "
            "heap in order while the parent keeps writing; the child's Private_Dirty over "
            "time (INFO's current_cow_size and current_cow_peak), copies and reuses. Shape: "
            "src/childinfo.c and src/rdb.c of Redis; docs/workloads.md."
        ),
        metrics=METRICS,
    )
)
