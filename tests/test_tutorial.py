"""docs/tutorial.md cannot rot silently: its tables are the committed outputs' (verbatim),
the outputs come from the committed specs, and the claims it makes hold when the same specs
run again at a smaller size (the same workloads, parameters and code path, a smaller heap).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from cowcore.sweep import SweepSpec, run_sweep
from cowcore.workloads import Scalar

pq = pytest.importorskip("pyarrow.parquet")

ROOT = Path(__file__).resolve().parent.parent
SWEEPS = ROOT / "examples" / "sweeps"
TUTORIAL = ROOT / "docs" / "tutorial.md"


def _tables() -> ModuleType:
    spec = importlib.util.spec_from_file_location("tutorial_tables", SWEEPS / "tables.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rows(spec: SweepSpec, **fixed: Scalar) -> list[dict[str, Any]]:
    """Runs ``spec`` in this process, in memory, with ``fixed`` replacing its parameters."""
    spec = dataclasses.replace(spec, params={**spec.params, **fixed}, output=None)
    result = run_sweep(spec, workers=0)
    rows: list[dict[str, Any]] = result.table.to_pylist()
    assert all(not r["error"] for r in rows), [r["error"] for r in rows]
    return rows


def test_the_tutorial_holds_the_committed_tables() -> None:
    text = TUTORIAL.read_text()
    tables = _tables()
    out = SWEEPS / "out"
    assert tables.bgsave(out / "bgsave.parquet") in text
    assert tables.prefork(out / "prefork-slots.parquet") in text
    # the comparison it quotes is the committed one
    quoted = text.split("```\nthp.enabled/thp.64K:\n", 1)[1].split("```", 1)[0]
    assert "6.12" in quoted and quoted in (out / "bgsave-compare.txt").read_text()


@pytest.mark.parametrize("name", ["bgsave", "prefork-slots"])
def test_the_committed_outputs_come_from_the_specs(name: str) -> None:
    """Every committed row ran with the spec's fixed parameters and covers its axes."""
    with (SWEEPS / f"{name}.toml").open("rb") as f:
        doc = tomllib.load(f)
    rows = pq.read_table(SWEEPS / "out" / f"{name}.parquet").to_pylist()
    assert rows and all(not r["error"] for r in rows)
    overridable = {"thp.enabled", "thp.64K"}  # run.sh sets them per run with --set
    for key, value in doc["params"].items():
        if key not in overridable:
            assert {r[key] for r in rows} == {value}, key
    for key, values in doc["axes"].items():
        assert {r[key] for r in rows} == set(values), key


def test_bgsave_claims() -> None:
    """The claims of question 1, on a 64 MiB heap: the same write and scan rates, so a
    snapshot of 1/64 the time, and 1/64 of the time after it; the writes per heap page are
    those of the 4 GiB run."""
    spec = SweepSpec.load(SWEEPS / "bgsave.toml")
    assert spec.params["after_s"] == 16.0
    small: dict[str, Scalar] = {"heap": "64M", "after_s": 16.0 / 64}
    by: dict[tuple[str, str], dict[str, Any]] = {}
    for size, knobs in (
        ("4K", {}),
        ("64K", {"thp.64K": "always"}),
        ("2M", {"thp.enabled": "always"}),
    ):
        for r in _rows(spec, **small, **knobs):
            by[size, str(r["kernel"])] = r
    # during the snapshot: the same COW cost on every page size and kernel
    assert len({r["current_cow_peak_kb"] for r in by.values()}) == 1
    assert int(by["4K", "6.12"]["current_cow_peak_kb"]) > 0
    for size in ("64K", "2M"):
        old, new = by[size, "6.12"], by[size, "6.15"]
        # after the child exits, 6.15 reuses what 6.12 copies, and uses less memory
        assert int(new["copies"]) < int(old["copies"])
        assert int(old["reuses"]) == 0 < int(new["reuses"])
        assert int(new["memory_end_kb"]) < int(old["memory_end_kb"])
        # 6.15 reuses as 4K pages do, but the partly mapped folios stay allocated
        assert new["reuses"] == by["4K", "6.15"]["reuses"]
        assert int(new["memory_end_kb"]) > int(by["4K", "6.15"]["memory_end_kb"])
    # 4K pages: both kernels alike
    assert {k: v for k, v in by["4K", "6.12"].items() if k not in ("kernel", "point")} == {
        k: v for k, v in by["4K", "6.15"].items() if k not in ("kernel", "point")
    }


def test_prefork_claims() -> None:
    """The claims of question 2 on a 1 MiB heap: 6.15 reuses with two processes and stops
    at three, for the two MM-id slots; 6.12 never reuses."""
    spec = SweepSpec.load(SWEEPS / "prefork-slots.toml")
    spec = dataclasses.replace(spec, axes={**spec.axes, "workers": (2, 3, 4)})
    rows = _rows(spec, heap="1M")
    by = {(int(r["workers"]), str(r["kernel"])): r for r in rows}
    pages = 256
    assert by[2, "6.15"]["reuses"] == pages
    for n in (3, 4):
        assert by[n, "6.15"]["reuses"] == 0
        assert by[n, "6.15"]["slot_overflow_copies"] == pages * 15 // 16
        assert by[n, "6.15"]["copies"] == by[n, "6.12"]["copies"]
    assert all(by[n, "6.12"]["reuses"] == 0 for n in (2, 3, 4))
