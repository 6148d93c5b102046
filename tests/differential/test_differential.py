"""The Rust backend against the pure-Python reference: same random operations, same results.

After every step the two machines must agree on every observation (raw PFNs), page-table
entry, folio counter, statistic and exception (``tests/model.py``). ``HYPOTHESIS_PROFILE=ci``
runs on every CI run; ``HYPOTHESIS_PROFILE=long`` (``make test-long``) runs thousands of
sequences.
"""

from __future__ import annotations

from typing import ClassVar

import pytest

import cowcore
from tests.model import LockstepModel

needs_rust = pytest.mark.skipif(
    "rust" not in cowcore.BACKENDS, reason="the Rust backend is not part of this build yet"
)


class RustAgainstReference(LockstepModel):
    backends: ClassVar[tuple[str, ...]] = ("reference", "rust")


@needs_rust
def test_rust_matches_reference() -> None:
    RustAgainstReference.TestCase().runTest()


class ReferenceAgainstItself(LockstepModel):
    """Two reference machines in lockstep: the determinism contract (same PFNs, same
    counters) holds between independent instances, and the harness's comparisons work."""

    backends: ClassVar[tuple[str, ...]] = ("reference", "reference")


def test_reference_is_deterministic() -> None:
    ReferenceAgainstItself.TestCase().runTest()
