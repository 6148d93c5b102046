"""The native extension builds, imports and agrees with the package metadata."""

from __future__ import annotations

import pytest

import cowcore

native = pytest.importorskip(
    "cowcore._cowcore", reason="the extension is built by `pip install .` (maturin)"
)


def test_extension_version_is_the_package_version() -> None:
    assert native.__version__ == cowcore.__version__


def test_extension_offers_no_backend_until_proven() -> None:
    assert native.backends() == []
    assert "rust" not in cowcore.BACKENDS
