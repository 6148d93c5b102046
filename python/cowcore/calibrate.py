"""``cowcore calibrate``: fit the cost model (:mod:`cowcore.cost`) to this host's kernel.

Method (``docs/cost-model.md``):

1. **Measure.** The native baseline (``cownative.c``, ``calibrate`` mode, built with the
   host's gcc by :func:`cowcore.kernel.build.build_c`) times nine patterns on ``--mib`` MiB
   of 4 KiB pages (``MADV_NOHUGEPAGE``) and, if the host gives PMD THPs to
   ``MADV_HUGEPAGE`` memory, seven on 2 MiB THPs: a fork of a process with nothing extra
   mapped, a read of untouched memory, a write after that read, a first write, mprotect,
   munmap, fork, a write after the child exited (reuse), a write while it lives (copy).
   Each figure is the total CPU time of the phase (user + system), the best of ``--rounds``.
2. **Count.** The simulator runs the same patterns (kernel profile 6.15, THP ``always`` for
   the THP set) with recording on, and :meth:`CostModel.quantities` turns each phase's
   events into units per cost term: a first write of N pages is N write faults, N folio
   allocations and N pages zeroed; a fork is one fork, its PTEs and its whole-mm flush.
3. **Fit.** A weighted least-squares fit (``numpy.linalg.lstsq``) of the per-unit costs to
   the measured times, every pattern weighted by its relative error. The patterns cannot
   separate every term (a first write's fault, allocation and zeroing always come
   together), so the fit is regularised towards a prior: the built-in table
   (:data:`cowcore.cost.DEFAULT`) scaled by one factor that best matches this host. The
   prior is weak (a term may move 100% from it for the cost of a 1% error on one
   pattern), so what the patterns determine follows the measurements and what they do not
   keeps the prior's proportions. Costs are kept positive (a term the fit drives below
   0.1% of its prior is pinned there and the rest refitted).
4. **Outliers.** A pattern the fit misses by more than 3x is left out and the rest
   refitted (the worst first, at most a quarter of the patterns): one pattern where the
   host does work the simulator does not report must not bend every cost. The native
   time of a phase that touches every page is taken less the same stores with no fault
   (``store``): the stores' cache misses are the host simulator's business, not the
   kernel's.
5. **Report.** Every pattern's measured and estimated time and their ratio are printed and
   saved with the table (``[[fit]]``): the fit's own consistency, on this host.

Limits: a linear model of costs that are not linear (caches, THP compaction, EPT faults
in a virtual machine); CPU time of the measuring process only (a child's exit is not
seen); the host kernel need not be the simulated profile.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cowcore
from cowcore import native_smaps
from cowcore.cost import DEFAULT, TERM_NAMES, CostModel, FitRow, Provenance, config_path
from cowcore.kernel.build import BuildError, build_c, package_source

if TYPE_CHECKING:
    import numpy.typing as npt

MiB = 1 << 20

TOUCHING = ("read_fault", "zero_cow", "first_write", "reuse", "copy")
"""Phases that access every page: their native time less ``store`` (the same stores with no
fault) is the kernel's."""

PATTERNS_4K = (
    "fork_base",
    "read_fault",
    "zero_cow",
    "first_write",
    "mprotect",
    "munmap",
    "fork",
    "reuse",
    "copy",
)
"""The native phases measured on 4 KiB pages (``cownative.c`` says what each does)."""
PATTERNS_THP = ("first_write", "mprotect", "munmap", "fork", "reuse", "copy")
"""The phases measured again on 2 MiB THPs, where the host gives them."""

PRIOR_WEIGHT = 1e-4
"""λ of the fit: a term's relative distance from the prior weighs λ times a pattern's
relative error (squared)."""
FLOOR = 1e-3
"""No fitted cost goes below this fraction of its prior."""

OUTLIER = 3.0
"""A pattern the fit misses by more than this factor is left out (the worst first, at most
a quarter of them) and the rest refitted: one pattern where the host does work the
simulator does not report must not bend every cost."""

METHOD = (
    "least squares over the native patterns (relative errors) of the per-unit costs times "
    "the simulator's event counts for the same patterns, regularised towards the built-in "
    f"table scaled to this host (weight {PRIOR_WEIGHT}); costs floored at {FLOOR:.1%} of it; "
    f"patterns missed by more than {OUTLIER:g}x left out"
)


class CalibrationError(Exception):
    """The native baseline could not be built or run; the message says why."""


# -- measuring ------------------------------------------------------------------------------


