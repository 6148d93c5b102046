"""Sweeps: one workload over the cross product of parameter values, as a tidy table (issue 14).

A sweep specification (TOML, read with :mod:`tomllib`) names a workload of
:mod:`cowcore.workloads`, the parameters it fixes and the axes it varies::

    workload = "snapshot"
    output = "bgsave.parquet"      # also bgsave.csv, bgsave.timeline.parquet/.csv
    repeats = 3                    # each point 3 times, the seed parameter varied
    seed = "seed"                  # which parameter is the seed (default "seed")
    imports = ["mypkg.workloads"]  # modules that register workloads (optional)

    [params]
    heap = "64M"

    [axes]
    kernel = ["6.12", "6.15"]
    "thp.64K" = ["never", "always"]

Every point (one combination of axis values, one repeat) runs in its own process and gives
one row: ``point`` (an id of the resolved parameters), ``workload``, one column per
parameter, one per metric, and ``error`` (empty unless the point failed; a failed point is a
row too, so that one bad point loses no other). The table goes to Parquet and CSV; a
workload's timeline (:attr:`~cowcore.workloads.WorkloadResult.timeline`) to a second table
keyed by ``point``. A sweep resumes: a point whose row is already in the output (without an
error) is not run again.

Engines: a local process pool (:class:`concurrent.futures.ProcessPoolExecutor` with one task
per worker process, ``max_tasks_per_child=1``), or Dask distributed (``scheduler`` =
``tcp://HOST:PORT``, or ``dask_local`` = N for a :class:`distributed.LocalCluster` on this
machine), imported only when asked for (``pip install 'cowcore[dask]'``).

docs/sweeps.md is the user's guide.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import itertools
import json
import multiprocessing
import os
import sys
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cowcore import workloads
from cowcore.errors import CowError, InvalidArgumentError, MissingDependencyError, SweepSpecError
from cowcore.workloads import Scalar, get

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "META_KEY",
    "Point",
    "SweepResult",
    "SweepSpec",
    "output_paths",
    "points",
    "read_meta",
    "run",
    "run_point",
    "run_sweep",
]

META_KEY = b"cowcore.sweep"
"""The Parquet schema-metadata key under which a sweep stores what its columns are (JSON:
``workload``, ``params``, ``metrics``, ``seed``); :mod:`cowcore.compare` reads it."""

DEFAULT_IMPORTS = ("cowcore.workloads",)
"""Modules every point imports before it looks its workload up (they register the built-in
workloads)."""

CHECKPOINT_SECONDS = 10.0
"""How often a running sweep rewrites its output, so that an interrupted sweep resumes
from (nearly) where it stopped; the output is also written when the sweep ends or is
interrupted."""

MAX_ATTEMPTS = 2
"""How many times a point is started before a worker process that died under it (killed,
out of host memory) is recorded as the point's error."""

_SPEC_KEYS = frozenset({"workload", "params", "axes", "repeats", "seed", "imports", "output"})


def _scalar(where: str, value: object) -> Scalar:
    if isinstance(value, bool | int | float | str):
        return value
    raise SweepSpecError(
        f"{where} must be a string, integer, float or boolean, not {type(value).__name__}"
    )


