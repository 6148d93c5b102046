"""Build the C programs that ship inside the package, into the user's cache directory.

Two C programs come with cowcore as package data, so that an installed wheel needs no source
checkout: the kernel probe (``cowcore/kernel/probe.c``, run as ``/init`` in the guest) and the
native baseline of ``cowcore bench`` (``cowcore/cownative.c``). Both are compiled with the
host's gcc on first use and cached under a name holding a hash of the source and the flags,
so that an upgraded package (or an edited source in an editable install) builds afresh and
two versions can share one cache.

The cache directory is ``$COWCORE_KERNEL_CACHE`` if set, else ``$XDG_CACHE_HOME/cowcore``
(when that is an absolute path, as the XDG base directory specification requires), else
``~/.cache/cowcore``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

__all__ = ["BuildError", "CompilerNotFoundError", "build_c", "cache_dir", "package_source"]


class BuildError(Exception):
    """A shipped C program could not be built; the message says why."""


class CompilerNotFoundError(BuildError):
    """gcc is not on ``PATH``: nothing can be built."""


def cache_dir() -> Path:
    """``$COWCORE_KERNEL_CACHE``, else ``$XDG_CACHE_HOME/cowcore``, else ``~/.cache/cowcore``."""
    env = os.environ.get("COWCORE_KERNEL_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / "cowcore"
    return Path.home() / ".cache" / "cowcore"


def package_source(package: str, name: str) -> Traversable:
    """The C source ``name`` shipped in ``package`` (e.g. ``cowcore.kernel``, ``probe.c``)."""
    source = resources.files(package).joinpath(name)
    if not source.is_file():
        raise BuildError(f"{name} is missing from the installed {package} package")
    return source


def build_c(source: Traversable, name: str, cflags: list[str], cache: Path | None = None) -> Path:
    """Compile ``source`` with ``gcc cflags`` into ``cache/name-HASH`` unless it is there.

    HASH covers the source and the flags. The binary is written under a temporary name and
    renamed into place, so concurrent builds (two test workers, two terminals) never see a
    half-written file. A build that prints warnings fails: the programs must build cleanly.

    Raises:
        CompilerNotFoundError: gcc is not installed.
        BuildError: the source is missing, the cache is not writable, or gcc failed.
    """
    gcc = shutil.which("gcc")
    if gcc is None:
        raise CompilerNotFoundError(
            f"gcc not found on PATH: it builds {source.name} (apt install gcc)"
        )
    text = source.read_bytes()
    digest = hashlib.sha256(text + " ".join(cflags).encode()).hexdigest()[:16]
    cache = cache or cache_dir()
    binary = cache / f"{name}-{digest}"
    if binary.is_file():
        return binary
    tmp = cache / f".{name}-{digest}.{os.getpid()}"
    try:
        cache.mkdir(parents=True, exist_ok=True)
        # as_file: a real path for gcc, extracted to a temporary file if the package is zipped.
        with resources.as_file(source) as path:
            proc = subprocess.run(
                [gcc, *cflags, "-o", str(tmp), str(path)],
                capture_output=True,
                text=True,
                check=False,
            )
        if proc.returncode != 0:
            raise BuildError(f"building {source.name} failed:\n{proc.stderr.strip()}")
        if proc.stderr.strip():
            raise BuildError(f"{source.name} must build without warnings:\n{proc.stderr.strip()}")
        tmp.replace(binary)
    except OSError as err:
        raise BuildError(f"cannot build {source.name} into {cache}: {err}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return binary
