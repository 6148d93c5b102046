"""``cowcore plot``: the files are valid images and the figures draw the table's numbers."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cowcore.cli import main
from cowcore.errors import InvalidArgumentError
from cowcore.sweep import run_sweep

pytest.importorskip("matplotlib", reason="plots need matplotlib (pip install 'cowcore[plot]')")
pytest.importorskip("pyarrow")

from matplotlib.patches import Rectangle

from cowcore.plot import bars_figure, faults_figure, page_size, timeline_figure

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def legend_texts(ax: Any) -> list[str]:
    legend = ax.get_legend()
    assert legend is not None
    return [t.get_text() for t in legend.get_texts()]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Any:
    out = tmp_path_factory.mktemp("plot") / "fw.parquet"
    return run_sweep(
        {
            "workload": "test_fork_write",
            "imports": ["tests.sweep_workloads"],
            "params": {"pages": 64, "writer": "parent", "steps": 4},
            "axes": {"kernel": ["6.12", "6.15"], "thp.64K": ["never", "always"]},
            "repeats": 2,
            "output": str(out),
        },
        workers=0,
    ), out


def test_page_size_follows_the_thp_knobs() -> None:
    assert page_size({"thp.enabled": "never"}) == "4K"
    assert page_size({"thp.enabled": "always"}) == "2M"  # 2M inherits by default
    assert page_size({"thp.enabled": "never", "thp.64K": "always", "thp.16K": "always"}) == "64K"
    assert page_size({"thp.enabled": "always", "thp.2M": "never", "thp.32K": "inherit"}) == "32K"


def test_bars_are_the_means_of_the_table(sweep: Any) -> None:
    result, _ = sweep
    rows = result.table.to_pylist()
    fig = bars_figure(result.table, metric="copies")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["4K", "64K"]
    legend = legend_texts(ax)
    assert legend == ["kernel=6.12", "kernel=6.15"]
    heights = {}
    for container, kernel in zip(ax.containers, ("6.12", "6.15"), strict=True):
        for patch, size in zip(container, ("never", "always"), strict=True):
            heights[(kernel, size)] = patch.get_height()
    for (kernel, size), height in heights.items():
        cell = [r["copies"] for r in rows if r["kernel"] == kernel and r["thp.64K"] == size]
        assert height == sum(cell) / len(cell)
    # The parent writes 32 pages after its child exited: 6.12 copies out of 64K folios.
    assert heights[("6.12", "always")] == 32
    assert heights[("6.15", "always")] == 0


def test_bars_refuse_to_average_configurations(sweep: Any) -> None:
    result, _ = sweep
    with pytest.raises(InvalidArgumentError, match=r"also differ in thp\.64K"):
        bars_figure(result.table, metric="copies", x="writer", hue="kernel")


def test_faults_are_stacked_per_configuration(sweep: Any) -> None:
    result, _ = sweep
    fig = faults_figure(result.table)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == [
        "kernel=6.12\nthp.64K=never",
        "kernel=6.12\nthp.64K=always",
        "kernel=6.15\nthp.64K=never",
        "kernel=6.15\nthp.64K=always",
    ]
    reasons = legend_texts(ax)
    rows = result.table.to_pylist()
    nonzero = [
        c for c in result.table.column_names if c.startswith("faults.") and any(r[c] for r in rows)
    ]
    assert reasons == [c.removeprefix("faults.") for c in nonzero]
    # Each bar's segments add up to the writer's faults: the 32 pages it writes.
    tops: dict[float, float] = {}
    for patch in ax.patches:
        assert isinstance(patch, Rectangle)
        x = patch.get_x()
        tops[x] = max(tops.get(x, 0.0), patch.get_y() + patch.get_height())
    assert sorted(tops.values()) == [32.0] * 4


def test_timeline_lines_are_the_timeline(sweep: Any) -> None:
    result, _ = sweep
    fig = timeline_figure(result.table, result.timeline)
    ax = fig.axes[0]
    lines = ax.get_lines()
    assert len(lines) == result.table.num_rows  # one per point
    steps = result.timeline.to_pylist()
    for line, point in zip(lines, dict.fromkeys(s["point"] for s in steps), strict=True):
        mine = [s for s in steps if s["point"] == point]
        assert np.asarray(line.get_xdata()).tolist() == [s["step"] for s in mine]
        assert np.asarray(line.get_ydata()).tolist() == [
            s["used_kb"] for s in mine
        ]  # KiB: small numbers
    assert ax.get_ylabel() == "used (KiB)"
    assert len(legend_texts(ax)) == 4  # repeats share their entry


def test_axis_labels_name_their_units() -> None:
    pa = pytest.importorskip("pyarrow")
    table = pa.Table.from_pylist(
        [
            {"point": p, "workload": "snapshot", "kernel": k}
            for p, k in (("a", "6.12"), ("b", "6.15"))
        ]
    )
    timeline = pa.Table.from_pylist(
        [
            {"point": p, "workload": "snapshot", "time_s": t, "current_cow_size_kb": kb}
            for p in ("a", "b")
            for t, kb in ((0.5, 10240), (1.0, 40960))
        ]
    )
    ax = timeline_figure(table, timeline).axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("time (s)", "current cow size (MiB)")
    assert ax.get_title() == "snapshot: current cow size (MiB) over time (s)"
    assert np.asarray(ax.get_lines()[0].get_ydata()).tolist() == [10.0, 40.0]
    steps = timeline_figure(table, timeline, x="current_cow_size_kb", y="time_s").axes[0]
    assert (steps.get_xlabel(), steps.get_ylabel()) == ("current cow size (KiB)", "time (s)")


def test_cli_writes_png_and_svg(sweep: Any, tmp_path: Path) -> None:
    _, out = sweep
    for kind, extra in (
        ("memory", ["--metric", "private_dirty_kb"]),
        ("faults", []),
        ("timeline", ["--where", "seed=0"]),
    ):
        png, svg = tmp_path / f"{kind}.png", tmp_path / f"{kind}.svg"
        assert main(["plot", kind, str(out), "-o", str(png), "-o", str(svg), *extra]) == 0
        assert png.read_bytes()[:8] == PNG_MAGIC
        root = ET.parse(svg).getroot()
        assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert main(["plot", "memory", str(out), "-o", str(tmp_path / "x.png")]) == 2
    assert main(["plot", "faults", str(out), "-o", str(tmp_path / "x.jpg")]) == 2
