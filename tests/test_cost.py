"""The cost model (cowcore.cost) and its calibration (cowcore.calibrate).

No test asserts a speed: the estimates are checked against the model's own definition (the
units the contract's events carry), against each other (numpy and list inputs), and the
calibration against its own reported fit.
"""

from __future__ import annotations

import math
import random
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import cowcore
from cowcore import calibrate as cal
from cowcore.cli import main
from cowcore.cost import (
    DEFAULT,
    TERM_NAMES,
    CostModel,
    FitRow,
    Provenance,
    annotate,
    config_path,
    estimate_recording,
    load,
)
from cowcore.outcome import EVENT_FIELDS, WHOLE_MM_END, EventCode, EventRecord

EVENT_DTYPE = np.dtype(list(EVENT_FIELDS))
PAGE = 4096


def _array(records: list[EventRecord]) -> np.ndarray:
    return np.array([r.raw() for r in records], dtype=EVENT_DTYPE)


def _random_records(rng: random.Random, n: int) -> list[EventRecord]:
    out = []
    for _ in range(n):
        kind = rng.choice(list(EventCode))
        start = rng.randrange(1 << 20) * PAGE
        end = WHOLE_MM_END if rng.random() < 0.2 else start + rng.randrange(1, 100) * PAGE
        if rng.random() < 0.1:
            start = 0
        out.append(
            EventRecord(
                kind,
                order=rng.choice((0, 0, 2, 4, 9)),
                asid=rng.randrange(1, 5),
                start=start,
                end=end,
                nr=rng.randrange(600),
                pmds=rng.randrange(5),
            )
        )
    return out


def _model(rng: random.Random) -> CostModel:
    costs = {t: rng.uniform(1, 1000) for t in TERM_NAMES}
    return replace(DEFAULT.with_costs(costs), tlb_flush_ceiling=rng.randrange(0, 64))


@pytest.mark.parametrize("seed", range(5))
def test_array_and_records_agree(seed: int) -> None:
    rng = random.Random(seed)
    records = _random_records(rng, 300)
    model = _model(rng)
    a = model.estimate(records)
    b = model.estimate(_array(records))
    assert a.quantities == b.quantities
    assert a.total_ns == pytest.approx(b.total_ns)
    assert a.events == b.events == len(records)
    assert sum(a.by_kind().values()) == pytest.approx(a.total_ns)


def test_estimate_is_linear_in_events_and_costs() -> None:
    rng = random.Random(7)
    x, y = _random_records(rng, 100), _random_records(rng, 50)
    model = _model(rng)
    assert model.estimate(x + y).total_ns == pytest.approx(
        model.estimate(x).total_ns + model.estimate(y).total_ns
    )
    q = model.estimate(x).quantities
    for term in TERM_NAMES:
        bumped = model.with_costs({term: getattr(model, term) + 10.0})
        assert bumped.estimate(x).total_ns == pytest.approx(
            model.estimate(x).total_ns + 10.0 * q[term]
        )


@pytest.mark.parametrize("ceiling", [0, 1, 33, 100])
def test_tlb_flush_pages_are_capped_at_the_ceiling(ceiling: int) -> None:
    model = replace(DEFAULT, tlb_flush_ceiling=ceiling)
    sizes = [1, 2, 33, 34, 512]
    records = [EventRecord(EventCode.TLB_FLUSH, start=PAGE, end=PAGE + n * PAGE) for n in sizes]
    records.append(EventRecord(EventCode.TLB_FLUSH, start=0, end=WHOLE_MM_END))
    for events in (records, _array(records)):
        q = model.quantities(events)
        assert q["tlb_flush"] == len(records)
        assert q["tlb_flush_page"] == sum(min(n, ceiling) for n in sizes) + ceiling


def test_units_follow_the_recorded_events() -> None:
    """The quantities of a recorded pattern are the contract's: N first writes are N
    faults, folios and zeroed pages; a fork of N pages copies N PTEs; a copy after fork
    copies N pages with one flush each."""
    n = 37
    m = cowcore.Machine("6.15", memory="64M")
    p = m.init
    a = p.mmap(n * PAGE)
    with m.record() as first:
        p.write(a, n * PAGE)
    q = DEFAULT.quantities(first.events)
    assert (q["fault_write"], q["folio_alloc"], q["page_zero"]) == (n, n, n)
    with m.record() as fk:
        p.fork()
    q = DEFAULT.quantities(fk.events)
    assert (q["fork"], q["fork_pte"], q["tlb_flush"]) == (1, n, 1)
    with m.record() as copy:
        p.write(a, n * PAGE, value=2)
    q = DEFAULT.quantities(copy.events)
    assert (q["fault_wp"], q["page_copy"], q["tlb_flush"], q["tlb_flush_page"]) == (n, n, n, n)
    est = estimate_recording(copy.events, DEFAULT)
    assert est.total_ns == pytest.approx(DEFAULT.estimate(copy.records()).total_ns)


def test_access_cost_is_the_estimate_of_its_events() -> None:
    m = cowcore.Machine("6.15", memory="64M")
    p = m.init
    a = p.mmap(2 * 1024 * 1024)
    with m.record() as rec:
        acc = p.access(a, write=True)
    assert acc.faults == 1
    assert annotate(acc, rec.events, DEFAULT) == DEFAULT.estimate(rec.records()).total_ns > 0
    with m.record() as rec:
        hit = p.access(a, write=True)
    assert hit.faults == 0
    assert DEFAULT.access_cost(hit, rec.events) == 0.0


