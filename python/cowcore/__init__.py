"""cowcore: a simulator of Linux anonymous memory and copy-on-write on x86-64.

It models page tables in simulated physical frames, folios with the kernel's counters, fork,
and the write fault that reuses or copies a page, including the Linux 6.15 change that lets
a PTE-mapped large folio be reused after fork. Three kernel profiles (``"6.1"``, ``"6.12"``,
``"6.15"``) reproduce observations recorded on real kernels.

Quick use::

    m = cowcore.Machine(kernel="6.15")
    m.thp.sizes["64K"] = "always"
    a = m.init.mmap(2 << 20)
    m.init.write(a, 64 << 10)
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from cowcore import outcome
from cowcore.errors import (
    CowError,
    InvalidAddressError,
    InvalidArgumentError,
    InvariantError,
    NoSuchProcessError,
    NotModelledError,
    OutOfMemoryError,
    ProcessLimitError,
    ScenarioError,
    SegmentationFault,
)
from cowcore.machine import (
    BACKENDS,
    DEFAULT_BACKEND,
    MAX_MEMORY,
    MAX_RESULT_PAGES,
    PID_MAX_LIMIT,
    Machine,
    Policy,
    Process,
    ThpSettings,
)
from cowcore.outcome import (
    Access,
    AccessFlags,
    EventCode,
    EventRecord,
    MapLevel,
    Outcome,
    Reason,
    ZapCause,
)
from cowcore.protocol import (
    FolioSnapshot,
    Meminfo,
    MmIdSlot,
    MthpStats,
    PageObservation,
    ScanResult,
    Smaps,
    Stats,
    Translation,
    Vmstat,
    WalkLevel,
)
from cowcore.recording import Recording
from cowcore.scenario import (
    Scenario,
    ScenarioSyntaxError,
    compare_observations,
    format_stats,
    run_scenario,
)

# The version lives only in Cargo.toml (``[workspace.package]``): the native extension is built
# with it (``env!("CARGO_PKG_VERSION")``) and maturin writes it into the package metadata. The
# extension's copy first, as it is the code running, even from a source tree or a copy of the
# package without metadata; then the metadata (a build without the extension).
try:
    from cowcore._cowcore import __version__
except ImportError:
    try:
        __version__ = version("cowcore")
    except PackageNotFoundError:  # a source tree without the extension, never installed
        __version__ = "0+unknown"

if TYPE_CHECKING:
    from cowcore.outcome import ACCESS_DTYPE, EVENT_DTYPE


def __getattr__(name: str) -> Any:
    """``ACCESS_DTYPE`` and ``EVENT_DTYPE``, made on first use: ``import cowcore`` does not
    import numpy (see :func:`cowcore.outcome._dtypes`)."""
    if name in ("ACCESS_DTYPE", "EVENT_DTYPE"):
        return getattr(outcome, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ACCESS_DTYPE",
    "BACKENDS",
    "DEFAULT_BACKEND",
    "EVENT_DTYPE",
    "MAX_MEMORY",
    "MAX_RESULT_PAGES",
    "PID_MAX_LIMIT",
    "Access",
    "AccessFlags",
    "CowError",
    "EventCode",
    "EventRecord",
    "FolioSnapshot",
    "InvalidAddressError",
    "InvalidArgumentError",
    "InvariantError",
    "Machine",
    "MapLevel",
    "Meminfo",
    "MmIdSlot",
    "MthpStats",
    "NoSuchProcessError",
    "NotModelledError",
    "OutOfMemoryError",
    "Outcome",
    "PageObservation",
    "Policy",
    "Process",
    "ProcessLimitError",
    "Reason",
    "Recording",
    "ScanResult",
    "Scenario",
    "ScenarioError",
    "ScenarioSyntaxError",
    "SegmentationFault",
    "Smaps",
    "Stats",
    "ThpSettings",
    "Translation",
    "Vmstat",
    "WalkLevel",
    "ZapCause",
    "__version__",
    "compare_observations",
    "format_stats",
    "run_scenario",
]