def native(mib: int, thp: bool, rounds: int) -> dict[str, float]:
    """Run ``cownative MIB [thp] calibrate rounds=N``: total ns per phase, plus ``pages``
    and ``thp_kib``.

    Raises:
        CalibrationError: gcc is missing, the build failed, or the program failed.
    """
    from cowcore.bench import NATIVE_CFLAGS  # noqa: PLC0415  (the bench's flags, one build)

    try:
        exe = build_c(package_source("cowcore", "cownative.c"), "cownative", NATIVE_CFLAGS)
    except BuildError as err:
        raise CalibrationError(str(err)) from None
    args = [str(exe), str(mib), *(["thp"] if thp else []), "calibrate", f"rounds={rounds}"]
    proc = subprocess.run(args, check=False, capture_output=True, text=True)
    if proc.returncode != 0:
        raise CalibrationError(
            f"{' '.join(args)} failed (exit {proc.returncode}): {proc.stderr.strip()}"
        )
    result: dict[str, float] = json.loads(proc.stdout)
    return result


def host_thp() -> tuple[bool, str]:
    """Whether ``MADV_HUGEPAGE`` memory may get PMD THPs here, and what sysfs says: the
    host's knobs as :func:`cowcore.native_smaps.host_thp` reads them (``enabled`` and the
    per-size ``hugepages-2048kB`` knob, ``thp_vma_allowable_orders``' rule)."""
    try:
        thp = native_smaps.host_thp()
    except (OSError, native_smaps.HostNotComparableError) as err:
        return False, f"THP knobs not usable: {err}"
    note = f"THP enabled: {thp.enabled}; 2M: {thp.sizes['2M']}"
    return "2M" in thp.effective("hugepage"), note


def _recorded(m: cowcore.Machine, fn: Callable[[], object]) -> npt.NDArray[Any]:
    """The events ``fn`` emits on ``m`` (``m.record()``)."""
    with m.record() as rec:
        fn()
    events: npt.NDArray[Any] = rec.events
    return events


def simulate(mib: int, thp: bool) -> dict[str, npt.NDArray[Any]]:
    """The simulator's events for each phase of the native patterns (same order, same
    sizes; the 6.15 profile; THP ``always`` for the THP set)."""
    nbytes = mib * MiB
    m = cowcore.Machine("6.15", memory=f"{4 * mib + 64}M")
    if thp:
        m.thp.enabled = "always"
    p = m.init
    out: dict[str, npt.NDArray[Any]] = {}
    kids: list[cowcore.Process] = []
    out["fork_base"] = _recorded(m, lambda: kids.append(p.fork()))
    kids.pop().exit()
    if not thp:
        z = p.mmap(nbytes)
        out["read_fault"] = _recorded(m, lambda: p.read(z, nbytes))
        out["zero_cow"] = _recorded(m, lambda: p.write(z, nbytes))
        p.munmap(z, nbytes)
    q = p.mmap(nbytes)
    out["first_write"] = _recorded(m, lambda: p.write(q, nbytes))
    out["mprotect"] = _recorded(m, lambda: p.mprotect(q, nbytes, "r"))
    out["munmap"] = _recorded(m, lambda: p.munmap(q, nbytes))
    a = p.mmap(nbytes)
    p.write(a, nbytes)
    out["fork"] = _recorded(m, lambda: kids.append(p.fork()))
    kids.pop().exit()
    out["reuse"] = _recorded(m, lambda: p.write(a, nbytes, value=2))
    kids.append(p.fork())
    out["copy"] = _recorded(m, lambda: p.write(a, nbytes, value=3))
    kids.pop().exit()
    return out


# -- fitting --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fit:
    """The fitted costs, the prior they were pulled towards, and the patterns' residuals."""

    costs: dict[str, float]
    prior: dict[str, float]
    scale: float
    """The factor by which the built-in table was scaled to make the prior."""
    rows: tuple[FitRow, ...]
    pinned: tuple[str, ...]
    """Terms the fit drove below the floor, pinned there."""

    @property
    def rms_log_ratio(self) -> float:
        """Root mean square of ``ln(estimated / measured)`` over the patterns used: 0 is
        exact, 0.1 about 10% off on average."""
        used = [r for r in self.rows if r.used]
        return math.sqrt(sum(math.log(r.ratio) ** 2 for r in used) / len(used))

    @property
    def excluded(self) -> tuple[FitRow, ...]:
        """The patterns left out as outliers."""
        return tuple(r for r in self.rows if not r.used)


