"""Per-access records and events (issue 12) with pytest-benchmark: ``access_batch`` from a
numpy array over present, first-touch and COW pages, and a fork/write/COW workload with event
recording off and on. ``benches/access_ratios.py`` sets the same workloads beside the
pure-Rust loop (``examples/access_loop.rs``) and prints the ratios; nothing here asserts a
time.
"""

from __future__ import annotations

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from conftest import pedantic
from cowcore import bench

PAGES = 1 << 15


@pytest.mark.parametrize("kind", bench.ACCESS_KINDS)
def test_access_batch(benchmark: BenchmarkFixture, kind: str) -> None:
    """One ``access_batch`` call over 32768 pages (the setup is inside the round; the
    ``ns_per_access`` extra is the call alone)."""
    benchmark.group = "access"
    secs = pedantic(benchmark, bench.access_batch_run, kind, PAGES, rounds=3)
    benchmark.extra_info["ns_per_access"] = secs / PAGES * 1e9


@pytest.mark.parametrize("record", [False, True], ids=["off", "on"])
def test_events_recording(benchmark: BenchmarkFixture, record: bool) -> None:
    """Write 128 MiB, fork, write it again (COW copies), the child exits; recording off/on."""
    benchmark.group = "events"
    secs = pedantic(benchmark, bench.events_run, PAGES, record, rounds=3)
    benchmark.extra_info["ns_per_page"] = secs / PAGES * 1e9
