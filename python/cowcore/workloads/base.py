"""The contract every workload keeps (issue 14): parameters in, one tidy record out.

A workload is a deterministic function of its parameters (a seed among them where it draws
random numbers): the same parameters give the same :class:`WorkloadResult` on every backend
and every run. Parameters and metrics are flat mappings of names to scalars so that a sweep
can write one row per run with one column per parameter and metric; the machine's own
configuration is spelled with the flat names of :data:`MACHINE_PARAMS` (``kernel``,
``memory``, ``thp.enabled``, ``thp.<size>``, ``thp.use_zero_page``, ``policy.<name>``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from cowcore.errors import InvalidArgumentError
from cowcore.machine import Machine

Scalar = bool | int | float | str
"""What a parameter or metric may hold: one cell of a tidy table."""

MACHINE_PARAMS: Mapping[str, Scalar] = {
    "kernel": "6.15",
    "backend": "rust",
    "memory": "4G",
    "thp.enabled": "never",
    "thp.use_zero_page": True,
}
"""The machine parameters every workload accepts, with their defaults. Besides these,
``thp.<size>`` (``"16K"`` .. ``"2M"``: ``never``/``always``/``madvise``/``inherit``) and
``policy.<name>`` (bool) are accepted for every size and policy the machine has."""


@dataclass(frozen=True)
class WorkloadResult:
    """One run of a workload.

    Attributes:
        workload: the workload's registered name.
        params: every parameter of the run, defaults filled in (machine ones included).
        metrics: the run's measurements, one scalar each, named with their unit where they
            have one (``child_private_dirty_kb``, ``copies``, ``reuses``).
        timeline: for workloads that evolve, tidy rows (each the same keys, a step or time
            column first); empty for the others.
    """

    workload: str
    params: Mapping[str, Scalar]
    metrics: Mapping[str, Scalar]
    timeline: tuple[Mapping[str, Scalar], ...] = ()

    def row(self) -> dict[str, Scalar]:
        """The run as one flat row: ``workload``, then the parameters, then the metrics."""
        return {"workload": self.workload, **self.params, **self.metrics}


@dataclass(frozen=True)
class Workload:
    """A registered workload.

    Attributes:
        name: the name sweeps and the CLI use (``snapshot``, ``prefork``, ...).
        defaults: the workload's own parameters with their defaults (machine parameters
            are added from :data:`MACHINE_PARAMS`).
        run: the function; it takes the complete parameter mapping (checked by
            :meth:`resolve`) and returns the result.
        doc: one paragraph: what it models and the source of its shape.
    """

    name: str
    defaults: Mapping[str, Scalar]
    run: Callable[[Mapping[str, Scalar]], WorkloadResult]
    doc: str
    metrics: tuple[str, ...] = field(default=())

    def resolve(self, params: Mapping[str, Scalar]) -> dict[str, Scalar]:
        """The defaults overlaid with ``params``; an unknown name is an error.

        Raises:
            InvalidArgumentError: a parameter this workload and the machine do not have,
                or a value whose type differs from the default's.
        """
        full: dict[str, Scalar] = {**MACHINE_PARAMS, **self.defaults}
        for key, value in params.items():
            if key not in full and not key.startswith(("thp.", "policy.")):
                known = ", ".join(sorted(full))
                raise InvalidArgumentError(
                    f"workload {self.name!r} has no parameter {key!r} (it has: {known}; "
                    "and thp.<size>, policy.<name>)"
                )
            if key in full and not _same_kind(full[key], value):
                raise InvalidArgumentError(
                    f"workload {self.name!r}: parameter {key!r} must be a "
                    f"{type(full[key]).__name__}, not {value!r}"
                )
            full[key] = value
        return full


def _same_kind(default: Scalar, value: Scalar) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, int | float)
    return type(default) is type(value)


def machine_from_params(params: Mapping[str, Scalar]) -> Machine:
    """A fresh :class:`~cowcore.Machine` configured from the flat machine parameters.

    Raises:
        InvalidArgumentError: a bad profile, size, mode or policy name.
    """
    m = Machine(
        kernel=str(params.get("kernel", MACHINE_PARAMS["kernel"])),
        backend=str(params.get("backend", MACHINE_PARAMS["backend"])),
        memory=str(params.get("memory", MACHINE_PARAMS["memory"])),
    )
    m.thp.enabled = str(params.get("thp.enabled", MACHINE_PARAMS["thp.enabled"]))  # type: ignore[assignment]
    m.thp.use_zero_page = bool(params.get("thp.use_zero_page", True))
    for key, value in params.items():
        if key.startswith("thp.") and key not in ("thp.enabled", "thp.use_zero_page"):
            m.thp.sizes[key[4:]] = str(value)
        elif key.startswith("policy."):
            if not isinstance(value, bool):
                raise InvalidArgumentError(f"{key} must be true or false, not {value!r}")
            setattr(m.policy, key[7:], value)
    return m


_BOOLS = {"true": True, "yes": True, "on": True, "1": True}
_BOOLS |= {"false": False, "no": False, "off": False, "0": False}


def parse_assignments(items: Iterable[str]) -> dict[str, str]:
    """``KEY=VALUE`` strings (the command lines' ``-p``/``--set``/``--where``) as a mapping
    of names to the values' text, typed later by :func:`typed_params`.

    Raises:
        InvalidArgumentError: an item without ``=`` or without a key.
    """
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidArgumentError(f"{item!r}: expected KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


def typed_params(workload: str, raw: Mapping[str, str]) -> dict[str, Scalar]:
    """Text values as parameters of ``workload``, each of the kind of its default (so that
    ``kernel=6.12`` stays the string ``"6.12"`` and ``pages=64`` is an integer, ``0x40``
    too); ``policy.<name>`` is a bool (``true``/``false``, ``yes``/``no``, ``on``/``off``,
    ``1``/``0``), ``thp.<size>`` and any other parameter without a default a string.

    Raises:
        InvalidArgumentError: a value that is not of its parameter's kind, or no such
            workload.
    """
    defaults = get(workload).resolve({})
    out: dict[str, Scalar] = {}
    for key, text in raw.items():
        default = defaults.get(key)
        if default is None:
            default = False if key.startswith("policy.") else ""
        try:
            if isinstance(default, bool):
                out[key] = _BOOLS[text.lower()]
            elif isinstance(default, int):
                out[key] = int(text, 0)
            elif isinstance(default, float):
                out[key] = float(text)
            else:
                out[key] = text
        except (KeyError, ValueError):
            kind = type(default).__name__
            raise InvalidArgumentError(
                f"parameter {key!r} takes {kind} values, not {text!r}"
            ) from None
    return out


REGISTRY: dict[str, Workload] = {}
"""Every workload by name; :func:`register` adds one."""


def register(workload: Workload) -> Workload:
    """Adds ``workload`` to :data:`REGISTRY` (a name may be registered once)."""
    if workload.name in REGISTRY:
        raise ValueError(f"workload {workload.name!r} is registered twice")
    REGISTRY[workload.name] = workload
    return workload


def get(name: str) -> Workload:
    """The workload named ``name``.

    Raises:
        InvalidArgumentError: no such workload (the message lists those that exist).
    """
    try:
        return REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY)) or "none"
        raise InvalidArgumentError(f"no workload {name!r} (known: {known})") from None
