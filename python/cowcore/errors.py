"""The exceptions that every cowcore backend raises.

They are defined once, here, in pure Python: the reference backend raises them directly and
the Rust binding imports them (``pyo3::import_exception!``), so that both backends raise the
*same* classes and a differential test can compare exceptions by type and message.

Every failing call leaves the machine exactly as it was before the call.
"""

from __future__ import annotations

__all__ = [
    "CowError",
    "InvalidAddressError",
    "InvalidArgumentError",
    "InvariantError",
    "MissingDependencyError",
    "NoSuchProcessError",
    "OutOfMemoryError",
    "ProcessLimitError",
    "ScenarioError",
    "SegmentationFault",
    "SweepSpecError",
]


class CowError(Exception):
    """Base class of every error that cowcore raises on purpose."""


class InvalidArgumentError(CowError, ValueError):
    """An argument has a bad value: negative, misaligned, too large, an unknown name."""


class InvalidAddressError(InvalidArgumentError):
    """A range is outside the user address space or not mapped where it must be (ENOMEM)."""


class NoSuchProcessError(InvalidArgumentError):
    """The pid names no process, or a process that has exited."""


class SegmentationFault(CowError):
    """An access that the kernel would answer with SIGSEGV.

    Attributes:
        addr: the faulting virtual address.
        reason: ``"unmapped"`` (no VMA) or ``"protection"`` (the VMA forbids the access).
    """

    def __init__(self, addr: int, reason: str, message: str | None = None) -> None:
        self.addr = addr
        self.reason = reason
        super().__init__(message or f"segmentation fault at {addr:#x}: {reason}")


class OutOfMemoryError(CowError, MemoryError):
    """The simulated machine ran out of physical memory (the kernel's VM_FAULT_OOM / ENOMEM)."""


class ProcessLimitError(CowError):
    """``fork`` found no free pid: the machine already holds ``pid_max - 1`` processes (the
    kernel's EAGAIN from ``alloc_pid``; ``Machine.pid_max`` is ``kernel.pid_max``, at most
    ``PID_MAX_LIMIT`` = 4M)."""


class NotModelledError(CowError):
    """The model does not cover this case; the message says which and why (for instance a
    large swap-in whose answer depends on the kernel's swap cluster allocator)."""


class InvariantError(CowError, AssertionError):
    """``Machine.check()`` found a broken invariant (kernel-semantics.md section 1.3).

    Attributes:
        invariant: a short name of the invariant that is broken.
    """

    def __init__(self, invariant: str, message: str) -> None:
        self.invariant = invariant
        super().__init__(f"{invariant}: {message}")


class ScenarioError(CowError):
    """A ``.cow`` scenario failed; ``line`` is the 1-based number of the failing statement.

    ``observations`` holds the observations printed before the failure.
    """

    def __init__(self, line: int, message: str, observations: list[dict[str, object]]) -> None:
        self.line = line
        self.message = message
        self.observations = observations
        super().__init__(f"line {line}: {message}")


class SweepSpecError(InvalidArgumentError):
    """A sweep specification (``cowcore sweep SPEC``) is malformed: an unknown key, an axis
    that is not a list of values, a seed parameter that is not an integer."""


class MissingDependencyError(CowError, ImportError):
    """An optional feature needs a package that is not installed; the message names the
    ``pip install 'cowcore[GROUP]'`` that provides it."""
