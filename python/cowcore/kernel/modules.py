"""The kernel modules the guest loads: zram (the swap device of ``P pageout``) and what it needs.

The probe gives every guest a zram swap device so that ``madvise(MADV_PAGEOUT)`` has somewhere
to write pages. Debian builds zram as a module, so the runner takes it from the kernel's own
unpacked modules (``cowcore kernel fetch`` brings them: :func:`cowcore.kernel.fetch.modules_dir`)
together with the modules it depends on, decompresses them here (the kernel may lack in-kernel
module decompression) and puts them in the initramfs as ``/modules/NN-NAME.ko``, dependencies
first; the probe loads them in that order with ``finit_module``.

Dependencies come from each module's own ``.modinfo`` ``depends=`` string (the one modprobe's
``modules.dep`` is built from: an unpacked package has no ``modules.dep``, depmod makes it at
install time). A dependency that is not unpacked as a module is built into the kernel.
"""

from __future__ import annotations

import lzma
import shutil
import subprocess
from pathlib import Path

from cowcore.kernel.fetch import modules_dir

__all__ = ["ModuleError", "guest_modules"]

SWAP_MODULE = "zram"


class ModuleError(Exception):
    """A module could not be read or decompressed; the message says which and why."""


def _index(root: Path) -> dict[str, Path]:
    """Module name (``-`` spelled ``_``, as the kernel names them) -> its file under ``root``."""
    found: dict[str, Path] = {}
    for path in sorted((root / "kernel").rglob("*.ko*")):
        name = path.name.split(".ko", 1)[0].replace("-", "_")
        found.setdefault(name, path)
    return found


def _decompress(path: Path) -> bytes:
    """The ELF image of a ``.ko``, ``.ko.xz`` or ``.ko.zst`` file."""
    data = path.read_bytes()
    if path.name.endswith(".ko"):
        return data
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".zst"):
        zstd = shutil.which("zstd")
        if zstd is None:
            raise ModuleError(f"{path.name} is zstd-compressed and zstd is not installed")
        proc = subprocess.run([zstd, "-dc"], input=data, capture_output=True, check=False)
        if proc.returncode != 0:
            raise ModuleError(f"zstd -dc {path.name} failed")
        return proc.stdout
    raise ModuleError(f"{path.name}: unknown module compression")


def _depends(image: bytes) -> list[str]:
    """The ``depends=`` names of a module's ``.modinfo`` (comma-separated, maybe empty)."""
    at = image.find(b"\0depends=")
    if at < 0:
        return []
    value = image[at + len(b"\0depends=") : image.index(b"\0", at + 1)].decode()
    return [d.replace("-", "_") for d in value.split(",") if d]


def guest_modules(vmlinuz: Path) -> list[tuple[str, bytes]]:
    """``(name, elf image)`` of zram and its module dependencies, each after the modules it
    needs; empty when the kernel's modules were not unpacked (then the guest has no swap)."""
    root = modules_dir(vmlinuz)
    if root is None:
        return []
    index = _index(root)
    if SWAP_MODULE not in index:
        return []
    order: list[tuple[str, bytes]] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen or name not in index:  # not a module file: built in
            return
        seen.add(name)
        image = _decompress(index[name])
        for dep in _depends(image):
            visit(dep)
        order.append((name, image))

    visit(SWAP_MODULE)
    return order
