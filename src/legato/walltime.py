"""Maestro's walltime forms, in seconds: what the local executor enforces and schedulers are asked for."""
from __future__ import annotations

import re
from typing import Any

from legato.errors import LegatoError

_UNLIMITED = {"inf", "infinite", "unlimited"}
_CLOCK = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def parse_walltime(value: Any) -> int | None:
    """Seconds from Maestro's walltime forms; None when no limit was asked for, 0 for "inf".

    Whole numbers are minutes (Maestro and SLURM agree), "MM:SS" is minutes and seconds,
    "HH:MM:SS" and "D-HH[:MM[:SS]]" are SLURM's forms.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, (bool, float)):
        raise LegatoError(f"walltime {value!r} is not HH:MM:SS, MM:SS, D-HH:MM:SS, minutes or 'inf'")
    if isinstance(value, int):
        if value < 0:
            raise LegatoError(f"walltime {value!r} must not be negative")
        return value * 60
    text = str(value).strip().lower()
    if text in _UNLIMITED:
        return 0
    match = _CLOCK.match(text)
    if not match:
        raise LegatoError(f"walltime {value!r} is not HH:MM:SS, MM:SS, D-HH:MM:SS, minutes or 'inf'")
    days, first, second, third = match.groups()
    if days is not None:  # D-HH[:MM[:SS]]
        return int(days) * 86400 + int(first) * 3600 + int(second or 0) * 60 + int(third or 0)
    if third is not None:
        return int(first) * 3600 + int(second) * 60 + int(third)
    if second is not None:
        return int(first) * 60 + int(second)
    return int(first) * 60
