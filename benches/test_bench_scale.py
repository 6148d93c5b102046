"""Scale: 1..32 GiB of written 4K pages on a 64 GiB simulated machine, one subprocess each.

Opt-in (``COWCORE_BENCH_SCALE=1,4,16,32 pytest benches -k scale --benchmark-enable``): the 32
GiB run takes a few seconds of CPU and ~0.3 GiB of RSS. ``extra_info`` has the memory figures.
"""

from __future__ import annotations

from pytest_benchmark.fixture import BenchmarkFixture

from conftest import pedantic
from cowcore import bench


def test_scale(benchmark: BenchmarkFixture, scale_sizes: list[int]) -> None:
    benchmark.group = "scale"
    for gib in scale_sizes:
        result = bench.scale(gib)
        for k, v in result.items():
            benchmark.extra_info[f"{gib}G_{k}"] = v
    pedantic(benchmark, lambda: None, rounds=1)
