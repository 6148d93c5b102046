"""Random operation sequences on each backend alone, checked against the isolation model,
``check()`` after every step and conservation at the end (see ``tests/model.py``)."""

from __future__ import annotations

from typing import ClassVar

import cowcore
from tests.model import LockstepModel

TESTS = {}
for _name in cowcore.BACKENDS:

    class _Model(LockstepModel):
        backends: ClassVar[tuple[str, ...]] = (_name,)

    _Model.__name__ = f"Model_{_name}"
    TESTS[f"Test{_name.capitalize()}Model"] = _Model.TestCase

globals().update(TESTS)
