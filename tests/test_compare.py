"""``cowcore compare``: matching, statistics and lkp's report layout (issue 14)."""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path
from typing import Any

import pytest

from cowcore.cli import main
from cowcore.compare import compare_tables, format_text, load_table, select, to_json
from cowcore.errors import InvalidArgumentError
from cowcore.sweep import META_KEY, read_meta, run, run_sweep
from tests import sweep_workloads

pa = pytest.importorskip("pyarrow")
pcsv = pytest.importorskip("pyarrow.csv")

IMPORTS = ["tests.sweep_workloads"]
PAGES = 32
K = PAGES // 2  # the pages the writer writes (fraction 0.5)


def sweep(tmp_path: Path, name: str, **params: Any) -> Path:
    out = tmp_path / f"{name}.parquet"
    run_sweep(
        {
            "workload": "test_fork_write",
            "imports": IMPORTS,
            "params": {"pages": PAGES, "thp.64K": "always", **params},
            "axes": {"writer": ["child", "parent"]},
            "repeats": 2,
            "output": str(out),
        },
        workers=0,
    )
    return out


def test_two_sweeps_differing_in_the_kernel(tmp_path: Path) -> None:
    base = load_table(sweep(tmp_path, "a", kernel="6.12"))
    new = load_table(sweep(tmp_path, "b", kernel="6.15"))
    c = compare_tables(base, new, metrics=["copies", "reuses"])
    assert dict(c.differing) == {"kernel": (("6.12",), ("6.15",))}
    assert c.common["pages"] == PAGES
    assert "seed" not in c.common  # the repeats' seed is averaged over, not matched on
    assert [dict(g.params) for g in c.groups] == [{"writer": "child"}, {"writer": "parent"}]
    child, parent = ({ch.metric: ch for ch in g.changes} for g in c.groups)
    # While the child lives, every write to the shared 64K folios copies one page on both
    # kernels; after it exits, 6.12 still copies out of a large folio and 6.15 reuses it.
    assert (child["copies"].base.mean, child["copies"].new.mean) == (K, K)
    assert child["copies"].change_percent == 0.0
    assert (parent["copies"].base.mean, parent["copies"].new.mean) == (K, 0)
    assert parent["copies"].change_percent == -100.0
    assert parent["reuses"].change_percent is None  # from 0: no finite change
    assert parent["copies"].base.n == 2
    assert c.unmatched == (0, 0)


def test_statistics_over_repeats() -> None:
    sweep_workloads.FORK_WRITE.resolve({})  # the module registers the workload
    # A hand-made table of the workload's columns (no sweep metadata, as a CSV gives):
    # the parameters are known from the registered workload.
    base_copies, new_copies = [100, 110, 90], [120, 120, 120]
    rows = [
        {"workload": "test_fork_write", "kernel": kernel, "seed": seed, "copies": copies}
        for kernel, values in (("6.12", base_copies), ("6.15", new_copies))
        for seed, copies in enumerate(values)
    ]
    table = pa.Table.from_pylist(rows)
    c = compare_tables(select(table, {"kernel": "6.12"}), select(table, {"kernel": "6.15"}))
    (ch,) = c.groups[0].changes
    assert ch.base.mean == statistics.fmean(base_copies)
    assert ch.base.stddev == statistics.stdev(base_copies)
    assert ch.base.stddev_percent == pytest.approx(10.0)
    assert ch.new.stddev == 0
    assert ch.change_percent == pytest.approx(20.0)
    text = format_text(c)
    # lkp's row: the base right-aligned in 10 columns, " ±NN%", the change in 11, the new
    # value in 11, its deviation (none when 0), two spaces and the name.
    assert "       100 ± 10%     +20.0%        120        copies" in text.splitlines()
    assert "%stddev     %change         %stddev" in text


