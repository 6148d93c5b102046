"""Shared fixtures: every behavioural test runs on every working backend."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, settings

import cowcore

settings.register_profile("dev", max_examples=40, deadline=None)
settings.register_profile(
    "ci",
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("long", max_examples=3000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

MiB = 1 << 20
KiB = 1 << 10


@pytest.fixture(params=cowcore.BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The name of each backend that works in this build."""
    return str(request.param)


@pytest.fixture(params=["6.12", "6.15"])
def profile(request: pytest.FixtureRequest) -> str:
    return str(request.param)


MachineFactory = Callable[..., cowcore.Machine]


@pytest.fixture
def make_machine(backend: str) -> Iterator[MachineFactory]:
    """Build a machine on the current backend; checks invariants when the test ends."""
    made: list[cowcore.Machine] = []

    def make(kernel: str = "6.15", **kwargs: object) -> cowcore.Machine:
        m = cowcore.Machine(kernel, backend=backend, **kwargs)  # type: ignore[arg-type]
        made.append(m)
        return m

    yield make
    for m in made:
        m.check()
