"""Executors: where instances run. ``local`` on this machine's cores, ``packed`` as cluster jobs.

Both speak one interface (``submit``, ``poll``, ``cancel``, ``free_slots``) and the events
of ``local`` (``Started``, ``Finished``); a cluster executor also reports ``Queued``.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Queued:
    """An instance was handed to the scheduler as part of job ``jobid``."""

    key: int
    jobid: str
