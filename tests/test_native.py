"""The native extension builds, imports and agrees with the package metadata."""

from __future__ import annotations

import pytest

import cowcore
from cowcore.protocol import Backend
from cowcore.reference import ReferenceBackend

native = pytest.importorskip(
    "cowcore._cowcore", reason="the extension is built by `pip install .` (maturin)"
)


def test_extension_version_is_the_package_version() -> None:
    assert native.__version__ == cowcore.__version__


def test_extension_provides_the_default_backend() -> None:
    assert native.backends() == ["rust"]
    assert cowcore.BACKENDS == ("rust", "reference")
    assert cowcore.Machine().backend_name == "rust"


def test_native_machine_satisfies_the_backend_protocol() -> None:
    """Every protocol member exists on the native class with the reference's shape."""
    members = [n for n in dir(Backend) if not n.startswith("_")]
    rust = native.Machine("6.15", 1024, 4)
    ref = ReferenceBackend("6.15", 1024, 4)
    for name in members:
        assert hasattr(rust, name), name
    assert rust.kernel == ref.kernel and rust.total_frames == ref.total_frames
    assert rust.free_frames() == ref.free_frames()
    assert rust.stats() == ref.stats()
    assert rust.translate(1, 0x7E0000000000) == ref.translate(1, 0x7E0000000000)