def _solve(
    x: npt.NDArray[Any], y: npt.NDArray[Any], c0: npt.NDArray[Any]
) -> tuple[npt.NDArray[Any], npt.NDArray[Any], float, npt.NDArray[Any]]:
    """One regularised fit: (costs, prior, scale, pinned mask)."""
    import numpy as np  # noqa: PLC0415

    a = (x @ c0) / y
    scale = float(a.sum() / (a * a).sum())  # argmin_g sum (g a_i - 1)^2
    prior = np.maximum(scale * c0, 1e-9)
    k = len(c0)
    w = math.sqrt(PRIOR_WEIGHT)
    design = np.vstack([x / y[:, None], w * np.diag(1.0 / prior)])
    target = np.concatenate([np.ones(len(y)), w * np.ones(k)])
    fixed = np.zeros(k, dtype=bool)
    c = prior.copy()
    for _ in range(k):
        free = ~fixed
        rhs = target - design[:, fixed] @ c[fixed]
        sol, *_ = np.linalg.lstsq(design[:, free], rhs, rcond=None)
        c[free] = sol
        low = free & (c < FLOOR * prior)
        if not low.any():
            break
        fixed |= low
        c[low] = FLOOR * prior[low]
    return c, prior, scale, fixed


def fit(
    patterns: Mapping[str, tuple[float, Mapping[str, float]]], prior_model: CostModel = DEFAULT
) -> Fit:
    """Fit per-unit costs to ``patterns``: name -> (measured ns, units per term as
    :meth:`CostModel.quantities` gives them). See the module docstring for the method.

    Raises:
        ValueError: no pattern, or a pattern measured at 0 ns or with no units.
    """
    import numpy as np  # noqa: PLC0415  (numpy: only calibrate and array estimates need it)

    if not patterns:
        raise ValueError("no patterns to fit")
    names = list(patterns)
    y = np.array([patterns[n][0] for n in names], dtype=np.float64)
    x = np.array([[patterns[n][1][t] for t in TERM_NAMES] for n in names], dtype=np.float64)
    if (y <= 0).any() or (x.sum(axis=1) <= 0).any():
        raise ValueError("every pattern needs a positive time and some units")
    c0 = np.array([prior_model.costs()[t] for t in TERM_NAMES], dtype=np.float64)
    used = np.ones(len(names), dtype=bool)
    while True:
        c, prior, scale, fixed = _solve(x[used], y[used], c0)
        ratio = (x @ c) / y
        off = np.abs(np.log(ratio)) * used
        worst = int(off.argmax())
        if off[worst] <= math.log(OUTLIER) or (~used).sum() >= len(names) // 4:
            break
        used[worst] = False
    est = x @ c
    rows = tuple(
        FitRow(n, float(m), float(e), bool(u))
        for n, m, e, u in zip(names, y, est, used, strict=True)
    )
    return Fit(
        costs={t: float(v) for t, v in zip(TERM_NAMES, c, strict=True)},
        prior={t: float(v) for t, v in zip(TERM_NAMES, prior, strict=True)},
        scale=scale,
        rows=rows,
        pinned=tuple(t for t, f in zip(TERM_NAMES, fixed, strict=True) if f),
    )


# -- the command ----------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@dataclass(frozen=True)
class Calibration:
    """What :func:`calibrate` measured, counted and fitted."""

    model: CostModel
    fit: Fit
    measured: dict[str, dict[str, float]]
    """The native output by set (``4k``, ``thp``)."""
    notes: tuple[str, ...]


