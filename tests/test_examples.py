"""The README's example: the seed scenario reuses under 6.15 and copies under 6.12."""

from __future__ import annotations

from pathlib import Path

from cowcore import run_scenario

SEED = (Path(__file__).resolve().parent.parent / "examples" / "seed.cow").read_text()


def written_page(kernel: str, backend: str) -> dict[str, object]:
    out = run_scenario(SEED, kernel=kernel, backend=backend, check=True)
    assert len(out) == 17 and "stats" in out[-1]
    return out[0]


def test_seed_reuses_under_6_15(backend: str) -> None:
    page = written_page("6.15", backend)
    assert page["frame"] == "f0" and page["folio_pages"] == 16 and page["content"] == 1


def test_seed_copies_under_6_12(backend: str) -> None:
    page = written_page("6.12", backend)
    assert page["folio_pages"] == 1 and page["frame"] == "f0"
    out = run_scenario(SEED, kernel="6.12", backend=backend)
    assert out[1]["frame"] == "f1" and out[1]["folio_pages"] == 16
    assert out[-1] == {
        "stats": {
            "anon_fault_alloc": {"64K": 1},
            "anon_fault_fallback": {},
            "split": {},
            "split_deferred": {"64K": 1},
            "nr_anon": {"64K": 1},
            "nr_anon_partially_mapped": {"64K": 1},
            "cow_copy": 1,
        }
    }
