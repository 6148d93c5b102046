"""Write the guest's initramfs: a newc ``cpio`` archive holding the probe as ``/init``.

The kernel unpacks the archive into its rootfs and runs ``/init`` (init/initramfs.c,
init/main.c). Writing the archive here, instead of calling ``cpio``, keeps the runner free of
one more host tool and makes the archive byte-for-byte reproducible (fixed inode numbers,
owners and mtimes). It is not compressed: the kernel unpacks an uncompressed archive fastest,
which matters under TCG.
"""

from __future__ import annotations

import dataclasses
import stat
from pathlib import Path

__all__ = ["Entry", "write_initramfs"]


@dataclasses.dataclass(frozen=True)
class Entry:
    """One archive member: a directory, a regular file (``data``) or a device node."""

    name: str
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


def _pad4(n: int) -> bytes:
    return b"\0" * (-n % 4)


def _header(ino: int, entry: Entry, name: bytes) -> bytes:
    # "070701" then 13 eight-digit hex fields (Documentation/driver-api/early-userspace/
    # buffer-format.rst): ino mode uid gid nlink mtime filesize devmajor devminor
    # rdevmajor rdevminor namesize check.
    nlink = 2 if stat.S_ISDIR(entry.mode) else 1
    fields = [
        ino,
        entry.mode,
        0,
        0,
        nlink,
        0,
        len(entry.data),
        0,
        0,
        entry.rdev[0],
        entry.rdev[1],
        len(name) + 1,
        0,
    ]
    return b"070701" + b"".join(f"{f:08x}".encode() for f in fields)


def cpio_newc(entries: list[Entry]) -> bytes:
    """The newc archive of ``entries`` followed by the ``TRAILER!!!`` record."""
    out = bytearray()
    for ino, entry in enumerate([*entries, Entry("TRAILER!!!", 0)], start=1):
        name = entry.name.encode()
        head = _header(ino if entry.name != "TRAILER!!!" else 0, entry, name)
        out += head + name + b"\0"
        out += _pad4(len(head) + len(name) + 1)
        out += entry.data + _pad4(len(entry.data))
    return bytes(out)


def write_initramfs(path: Path, init: bytes, files: dict[str, bytes]) -> None:
    """Write an initramfs with ``init`` as ``/init`` plus ``files`` (name -> contents).

    ``/dev/console`` and ``/dev/ttyS1`` exist as device nodes so that the kernel can give
    ``/init`` a console before devtmpfs is mounted.
    """
    entries = [
        Entry("dev", stat.S_IFDIR | 0o755),
        Entry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)),
        Entry("dev/ttyS1", stat.S_IFCHR | 0o600, rdev=(4, 65)),
        Entry("proc", stat.S_IFDIR | 0o755),
        Entry("sys", stat.S_IFDIR | 0o755),
        Entry("init", stat.S_IFREG | 0o755, init),
    ]
    entries += [Entry(name, stat.S_IFREG | 0o644, data) for name, data in sorted(files.items())]
    path.write_bytes(cpio_newc(entries))
