"""``cowcore compare A B``: the metrics of two sweeps or configurations side by side (issue 14).

The report follows the convention of the Linux kernel test robot's comparisons (lkp-tests
``compare``, the tables in its regression reports): for each metric, the base value, its
relative standard deviation over repeats (``± 3%``), the ``%change``, the new value and its
deviation, then the metric's name::

                   6.12                        6.15
    ---------------- ---------------------------
             %stddev     %change         %stddev
                 \\          |                \\
           128 ±  3%     +10.0%        140 ±  2%  private_dirty_kb

A and B are two sweep outputs (rows matched on the parameters whose values the two have in
common; the parameters whose values differ are what is compared), or two configurations
(``kernel=6.12`` and ``kernel=6.15``) selected from one sweep output (``--in FILE``) or run
now (``--workload NAME``). Repeats (rows that differ only in the seed) are averaged; the
deviation is the sample standard deviation over them. docs/sweeps.md has examples.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import math
import statistics
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cowcore.errors import CowError, InvalidArgumentError
from cowcore.machine import Machine
from cowcore.sweep import (
    add_engine_options,
    output_paths,
    parse_assignments,
    read_meta,
    require_pyarrow,
    typed_params,
)
from cowcore.sweep import run as run_sweep
from cowcore.workloads import REGISTRY, Scalar

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "Change",
    "Comparison",
    "Group",
    "Stat",
    "compare_tables",
    "format_text",
    "load_table",
    "select",
    "to_json",
]

_SPECIAL = frozenset({"point", "workload", "error"})


@dataclass(frozen=True)
class Stat:
    """A metric over the repeats of one configuration: ``mean``, the sample standard
    deviation (``None`` with one repeat) and the number of repeats ``n``."""

    mean: float
    stddev: float | None
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        """The statistics of ``values`` (at least one)."""
        sd = statistics.stdev(values) if len(values) > 1 else None
        return cls(statistics.fmean(values), sd, len(values))

    @property
    def stddev_percent(self) -> float | None:
        """The deviation relative to the mean, in percent (lkp's ``%stddev``)."""
        if self.stddev is None or self.mean == 0:
            return None
        return 100.0 * self.stddev / abs(self.mean)


@dataclass(frozen=True)
class Change:
    """One metric of one matched configuration: ``base``, ``new`` and the relative change
    of the means in percent (``None`` when the base mean is 0 and the new one is not)."""

    metric: str
    base: Stat
    new: Stat

    @property
    def change_percent(self) -> float | None:
        if self.base.mean == 0:
            return 0.0 if self.new.mean == 0 else None
        return 100.0 * (self.new.mean - self.base.mean) / abs(self.base.mean)


@dataclass(frozen=True)
class Group:
    """The metrics of one configuration present on both sides; ``params`` are the
    parameters matched on (those with one value across the comparison are left out)."""

    params: Mapping[str, Scalar]
    changes: tuple[Change, ...]


@dataclass(frozen=True)
class Comparison:
    """The result of :func:`compare_tables`.

    Attributes:
        base_label, new_label: what the two sides are called in the report.
        differing: each parameter whose values differ between the sides, with the values
            on the base and on the new side.
        common: the parameters with one and the same value on every row of both sides.
        groups: one per configuration found on both sides.
        unmatched: rows (after averaging repeats) of each side with no counterpart.
        errors: rows of each side that recorded an error (left out).
    """

    base_label: str
    new_label: str
    differing: Mapping[str, tuple[tuple[Scalar, ...], tuple[Scalar, ...]]]
    common: Mapping[str, Scalar]
    groups: tuple[Group, ...]
    unmatched: tuple[int, int]
    errors: tuple[int, int]


def load_table(path: str | Path) -> pa.Table:
    """A sweep output (``.parquet``, or ``.csv`` when no Parquet file sits next to it,
    which loses the column metadata).

    Raises:
        OSError: no such file.
    """
    require_pyarrow()
    p = Path(path)
    if p.suffix == ".csv":
        sibling = output_paths(p)["parquet"]
        if sibling.exists():
            p = sibling
        else:
            return importlib.import_module("pyarrow.csv").read_csv(p)
    if not p.exists() and p.suffix != ".parquet":
        p = output_paths(p)["parquet"]
    if not p.exists():
        raise FileNotFoundError(2, "No such file or directory", str(path))
    table: pa.Table = importlib.import_module("pyarrow.parquet").read_table(p)
    return table


def _columns(table: pa.Table) -> tuple[list[str], list[str], str | None]:
    """The parameter and metric columns of a sweep table and its seed parameter: from the
    table's metadata, else from the registered workload's parameters.

    Raises:
        InvalidArgumentError: no metadata and the workload is not registered.
    """
    meta = read_meta(table)
    names = table.column_names
    if meta:
        params = [c for c in meta["params"] if c in names]
        # A file written before sweeps kept the parameters of earlier runs' rows listed as
        # such may list one among the metrics: the registered workload knows better.
        known = _known_params(meta.get("workload"))
        params += [c for c in names if c not in params and _is_param(c, known)]
        seed = meta.get("seed")
    else:
        workloads = set(table.column("workload").to_pylist()) if "workload" in names else set()
        if len(workloads) != 1 or next(iter(workloads)) not in REGISTRY:
            raise InvalidArgumentError(
                "cannot tell the parameters from the metrics of a table without sweep "
                "metadata (a CSV file) unless its workload is registered: compare the "
                ".parquet output, or --import the module that registers the workload"
            )
        known = _known_params(next(iter(workloads)))
        params = [c for c in names if _is_param(c, known)]
        seed = "seed" if "seed" in params else None  # the sweep's default seed parameter
    metrics = [c for c in names if c not in params and c not in _SPECIAL]
    return params, metrics, seed


def _known_params(workload: object) -> frozenset[str]:
    """The parameters of the registered ``workload`` (none if it is not registered)."""
    if not isinstance(workload, str) or workload not in REGISTRY:
        return frozenset()
    return frozenset(REGISTRY[workload].resolve({}))


def _is_param(column: str, known: frozenset[str]) -> bool:
    return column in known or column.startswith(("thp.", "policy."))


@functools.lru_cache(maxsize=32)
def _defaults(workload: str, kernel: str) -> dict[str, Scalar]:
    """What a run of ``workload`` on ``kernel`` takes for a parameter it is not given: the
    workload's resolved defaults, the machine's ``thp.<size>`` modes and the profile's
    ``policy.<name>`` values (which differ between profiles); ``{}`` when the workload is
    not registered or the kernel is not a profile."""
    if workload not in REGISTRY:
        return {}
    out: dict[str, Scalar] = dict(REGISTRY[workload].resolve({}))
    try:
        m = Machine(kernel, memory="64M")
    except CowError:
        return out
    out.update({f"thp.{size}": mode for size, mode in m.thp.sizes.items()})
    out.update({f"policy.{name}": value for name, value in m.policy.as_dict().items()})
    return out


def _fill_defaults(
    rows: list[dict[str, Any]], params: Iterable[str], workload: object
) -> list[dict[str, Any]]:
    """``rows`` with each missing (null) parameter set to what the run took for it
    (:func:`_defaults`), so that a row of a sweep that did not set ``thp.64K`` matches one
    that set it to the default, and differs from one that set it to something else. A
    parameter without a known default stays null: a value of its own."""
    names = list(params)
    for r in rows:
        missing = [p for p in names if r.get(p) is None]
        if not missing:
            continue
        name = r.get("workload") or workload
        kernel = r.get("kernel")
        if not isinstance(name, str):
            continue
        known = _defaults(name, str(kernel) if kernel is not None else "")
        if kernel is None and "kernel" in known:
            known = _defaults(name, str(known["kernel"]))
        for p in missing:
            if p in known:
                r[p] = known[p]
    return rows


def select(table: pa.Table, where: Mapping[str, Scalar | str]) -> pa.Table:
    """The rows of ``table`` whose parameters have the values in ``where`` (values are
    compared as text, so that ``kernel=6.12`` matches the string and ``pages=64`` the
    integer).

    Raises:
        InvalidArgumentError: a name that is not a column.
    """
    for name in where:
        if name not in table.column_names:
            raise InvalidArgumentError(
                f"no column {name!r} to select on (columns: {', '.join(table.column_names)})"
            )
    try:
        params = _columns(table)[0]
    except InvalidArgumentError:  # no metadata, no registered workload: values as they are
        params = []
    rows = _fill_defaults(table.to_pylist(), [k for k in where if k in params], None)
    keep = [
        i for i, row in enumerate(rows) if all(_text(row[k]) == _text(v) for k, v in where.items())
    ]
    return table.take(keep)


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _numeric(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def compare_tables(
    base: pa.Table,
    new: pa.Table,
    *,
    base_label: str = "base",
    new_label: str = "new",
    metrics: Sequence[str] | None = None,
) -> Comparison:
    """Match the rows of ``base`` and ``new`` and compare their metrics.

    The parameters whose sets of values differ between the two sides are what is compared;
    rows are matched on the others (the seed aside: rows that differ only in it are the
    repeats of one configuration and are averaged).

    Raises:
        InvalidArgumentError: no parameter differs and the sides cannot be told apart, a side
            with several values of a compared parameter for one configuration, or an
            unknown metric.
    """
    bp, bm, bseed = _columns(base)
    np_, nm, nseed = _columns(new)
    seed = bseed or nseed
    params = [p for p in dict.fromkeys([*bp, *np_]) if p != seed]
    brows = [r for r in base.to_pylist() if r.get("error") is None]
    nrows = [r for r in new.to_pylist() if r.get("error") is None]
    _fill_defaults(brows, params, read_meta(base).get("workload"))
    _fill_defaults(nrows, params, read_meta(new).get("workload"))
    errors = (base.num_rows - len(brows), new.num_rows - len(nrows))
    bvals = {p: tuple(dict.fromkeys(r.get(p) for r in brows)) for p in params}
    nvals = {p: tuple(dict.fromkeys(r.get(p) for r in nrows)) for p in params}
    differing = {p: (bvals[p], nvals[p]) for p in params if set(bvals[p]) != set(nvals[p])}
    keys = [p for p in params if p not in differing]
    common = {p: bvals[p][0] for p in keys if len(bvals[p]) == 1 and bvals[p][0] is not None}
    shown = [p for p in keys if p not in common]
    names = [m for m in dict.fromkeys([*bm, *nm]) if m in bm and m in nm]
    if metrics is not None:
        unknown = [m for m in metrics if m not in names]
        if unknown:
            raise InvalidArgumentError(
                f"no metric {', '.join(unknown)} on both sides (metrics: {', '.join(names)})"
            )
        names = list(metrics)

    def grouped(rows: Iterable[dict[str, Any]], side: str) -> dict[tuple[Any, ...], list[Any]]:
        out: dict[tuple[Any, ...], list[Any]] = {}
        configs: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        for r in rows:
            key = tuple(r.get(p) for p in keys)
            config = tuple(r.get(p) for p in differing)
            if configs.setdefault(key, config) != config:
                clash = ", ".join(differing)
                raise InvalidArgumentError(
                    f"the {side} side has several values of {clash} for one configuration: "
                    "select one on each side (compare kernel=6.12 kernel=6.15 --in FILE)"
                )
            out.setdefault(key, []).append(r)
        return out

    bgroups, ngroups = grouped(brows, "base"), grouped(nrows, "new")
    groups: list[Group] = []
    for key, b in bgroups.items():
        n = ngroups.get(key)
        if n is None:
            continue
        changes = []
        for m in names:
            bv = [float(r[m]) for r in b if _numeric(r.get(m))]
            nv = [float(r[m]) for r in n if _numeric(r.get(m))]
            if bv and nv:
                changes.append(Change(m, Stat.of(bv), Stat.of(nv)))
        label = dict(zip(keys, key, strict=True))
        groups.append(Group({p: label[p] for p in shown}, tuple(changes)))
    unmatched = (
        sum(1 for k in bgroups if k not in ngroups),
        sum(1 for k in ngroups if k not in bgroups),
    )
    return Comparison(base_label, new_label, differing, common, tuple(groups), unmatched, errors)


def _value(x: float) -> str:
    """A mean as lkp prints it: integers whole, large numbers in 4 significant digits,
    the rest with two decimals."""
    if abs(x) >= 1e9:
        return f"{x:.4g}"
    if x == int(x):
        return str(int(x))
    if abs(x) >= 1e8:
        return f"{x:.4g}"
    return f"{x:.2f}"


def _stddev(s: Stat) -> str:
    pct = s.stddev_percent
    if pct is None or round(pct) == 0:
        return " " * 6
    return f" ±{round(pct):3d}%"


def _change(c: Change) -> str:
    pct = c.change_percent
    if pct is None:
        return "+inf%" if c.new.mean > 0 else "-inf%"
    return f"{pct:+.1f}%"


def _header(names: Sequence[str], values: Sequence[Sequence[object]]) -> list[str]:
    lines = ["/".join(names) + ":"]
    lines += ["  " + "/".join(_text(v) for v in row) for row in values]
    return lines


def _side_labels(c: Comparison) -> tuple[str, str]:
    """The column heads: the compared parameters' values on each side where each has one
    (as lkp heads its columns with the two commits), else the sides' labels."""
    if c.differing and all(len(b) == 1 and len(n) == 1 for b, n in c.differing.values()):
        return (
            "/".join(_text(b[0]) for b, _ in c.differing.values()),
            "/".join(_text(n[0]) for _, n in c.differing.values()),
        )
    return c.base_label, c.new_label


def format_text(c: Comparison, *, hide_zero: bool = True) -> str:
    """The comparison as lkp's report prints one: a header naming what is held constant and
    what differs, then per configuration the metric table. With ``hide_zero``, metrics
    that are 0 on both sides are left out."""
    lines = ["=" * 89]
    if c.common:
        lines += _header(list(c.common), [list(c.common.values())])
        lines.append("")
    if c.differing:
        lines += _header(
            list(c.differing),
            [
                [" ".join(_text(v) for v in vals[0]) for vals in c.differing.values()],
                [" ".join(_text(v) for v in vals[1]) for vals in c.differing.values()],
            ],
        )
        lines.append("")
    for g in c.groups:
        if g.params:
            lines += _header(list(g.params), [list(g.params.values())])
            lines.append("")
        base, new = _side_labels(c)
        lines.append(f"{base[:16]:>16} {new[:27]:>27} ")
        lines.append("---------------- --------------------------- ")
        lines.append("         %stddev     %change         %stddev")
        lines.append("             \\          |                \\  ")
        for ch in g.changes:
            if hide_zero and ch.base.mean == 0 and ch.new.mean == 0:
                continue
            lines.append(
                f"{_value(ch.base.mean):>10}{_stddev(ch.base)}{_change(ch):>11}"
                f"{_value(ch.new.mean):>11}{_stddev(ch.new)}  {ch.metric}"
            )
        lines.append("")
    if not c.groups:
        lines.append("no configuration is on both sides")
    if any(c.unmatched):
        lines.append(
            f"unmatched configurations: {c.unmatched[0]} of {c.base_label}, "
            f"{c.unmatched[1]} of {c.new_label}"
        )
    if any(c.errors):
        lines.append(
            f"rows with an error (left out): {c.errors[0]} of {c.base_label}, "
            f"{c.errors[1]} of {c.new_label}"
        )
    return "\n".join(lines).rstrip() + "\n"


def _stat_json(s: Stat) -> dict[str, float | int | None]:
    return {"mean": s.mean, "stddev": s.stddev, "stddev_percent": s.stddev_percent, "n": s.n}


def to_json(c: Comparison) -> dict[str, Any]:
    """The comparison as plain JSON-ready data (``cowcore compare --json``)."""
    return {
        "base": c.base_label,
        "new": c.new_label,
        "common": dict(c.common),
        "differing": {p: {"base": list(b), "new": list(n)} for p, (b, n) in c.differing.items()},
        "groups": [
            {
                "params": dict(g.params),
                "metrics": [
                    {
                        "metric": ch.metric,
                        "base": _stat_json(ch.base),
                        "new": _stat_json(ch.new),
                        "change_percent": ch.change_percent,
                    }
                    for ch in g.changes
                ],
            }
            for g in c.groups
        ],
        "unmatched": {"base": c.unmatched[0], "new": c.unmatched[1]},
        "errors": {"base": c.errors[0], "new": c.errors[1]},
    }


def _is_config(arg: str) -> bool:
    return "=" in arg and not Path(arg).exists()


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``cowcore compare`` to the command line."""
    p = sub.add_parser(
        "compare",
        help="compare two sweep outputs or two configurations (lkp's %%change report)",
        description="Compare the metrics of A and B in the convention of the kernel test "
        "robot's reports: base ±%%stddev, %%change, new ±%%stddev. A and B are sweep outputs "
        "(.parquet), or configurations KEY=VALUE[,KEY=VALUE] selected from a sweep output "
        "(--in FILE) or run now (--workload NAME). docs/sweeps.md, 'Comparing'.",
    )
    p.add_argument("base", metavar="A", help="base: a sweep output or KEY=VALUE[,...]")
    p.add_argument("new", metavar="B", help="new: a sweep output or KEY=VALUE[,...]")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--in", dest="table", metavar="FILE", help="select A and B from FILE")
    source.add_argument("--workload", metavar="NAME", help="run A and B as this workload")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="--workload: a parameter of both runs (repeatable)",
    )
    p.add_argument("--repeats", type=int, default=1, help="--workload: runs per side")
    p.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import a module that registers workloads (repeatable)",
    )
    add_engine_options(p)
    p.add_argument("--metrics", help="compare only these metrics (comma-separated)")
    p.add_argument("--all", action="store_true", help="also show metrics 0 on both sides")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    p.set_defaults(func=_main)


def _config(text: str) -> dict[str, str]:
    return parse_assignments(part for part in text.split(",") if part)


def _main(args: argparse.Namespace) -> int:
    try:
        for module in args.imports:
            importlib.import_module(module)
        configs = (_is_config(args.base), _is_config(args.new))
        if args.workload is not None:
            if not all(configs):
                raise InvalidArgumentError("with --workload, A and B are KEY=VALUE[,...]")
            fixed = parse_assignments(args.set)
            base, new = (
                run_sweep(
                    {
                        "workload": args.workload,
                        "params": typed_params(args.workload, {**fixed, **_config(side)}),
                        "repeats": args.repeats,
                        "imports": args.imports,
                    },
                    workers=args.workers,
                    scheduler=args.scheduler,
                    dask_local=args.dask_local,
                )
                for side in (args.base, args.new)
            )
        elif args.table is not None:
            if not all(configs):
                raise InvalidArgumentError("with --in FILE, A and B are KEY=VALUE[,...]")
            table = load_table(args.table)
            base, new = select(table, _config(args.base)), select(table, _config(args.new))
        elif any(configs):
            raise InvalidArgumentError(
                "configurations KEY=VALUE need --in FILE (a sweep output) or --workload NAME"
            )
        else:
            base, new = load_table(args.base), load_table(args.new)
        metrics = args.metrics.split(",") if args.metrics else None
        labels = [a if _is_config(a) else Path(a).name.split(".")[0] for a in (args.base, args.new)]
        result = compare_tables(
            base, new, base_label=labels[0], new_label=labels[1], metrics=metrics
        )
    except OSError as exc:
        print(f"cowcore: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    except CowError as exc:
        print(f"cowcore: compare: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(to_json(result), indent=2))
    else:
        print(format_text(result, hide_zero=not args.all), end="")
    return 0
