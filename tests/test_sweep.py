"""The sweep engine: specs, points, the table, resuming, errors and the engines (issue 14).

The workloads are the real ones of ``tests/sweep_workloads.py`` (registered in the worker
processes through the spec's ``imports``); the expected counts are derived by hand from
their shape: with 4K pages, a child that writes k shared pages copies k of them, and a
parent whose child has exited reuses them.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import cowcore
from cowcore.errors import InvalidArgumentError, SweepSpecError
from cowcore.sweep import SweepSpec, output_paths, point_key, points, run, run_sweep
from tests import sweep_workloads

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

IMPORTS = ["tests.sweep_workloads"]
ROOT = Path(__file__).resolve().parent.parent


def spec(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "workload": "test_fork_write",
        "imports": IMPORTS,
        "params": {"pages": 32},
        "axes": {"writer": ["child", "parent"], "fraction": [0.25, 0.5]},
    }
    base.update(overrides)
    return base


def rows(table: Any) -> list[dict[str, Any]]:
    return list(table.to_pylist())


def test_spec_rejects_what_it_does_not_know() -> None:
    with pytest.raises(SweepSpecError, match="unknown key"):
        SweepSpec.from_mapping({"workload": "x", "axis": {}})
    with pytest.raises(SweepSpecError, match="name its workload"):
        SweepSpec.from_mapping({"params": {}})
    with pytest.raises(SweepSpecError, match="non-empty list"):
        SweepSpec.from_mapping({"workload": "x", "axes": {"pages": 4}})
    with pytest.raises(SweepSpecError, match="both fixed"):
        SweepSpec.from_mapping({"workload": "x", "params": {"a": 1}, "axes": {"a": [1, 2]}})
    with pytest.raises(SweepSpecError, match="positive integer"):
        SweepSpec.from_mapping({"workload": "x", "repeats": 0})
    with pytest.raises(InvalidArgumentError, match="no workload 'nope'"):
        points(SweepSpec.from_mapping({"workload": "nope"}))
    with pytest.raises(SweepSpecError, match="integer parameter 'steps2'"):
        points(SweepSpec.from_mapping(spec(repeats=2, seed="steps2")))


def test_spec_file_output_is_relative_to_the_spec(tmp_path: Path) -> None:
    (tmp_path / "s.toml").write_text('workload = "test_fork_write"\noutput = "out/r.parquet"\n')
    assert SweepSpec.load(tmp_path / "s.toml").output == tmp_path / "out" / "r.parquet"
    (tmp_path / "bad.toml").write_text("workload = \n")
    with pytest.raises(SweepSpecError, match="not valid TOML"):
        SweepSpec.load(tmp_path / "bad.toml")


def test_points_are_the_cross_product_with_repeats_innermost() -> None:
    pts = points(SweepSpec.from_mapping(spec(repeats=3)))
    combos = [(p.params["writer"], p.params["fraction"], p.params["seed"]) for p in pts]
    assert combos == [
        (w, f, s) for w in ("child", "parent") for f in (0.25, 0.5) for s in (0, 1, 2)
    ]
    assert len({p.key for p in pts}) == len(pts)
    assert all(p.params["pages"] == 32 and p.params["kernel"] == "6.15" for p in pts)
    # The key is that of the resolved parameters: an integer given for a float parameter
    # is the same point.
    one = points(SweepSpec.from_mapping(spec(axes={"fraction": [1]})))[0]
    assert one.params["fraction"] == 1.0
    assert one.key == point_key("test_fork_write", {**one.params, "fraction": 1.0})


def test_rows_hold_parameters_and_metrics(tmp_path: Path) -> None:
    out = tmp_path / "r.parquet"
    result = run_sweep(spec(output=str(out)), workers=2)
    assert (result.ran, result.skipped, result.errors) == (4, 0, 0)
    got = rows(result.table)
    assert [(r["writer"], r["fraction"]) for r in got] == [
        ("child", 0.25),
        ("child", 0.5),
        ("parent", 0.25),
        ("parent", 0.5),
    ]
    for r in got:
        k = round(r["fraction"] * 32)
        if r["writer"] == "child":  # both map every page: each write copies
            assert (r["copies"], r["reuses"]) == (k, 0)
            assert r["faults.small_other_refs"] == k
            assert r["private_dirty_kb"] == 4 * k
        else:  # the child exited: each write reuses the parent's page
            assert (r["copies"], r["reuses"]) == (0, k)
            assert r["faults.small_sole_ref"] == k
            assert r["private_dirty_kb"] == 4 * 32
        assert r["error"] is None
    files = output_paths(out)
    assert pq.read_table(files["parquet"]).to_pylist() == got
    csv_lines = files["csv"].read_text().splitlines()
    assert len(csv_lines) == 5
    assert csv_lines[0].split(",")[:3] == ['"point"', '"workload"', '"kernel"']
    # The timeline: steps + 1 rows per point, keyed by the point, the last one the end state.
    timeline = rows(pq.read_table(files["timeline_parquet"]))
    assert len(timeline) == 4 * 5
    for r in got:
        steps = [t for t in timeline if t["point"] == r["point"]]
        assert [t["step"] for t in steps] == [0, 1, 2, 3, 4]
        assert steps[-1]["used_kb"] == r["used_kb"]
        assert steps[-1]["written_pages"] == round(r["fraction"] * 32)
    assert files["timeline_csv"].exists()


def test_metadata_names_parameters_and_metrics(tmp_path: Path) -> None:
    from cowcore.sweep import read_meta  # noqa: PLC0415

    table = run(spec(repeats=2), workers=0)
    meta = read_meta(table)
    assert meta["workload"] == "test_fork_write"
    assert meta["seed"] == "seed"
    assert {"writer", "fraction", "pages", "kernel", "seed"} <= set(meta["params"])
    assert {"copies", "reuses", "private_dirty_kb"} <= set(meta["metrics"])
    assert not set(meta["params"]) & set(meta["metrics"])


def test_engines_agree_and_each_point_has_its_own_process(tmp_path: Path) -> None:
    host = {"workload": "test_host_process", "imports": IMPORTS, "axes": {"seed": [0, 1, 2, 3]}}
    pids = [r["host_pid"] for r in rows(run(host, workers=2))]
    assert len(set(pids)) == 4
    pool = run(spec(), workers=2)
    inline = run(spec(), workers=0)
    assert rows(pool) == rows(inline)


def test_resume_skips_points_already_done(tmp_path: Path) -> None:
    out = tmp_path / "r.parquet"
    first = run_sweep(spec(output=str(out)), workers=0)
    again = run_sweep(spec(output=str(out)), workers=0)
    assert (again.ran, again.skipped) == (0, 4)
    assert rows(again.table) == rows(first.table)
    # A new axis value runs only the new points; the file keeps every point.
    wider = spec(
        output=str(out), axes={"writer": ["child", "parent"], "fraction": [0.25, 0.5, 1.0]}
    )
    more = run_sweep(wider, workers=0)
    assert (more.ran, more.skipped) == (2, 4)
    assert pq.read_table(out).num_rows == 6
    # A row removed from the output is run again.
    table = pq.read_table(out)
    pq.write_table(table.slice(1), out)
    redo = run_sweep(wider, workers=0)
    assert (redo.ran, redo.skipped) == (1, 5)
    assert rows(redo.table) == rows(more.table)


def test_a_failing_point_is_a_row(tmp_path: Path) -> None:
    out = tmp_path / "r.parquet"
    # 4M of memory holds 8 pages but not 2048 (8M): that point runs out of memory; a value
    # of the wrong type fails to resolve; the others run.
    s = spec(
        output=str(out),
        params={"memory": "4M"},
        axes={"pages": [8, 2048, "many"]},
    )
    result = run_sweep(s, workers=2)
    got = rows(result.table)
    assert result.errors == 2
    # A column of mixed kinds is kept as text.
    assert [r["pages"] for r in got] == ["8", "2048", "many"]
    assert got[0]["error"] is None
    assert got[0]["copies"] == 4
    assert got[1]["error"].startswith("OutOfMemoryError")
    assert got[1]["copies"] is None
    assert got[2]["error"].startswith("InvalidArgumentError")
    # Resuming runs the failed points again (and only them).
    again = run_sweep(s, workers=0)
    assert (again.ran, again.skipped, again.errors) == (2, 1, 2)


def test_a_dead_worker_is_that_points_error() -> None:
    host = {
        "workload": "test_host_process",
        "imports": IMPORTS,
        "axes": {"die": [False, True], "seed": [0, 1]},
    }
    got = rows(run(host, workers=1))
    assert [r["error"] is None for r in got] == [True, True, False, False]
    assert all("worker process died" in r["error"] for r in got[2:])
    assert got[0]["rss_kb"] == got[1]["rss_kb"] == 16


def test_repeats_vary_the_seed() -> None:
    got = rows(run(spec(repeats=2, axes={"writer": ["child"]}), workers=0))
    assert [r["seed"] for r in got] == [0, 1]
    assert got[0]["point"] != got[1]["point"]


def test_both_backends_give_the_same_rows() -> None:
    got = rows(run(spec(axes={"backend": list(cowcore.BACKENDS)}), workers=0))
    strip = [{k: v for k, v in r.items() if k not in ("point", "backend")} for r in got]
    assert len(strip) == len(cowcore.BACKENDS)
    assert all(s == strip[0] for s in strip)


def test_to_pandas() -> None:
    pytest.importorskip("pandas")
    frame = run(spec(), workers=0).to_pandas()
    assert list(frame["copies"]) == [8, 16, 0, 0]


@pytest.mark.skipif(
    importlib.util.find_spec("distributed") is None,
    reason="dask.distributed is not installed (pip install 'cowcore[dask]')",
)
def test_dask_local_cluster_gives_the_pool_table(tmp_path: Path) -> None:
    on_dask = run_sweep(spec(output=str(tmp_path / "d.parquet")), dask_local=2)
    assert (on_dask.ran, on_dask.errors) == (4, 0)
    assert rows(on_dask.table) == rows(run(spec(), workers=0))
    assert on_dask.timeline.num_rows == 20


@pytest.mark.skipif(
    importlib.util.find_spec("distributed") is None,
    reason="dask.distributed is not installed (pip install 'cowcore[dask]')",
)
def test_dask_local_cluster_does_not_need_port_8787() -> None:
    """Another cluster on the machine holds the default dashboard port: the local cluster
    still starts (it asks for no fixed port), without a warning."""
    holder = socket.socket()
    try:
        holder.bind(("0.0.0.0", 8787))
        holder.listen()
    except OSError:
        pass  # someone holds it already: the same situation
    try:
        assert run_sweep(spec(), dask_local=1).errors == 0
    finally:
        holder.close()


def test_dask_options_are_exclusive() -> None:
    with pytest.raises(SweepSpecError, match="not both"):
        run(spec(), scheduler="tcp://127.0.0.1:1", dask_local=2)


def test_cli(tmp_path: Path) -> None:
    (tmp_path / "s.toml").write_text(
        'workload = "test_fork_write"\nimports = ["tests.sweep_workloads"]\n'
        'output = "r.parquet"\n[axes]\nwriter = ["child", "parent"]\n'
    )
    cmd = [sys.executable, "-m", "cowcore", "sweep", str(tmp_path / "s.toml"), "--workers", "1"]
    env_path = {"PYTHONPATH": f"{ROOT}:{ROOT / 'python'}"}
    done = subprocess.run(
        [*cmd, "--set", "pages=16", "--no-progress"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env={**os.environ, **env_path},
    )
    assert done.returncode == 0, done.stderr
    assert "2 points of the spec" in done.stderr
    assert "2 run, 0 already there, 0 with an error; the file holds 2 points" in done.stderr
    table = pq.read_table(tmp_path / "r.parquet")
    assert table.column("pages").to_pylist() == [16, 16]
    failing = subprocess.run(
        [*cmd, "--set", "memory=4M", "--set", "pages=2048", "--no-progress"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env={**os.environ, **env_path},
    )
    assert failing.returncode == 1
    # Two new points (other parameters); the file keeps the first run's two as well.
    assert "2 points of the spec" in failing.stderr
    assert "2 with an error; the file holds 4 points" in failing.stderr


def test_module_registers_its_workloads() -> None:
    assert sweep_workloads.FORK_WRITE.name == "test_fork_write"