@dataclass(frozen=True)
class SweepSpec:
    """What a sweep runs.

    Attributes:
        workload: the registered name of the workload (:func:`cowcore.workloads.get`).
        params: parameters fixed for every point.
        axes: parameter name to the values it takes; the sweep runs their cross product,
            in the order given (the first axis varies slowest).
        repeats: how many times each combination runs; with more than one, the
            parameter named by ``seed`` takes ``seed, seed + 1, ...`` (from its fixed or
            default value), so that the repeats differ and are still deterministic.
        seed: the name of the seed parameter.
        imports: modules to import (in this process and in every worker) before the workload
            is looked up: those that register a workload of one's own.
        output: where the table goes (``.parquet``; the CSV and the timeline files sit next
            to it, see :func:`output_paths`); ``None`` keeps the results in memory only.
    """

    workload: str
    params: Mapping[str, Scalar] = field(default_factory=dict)
    axes: Mapping[str, tuple[Scalar, ...]] = field(default_factory=dict)
    repeats: int = 1
    seed: str = "seed"
    imports: tuple[str, ...] = ()
    output: Path | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], base: Path | None = None) -> SweepSpec:
        """The spec from a parsed TOML document; a relative ``output`` is taken relative to
        ``base`` (the spec file's directory) when given.

        Raises:
            SweepSpecError: an unknown key, a missing workload, a value of the wrong type.
        """
        unknown = sorted(set(data) - _SPEC_KEYS)
        if unknown:
            raise SweepSpecError(
                f"unknown key(s) in the sweep spec: {', '.join(unknown)} "
                f"(known: {', '.join(sorted(_SPEC_KEYS))})"
            )
        workload = data.get("workload")
        if not isinstance(workload, str) or not workload:
            raise SweepSpecError('the sweep spec must name its workload: workload = "NAME"')
        params = data.get("params", {})
        axes = data.get("axes", {})
        if not isinstance(params, Mapping) or not isinstance(axes, Mapping):
            raise SweepSpecError("[params] and [axes] must be tables")
        fixed = {str(k): _scalar(f"params.{k}", v) for k, v in params.items()}
        varied: dict[str, tuple[Scalar, ...]] = {}
        for name, values in axes.items():
            if not isinstance(values, list) or not values:
                raise SweepSpecError(f"axis {name!r} must be a non-empty list of values")
            varied[str(name)] = tuple(_scalar(f"axes.{name}[{i}]", v) for i, v in enumerate(values))
        both = sorted(set(fixed) & set(varied))
        if both:
            raise SweepSpecError(f"{', '.join(both)}: both fixed in [params] and an axis")
        repeats = data.get("repeats", 1)
        if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
            raise SweepSpecError(f"repeats must be a positive integer, not {repeats!r}")
        seed = data.get("seed", "seed")
        if not isinstance(seed, str):
            raise SweepSpecError(f"seed must name a parameter, not {seed!r}")
        imports = data.get("imports", [])
        if not isinstance(imports, list) or not all(isinstance(m, str) for m in imports):
            raise SweepSpecError("imports must be a list of module names")
        output = data.get("output")
        path: Path | None = None
        if output is not None:
            if not isinstance(output, str) or not output:
                raise SweepSpecError(f"output must be a path, not {output!r}")
            path = Path(output)
            if base is not None and not path.is_absolute():
                path = base / path
        return cls(workload, fixed, varied, repeats, seed, tuple(imports), path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SweepSpec:
        """The spec in the TOML file ``path``.

        Raises:
            SweepSpecError: not TOML, or not a valid spec.
            OSError: the file cannot be read.
        """
        p = Path(path)
        try:
            with p.open("rb") as f:
                data = tomllib.load(f)
        except tomllib.TOMLDecodeError as exc:
            raise SweepSpecError(f"{p}: not valid TOML: {exc}") from None
        return cls.from_mapping(data, base=p.parent)


@dataclass(frozen=True)
class Point:
    """One run of a sweep.

    Attributes:
        key: the point's id: a digest of the workload name and the resolved parameters
            (the ``point`` column; what resuming matches on).
        workload: the workload's name.
        params: every parameter, defaults filled in (as given, if they did not resolve).
        error: why the parameters did not resolve (the point is then not run).
        imports: the modules the worker imports first.
    """

    key: str
    workload: str
    params: Mapping[str, Scalar]
    error: str | None = None
    imports: tuple[str, ...] = DEFAULT_IMPORTS


def point_key(workload: str, params: Mapping[str, Scalar]) -> str:
    """The id of a point: the first 16 hex digits of the SHA-256 of its canonical JSON (the
    workload and the parameters sorted by name; ``1`` and ``1.0`` and ``true`` differ)."""
    canon = json.dumps([workload, sorted(params.items())], separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()[:16]


def _import_all(modules: Iterable[str]) -> None:
    for name in modules:
        importlib.import_module(name)


def points(spec: SweepSpec) -> list[Point]:
    """Every point of ``spec`` in order (the first axis slowest, repeats innermost).

    Raises:
        InvalidArgumentError: the workload is not registered (after ``spec.imports``).
        SweepSpecError: ``repeats`` > 1 and the seed parameter is not an integer parameter.
    """
    imports = (*DEFAULT_IMPORTS, *spec.imports)
    _import_all(imports)
    wl = get(spec.workload)
    defaults = {**wl.resolve({})}
    base_seed = 0
    if spec.repeats > 1:
        seed = spec.params.get(spec.seed, defaults.get(spec.seed))
        if isinstance(seed, bool) or not isinstance(seed, int) or spec.seed in spec.axes:
            raise SweepSpecError(
                f"repeats = {spec.repeats} needs an integer parameter {spec.seed!r} that is "
                f"not an axis to vary per repeat (workload {spec.workload!r} has "
                f'{spec.seed}={seed!r}; name another with seed = "NAME")'
            )
        base_seed = seed
    names = list(spec.axes)
    out: list[Point] = []
    for combo in itertools.product(*spec.axes.values()):
        for r in range(spec.repeats):
            given: dict[str, Scalar] = {**spec.params, **dict(zip(names, combo, strict=True))}
            if spec.repeats > 1:
                given[spec.seed] = base_seed + r
            for k, v in given.items():  # an integer where the default is a float: one key
                if isinstance(defaults.get(k), float) and type(v) is int:
                    given[k] = float(v)
            try:
                resolved = wl.resolve(given)
            except CowError as exc:
                key = point_key(spec.workload, given)
                out.append(Point(key, spec.workload, given, f"{type(exc).__name__}: {exc}"))
                continue
            key = point_key(spec.workload, resolved)
            out.append(Point(key, spec.workload, resolved, None, imports))
    return out


Row = dict[str, Scalar | None]


def run_point(point: Point) -> tuple[Row, list[Row]]:
    """Run one point (in a worker process): its row and its timeline rows.

    A workload that raises gives a row with the exception in ``error`` and no metrics; the
    exception does not propagate, so that it reaches the table rather than the engine.
    """
    head: Row = {"point": point.key, "workload": point.workload}
    if point.error is not None:
        return {**head, **point.params, "error": point.error}, []
    try:
        _import_all(point.imports)
        result = get(point.workload).run(point.params)
    except Exception as exc:  # any failure of one point is that point's row
        return {**head, **point.params, "error": f"{type(exc).__name__}: {exc}"}, []
    row: Row = {**head, **result.row(), "error": None}
    timeline: list[Row] = [{**head, **step} for step in result.timeline]
    return row, timeline


def output_paths(output: str | os.PathLike[str]) -> dict[str, Path]:
    """The files of a sweep whose output is ``output``: ``parquet`` and ``csv`` (the
    table), ``timeline_parquet`` and ``timeline_csv`` (the timelines). ``out.parquet`` (or
    ``out``) gives ``out.parquet``, ``out.csv``, ``out.timeline.parquet``,
    ``out.timeline.csv``."""
    p = Path(output)
    stem = p.with_suffix("") if p.suffix in (".parquet", ".csv") else p
    return {
        "parquet": stem.with_name(stem.name + ".parquet"),
        "csv": stem.with_name(stem.name + ".csv"),
        "timeline_parquet": stem.with_name(stem.name + ".timeline.parquet"),
        "timeline_csv": stem.with_name(stem.name + ".timeline.csv"),
    }


def require_pyarrow() -> Any:
    """The pyarrow module, or a :class:`MissingDependencyError` naming its install."""
    try:
        import pyarrow  # noqa: PLC0415  (optional: cowcore[sweep])
    except ImportError:
        raise MissingDependencyError(
            "sweeps write Parquet with pyarrow, which is not installed: "
            "pip install 'cowcore[sweep]'"
        ) from None
    return pyarrow


def _column(pa: Any, name: str, values: list[Scalar | None]) -> Any:
    if name == "error":
        return pa.array(values, type=pa.string())
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed kinds (a str and a number): text
        return pa.array([None if v is None else str(v) for v in values], type=pa.string())


def _table(rows: Sequence[Row], first: Sequence[str] = (), last: Sequence[str] = ()) -> pa.Table:
    """A table of ``rows`` with one column per key any row has (missing cells null),
    ``first`` and ``last`` columns placed so, the others in order of first appearance."""
    pa = require_pyarrow()
    names = dict.fromkeys(k for row in rows for k in row)
    order = [k for k in first if k in names]
    order += [k for k in names if k not in first and k not in last]
    order += [k for k in last if k in names]
    return pa.table({k: _column(pa, k, [row.get(k) for row in rows]) for k in order})


def _replace(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    tmp.replace(path)


def read_meta(table: pa.Table) -> dict[str, Any]:
    """What a sweep's table says of its columns (:data:`META_KEY`), or ``{}``."""
    meta = table.schema.metadata or {}
    raw = meta.get(META_KEY)
    return dict(json.loads(raw)) if raw else {}


@dataclass
class _Output:
    """The output files of one sweep, the rows they hold, and the rows added since."""

    paths: dict[str, Path] | None
    spec: SweepSpec
    params: Sequence[str]
    rows: dict[str, Row] = field(default_factory=dict)
    timeline: dict[str, list[Row]] = field(default_factory=dict)

    def load(self) -> None:
        if self.paths is None or not self.paths["parquet"].exists():
            return
        pq = importlib.import_module("pyarrow.parquet")
        table = pq.read_table(self.paths["parquet"])
        # The rows of earlier sweeps keep their parameters' columns parameters, including
        # those this spec does not set (a thp.64K axis dropped): not metrics.
        self.params = list(dict.fromkeys([*self.params, *read_meta(table).get("params", [])]))
        for row in table.to_pylist():
            # A null cell is a column this point does not have (a parameter of another
            # point's, the metrics of a failed point), except the error column.
            kept = {k: v for k, v in row.items() if v is not None}
            self.rows[str(row["point"])] = {**kept, "error": row.get("error")}
        if self.paths["timeline_parquet"].exists():
            for row in pq.read_table(self.paths["timeline_parquet"]).to_pylist():
                step = {k: v for k, v in row.items() if v is not None}
                self.timeline.setdefault(str(row["point"]), []).append(step)

    def done(self, key: str) -> bool:
        row = self.rows.get(key)
        return row is not None and row.get("error") is None

    def add(self, row: Row, timeline: list[Row]) -> None:
        key = str(row["point"])
        self.rows[key] = row
        self.timeline.pop(key, None)
        if timeline:
            self.timeline[key] = timeline

    def ordered(self, order: Sequence[str]) -> list[str]:
        """The keys of ``order`` first (the spec's points), then the others held."""
        wanted = dict.fromkeys(k for k in order if k in self.rows)
        return [*wanted, *(k for k in self.rows if k not in wanted)]

    def tables(self, keys: Sequence[str]) -> tuple[pa.Table, pa.Table]:
        rows = [self.rows[k] for k in keys]
        main = _table(rows, first=("point", "workload"), last=("error",))
        steps = [s for k in keys for s in self.timeline.get(k, [])]
        tl = _table(steps, first=("point", "workload"))
        params = [name for name in self.params if name in main.column_names]
        special = {"point", "workload", "error"}
        metrics = [c for c in main.column_names if c not in params and c not in special]
        meta = {
            "workload": self.spec.workload,
            "params": list(params),
            "metrics": metrics,
            "seed": self.spec.seed if self.spec.repeats > 1 else None,
        }
        encoded = {META_KEY: json.dumps(meta).encode()}
        return main.replace_schema_metadata(encoded), tl.replace_schema_metadata(encoded)

    def write(self, order: Sequence[str]) -> None:
        if self.paths is None or not self.rows:
            return
        pq = importlib.import_module("pyarrow.parquet")
        csv = importlib.import_module("pyarrow.csv")
        main, tl = self.tables(self.ordered(order))
        self.paths["parquet"].parent.mkdir(parents=True, exist_ok=True)
        _replace(self.paths["parquet"], lambda p: pq.write_table(main, p))
        _replace(self.paths["csv"], lambda p: csv.write_csv(main, p))
        if tl.num_rows:
            _replace(self.paths["timeline_parquet"], lambda p: pq.write_table(tl, p))
            _replace(self.paths["timeline_csv"], lambda p: csv.write_csv(tl, p))


@dataclass(frozen=True)
class SweepResult:
    """What :func:`run_sweep` returns.

    Attributes:
        table: one row per point of the spec (those run now and those found in the output).
        timeline: the timelines of those points, keyed by ``point``.
        ran: the points run by this call.
        skipped: the points found done in the output and not run again.
        errors: the points (of the spec) whose row has an error.
        stored: the rows the output holds after the run: the spec's, and those of points
            of earlier specs that are no longer in this one (``table``'s only without an
            output).
    """

    table: pa.Table
    timeline: pa.Table
    ran: int
    skipped: int
    errors: int
    stored: int = 0


Engine = Callable[[Sequence[Point], Callable[[Point, tuple[Row, list[Row]]], None]], None]


def _inline_engine(
    todo: Sequence[Point], done: Callable[[Point, tuple[Row, list[Row]]], None]
) -> None:
    for p in todo:
        done(p, run_point(p))


def _died(p: Point, why: str) -> tuple[Row, list[Row]]:
    row: Row = {"point": p.key, "workload": p.workload, **p.params, "error": why}
    return row, []


def _pool_engine(workers: int, preload: Sequence[str]) -> Engine:
    def engine(todo: Sequence[Point], done: Callable[[Point, tuple[Row, list[Row]]], None]) -> None:
        # forkserver: each worker is forked from a clean server that has imported cowcore
        # once (fast, and safe in a parent with threads); spawn would import it per point,
        # and plain fork is refused with max_tasks_per_child. The server imports what every
        # point needs (the workloads, this module for run_point, numpy, which the workloads
        # import on first use): left to each point, those imports cost ~150 ms a point and
        # made a pool of small points no faster than one worker (BENCHMARKS.md, "Sweeps").
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(
            ["cowcore", *DEFAULT_IMPORTS, "cowcore.sweep", "numpy", *preload]
        )
        attempts = dict.fromkeys((p.key for p in todo), 0)
        pending = list(todo)
        while pending:
            with ProcessPoolExecutor(
                max_workers=workers, mp_context=ctx, max_tasks_per_child=1
            ) as pool:
                futures: dict[Future[tuple[Row, list[Row]]], Point] = {}
                for p in pending:
                    attempts[p.key] += 1
                    futures[pool.submit(run_point, p)] = p
                pending = []
                running = set(futures)
                while running:
                    finished, running = wait(running, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        p = futures[fut]
                        try:
                            done(p, fut.result())
                        except BrokenProcessPool:
                            # A worker died (killed, out of host memory); the pool is broken
                            # and every unfinished point fails with it. Start them again in
                            # a new pool; a point that was in the pool MAX_ATTEMPTS times is
                            # recorded as the one that kills its worker.
                            if attempts[p.key] >= MAX_ATTEMPTS:
                                done(p, _died(p, "BrokenProcessPool: the worker process died"))
                            else:
                                pending.append(p)

    return engine


def _dask_engine(scheduler: str | None, local_workers: int | None) -> Engine:
    try:
        distributed = importlib.import_module("distributed")
    except ImportError:
        raise MissingDependencyError(
            "the Dask engine needs dask.distributed, which is not installed: "
            "pip install 'cowcore[dask]'"
        ) from None

    def engine(todo: Sequence[Point], done: Callable[[Point, tuple[Row, list[Row]]], None]) -> None:
        cluster = None
        if scheduler is not None:
            client = distributed.Client(scheduler)
        else:
            cluster = distributed.LocalCluster(
                n_workers=local_workers,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
                # No dashboard; the scheduler's own HTTP endpoints on a free port, not on
                # 8787, which another cluster on the machine may hold.
                scheduler_kwargs={"dashboard_address": ":0"},
            )
            client = distributed.Client(cluster)
        try:
            futures = client.map(
                run_point, list(todo), key=[f"cowcore-point-{p.key}" for p in todo], pure=False
            )
            by_key = {f.key: p for f, p in zip(futures, todo, strict=True)}
            for fut in distributed.as_completed(futures):
                p = by_key[fut.key]
                try:
                    done(p, fut.result())
                except Exception as exc:  # KilledWorker and the like: the point's row
                    done(p, _died(p, f"{type(exc).__name__}: {exc}"))
        finally:
            client.close()
            if cluster is not None:
                cluster.close()

    return engine


def _progress(total: int, enabled: bool, desc: str) -> Any:
    from tqdm import tqdm  # noqa: PLC0415  (a dependency; imported when a sweep runs)

    return tqdm(total=total, disable=not enabled, unit="point", desc=desc, file=sys.stderr)


def run_sweep(
    spec: SweepSpec | Mapping[str, Any] | str | os.PathLike[str],
    *,
    output: str | os.PathLike[str] | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    dask_local: int | None = None,
    progress: bool = False,
) -> SweepResult:
    """Run every point of ``spec`` not already in its output; the table of all its points.

    Args:
        spec: a :class:`SweepSpec`, a parsed TOML mapping, or the path of a TOML file.
        output: overrides the spec's ``output`` (see :func:`output_paths`).
        workers: local process-pool size (default: the number of CPUs); ``0`` runs the
            points in this process, one after the other (for debugging).
        scheduler: the address of a Dask scheduler (``tcp://HOST:PORT``) to run on.
        dask_local: run on a Dask ``LocalCluster`` of this many worker processes.
        progress: show a progress bar on stderr.

    Raises:
        SweepSpecError: a malformed spec, or both Dask options given.
        InvalidArgumentError: an unknown workload.
        MissingDependencyError: pyarrow (or distributed, for Dask) is not installed.
    """
    if isinstance(spec, str | os.PathLike):
        spec = SweepSpec.load(spec)
    elif not isinstance(spec, SweepSpec):
        spec = SweepSpec.from_mapping(spec)
    if scheduler is not None and dask_local is not None:
        raise SweepSpecError("give a Dask scheduler or a local Dask cluster size, not both")
    require_pyarrow()
    all_points = points(spec)
    out_path = output if output is not None else spec.output
    names = dict.fromkeys(name for p in all_points for name in p.params)
    out = _Output(output_paths(out_path) if out_path is not None else None, spec, list(names))
    out.load()
    todo = list({p.key: p for p in all_points if not out.done(p.key)}.values())
    order = [p.key for p in all_points]
    skipped = len(dict.fromkeys(order)) - len(todo)

    engine: Engine
    if scheduler is not None or dask_local is not None:
        engine = _dask_engine(scheduler, dask_local)
    elif workers == 0:
        engine = _inline_engine
    else:
        engine = _pool_engine(workers or os.cpu_count() or 1, spec.imports)

    bar = _progress(len(todo), progress, spec.workload)
    last = time.monotonic()

    def done(p: Point, result: tuple[Row, list[Row]]) -> None:
        nonlocal last
        out.add(*result)
        bar.update(1)
        if time.monotonic() - last > CHECKPOINT_SECONDS:
            out.write(order)
            last = time.monotonic()

    try:
        if todo:
            engine(todo, done)
    finally:
        bar.close()
        out.write(order)
    keys = [k for k in dict.fromkeys(order) if k in out.rows]
    table, timeline = out.tables(keys)
    errors = sum(1 for k in keys if out.rows[k].get("error") is not None)
    return SweepResult(table, timeline, len(todo), skipped, errors, len(out.rows))


def run(
    spec: SweepSpec | Mapping[str, Any] | str | os.PathLike[str],
    *,
    output: str | os.PathLike[str] | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    dask_local: int | None = None,
    progress: bool = False,
) -> pa.Table:
    """:func:`run_sweep`'s table: one row per point (``table.to_pandas()`` for pandas)."""
    return run_sweep(
        spec,
        output=output,
        workers=workers,
        scheduler=scheduler,
        dask_local=dask_local,
        progress=progress,
    ).table


def parse_assignments(items: Iterable[str]) -> dict[str, str]:
    """:func:`cowcore.workloads.parse_assignments`, refusing a bad item as a
    :class:`SweepSpecError`."""
    try:
        return workloads.parse_assignments(items)
    except InvalidArgumentError as exc:
        raise SweepSpecError(str(exc)) from None


def typed_params(workload: str, raw: Mapping[str, str]) -> dict[str, Scalar]:
    """:func:`cowcore.workloads.typed_params`, refusing a bad value as a
    :class:`SweepSpecError` (an unknown workload stays an :class:`InvalidArgumentError`)."""
    get(workload)
    try:
        return workloads.typed_params(workload, raw)
    except InvalidArgumentError as exc:
        raise SweepSpecError(str(exc)) from None


def add_engine_options(parser: argparse.ArgumentParser) -> None:
    """``--workers``, ``--scheduler``, ``--dask-local``: where the points run."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="local worker processes (default: one per CPU; 0 runs in this process)",
    )
    where.add_argument(
        "--scheduler",
        metavar="tcp://HOST:PORT",
        help="run the points on this Dask scheduler (pip install 'cowcore[dask]')",
    )
    where.add_argument(
        "--dask-local",
        type=int,
        metavar="N",
        help="run the points on a Dask LocalCluster of N worker processes",
    )


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``cowcore sweep`` to the command line."""
    p = sub.add_parser(
        "sweep",
        help="run a workload over the cross product of parameter values (docs/sweeps.md)",
        description="Run the points of a sweep spec (TOML) not already in its output and "
        "write one row per point to Parquet and CSV (docs/sweeps.md). Exits 1 if a point "
        "failed (its row says why).",
    )
    p.add_argument("spec", metavar="SPEC.toml", help="sweep specification")
    p.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import a module that registers workloads (repeatable; adds to the spec's)",
    )
    p.add_argument("-o", "--output", help="output path (overrides the spec's output)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="fix a parameter for every point (overrides the spec; repeatable)",
    )
    add_engine_options(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    try:
        spec = SweepSpec.load(args.spec)
        if args.imports:
            spec = SweepSpec(
                spec.workload,
                spec.params,
                spec.axes,
                spec.repeats,
                spec.seed,
                (*spec.imports, *args.imports),
                spec.output,
            )
        _import_all((*DEFAULT_IMPORTS, *spec.imports))
        fixed = typed_params(spec.workload, parse_assignments(args.set))
        if fixed:
            axes = {k: v for k, v in spec.axes.items() if k not in fixed}
            spec = SweepSpec(
                spec.workload,
                {**spec.params, **fixed},
                axes,
                spec.repeats,
                spec.seed,
                spec.imports,
                spec.output,
            )
        if args.output is None and spec.output is None:
            print(
                f"cowcore: {args.spec}: the spec names no output; give -o PATH",
                file=sys.stderr,
            )
            return 2
        result = run_sweep(
            spec,
            output=args.output,
            workers=args.workers,
            scheduler=args.scheduler,
            dask_local=args.dask_local,
            progress=not args.no_progress,
        )
    except OSError as exc:
        print(f"cowcore: {exc.filename or args.spec}: {exc.strerror}", file=sys.stderr)
        return 2
    except CowError as exc:
        print(f"cowcore: {args.spec}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    dest = output_paths(args.output or spec.output or "")["parquet"]
    print(
        f"{result.table.num_rows} points of the spec in {dest}: {result.ran} run, "
        f"{result.skipped} already there, {result.errors} with an error; the file holds "
        f"{result.stored} points",
        file=sys.stderr,
    )
    return 1 if result.errors else 0
