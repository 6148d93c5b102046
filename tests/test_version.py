"""One version, in Cargo.toml: ``cowcore.__version__`` (what ``cowcore --version`` prints), the
native extension's ``__version__`` and the installed metadata all say it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest

import cowcore
from cowcore.cli import main

REPO = Path(__file__).resolve().parent.parent


def cargo_version() -> str:
    with (REPO / "Cargo.toml").open("rb") as f:
        return str(tomllib.load(f)["workspace"]["package"]["version"])


def test_version_is_cargos() -> None:
    assert cowcore.__version__ == cargo_version()
    assert version("cowcore") == cargo_version()  # maturin's metadata (dynamic = ["version"])


@pytest.mark.skipif("rust" not in cowcore.BACKENDS, reason="needs the native extension")
def test_version_without_package_metadata(tmp_path: Path) -> None:
    """The package copied as it is on disk, without its metadata (a source tree that was
    never installed): the version still comes from Cargo, through the extension. Before,
    ``__version__`` read only the metadata and said ``0+unknown`` here."""
    native = pytest.importorskip("cowcore._cowcore")
    assert native.__version__ == cargo_version()
    package = Path(cowcore.__file__).parent
    shutil.copytree(package, tmp_path / "cowcore", ignore=shutil.ignore_patterns("__pycache__"))
    # numpy, cowcore's one dependency, is linked in beside it (with the shared libraries its
    # wheel carries), since its site-packages would also hold cowcore's metadata.
    numpy_dir = Path(np.__file__).parent
    for dep in (numpy_dir, numpy_dir.with_name("numpy.libs")):
        if dep.exists():
            (tmp_path / dep.name).symlink_to(dep)
    out = subprocess.run(
        # -S: no site-packages, so no installed metadata for cowcore
        [sys.executable, "-S", "-c", "import cowcore; print(cowcore.__version__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == cargo_version()


def test_cli_version(capsys: pytest.CaptureFixture[str]) -> None:
    """``cowcore --version`` prints the one version (Cargo's) and exits 0."""
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"cowcore {cowcore.__version__}\n"