def test_toml_round_trip(tmp_path: Path) -> None:
    model = replace(
        _model(random.Random(3)),
        provenance=Provenance("calibrated", host='h"x', notes=("a", "b\\c")),
        fit=(FitRow("4k:copy", 10.0, 12.5), FitRow("thp:reuse", 3.0, 0.1, used=False)),
    )
    back = CostModel.load(model.save(tmp_path / "sub" / "c.toml"))
    assert back == model
    assert back.provenance == model.provenance
    assert back.fit == model.fit


def test_with_costs_refuses_unknown_terms() -> None:
    with pytest.raises(ValueError, match="fault_wpp"):
        DEFAULT.with_costs({"fault_wpp": 1.0})


def test_a_partial_table_overrides_some_costs_only() -> None:
    model = CostModel.from_toml("[costs_ns]\nfault_wp = 1.5\n")
    assert model.fault_wp == 1.5
    assert replace(model, fault_wp=DEFAULT.fault_wp) == DEFAULT


@pytest.mark.parametrize(
    "text",
    [
        "[costs_ns]\nfault_wpp = 1\n",
        "[costs_ns]\nfault_wp = -1\n",
        "format = 2\n",
        "[provenance]\nhots = 'x'\n",
        "not toml [",
    ],
)
def test_bad_tables_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"\S"):
        CostModel.from_toml(text)


def test_load_prefers_argument_then_env_then_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.delenv("COWCORE_COSTS", raising=False)
    assert config_path() == tmp_path / "cfg" / "cowcore" / "costs.toml"
    assert load() is DEFAULT
    replace(DEFAULT, fault_read=1.0).save(config_path())
    assert load().fault_read == 1.0
    env = replace(DEFAULT, fault_read=2.0).save(tmp_path / "env.toml")
    monkeypatch.setenv("COWCORE_COSTS", str(env))
    assert load().fault_read == 2.0
    arg = replace(DEFAULT, fault_read=3.0).save(tmp_path / "arg.toml")
    assert load(arg).fault_read == 3.0


def _patterns(truth: CostModel) -> dict[str, tuple[float, dict[str, float]]]:
    """The calibration's patterns as the simulator counts them, timed by ``truth``."""
    out: dict[str, tuple[float, dict[str, float]]] = {}
    for label, thp in (("4k", False), ("thp", True)):
        for name, events in cal.simulate(2, thp).items():
            q = DEFAULT.quantities(events)
            out[f"{label}:{name}"] = (truth.estimate(events).total_ns, q)
    return out


@pytest.mark.parametrize("seed", range(4))
def test_fit_reproduces_consistent_measurements(seed: int) -> None:
    """A host whose every cost differs from the built-in table by up to 3x either way:
    the patterns' times, made by that host's model, are reproduced."""
    rng = random.Random(seed)
    truth = DEFAULT.with_costs(
        {t: getattr(DEFAULT, t) * 3 ** rng.uniform(-1, 1) for t in TERM_NAMES}
    )
    result = cal.fit(_patterns(truth))
    assert all(r.used for r in result.rows)
    assert result.rms_log_ratio < 0.05
    assert all(v > 0 for v in result.costs.values())


def test_fit_leaves_out_an_outlier() -> None:
    patterns = _patterns(DEFAULT)
    t, q = patterns["4k:reuse"]
    patterns["4k:reuse"] = (t * 40, q)
    result = cal.fit(patterns)
    assert [r.pattern for r in result.excluded] == ["4k:reuse"]
    assert result.rms_log_ratio < 0.05


@pytest.mark.skipif(shutil.which("gcc") is None, reason="the native baseline needs gcc")
def test_calibrate_writes_a_table_that_reproduces_its_fit(tmp_path: Path) -> None:
    out = tmp_path / "costs.toml"
    assert main(["calibrate", "--mib", "4", "--rounds", "1", "--out", str(out)]) == 0
    model = CostModel.load(out)
    assert model.provenance.source == "calibrated"
    assert model.provenance.kernel and model.provenance.command.startswith("cowcore calibrate")
    assert all(v > 0 for v in model.costs().values())
    fit = {r.pattern: r for r in model.fit}
    assert {f"4k:{p}" for p in cal.PATTERNS_4K} <= set(fit)
    # The reported estimates are the saved model's estimates of the simulator's events.
    for label, thp in (("4k", False), ("thp", True)):
        for name, events in cal.simulate(4, thp).items():
            row = fit.get(f"{label}:{name}")
            if row is not None:
                assert model.estimate(events).total_ns == pytest.approx(row.estimated_ns)
    used = [r for r in model.fit if r.used]
    assert len(used) >= len(model.fit) * 3 // 4
    assert math.sqrt(sum(math.log(r.ratio) ** 2 for r in used) / len(used)) < math.log(cal.OUTLIER)


def test_calibrate_refuses_a_bad_size(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["calibrate", "--mib", "0"]) == 2
    assert "--mib" in capsys.readouterr().err
