"""The tables docs/tutorial.md quotes, printed as Markdown from the sweep outputs in out/
(run.sh runs this last; tests/test_tutorial.py checks that the tutorial holds them verbatim).

Usage: python3 tables.py [OUT_DIR]
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent


def page_size(row: Mapping[str, object]) -> str:
    """The largest folio a fault may allocate under the row's THP settings."""
    if row.get("thp.enabled") == "always":
        return "2M"
    if row.get("thp.64K") == "always":
        return "64K"
    return "4K"


def mib(kb: object) -> str:
    assert isinstance(kb, int)
    return f"{kb / 1024:,.0f}"


def bgsave(path: Path) -> str:
    """Question 1: one line per page size and kernel."""
    rows = pq.read_table(path).to_pylist()
    order = {"4K": 0, "64K": 1, "2M": 2}
    rows.sort(key=lambda r: (order[page_size(r)], str(r["kernel"])))
    lines = [
        "| page size | kernel | current_cow_peak (MiB) | memory peak (MiB) "
        "| memory at the end (MiB) | copies | reuses |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {page_size(r)} | {r['kernel']} | {mib(r['current_cow_peak_kb'])} "
            f"| {mib(r['memory_peak_kb'])} | {mib(r['memory_end_kb'])} "
            f"| {r['copies']:,} | {r['reuses']:,} |"
        )
    return "\n".join(lines)


def prefork(path: Path) -> str:
    """Question 2: one line per pool size, the two kernels side by side."""
    rows = pq.read_table(path).to_pylist()
    by = {(int(r["workers"]), str(r["kernel"])): r for r in rows}
    lines = [
        "| processes | 6.12 copies | 6.12 reuses | 6.15 copies | 6.15 reuses "
        "| 6.15 slot_overflow_copies | avoidable_copies (both) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in sorted({w for w, _ in by}):
        old, new = by[n, "6.12"], by[n, "6.15"]
        lines.append(
            f"| {n} | {old['copies']:,} | {old['reuses']:,} | {new['copies']:,} "
            f"| {new['reuses']:,} | {new['slot_overflow_copies']:,} "
            f"| {old['avoidable_copies']:,} / {new['avoidable_copies']:,} |"
        )
    return "\n".join(lines)


def main(out: Path) -> None:
    print("<!-- bgsave -->")
    print(bgsave(out / "bgsave.parquet"))
    print()
    print("<!-- prefork-slots -->")
    print(prefork(out / "prefork-slots.parquet"))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "out")
