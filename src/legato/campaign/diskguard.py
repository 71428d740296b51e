"""Free-space and free-inode checks made before a batch starts.

A batch that fills the disk halfway through leaves a half-written workspace and maybe a
half-written archive; stopping before it starts, with the numbers in the message, is cheaper
than any recovery. Inodes matter as much as bytes: 10^5 small instance folders can exhaust a
file system's inode table while gigabytes are still free.
"""
from __future__ import annotations

import os
import re
from typing import Iterable

from legato.errors import LegatoError

_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_SIZE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([KMGT]?)(?:I?B)?", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Bytes for a size such as ``5G``, ``512M``, ``1.5T`` or ``1000`` (binary units, as ``df -h``)."""
    match = _SIZE.fullmatch(str(text).strip())
    if not match:
        raise LegatoError(f"size {text!r}: expected a number with an optional K, M, G or T suffix, e.g. 5G")
    number, unit = match.groups()
    return int(float(number) * _UNITS[unit.upper()])


def human_size(nbytes: float) -> str:
    """A short binary size for messages (``1.2 GiB``)."""
    value = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def existing_parent(path: str) -> str:
    """The path itself or its nearest existing ancestor: the folder a batch will create may not exist yet."""
    current = os.path.abspath(path)
    while not os.path.exists(current):
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    return current


def check_room(paths: Iterable[str], min_free_bytes: int, min_free_inodes: int, batches: int = 1) -> None:
    """Raise a LegatoError naming the first file system below either limit; each file system is checked once.

    The limits are per batch: with ``batches`` batch workspaces on disk (the new one included),
    each of which may still grow, the room needed is that many times the limits.
    """
    seen: set[int] = set()
    for path in paths:
        target = existing_parent(path)
        try:
            device = os.stat(target).st_dev
            stats = os.statvfs(target)
        except OSError as exc:
            raise LegatoError(f"cannot check free space on {target}: {exc.strerror}") from exc
        if device in seen:
            continue
        seen.add(device)
        _check_one(target, stats, min_free_bytes, min_free_inodes, batches)


def _check_one(target: str, stats: os.statvfs_result, min_free_bytes: int, min_free_inodes: int, batches: int) -> None:
    """Inode counts of 0 mean the file system does not report them (btrfs, many network ones): skip that check."""
    free_bytes = stats.f_bavail * stats.f_frsize
    each = f" for each of {batches} batches on disk" if batches > 1 else ""
    if free_bytes < min_free_bytes * batches:
        raise LegatoError(f"not enough room on {target}: {human_size(free_bytes)} free, "
                          f"--min-free is {human_size(min_free_bytes)}{each}")
    if stats.f_files and stats.f_favail < min_free_inodes * batches:
        raise LegatoError(f"not enough inodes on {target}: {stats.f_favail} free, --min-inodes is {min_free_inodes}{each}")
