"""The pure-Python reference implementation of cowcore's semantics.

Written independently of the Rust core, from ``docs/kernel-semantics.md`` and the recordings
of real kernels, so that every Rust result can be checked against it (differential tests).
It never imports :mod:`cowcore._cowcore`. Slow by design: clarity over speed.
"""

from cowcore.reference.backend import ReferenceBackend

__all__ = ["ReferenceBackend"]
