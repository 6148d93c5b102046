"""Sizes written the way the scenario format and the kernel's sysfs names write them."""

from __future__ import annotations

import re

from cowcore.errors import InvalidArgumentError

_SIZE = re.compile(r"^([0-9]+)([KMG]?)$")
_MULT = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(text: str) -> int:
    """``"4K"`` -> 4096, ``"2M"`` -> 2097152, ``"123"`` -> 123 (binary suffixes only).

    Raises:
        InvalidArgumentError: not a decimal number with an optional K, M or G suffix.
    """
    m = _SIZE.match(text)
    if m is None:
        raise InvalidArgumentError(f"bad size {text!r}: a decimal number with optional K, M or G")
    return int(m.group(1)) * _MULT[m.group(2)]


def format_size(nbytes: int) -> str:
    """The shortest exact spelling: 65536 -> ``"64K"``, 2097152 -> ``"2M"``."""
    for suffix in ("G", "M", "K"):
        if nbytes and nbytes % _MULT[suffix] == 0:
            return f"{nbytes // _MULT[suffix]}{suffix}"
    return str(nbytes)