def test_report_layout_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = sweep(tmp_path, "a", kernel="6.12"), sweep(tmp_path, "b", kernel="6.15")
    assert main(["compare", str(a), str(b)]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert lines[0] == "=" * 89
    assert "kernel:" in lines
    heads = [i for i, line in enumerate(lines) if line.startswith("----------------")]
    assert len(heads) == 2  # one table per writer
    assert lines[heads[0] - 1].split() == ["6.12", "6.15"]
    row = re.compile(
        r"^ *\S+(?: ±[ \d]{3}%| {6}) +(?:[+-]\d+\.\d%|[+-]inf%) +\S+(?: ±[ \d]{3}%| {6})  \S+$"
    )
    table_rows = [line for line in lines if line.endswith(("  copies", "  reuses"))]
    assert len(table_rows) == 3  # the child's reuses are 0 on both sides: not shown
    assert all(row.match(line) for line in table_rows)
    assert not any(line.endswith("  faults.segv_unmapped") for line in lines)  # 0 and 0
    assert main(["compare", str(a), str(b), "--all"]) == 0
    assert "  faults.segv_unmapped" in capsys.readouterr().out
    assert main(["compare", str(a), str(b), "--json", "--metrics", "copies"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["differing"] == {"kernel": {"base": ["6.12"], "new": ["6.15"]}}
    parent = data["groups"][1]
    assert parent["params"] == {"writer": "parent"}
    assert parent["metrics"][0]["metric"] == "copies"
    assert parent["metrics"][0]["base"]["mean"] == K
    assert parent["metrics"][0]["change_percent"] == -100.0


def test_configurations_in_one_sweep_and_run_now(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "both.parquet"
    run(
        {
            "workload": "test_fork_write",
            "imports": IMPORTS,
            "params": {"pages": PAGES, "writer": "parent"},
            "axes": {"kernel": ["6.12", "6.15"], "thp.64K": ["never", "always"]},
            "output": str(out),
        },
        workers=0,
    )
    args = ["compare", "kernel=6.12,thp.64K=always", "kernel=6.15,thp.64K=always", "--json"]
    assert main([*args, "--in", str(out)]) == 0
    selected = json.loads(capsys.readouterr().out)
    run_now = ["--workload", "test_fork_write", "--import", IMPORTS[0], "--set", f"pages={PAGES}"]
    assert main([*args, *run_now, "--workers", "1"]) == 0
    ran = json.loads(capsys.readouterr().out)
    # writer=parent is the --in table's; the run uses the workload's default (child).
    assert selected["common"]["writer"] == "parent"
    assert ran["common"]["writer"] == "child"
    copies = {
        name: next(m for m in data["groups"][0]["metrics"] if m["metric"] == "copies")
        for name, data in (("selected", selected), ("ran", ran))
    }
    assert copies["selected"]["base"]["mean"] == K and copies["selected"]["new"]["mean"] == 0
    assert copies["ran"]["base"]["mean"] == copies["ran"]["new"]["mean"] == K
    # Several values of the compared parameter on one side for one configuration: refused.
    table = load_table(out)
    with pytest.raises(InvalidArgumentError, match="several values"):
        compare_tables(table, select(table, {"kernel": "6.15"}))
    assert main(["compare", "kernel=6.12", "kernel=6.15"]) == 2
    assert "need --in FILE" in capsys.readouterr().err


def test_csv_output_reads_like_the_parquet(tmp_path: Path) -> None:
    a = sweep(tmp_path, "a", kernel="6.12")
    b = sweep(tmp_path, "b", kernel="6.15")
    from_csv = to_json(compare_tables(load_table(a.with_suffix(".csv")), load_table(b)))
    assert from_csv == to_json(compare_tables(load_table(a), load_table(b)))
    # A lone CSV (no Parquet beside it) is read through the registered workload.
    lone = tmp_path / "lone.csv"
    lone.write_bytes(a.with_suffix(".csv").read_bytes())
    alone = to_json(compare_tables(load_table(lone), load_table(b)))
    assert alone["groups"] == from_csv["groups"]
    assert pcsv.read_csv(lone).num_rows == 4


def test_a_parameter_missing_from_some_rows_is_its_default(tmp_path: Path) -> None:
    """Two sweeps into one output, the first with thp.64K set, the second without it (the
    file's last metadata lists no thp.64K): the rows without it are the machine's default
    (never), a configuration of their own, not repeats of the thp.64K=always rows."""
    out = tmp_path / "both.parquet"
    spec: dict[str, Any] = {
        "workload": "test_fork_write",
        "imports": IMPORTS,
        "params": {"pages": PAGES, "writer": "parent"},
        "axes": {"kernel": ["6.12", "6.15"]},
        "output": str(out),
    }
    run_sweep({**spec, "params": {**spec["params"], "thp.64K": "always"}}, workers=0)
    run_sweep(spec, workers=0)
    table = load_table(out)
    assert table.num_rows == 4
    assert table.column("thp.64K").to_pylist().count(None) == 2
    assert "thp.64K" in read_meta(table)["params"]  # the earlier rows' parameter stays one
    assert select(table, {"thp.64K": "never"}).column("thp.64K").to_pylist() == [None, None]
    c = compare_tables(select(table, {"kernel": "6.12"}), select(table, {"kernel": "6.15"}))
    groups = {g.params["thp.64K"]: {ch.metric: ch for ch in g.changes} for g in c.groups}
    assert set(groups) == {"always", "never"}
    for changes in groups.values():
        assert all(ch.base.n == ch.new.n == 1 for ch in changes.values())  # no repeats
    # 64K folios: 6.12 copies every page the parent writes, 6.15 reuses the folio; 4K pages
    # are reused on both.
    assert (groups["always"]["copies"].base.mean, groups["always"]["copies"].new.mean) == (K, 0)
    assert (groups["never"]["copies"].base.mean, groups["never"]["copies"].new.mean) == (0, 0)
    assert " ±" not in format_text(c)
    # A parameter with no default the workload knows stays a value of its own.
    rows = [
        {"workload": "test_fork_write", "kernel": k, "mystery": m, "copies": n}
        for k, m, n in (("6.12", "a", 1), ("6.12", None, 5), ("6.15", "a", 2), ("6.15", None, 5))
    ]
    meta = {"workload": "test_fork_write", "params": ["kernel", "mystery"], "seed": None}
    hand = pa.Table.from_pylist(rows).replace_schema_metadata({META_KEY: json.dumps(meta)})
    c = compare_tables(select(hand, {"kernel": "6.12"}), select(hand, {"kernel": "6.15"}))
    assert [g.params for g in c.groups] == [{"mystery": "a"}, {"mystery": None}]
    assert [g.changes[0].base.n for g in c.groups] == [1, 1]
