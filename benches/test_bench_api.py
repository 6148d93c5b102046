"""Rust core vs the pure-Python reference on the same public API, and the native kernel.

Run with ``make bench`` (``pytest benches --benchmark-enable``); ``cowcore bench`` prints the
same measurements as ratios. Figures go to BENCHMARKS.md with the command that made them;
nothing here asserts a time.
"""

from __future__ import annotations

import shutil

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

import cowcore
from conftest import RUST_BYTES, pedantic, rounds_for, size_for
from cowcore import bench

PAGE = 4096


def _record(benchmark: BenchmarkFixture, phases: bench.Phases, pages: float) -> None:
    for k, v in phases.items():
        benchmark.extra_info[f"{k}_ns_per_page"] = v / pages * 1e9


@pytest.mark.parametrize("backend", cowcore.BACKENDS)
@pytest.mark.parametrize("size", [None, "64K"], ids=["4K", "64K"])
def test_fork_exit_rewrite(benchmark: BenchmarkFixture, backend: str, size: str | None) -> None:
    """Write all, fork, the child exits, write all (reuse faults)."""
    benchmark.group = "fault"
    n = size_for(backend)
    phases = pedantic(
        benchmark, bench.fork_exit_rewrite, backend, n, size, rounds=rounds_for(backend)
    )
    _record(benchmark, phases, n / PAGE)


@pytest.mark.parametrize("backend", cowcore.BACKENDS)
@pytest.mark.parametrize("size", [None, "64K"], ids=["4K", "64K"])
def test_cow_copy(benchmark: BenchmarkFixture, backend: str, size: str | None) -> None:
    """Write all, fork, the parent writes all while the child lives (copy faults)."""
    benchmark.group = "fault"
    n = size_for(backend)
    phases = pedantic(benchmark, bench.cow_copy, backend, n, size, rounds=rounds_for(backend))
    _record(benchmark, phases, n / PAGE)


@pytest.mark.parametrize("backend", cowcore.BACKENDS)
@pytest.mark.parametrize("size", [None, "64K"], ids=["4K", "64K"])
def test_pageout_swapin(benchmark: BenchmarkFixture, backend: str, size: str | None) -> None:
    """Write all, MADV_PAGEOUT all of it, read it all back (swap-in faults; issue 16)."""
    benchmark.group = "swap"
    n = min(size_for(backend), bench.SWAP_BENCH_MIB << 20)  # the swap device holds 1 GiB
    phases = pedantic(benchmark, bench.pageout_swapin, backend, n, size, rounds=rounds_for(backend))
    _record(benchmark, phases, n / PAGE)


@pytest.mark.parametrize("backend", cowcore.BACKENDS)
def test_fork_only(benchmark: BenchmarkFixture, backend: str) -> None:
    """fork + exit of a process with every page written (4K pages)."""
    benchmark.group = "fork"
    n = size_for(backend)
    m = cowcore.Machine(backend=backend, memory="4G")
    a = m.init.mmap(n)
    m.init.write(a, n)

    def fork_and_exit() -> None:
        m.init.fork().exit()

    pedantic(benchmark, fork_and_exit, rounds=rounds_for(backend))


@pytest.mark.parametrize("backend", cowcore.BACKENDS)
def test_prefork_server(benchmark: BenchmarkFixture, backend: str) -> None:
    """One parent, 64 children reading 4 MiB, every 8th writing an eighth of it."""
    benchmark.group = "fork"
    pedantic(benchmark, bench.prefork_server, backend, 4 << 20, rounds=rounds_for(backend))


@pytest.mark.parametrize("backend", cowcore.BACKENDS)
def test_random_writes_after_fork(benchmark: BenchmarkFixture, backend: str) -> None:
    """20 000 single-page writes at random pages of 64 MiB after a fork (one call each)."""
    benchmark.group = "call"
    pedantic(benchmark, bench.random_writes, backend, 64 << 20, 20000, rounds=rounds_for(backend))


@pytest.mark.parametrize("backend", cowcore.BACKENDS)
def test_random_writes_after_fork_batch(benchmark: BenchmarkFixture, backend: str) -> None:
    """The same 20 000 random writes in one ``write_pages`` call."""
    benchmark.group = "call"
    phases = pedantic(
        benchmark,
        bench.random_writes,
        backend,
        64 << 20,
        20000,
        1,
        True,
        rounds=rounds_for(backend),
    )
    _record(benchmark, phases, 20000)


@pytest.mark.parametrize("backend", cowcore.BACKENDS)
def test_single_page_write(benchmark: BenchmarkFixture, backend: str) -> None:
    """``proc.write(addr)`` on a mapped writable page: the per-call overhead."""
    benchmark.group = "call"
    m = cowcore.Machine(backend=backend, memory="64M")
    a = m.init.mmap(2 << 20)
    m.init.write(a)
    benchmark(m.init.write, a)


@pytest.mark.parametrize("thp", [False, True], ids=["4K", "thp"])
def test_native_baseline(benchmark: BenchmarkFixture, thp: bool) -> None:
    """The real kernel on this machine (``cowcore/cownative.c``, built with gcc)."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    benchmark.group = "native"
    result = pedantic(benchmark, bench.native, RUST_BYTES >> 20, thp, rounds=1)
    benchmark.extra_info.update(result)
    benchmark.extra_info["thp_setting"] = bench.thp_setting()
