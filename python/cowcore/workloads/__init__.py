"""Workloads people run, as deterministic functions of their parameters (issue 14).

See :mod:`cowcore.workloads.base` for the contract and ``docs/workloads.md`` for each
workload's shape and its source. Importing this package registers every workload.
"""

from __future__ import annotations

# the workloads register themselves on import
from cowcore.workloads import anon_cow, fork_exec, micro, prefork, snapshot
from cowcore.workloads.base import (
    MACHINE_PARAMS,
    REGISTRY,
    Scalar,
    Workload,
    WorkloadResult,
    get,
    machine_from_params,
    parse_assignments,
    register,
    typed_params,
)

__all__ = [
    "MACHINE_PARAMS",
    "REGISTRY",
    "Scalar",
    "Workload",
    "WorkloadResult",
    "anon_cow",
    "fork_exec",
    "get",
    "machine_from_params",
    "micro",
    "parse_assignments",
    "prefork",
    "register",
    "snapshot",
    "typed_params",
]
