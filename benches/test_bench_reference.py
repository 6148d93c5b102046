"""Benchmarks of the reference backend through the public API (pytest-benchmark).

Run with ``make bench`` (``pytest benches --benchmark-enable``). Figures and the command that
produced them go to BENCHMARKS.md; they are ratios measured in one run, never assertions.
"""

from __future__ import annotations

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

import cowcore

MiB = 1 << 20


def fork_exit_rewrite(backend: str, kernel: str, size: str | None, nbytes: int) -> None:
    m = cowcore.Machine(kernel, backend=backend, memory="256M")
    if size:
        m.thp.sizes[size] = "always"
    p = m.init
    a = p.mmap(nbytes)
    p.write(a, nbytes)
    p.fork().exit()
    p.write(a, nbytes, value=2)


@pytest.mark.parametrize("backend", cowcore.BACKENDS)
@pytest.mark.parametrize(("kernel", "size"), [("6.15", None), ("6.15", "64K"), ("6.12", "64K")])
def test_fork_exit_rewrite_16m(
    benchmark: BenchmarkFixture, backend: str, kernel: str, size: str | None
) -> None:
    benchmark.group = "fault"
    benchmark(fork_exit_rewrite, backend, kernel, size, 16 * MiB)


@pytest.mark.parametrize("backend", cowcore.BACKENDS)
def test_fork_16m_of_4k_pages(benchmark: BenchmarkFixture, backend: str) -> None:
    m = cowcore.Machine(backend=backend, memory="256M")
    a = m.init.mmap(16 * MiB)
    m.init.write(a, 16 * MiB)

    def fork_and_exit() -> None:
        m.init.fork().exit()

    benchmark.group = "fork"
    benchmark(fork_and_exit)


@pytest.mark.parametrize("backend", cowcore.BACKENDS)
def test_single_page_write(benchmark: BenchmarkFixture, backend: str) -> None:
    m = cowcore.Machine(backend=backend)
    a = m.init.mmap(2 * MiB)
    m.init.write(a)
    benchmark.group = "call"
    benchmark(m.init.write, a)
