"""Shared settings of the benchmarks (``pytest benches --benchmark-enable``).

The workloads live in :mod:`cowcore.bench` (which ``cowcore bench`` prints as one table);
these tests time the same functions with pytest-benchmark. The Rust core runs the full size,
the reference a smaller one of the same shape: compare ``extra_info['ns_per_page']``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar, TypeVarTuple, cast

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

MiB = 1 << 20
RUST_BYTES = int(os.environ.get("COWCORE_BENCH_MIB", "1024")) * MiB
REFERENCE_BYTES = 16 * MiB
SCALE = os.environ.get("COWCORE_BENCH_SCALE", "")
"""Comma-separated GiB sizes for the opt-in scale runs, e.g. ``1,4,16,32``."""


def size_for(backend: str) -> int:
    return RUST_BYTES if backend == "rust" else REFERENCE_BYTES


def rounds_for(backend: str) -> int:
    return 3 if backend == "rust" else 1


R = TypeVar("R")
Ts = TypeVarTuple("Ts")


def pedantic(benchmark: BenchmarkFixture, target: Callable[[*Ts], R], *args: *Ts, rounds: int) -> R:
    """``benchmark.pedantic(target, args, rounds=rounds)`` with types: pytest-benchmark's
    method is unannotated. Returns what ``target`` returned (of its last round)."""
    result = benchmark.pedantic(target, args, rounds=rounds)  # type: ignore[no-untyped-call]
    return cast(R, result)


@pytest.fixture(scope="session")
def scale_sizes() -> list[int]:
    if not SCALE:
        pytest.skip("scale runs are opt-in: COWCORE_BENCH_SCALE=1,4,16,32")
    return [int(x) for x in SCALE.split(",")]