def calibrate(
    mib: int = 64,
    rounds: int = 3,
    *,
    thp: bool | None = None,
    command: str = "",
    measure: Callable[[int, bool, int], dict[str, float]] = native,
    count: Callable[[int, bool], Mapping[str, npt.NDArray[Any]]] = simulate,
) -> Calibration:
    """Measure, count and fit (the module docstring); ``thp`` None: where the host has THP.
    ``measure`` and ``count`` are the native run and the simulator run (replaceable so that
    the fit can be tested without either).

    Raises:
        CalibrationError: the native baseline could not be built or run.
    """
    notes: list[str] = []
    sets: list[tuple[str, bool, tuple[str, ...]]] = [("4k", False, PATTERNS_4K)]
    thp_ok, thp_note = host_thp()
    notes.append(thp_note)
    if thp is None:
        thp = thp_ok
        if not thp_ok:
            notes.append("THP patterns skipped: the host gives no PMD THPs to MADV_HUGEPAGE")
    if thp:
        sets.append(("thp", True, PATTERNS_THP))
    patterns: dict[str, tuple[float, Mapping[str, float]]] = {}
    measured: dict[str, dict[str, float]] = {}
    for label, huge, names in sets:
        nat = measure(mib, huge, rounds)
        if huge and nat.get("thp_kib", 0) * 1024 < mib * MiB // 2:
            notes.append(
                f"THP patterns skipped: only {nat.get('thp_kib', 0):.0f} KiB of the "
                f"{mib} MiB region were THPs"
            )
            continue
        measured[label] = nat
        sim = count(mib, huge)
        for name in names:
            ns = nat.get(name, 0.0) - (nat.get("store", 0.0) if name in TOUCHING else 0.0)
            if ns > 0:
                patterns[f"{label}:{name}"] = (ns, DEFAULT.quantities(sim[name]))
            else:
                notes.append(f"{label}:{name} left out: no time beyond the stores' own")
    result = fit(patterns)
    prov = Provenance(
        source="calibrated",
        host=platform.node(),
        kernel=platform.release(),
        cpu=_cpu_model(),
        date=datetime.now(UTC).isoformat(timespec="seconds"),
        cowcore_version=cowcore.__version__,
        command=command or f"cowcore calibrate --mib {mib} --rounds {rounds}",
        method=METHOD,
        notes=(
            *notes,
            f"{mib} MiB per pattern, best of {rounds}; the built-in table scaled by "
            f"{result.scale:.3g} as the prior; rms ln(estimated/measured) "
            f"{result.rms_log_ratio:.3f}",
            *(f"pinned at the floor: {t}" for t in result.pinned),
            *(
                f"left out of the fit: {r.pattern} (estimated/measured {r.ratio:.2f})"
                for r in result.excluded
            ),
        ),
    )
    model = replace(DEFAULT.with_costs(result.costs), provenance=prov, fit=result.rows)
    return Calibration(model, result, measured, tuple(notes))


def report(cal: Calibration) -> str:
    """The table ``cowcore calibrate`` prints: costs, their prior, and the patterns."""
    lines = [f"{'term':<16} {'ns/unit':>12} {'prior':>12}"]
    for t in TERM_NAMES:
        pin = "  (floor)" if t in cal.fit.pinned else ""
        lines.append(f"{t:<16} {cal.fit.costs[t]:>12.2f} {cal.fit.prior[t]:>12.2f}{pin}")
    lines += ["", f"{'pattern':<18} {'measured ns':>14} {'estimated ns':>14} {'ratio':>7}"]
    for r in cal.fit.rows:
        out = "" if r.used else "  (left out)"
        lines.append(
            f"{r.pattern:<18} {r.measured_ns:>14.0f} {r.estimated_ns:>14.0f} {r.ratio:>7.2f}{out}"
        )
    lines.append(f"rms ln(estimated/measured) over the patterns used: {cal.fit.rms_log_ratio:.3f}")
    lines += [f"note: {n}" for n in cal.notes]
    return "\n".join(lines)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``cowcore calibrate`` to the command line."""
    p = sub.add_parser(
        "calibrate",
        help="fit the cost model to this host's kernel and write costs.toml",
        description=(
            "Time the native kernel on fork/fault/COW patterns, count the simulator's "
            "events for the same patterns, fit nanoseconds per event, and write the table "
            f"(default {config_path()}). See docs/cost-model.md."
        ),
    )
    p.add_argument("--out", type=Path, default=None, help="where to write the TOML table")
    p.add_argument("--rounds", type=int, default=3, help="best of N (default 3)")
    p.add_argument("--mib", type=int, default=64, help="MiB per pattern (default 64)")
    p.add_argument(
        "--no-thp", action="store_true", help="skip the THP patterns even where THP is on"
    )
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    if args.mib < 1 or args.rounds < 1:
        print("cowcore calibrate: --mib and --rounds must be at least 1", file=sys.stderr)
        return 2
    command = f"cowcore calibrate --mib {args.mib} --rounds {args.rounds}"
    command += (f" --out {args.out}" if args.out else "") + (" --no-thp" if args.no_thp else "")
    try:
        cal = calibrate(args.mib, args.rounds, thp=False if args.no_thp else None, command=command)
    except CalibrationError as err:
        print(f"cowcore calibrate: {err}", file=sys.stderr)
        return 1
    out = cal.model.save(args.out or config_path())
    print(report(cal))
    print(f"wrote {out}")
    return 0
