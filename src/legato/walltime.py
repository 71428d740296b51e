"""Walltimes as Maestro specs write them, in seconds: what the local executor and schedulers enforce."""
from __future__ import annotations

import re

from legato.errors import LegatoError

_CLOCK = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def parse_walltime(value: object) -> int | None:
    """Seconds from ``"HH:MM:SS"``, ``"MM:SS"``, ``"D-HH:MM:SS"`` or an int of minutes (Maestro's forms).

    ``None``, ``""``, ``0`` and ``"inf"`` mean no limit.
    """
    if value is None or value == "" or value == 0 or str(value).strip().lower() in ("inf", "infinite", "unlimited"):
        return None
    if isinstance(value, bool):
        raise LegatoError(f"walltime {value!r}: expected HH:MM:SS or minutes")
    if isinstance(value, (int, float)):
        return int(value * 60)
    text = str(value).strip()
    match = _CLOCK.match(text)
    if not match:
        raise LegatoError(f"walltime {value!r}: expected HH:MM:SS, MM:SS, D-HH:MM:SS or minutes")
    days, first, second, third = match.groups()
    if second is None:
        return int(days or 0) * 86400 + int(first) * 60  # a bare number: minutes, as in Maestro
    parts = [int(first), int(second)] + ([int(third)] if third is not None else [])
    hours, minutes, seconds = parts if len(parts) == 3 else [0, *parts]
    return int(days or 0) * 86400 + hours * 3600 + minutes * 60 + seconds
