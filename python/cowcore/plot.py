"""``cowcore plot``: figures of sweep tables (issue 14), with matplotlib.

Three figures, each a function that takes the tables of :mod:`cowcore.sweep` and returns a
:class:`matplotlib.figure.Figure` (made without pyplot, so nothing global is touched):

- :func:`timeline_figure`: a timeline metric (COW memory) over time, one line per
  configuration (repeats share a colour and one legend entry);
- :func:`bars_figure`: a metric per page size (or any parameter) and kernel profile (or
  any other) as grouped bars, the mean over repeats with their standard deviation;
- :func:`faults_figure`: faults by reason as stacked bars, one bar per configuration.

A column named ``*_kb`` is drawn in KiB, MiB or GiB, whichever keeps the numbers short.
``pip install 'cowcore[plot]'`` installs matplotlib. docs/sweeps.md shows each figure.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cowcore.compare import load_table, select
from cowcore.errors import CowError, InvalidArgumentError, MissingDependencyError
from cowcore.sweep import output_paths, parse_assignments, read_meta
from cowcore.units import parse_size

if TYPE_CHECKING:
    import pyarrow as pa
    from matplotlib.figure import Figure

__all__ = ["bars_figure", "faults_figure", "page_size", "save", "timeline_figure"]

PAGE_SIZE_COLUMN = "page_size"
"""The derived column of :func:`page_size` (a workload's own column of that name wins)."""


def _figure(width: float = 8.0, height: float = 4.8) -> Figure:
    try:
        figure = importlib.import_module("matplotlib.figure")
    except ImportError:
        raise MissingDependencyError(
            "plots need matplotlib, which is not installed: pip install 'cowcore[plot]'"
        ) from None
    fig: Figure = figure.Figure(figsize=(width, height), layout="constrained")
    return fig


def page_size(row: Mapping[str, Any]) -> str:
    """The largest folio size a configuration lets an anonymous fault allocate: the largest
    ``thp.<size>`` that is ``always`` (or ``inherit`` under ``thp.enabled = always``; 2M
    inherits by default, as in the kernel), ``4K`` if none (``thp_vma_allowable_orders``'
    rule for a VMA without madvise)."""
    top = row.get("thp.enabled")
    sizes: dict[str, str] = {"2M": "inherit"}
    for key, mode in row.items():
        if key.startswith("thp.") and key not in ("thp.enabled", "thp.use_zero_page") and mode:
            sizes[key[4:]] = str(mode)
    allowed = [
        s
        for s, mode in sizes.items()
        if mode == "always" or (mode == "inherit" and top == "always")
    ]
    return max(allowed, key=parse_size) if allowed else "4K"


def _rows(table: pa.Table) -> list[dict[str, Any]]:
    rows = [r for r in table.to_pylist() if r.get("error") is None]
    if PAGE_SIZE_COLUMN not in table.column_names:
        for r in rows:
            r[PAGE_SIZE_COLUMN] = page_size(r)
    return rows


def _params(table: pa.Table) -> list[str]:
    meta = read_meta(table)
    names = meta.get("params") or [
        c for c in table.column_names if c not in ("point", "workload", "error")
    ]
    return [n for n in names if n != meta.get("seed")]


def _varying(rows: Sequence[Mapping[str, Any]], names: Sequence[str]) -> list[str]:
    return [n for n in names if len({str(r.get(n)) for r in rows}) > 1]


def _label(row: Mapping[str, Any], names: Sequence[str]) -> str:
    return ", ".join(f"{n}={row.get(n)}" for n in names) or "all"


def _unit(column: str, values: Sequence[float]) -> tuple[float, str]:
    """The divisor and axis label of a column: ``*_kb`` in KiB, MiB or GiB."""
    if column.endswith("_kb"):
        top = max((abs(v) for v in values), default=0.0)
        name = column.removesuffix("_kb").replace("_", " ")
        for div, unit in ((1 << 20, "GiB"), (1 << 10, "MiB")):
            if top >= 10 * div:
                return float(div), f"{name} ({unit})"
        return 1.0, f"{name} (KiB)"
    return 1.0, _axis(column)


_UNITS = (
    ("_per_s", None),
    ("_mb_s", "MiB/s"),
    ("_ms", "ms"),
    ("_us", "µs"),
    ("_s", "s"),
    ("_kb", "KiB"),
)
"""Column-name suffixes and the unit they stand for (``None``: none, the name reads as one:
``writes_per_s``); the first that matches wins."""


def _axis(column: str) -> str:
    """An axis label for ``column``: words, with a unit suffix as the unit in parentheses
    (``time_s`` -> ``time (s)``, ``scan_mb_s`` -> ``scan (MiB/s)``)."""
    for suffix, unit in _UNITS:
        if column.endswith(suffix) and len(column) > len(suffix):
            if unit is None:
                break
            return f"{column.removesuffix(suffix).replace('_', ' ')} ({unit})"
    return column.replace("_", " ")


def _numeric(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def timeline_figure(
    table: pa.Table, timeline: pa.Table, *, y: str | None = None, x: str | None = None
) -> Figure:
    """``y`` (default: the timeline's first ``*_kb`` column, else its first metric)
    against ``x`` (default: the timeline's first column, a step or a time), one line per
    point, labelled by the parameters that vary between the points.

    Raises:
        InvalidArgumentError: an empty timeline or a column it does not have.
    """
    steps = timeline.to_pylist()
    if not steps:
        raise InvalidArgumentError("the timeline table is empty: the workload keeps none")
    own = [c for c in timeline.column_names if c not in ("point", "workload")]
    x = x or own[0]
    memory = [c for c in own if c != x and c.endswith("_kb")]
    y = y or (memory or [c for c in own if c != x] or [x])[0]
    for c in (x, y):
        if c not in timeline.column_names:
            raise InvalidArgumentError(
                f"the timeline has no column {c!r} (it has {', '.join(own)})"
            )
    rows = {r["point"]: r for r in _rows(table)}
    varying = _varying(list(rows.values()), _params(table))
    div, ylabel = _unit(y, [float(s[y]) for s in steps if _numeric(s[y])])
    fig = _figure()
    ax = fig.add_subplot()
    colours: dict[str, Any] = {}
    for point in dict.fromkeys(s["point"] for s in steps):
        mine = [s for s in steps if s["point"] == point]
        label = _label(rows.get(point, {}), varying)
        first = label not in colours
        (line,) = ax.plot(
            [s[x] for s in mine],
            [s[y] / div for s in mine],
            marker="o",
            markersize=3,
            color=colours.get(label),
            # Lines of configurations that coincide stay visible under one another.
            linestyle=("-", "--", ":", "-.")[
                (list(colours).index(label) if not first else len(colours)) % 4
            ],
            label=label if first else "_nolegend_",
        )
        colours.setdefault(label, line.get_color())
    ax.set_xlabel(_axis(x))
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    workload = steps[0].get("workload", "")
    ax.set_title(f"{workload}: {ylabel} over {_axis(x)}")
    if len(colours) > 1:
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def bars_figure(
    table: pa.Table, *, metric: str, x: str = PAGE_SIZE_COLUMN, hue: str = "kernel"
) -> Figure:
    """``metric`` as grouped bars: one group per value of ``x`` (default: the page size of
    :func:`page_size`), one bar per value of ``hue`` (default: the kernel profile); the
    mean over the rows of each pair (the repeats) with their standard deviation.

    Raises:
        InvalidArgumentError: a column the table does not have, or rows of one pair that
            differ in another parameter (select them first: ``--where``).
    """
    rows = _rows(table)
    for c in (metric, x, hue):
        if rows and c not in rows[0]:
            raise InvalidArgumentError(f"the table has no column {c!r}")
    varying = [p for p in _varying(rows, _params(table)) if p not in (x, hue)]
    cells: dict[tuple[str, str], set[tuple[str, ...]]] = {}
    for r in rows:
        config = tuple(str(r.get(p)) for p in varying)
        cells.setdefault((str(r[x]), str(r[hue])), set()).add(config)
    mixed = [
        p
        for i, p in enumerate(varying)
        if any(len({c[i] for c in configs}) > 1 for configs in cells.values())
    ]
    if mixed:  # a bar would average different configurations, not repeats
        raise InvalidArgumentError(
            f"the rows of one bar also differ in {', '.join(mixed)}: choose one value of "
            "each (--where KEY=VALUE) or draw them as x or hue"
        )
    xs = sorted({str(r[x]) for r in rows}, key=_order)
    hues = sorted({str(r[hue]) for r in rows}, key=_order)
    values = [float(r[metric]) for r in rows if _numeric(r[metric])]
    div, ylabel = _unit(metric, values)
    fig = _figure()
    ax = fig.add_subplot()
    width = 0.8 / max(len(hues), 1)
    for j, h in enumerate(hues):
        means, errs = [], []
        for v in xs:
            cell = [float(r[metric]) / div for r in rows if str(r[x]) == v and str(r[hue]) == h]
            means.append(statistics.fmean(cell) if cell else 0.0)
            errs.append(statistics.stdev(cell) if len(cell) > 1 else 0.0)
        pos = [i - 0.4 + width * (j + 0.5) for i in range(len(xs))]
        bars = ax.bar(pos, means, width, yerr=errs if any(errs) else None, label=f"{hue}={h}")
        ax.bar_label(bars, fmt="%.4g", fontsize="x-small", padding=2)
    ax.set_xticks(range(len(xs)), xs)
    ax.set_xlabel(_axis(x))
    ax.set_ylabel(ylabel)
    ax.margins(y=0.12)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(f"{ylabel} by {_axis(x)} and {_axis(hue)}")
    ax.legend(fontsize="small")
    return fig


def _order(value: str) -> tuple[int, float, str]:
    """Sizes by size (4K < 64K < 2M), numbers by value, the rest by name."""
    try:
        return (0, float(parse_size(value)), value)
    except (ValueError, CowError):
        pass
    try:
        return (1, float(value), value)
    except ValueError:
        return (2, 0.0, value)


def faults_figure(table: pa.Table, *, prefix: str = "faults.") -> Figure:
    """The faults by reason (the columns named ``<prefix><reason>``, those non-zero
    somewhere) as stacked bars, one bar per configuration (the mean over its repeats),
    labelled by the parameters that vary.

    Raises:
        InvalidArgumentError: no column starts with ``prefix``.
    """
    rows = _rows(table)
    reasons = [
        c
        for c in table.column_names
        if c.startswith(prefix) and any(_numeric(r.get(c)) and r[c] for r in rows)
    ]
    if not any(c.startswith(prefix) for c in table.column_names):
        raise InvalidArgumentError(f"the table has no column named {prefix}<reason>")
    varying = _varying(rows, _params(table))
    configs: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        configs.setdefault(_label(r, varying), []).append(r)
    labels = list(configs)
    fig = _figure(max(6.0, 1.1 * len(labels) + 3.5), 5.0)
    ax = fig.add_subplot()
    cmap = importlib.import_module("matplotlib").colormaps["tab20"]
    bottom = [0.0] * len(labels)
    for k, reason in enumerate(reasons):
        heights = [statistics.fmean(float(r[reason]) for r in configs[lab]) for lab in labels]
        ax.bar(
            range(len(labels)),
            heights,
            0.6,
            bottom=bottom,
            label=reason.removeprefix(prefix),
            color=cmap(k % 20),
        )
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    ax.set_xticks(range(len(labels)), [lab.replace(", ", "\n") for lab in labels], fontsize="small")
    ax.set_ylabel("faults")
    ax.grid(axis="y", alpha=0.3)
    ax.set_title("faults by reason")
    ax.legend(title="reason", fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def save(fig: Figure, paths: Sequence[str | Path]) -> None:
    """Write ``fig`` to each path, in the format its suffix names (``.png``, ``.svg``)."""
    for p in paths:
        fig.savefig(p, dpi=150)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``cowcore plot`` to the command line."""
    p = sub.add_parser(
        "plot",
        help="draw a sweep's results (matplotlib; PNG and SVG)",
        description="Draw a figure of a sweep output: 'timeline' (a timeline metric over "
        "time, one line per configuration), 'memory' (a metric as grouped bars per page "
        "size and profile), 'faults' (faults by reason, stacked). docs/sweeps.md, 'Plots'.",
    )
    p.add_argument("kind", choices=("timeline", "memory", "faults"))
    p.add_argument("table", metavar="OUTPUT", help="a sweep output (.parquet)")
    p.add_argument(
        "-o",
        "--out",
        action="append",
        required=True,
        metavar="FILE",
        help="image to write, .png or .svg (repeatable)",
    )
    p.add_argument("--metric", help="the metric to draw (memory: required; timeline: y)")
    p.add_argument("--x", help="timeline: the x column; memory: the groups (default page_size)")
    p.add_argument("--hue", default="kernel", help="memory: the bars of a group (default kernel)")
    p.add_argument("--prefix", default="faults.", help="faults: the reason columns' prefix")
    p.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="draw only the rows with this parameter value (repeatable)",
    )
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    try:
        for out in args.out:
            if Path(out).suffix not in (".png", ".svg"):
                raise InvalidArgumentError(f"{out}: the image must be .png or .svg")
        table = load_table(args.table)
        where = parse_assignments(args.where)
        if where:
            table = select(table, where)
        if args.kind == "timeline":
            tl_path = output_paths(args.table)["timeline_parquet"]
            timeline = importlib.import_module("pyarrow.parquet").read_table(tl_path)
            timeline = timeline.filter(
                importlib.import_module("pyarrow.compute").is_in(
                    timeline.column("point"), value_set=table.column("point")
                )
            )
            fig = timeline_figure(table, timeline, y=args.metric, x=args.x)
        elif args.kind == "memory":
            if args.metric is None:
                raise InvalidArgumentError("plot memory needs --metric (e.g. private_dirty_kb)")
            fig = bars_figure(table, metric=args.metric, x=args.x or PAGE_SIZE_COLUMN, hue=args.hue)
        else:
            fig = faults_figure(table, prefix=args.prefix)
        save(fig, args.out)
    except OSError as exc:
        print(f"cowcore: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    except CowError as exc:
        print(f"cowcore: plot: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    return 0
